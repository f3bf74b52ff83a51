"""The clip pyfunc: logged to a real server, loaded back, any clip length and frame size."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from importlib.metadata import packages_distributions
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import Model

import recseg
from recseg.errors import InputError
from recseg.models import RecurrentDeepLab, build_model
from recseg.tracking import pyfunc
from recseg.tracking.model_uri import read_model_dir
from recseg.tracking.pyfunc import ClipSegmenter, clip_signature, log_clip_model
from tests.conftest import randomize_norms
from tests.tolerance import logits_atol, probs_atol

MODEL = "Deep_mobile_gruV3"
CUDA = torch.cuda.is_available()
pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:.*input example was not provided:UserWarning"),
    pytest.mark.usefixtures("on_cpu"),
]


@pytest.fixture
def on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loaded models run on the CPU, like the reference (cuDNN may use TF32 on a GPU)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture(scope="module")
def experiment(mlflow_server: str) -> Iterator[str]:
    """A fresh experiment on the test server, which is the tracking URI meanwhile."""
    with pytest.MonkeyPatch.context() as mp:  # set_tracking_uri also sets MLFLOW_TRACKING_URI
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        mlflow.set_tracking_uri(mlflow_server)
        try:
            yield mlflow.create_experiment(f"pyfunc-{uuid.uuid4().hex[:8]}")
        finally:
            mlflow.set_tracking_uri(None)  # back to MLFLOW_TRACKING_URI / MLflow's default


def _log(
    name: str, experiment: str, seed: int, registered: str | None = None
) -> tuple[RecurrentDeepLab, str, str]:
    torch.manual_seed(seed)
    model = randomize_norms(build_model(name), seed).eval()
    with mlflow.start_run(experiment_id=experiment) as run:
        info = log_clip_model(model, name, registered_model_name=registered)
    return model, info.model_uri, run.info.run_id


@pytest.fixture(scope="module")
def logged(experiment: str) -> tuple[RecurrentDeepLab, str, str]:
    return _log(MODEL, experiment, seed=1)


@pytest.fixture(scope="module")
def local_copy(logged: tuple, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The logged model's files, downloaded from the server."""
    dst = tmp_path_factory.mktemp("logged-model")
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=logged[1], dst_path=str(dst)))


def _clip(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((t, 3, h, w), dtype=np.float32)


def _reference_logits(model: RecurrentDeepLab, clip: np.ndarray) -> torch.Tensor:
    """Logits of the network run one frame at a time, state carried: (T, 2, H, W)."""
    out, state = [], None
    with torch.inference_mode():
        for frame in torch.from_numpy(clip):
            logits, state = model(frame[None], state)
            out.append(logits[0])
    return torch.stack(out)


def _reference(model: RecurrentDeepLab, clip: np.ndarray) -> np.ndarray:
    """Foreground probability of the network run one frame at a time, state carried."""
    return torch.softmax(_reference_logits(model, clip), dim=1)[:, 1].numpy()


def _assert_matches(probs: np.ndarray, model: RecurrentDeepLab, clip: np.ndarray) -> None:
    """``probs`` equal the frame-by-frame reference within float32 rounding of its logits."""
    logits = _reference_logits(model, clip)
    expected = torch.softmax(logits, dim=1)[:, 1].numpy()
    np.testing.assert_allclose(probs, expected, atol=probs_atol(logits), rtol=0)


def test_logged_model_matches_the_network_frame_by_frame(logged: tuple) -> None:
    model, uri, _ = logged
    clip = _clip(5, 40, 56)
    loaded = mlflow.pyfunc.load_model(uri)
    # Same process: the imported recseg is used, not the copy under the model's code/.
    assert type(loaded.unwrap_python_model()) is ClipSegmenter
    assert loaded.unwrap_python_model().device.type == "cpu"
    probs = loaded.predict(clip)
    assert probs.shape == (5, 40, 56) and probs.dtype == np.float32
    expected = _reference(model, clip)
    assert expected.std() > 1e-3  # non-trivial output, so the comparison means something
    _assert_matches(probs, model, clip)


def test_runs_uri_loads_and_any_length_size_and_chunking_agree(logged: tuple) -> None:
    model, _, run_id = logged
    loaded = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    clip = _clip(2, 64, 80, seed=1)
    _assert_matches(loaded.predict(clip), model, clip)
    loaded.unwrap_python_model().chunk_frames = 3  # 7 frames: 3 chunks, state carried over
    clip = _clip(7, 40, 56, seed=2)
    _assert_matches(loaded.predict(clip), model, clip)


def test_signature_flavors_and_stored_files(logged: tuple, local_copy: Path) -> None:
    meta = Model.load(str(local_copy))
    assert set(meta.flavors) == {"python_function"}
    assert meta.signature == clip_signature()
    assert meta.signature.inputs.inputs[0].shape == (-1, 3, -1, -1)
    assert meta.signature.outputs.inputs[0].shape == (-1, -1, -1)
    assert not list(local_copy.rglob("*.pkl"))  # logged from code: nothing to unpickle
    assert "set_model(ClipSegmenter())" in (local_copy / "clip_segmenter.py").read_text()
    big = [p for p in local_copy.rglob("*") if p.is_file() and p.stat().st_size > 1_000_000]
    assert [p.name for p in big] == ["weights.pt"]
    stored = torch.load(big[0], weights_only=True)
    expected = logged[0].state_dict()
    assert stored.keys() == expected.keys()
    assert all(torch.equal(stored[k], expected[k]) for k in expected)
    assert (local_copy / "code" / "recseg" / "tracking" / "pyfunc.py").is_file()
    arch = json.loads(next(local_copy.rglob("architecture.json")).read_text())
    assert arch["model"] == MODEL and arch["options"]["pretrained"] is None
    reqs = (local_copy / "requirements.txt").read_text().split()
    assert set(pyfunc.pip_requirements()) <= set(reqs)


def test_model_logged_before_norm_existed_loads_as_batchnorm(
    logged: tuple, local_copy: Path, tmp_path: Path
) -> None:
    """An older recseg logged no ``norm`` (its models have BatchNorm): the pyfunc and
    ``load_network`` rebuild BatchNorm and its weights load strictly."""
    arch = json.loads(next(local_copy.rglob("architecture.json")).read_text())
    assert arch["options"]["norm"] == "group"  # logged resolved
    old = shutil.copytree(local_copy, tmp_path / "old-model")
    torch.manual_seed(5)
    bn = randomize_norms(build_model(MODEL, norm="batch"), 5).eval()
    del arch["options"]["norm"]
    next(old.rglob("architecture.json")).write_text(json.dumps(arch))
    torch.save(bn.state_dict(), next(old.rglob("weights.pt")))
    clip = _clip(3, 40, 56, seed=5)
    probs = mlflow.pyfunc.load_model(str(old)).predict(clip)
    _assert_matches(probs, bn, clip)
    network = read_model_dir(old, str(old)).model
    assert network.options.norm == "batch"
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules())


