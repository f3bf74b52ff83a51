"""Export a recseg network as TorchScript or ONNX with its recurrent state as explicit inputs and
outputs (RobustVideoMatting style), checked against PyTorch before the file appears.

Program: ``(src, r1i, r2i, ...) -> (prob, r1o, r2o, ...)``.

* ``src``: (B, 3, H, W) float32 RGB in [0, 1] (ImageNet normalisation happens inside).
* ``rKi``: the K-th tensor of the model's state, in the order of :func:`state_names` (ConvGRU
  ``h``; ConvLSTM ``h, c``; the ``-prev`` variants add ``prev1, prev2``). On a clip's first
  frame pass zeros of shape (1, 1, 1, 1) for each; the model broadcasts them to the real shape.
* ``prob``: (B, 1, H, W) foreground probability, ``softmax(logits, dim=1)[:, 1:2]``.
* ``rKo``: the new state, fed back as ``rKi`` with the next frame.

Non-recurrent models take ``src`` alone and return ``(prob,)``. Batch, H and W are dynamic in
both formats (``torch.jit.trace`` records the shapes symbolically; the ONNX program comes from
``torch.onnx.export(..., dynamo=True)`` with ``Dim.DYNAMIC`` axes, which writes opset 18 or newer).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

import recseg
from recseg.data.paths import write_failure
from recseg.deploy import MAX_OPSET, MIN_OPSET, check_output
from recseg.errors import InputError
from recseg.models import RecurrentDeepLab
from recseg.models.loaded import LoadedModel

DEFAULT_SIZE = (270, 512)
TOLERANCE = 1e-4  # max abs difference of prob allowed between the file and PyTorch
CHECK_FRAMES = 3
EXTRA_FILE = "recseg.json"  # TorchScript: the metadata, in the archive's extra/ folder
PLACEHOLDER = (1, 1, 1, 1)  # first-frame state shape


class ExportError(RuntimeError):
    """The exported program does not reproduce PyTorch, or could not be produced."""


@dataclasses.dataclass(frozen=True)
class ExportInfo:
    """What :func:`export_model` wrote."""

    path: Path
    fmt: str
    model: str
    inputs: list[str]
    outputs: list[str]
    state_order: list[str]  # state_order[k] is the state tensor behind r{k+1}i / r{k+1}o
    size: tuple[int, int]  # (H, W) of the example input and the check frames
    training_size: tuple[int, int] | None
    opset: int | None  # ONNX only
    max_diff: float | None  # max abs diff of prob vs PyTorch; None when not checked

    def summary(self) -> str:
        """One line for the user."""
        kind = f"onnx opset {self.opset}" if self.fmt == "onnx" else "torchscript"
        checked = (
            "not checked against PyTorch"
            if self.max_diff is None
            else f"max diff vs PyTorch {self.max_diff:.1e}"
        )
        return (
            f"exported {self.model} to {self.path} ({kind}, inputs {','.join(self.inputs)}, "
            f"outputs {','.join(self.outputs)}; {checked})"
        )


def state_names(model: RecurrentDeepLab) -> list[str]:
    """The model's state tensors in input/output order (``r1`` first); empty if not recurrent."""
    return list(model.unit.state_names) if model.unit is not None else []


def input_names(model: RecurrentDeepLab) -> list[str]:
    """``["src", "r1i", "r2i", ...]``."""
    return ["src"] + [f"r{k}i" for k in range(1, len(state_names(model)) + 1)]


def output_names(model: RecurrentDeepLab) -> list[str]:
    """``["prob", "r1o", "r2o", ...]``."""
    return ["prob"] + [f"r{k}o" for k in range(1, len(state_names(model)) + 1)]


def initial_state(model: RecurrentDeepLab) -> tuple[torch.Tensor, ...]:
    """The first-frame state inputs: zeros of shape (1, 1, 1, 1), one per state tensor."""
    return tuple(torch.zeros(PLACEHOLDER) for _ in state_names(model))


