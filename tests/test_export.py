"""recseg export: TorchScript and ONNX programs that stream frames with explicit recurrent state."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from recseg.deploy import SUFFIXES
from recseg.deploy import export as deploy
from recseg.deploy.export import (
    ExportError,
    ExportInfo,
    StreamingWrapper,
    export_model,
    initial_state,
    read_metadata,
    state_names,
)
from recseg.errors import InputError
from recseg.models import RecurrentDeepLab, build_model
from recseg.models.loaded import LoadedModel
from recseg.tracking.pyfunc import log_clip_model
from tests.conftest import randomize_norms
from tests.media import one_error_line, recseg_in_process, run_recseg
from tests.tolerance import runtime_atol

# decoder unit (h), output unit (h, c), no state
MODELS = {"Deep_mobile_gruV3": ["h"], "Deep_mobile_lstmV1": ["h", "c"], "Deep+_mobile": []}
SIZE = (32, 48)
RUNS = [(1, 32, 48), (2, 40, 56)]  # (batch, H, W): a second batch and frame size, same file
FRAMES = 5
pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.slow,
]

Exported = tuple[LoadedModel, ExportInfo]


def _loaded(name: str, seed: int = 1, norm: str = "auto") -> LoadedModel:
    torch.manual_seed(seed)
    model = randomize_norms(build_model(name, norm=norm), seed).eval()
    return LoadedModel(model=model, name=name, uri=f"test:{name}", run_id=None, size=SIZE)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Exported]:
    """``exported(name, fmt, norm="auto")``: the model and what exporting it (checked) wrote;
    once each."""
    folder = tmp_path_factory.mktemp("exported")
    models: dict[tuple[str, str], LoadedModel] = {}
    done: dict[tuple[str, str, str], Exported] = {}

    def get(name: str, fmt: str, norm: str = "auto") -> Exported:
        if (name, fmt, norm) not in done:
            loaded = models.setdefault((name, norm), _loaded(name, norm=norm))
            out = folder / f"{name}-{norm}{SUFFIXES[fmt][0]}"
            done[name, fmt, norm] = (loaded, export_model(loaded, fmt, out, size=SIZE))
        return done[name, fmt, norm]

    return get


def _frames(batch: int, h: int, w: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(batch, 3, h, w, generator=gen) for _ in range(FRAMES)]


def _pytorch(model: RecurrentDeepLab, frames: list[torch.Tensor]) -> list[list[np.ndarray]]:
    """Per frame: [prob, *state tensors] from streaming ``model(frame, state)``."""
    out, state = [], None
    with torch.inference_mode():
        for frame in frames:
            logits, state = model(frame, state)
            prob = torch.softmax(logits, dim=1)[:, 1:2]
            out.append([prob.numpy()] + [state[n].numpy() for n in state_names(model)])
    return out


def _onnxruntime(path: Path, frames: list[torch.Tensor]) -> list[list[np.ndarray]]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    state = [np.zeros((1, 1, 1, 1), np.float32) for _ in names[1:]]  # first frame
    out = []
    for frame in frames:
        result = session.run(
            None, {"src": frame.numpy(), **dict(zip(names[1:], state, strict=True))}
        )
        out.append(result)
        state = result[1:]
    return out


def _torchscript(path: Path, frames: list[torch.Tensor], n_state: int) -> list[list[np.ndarray]]:
    program = torch.jit.load(str(path))
    state = [torch.zeros(1, 1, 1, 1) for _ in range(n_state)]  # first frame
    out = []
    with torch.inference_mode():
        for frame in frames:
            result = program(frame, *state)
            out.append([t.numpy() for t in result])
            state = list(result[1:])
    return out


# ONNX export takes ~15 s a model: both state layouts (one tensor; h + c) in ONNX, all in
# TorchScript; GroupNorm (the default) in all, frozen BatchNorm and BatchNorm in one each.
@pytest.mark.parametrize(
    ("name", "fmt", "norm"),
    [(name, "torchscript", "auto") for name in MODELS]
    + [("Deep_mobile_gruV3", "onnx", "auto"), ("Deep_mobile_lstmV1", "onnx", "auto")]
    + [("Deep_mobile_gruV3", "torchscript", "batch"), ("Deep_mobile_lstmV1", "onnx", "frozen")],
)
def test_file_streams_like_pytorch(exported: Callable, name: str, fmt: str, norm: str) -> None:
    loaded, info = exported(name, fmt, norm)
    k = len(MODELS[name])
    assert info.state_order == MODELS[name] == state_names(loaded.model)
    assert info.inputs == ["src"] + [f"r{i}i" for i in range(1, k + 1)]
    assert info.outputs == ["prob"] + [f"r{i}o" for i in range(1, k + 1)]
    assert info.max_diff is not None and 0 <= info.max_diff <= runtime_atol(torch.ones(1))  # prob
    assert info.path.is_file() and (info.opset is not None) == (fmt == "onnx")
    for seed, (batch, h, w) in enumerate(RUNS):
        frames = _frames(batch, h, w, seed)
        expected = _pytorch(loaded.model, frames)
        assert np.std(expected[0][0]) > 1e-3  # a non-trivial output to compare
        got = (
            _onnxruntime(info.path, frames) if fmt == "onnx" else _torchscript(info.path, frames, k)
        )
        for want, have in zip(expected, got, strict=True):
            assert len(have) == 1 + k
            assert have[0].shape == (batch, 1, h, w)
            for a, b in zip(have, want, strict=True):  # prob, then every state tensor
                np.testing.assert_allclose(a, b, atol=runtime_atol(b), rtol=0)


@pytest.mark.parametrize("name", ["Deep_mobile_gruV3", "Deep_mobile_lstmV1"])
def test_first_frame_zeros_equal_no_state(name: str) -> None:
    model = _loaded(name).model
    frame = _frames(2, *SIZE, seed=7)[0]
    with torch.inference_mode():
        logits, state = model(frame, None)
        for batch in (1, 2):
            zeros = {n: torch.zeros(batch, 1, 1, 1) for n in state_names(model)}
            got, got_state = model(frame, zeros)
            assert torch.equal(got, logits)
            assert all(torch.equal(got_state[n], state[n]) for n in state)
            assert all(t.is_contiguous() for t in got_state.values())
        prob, *new_state = StreamingWrapper(model)(frame, *initial_state(model))
    assert torch.equal(prob, torch.softmax(logits, dim=1)[:, 1:2])
    assert [t.shape for t in new_state] == [state[n].shape for n in state_names(model)]
    with pytest.raises(ValueError, match="keep batch and frame size"):
        model(frame, {n: torch.zeros(1, 2, 1, 1) for n in state_names(model)})
    assert [t.shape for t in initial_state(model)] == [(1, 1, 1, 1)] * len(state)


def test_metadata_and_dynamic_axes_in_the_files(exported: Callable) -> None:
    _, info = exported("Deep_mobile_lstmV1", "onnx")
    proto = onnx.load(str(info.path))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props == read_metadata(info.path)
    assert props["recseg.model"] == "Deep_mobile_lstmV1"
    assert props["recseg.state_order"] == "r1=h,r2=c"
    assert props["recseg.inputs"] == "src,r1i,r2i" and props["recseg.outputs"] == "prob,r1o,r2o"
    assert props["recseg.training_size"] == "32x48" and props["recseg.version"]
    assert [i.name for i in proto.graph.input] == ["src", "r1i", "r2i"]
    assert [o.name for o in proto.graph.output] == ["prob", "r1o", "r2o"]
    src = proto.graph.input[0].type.tensor_type.shape.dim
    assert [bool(d.dim_param) for d in src] == [True, False, True, True]  # B, 3, H, W
    assert int(props["recseg.opset"]) == info.opset >= 18
    _, ts = exported("Deep_mobile_lstmV1", "torchscript")
    extra = {"recseg.json": ""}
    torch.jit.load(str(ts.path), _extra_files=extra)
    stored = json.loads(extra["recseg.json"])
    assert stored == read_metadata(ts.path)
    assert stored["recseg.state_order"] == "r1=h,r2=c" and stored["recseg.format"] == "torchscript"


def test_failed_check_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "model.pt"
    out.write_bytes(b"previous export")
    monkeypatch.setattr(deploy, "TOLERANCE", -1.0)  # no difference can pass now
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_model(_loaded("Deep+_mobile"), "torchscript", out, size=SIZE)
    assert out.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_bad_arguments_raise_input_errors(tmp_path: Path) -> None:
    loaded = _loaded("Deep+_mobile")
    for fmt, name, needle in [
        ("onnx", "m.pt", ".onnx"),
        ("torchscript", "m.onnx", ".pt or .torchscript"),
        ("tflite", "m.tflite", "--format"),
    ]:
        with pytest.raises(InputError, match=needle):
            export_model(loaded, fmt, tmp_path / name)
    with pytest.raises(InputError, match="--opset"):
        export_model(loaded, "onnx", tmp_path / "m.onnx", opset=17)
    assert not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def champion(mlflow_server: str) -> Iterator[str]:
    """Deep_mobile_gruV3 logged to the test server (trained at 32x48) as NAME@champion."""
    name = f"export-{uuid.uuid4().hex[:8]}"
    with pytest.MonkeyPatch.context() as mp:  # set_tracking_uri also sets MLFLOW_TRACKING_URI
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        mlflow.set_tracking_uri(mlflow_server)
        try:
            experiment = mlflow.create_experiment(name)
            with mlflow.start_run(experiment_id=experiment):
                info = log_clip_model(
                    _loaded("Deep_mobile_gruV3").model,
                    "Deep_mobile_gruV3",
                    registered_model_name=name,
                    size=SIZE,
                )
            version = info.registered_model_version
            mlflow.MlflowClient().set_registered_model_alias(name, "champion", version)
        finally:
            mlflow.set_tracking_uri(None)
    yield f"models:/{name}@champion"


def test_cli_exports_a_registered_model(champion: str, mlflow_server: str, tmp_path: Path) -> None:
    out = tmp_path / "new" / "folder" / "gru.pt"
    env = {"MLFLOW_TRACKING_URI": mlflow_server, "OMP_NUM_THREADS": "1"}
    args = ("export", "--model", champion, "--format", "torchscript", "-o", str(out))
    result = run_recseg(*args, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    assert lines[0].startswith(f"exported Deep_mobile_gruV3 to {out} (torchscript, ")
    assert "inputs src,r1i, outputs prob,r1o; max diff vs PyTorch " in lines[0]
    assert sorted(p.name for p in out.parent.iterdir()) == ["gru.pt"]
    assert out.stat().st_mode & 0o777 == 0o644
    meta = read_metadata(out)
    assert meta["recseg.source"] == champion and meta["recseg.example_size"] == "32x48"
    assert meta["recseg.run_id"]
    expected = _pytorch(_loaded("Deep_mobile_gruV3").model, _frames(1, 40, 56, seed=3))
    got = _torchscript(out, _frames(1, 40, 56, seed=3), 1)
    want = expected[-1][0]
    np.testing.assert_allclose(got[-1][0], want, atol=runtime_atol(want), rtol=0)


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--model", "MODEL", "--format", "tflite", "-o", "m.onnx"], ["--format", "tflite"]),
        (
            ["--model", "models:/no-such-model@champion", "--format", "onnx", "-o", "m.onnx"],
            ["models:/no-such-model@champion", "not found"],
        ),
        (["--model", "MODEL", "--format", "onnx", "-o", "m.pt"], ["-o m.pt", ".onnx"]),
        (["--model", "MODEL", "--format", "torchscript", "-o", "m.onnx"], [".torchscript"]),
    ],
)
def test_cli_bad_inputs_one_line(
    champion: str,
    mlflow_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    args: list[str],
    needles: list[str],
) -> None:
    args = [champion if a == "MODEL" else a for a in args]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.chdir(tmp_path)
    one_error_line(recseg_in_process(["export", *args], capsys), *needles)
    assert not list(tmp_path.iterdir())