def test_non_recurrent_model_registered(experiment: str) -> None:
    registered = f"recseg-{uuid.uuid4().hex[:8]}"
    model, _, _ = _log("Deep+_mobile", experiment, seed=2, registered=registered)
    clip = _clip(3, 48, 40, seed=3)
    probs = mlflow.pyfunc.load_model(f"models:/{registered}/1").predict(clip)
    _assert_matches(probs, model, clip)


@pytest.mark.skipif(not CUDA, reason="needs a GPU")
def test_runs_on_cuda_when_available(logged: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    loaded = mlflow.pyfunc.load_model(logged[1])
    assert loaded.unwrap_python_model().device.type == "cuda"
    clip = _clip(9, 40, 56, seed=4)
    # TF32/cuDNN kernels on a GPU: a float16-sized tolerance at the logits' magnitude
    logits = _reference_logits(logged[0], clip)
    atol = logits_atol(logits.half()) / 4
    np.testing.assert_allclose(loaded.predict(clip), _reference(logged[0], clip), atol=atol)


def test_wrong_inputs_raise(logged: tuple) -> None:
    loaded = mlflow.pyfunc.load_model(logged[1])
    with pytest.raises((MlflowException, ValueError), match="shape"):
        loaded.predict(_clip(2, 40, 56)[:, :2])
    segmenter = loaded.unwrap_python_model()
    for bad in (_clip(2, 40, 56)[0], _clip(2, 40, 56)[:, :2], _clip(2, 8, 56)):
        with pytest.raises(ValueError, match=r"\(T, 3, H, W\)"):
            segmenter.predict(None, bad)
    with pytest.raises(InputError, match="does not name"):
        log_clip_model(build_model("Deep+_mobile"), MODEL)
    with pytest.raises(RuntimeError, match="load_context"):
        ClipSegmenter().predict(None, _clip(1, 40, 56))


def _third_party_imports(files: list[Path]) -> set[str]:
    names: set[str] = set()
    for file in files:
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"__future__", "recseg"}


def test_requirements_cover_what_the_model_code_imports() -> None:
    root = Path(recseg.__file__).parent
    files = [root / "__init__.py", root / "errors.py", *(root / "models").glob("*.py")]
    files += [root / "tracking" / "__init__.py", root / "tracking" / "pyfunc.py"]
    dists = packages_distributions()
    pinned = {r.split("==")[0] for r in pyfunc.pip_requirements()}
    for module in _third_party_imports(files):
        assert pinned & {d.lower() for d in dists[module]}, f"{module} is not pinned"
    assert all("==" in r and "+" not in r for r in pyfunc.pip_requirements())


def test_loads_where_recseg_is_not_installed(local_copy: Path, tmp_path: Path) -> None:
    """A fresh interpreter without recseg's editable finder imports recseg from the model."""
    script = f"""
import sys
sys.meta_path = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
try:
    import recseg
    raise SystemExit("recseg is importable before loading: " + recseg.__file__)
except ImportError:
    pass
import mlflow.pyfunc, numpy as np
model = mlflow.pyfunc.load_model({str(local_copy)!r})
import recseg
assert recseg.__file__.startswith({str(local_copy)!r}), recseg.__file__
print(model.predict(np.full((2, 3, 32, 32), 0.5, dtype=np.float32)).shape)
"""
    env = {
        **os.environ,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PYTHONPATH": "",
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("(2, 32, 32)")