class StreamingWrapper(nn.Module):
    """``forward(src, *state) -> (prob, *new_state)`` around a :class:`RecurrentDeepLab`, the
    state as positional tensors in :func:`state_names` order (see the module docstring)."""

    def __init__(self, model: RecurrentDeepLab) -> None:
        super().__init__()
        self.model = model
        self.names = tuple(state_names(model))

    def forward(self, src: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if len(state) != len(self.names):
            raise ValueError(
                f"expected {len(self.names)} state tensor(s) {list(self.names)}, got {len(state)}"
            )
        carried = dict(zip(self.names, state, strict=True)) if self.names else None
        logits, new_state = self.model(src, carried)
        prob = torch.softmax(logits, dim=1)[:, 1:2]
        return (prob, *(new_state[name] for name in self.names))


def export_model(
    loaded: LoadedModel,
    fmt: str,
    out: Path,
    *,
    size: tuple[int, int] | None = None,
    opset: int = MIN_OPSET,
    check: bool = True,
) -> ExportInfo:
    """Write ``loaded``'s network to ``out`` as ``fmt`` ("torchscript" or "onnx") atomically.

    ``size`` (H, W) is the example input's and the check frames' size (default: the training
    size, else 270x512); the program itself accepts any batch and frame size. With ``check``
    3 frames are streamed through the file (TorchScript via ``torch.jit.load``, ONNX via
    onnxruntime) and through PyTorch; a prob difference above 1e-4 raises ``ExportError`` and
    nothing is written. Runs on the CPU (the model is moved there). ``InputError`` for a bad
    format, suffix or opset.
    """
    out = check_output(fmt, out)
    if fmt == "onnx" and not MIN_OPSET <= opset <= MAX_OPSET:
        raise InputError(f"--opset: must be between {MIN_OPSET} and {MAX_OPSET}, got {opset}")
    size = (int(size[0]), int(size[1])) if size else (loaded.size or DEFAULT_SIZE)
    model = loaded.model.to("cpu").eval()
    wrapper = StreamingWrapper(model).eval()
    meta = _metadata(loaded, fmt, size)
    created = [p for p in reversed(out.parents) if not p.exists()]
    tmp = _temp_beside(out)
    try:
        example = _example(model, size, batch=2)  # batch 2: a batch of 1 would be specialised
        try:
            used = _save_onnx(wrapper, example, tmp, meta, opset) if fmt == "onnx" else None
            if fmt == "torchscript":
                _save_torchscript(wrapper, example, tmp, meta)
        except Exception as exc:  # the exporters' errors are long; keep the first line
            failure = write_failure(exc, out)  # disk full: the user's to fix, one line
            if failure is not None:
                raise failure from exc
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ExportError(f"{fmt} export of {loaded.name} failed: {first}") from exc
        diff = _check(model, tmp, fmt, size) if check else None
        os.chmod(tmp, 0o644)  # mkstemp made it private (0600)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        for folder in created[:1]:  # the outermost folder made for the file, whole
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return ExportInfo(
        path=out,
        fmt=fmt,
        model=loaded.name,
        inputs=input_names(model),
        outputs=output_names(model),
        state_order=state_names(model),
        size=size,
        training_size=loaded.size,
        opset=used,
        max_diff=diff,
    )


def _temp_beside(out: Path) -> Path:
    """An empty temp file in ``out``'s folder (created if missing), same suffix."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(
            prefix=f".{out.stem}.", suffix=f".tmp{out.suffix}", dir=out.parent
        )
    except OSError as exc:
        raise InputError(f"-o {out}: cannot write there ({exc.strerror})") from None
    os.close(fd)
    return Path(name)


def _size_text(size: Sequence[int] | None) -> str:
    return f"{size[0]}x{size[1]}" if size else "unknown"


def _metadata(loaded: LoadedModel, fmt: str, size: tuple[int, int]) -> dict[str, str]:
    model = loaded.model
    names = state_names(model)
    return {
        "recseg.model": loaded.name,
        "recseg.version": recseg.__version__,
        "recseg.source": loaded.uri,
        "recseg.run_id": loaded.run_id or "",
        "recseg.format": fmt,
        "recseg.inputs": ",".join(input_names(model)),
        "recseg.outputs": ",".join(output_names(model)),
        "recseg.state_order": ",".join(f"r{k}={n}" for k, n in enumerate(names, start=1)),
        "recseg.training_size": _size_text(loaded.size),
        "recseg.example_size": _size_text(size),
        "recseg.dynamic_axes": "batch,height,width",
        "recseg.src": "(B, 3, H, W) float32 RGB in [0, 1]",
        "recseg.prob": "(B, 1, H, W) foreground probability softmax(logits, dim=1)[:, 1:2]",
        "recseg.first_frame": "zeros of shape (1, 1, 1, 1) for every state input",
    }


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``recseg.*`` metadata stored in an exported file (ONNX ``metadata_props``,
    TorchScript ``extra/recseg.json``)."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        return {p.key: p.value for p in proto.metadata_props}
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith(f"/extra/{EXTRA_FILE}"))
        return json.loads(archive.read(name))


def _example(model: RecurrentDeepLab, size: tuple[int, int], batch: int) -> tuple:
    gen = torch.Generator().manual_seed(0)
    return (torch.rand(batch, 3, *size, generator=gen), *initial_state(model))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' progress prints, deprecation and tracer warnings and logs: the
    result is checked numerically instead."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript", "torch.export")]
    levels = [log.level for log in loggers]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        for log in loggers:
            log.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for log, level in zip(loggers, levels, strict=True):
                log.setLevel(level)


def _save_torchscript(wrapper: StreamingWrapper, example: tuple, path: Path, meta: dict) -> None:
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(wrapper, example, check_trace=False)
        buffer = io.BytesIO()  # torch's own file writer aborts the process on a full disk
        torch.jit.save(traced, buffer, _extra_files={EXTRA_FILE: json.dumps(meta, indent=1)})
    path.write_bytes(buffer.getvalue())


def _save_onnx(
    wrapper: StreamingWrapper, example: tuple, path: Path, meta: dict, opset: int
) -> int:
    """Export with dynamic batch, H, W (and state shapes); returns the opset written."""
    import onnx

    dyn = torch.export.Dim.DYNAMIC
    shapes: dict = {"src": {0: dyn, 2: dyn, 3: dyn}}
    if wrapper.names:
        shapes["state"] = tuple({0: dyn, 1: dyn, 2: dyn, 3: dyn} for _ in wrapper.names)
    model = wrapper.model
    with _quiet():
        program = torch.onnx.export(
            wrapper,
            example,
            dynamo=True,
            dynamic_shapes=shapes,
            opset_version=opset,
            input_names=input_names(model),
            output_names=output_names(model),
            verbose=False,
        )
    proto = program.model_proto
    used = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    for key, value in {**meta, "recseg.opset": str(used)}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = "recseg streaming segmentation: (src, r1i, ...) -> (prob, r1o, ...)"
    onnx.save_model(proto, str(path))
    return used


def _check(model: RecurrentDeepLab, path: Path, fmt: str, size: tuple[int, int]) -> float:
    """Max abs prob difference between the file and PyTorch over 3 streamed frames."""
    gen = torch.Generator().manual_seed(1)
    frames = [torch.rand(1, 3, *size, generator=gen) for _ in range(CHECK_FRAMES)]
    expected = reference_probs(model, frames)
    got = stream_exported(path, frames)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(got, expected, strict=True))
    if not diff <= TOLERANCE:  # NaN fails too
        raise ExportError(
            f"the exported {fmt} program differs from PyTorch by {diff:.2e} (more than "
            f"{TOLERANCE:g}) on {CHECK_FRAMES} frames at {_size_text(size)}; nothing written"
        )
    return diff


def reference_probs(model: RecurrentDeepLab, frames: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """PyTorch's prob (B, 1, H, W) per frame, state carried (``model(frame, state)``)."""
    out, state = [], None
    with torch.inference_mode():
        for frame in frames:
            logits, state = model(frame, state)
            out.append(torch.softmax(logits, dim=1)[:, 1:2].numpy())
    return out


def stream_exported(path: str | Path, frames: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """Run an exported file frame by frame from the (1, 1, 1, 1) zero state; prob per frame."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return _stream_onnx(path, frames)
    with _quiet():
        program = torch.jit.load(str(path), map_location="cpu")
    n_state = len(read_metadata(path)["recseg.inputs"].split(",")) - 1
    state: tuple = tuple(torch.zeros(PLACEHOLDER) for _ in range(n_state))
    probs = []
    with torch.inference_mode():
        for frame in frames:
            prob, *new_state = program(frame, *state)
            probs.append(prob.numpy())
            state = tuple(new_state)
    return probs


def _stream_onnx(path: Path, frames: Sequence[torch.Tensor]) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.log_severity_level = 3  # errors only
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    state = [np.zeros(PLACEHOLDER, np.float32) for _ in names[1:]]
    probs = []
    for frame in frames:
        prob, *state = session.run(None, dict(zip(names, [frame.numpy(), *state], strict=True)))
        probs.append(prob)
    return probs
