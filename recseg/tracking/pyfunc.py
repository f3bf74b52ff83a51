"""A trained model as an MLflow pyfunc that segments a clip of any length and size.

The model is logged as a plain ``python_function`` model "from code" (a three-line script that
builds a ``ClipSegmenter``; nothing is pickled), the weights as one ``torch.save``d state dict,
the architecture as JSON and the ``recseg`` package as code. ``mlflow.pytorch`` is not used:
MLflow 3 exports a ``torch.export`` program by default, which fixes the clip length.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import torch
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types import Schema, TensorSpec

import recseg
from recseg.errors import InputError
from recseg.models import RecurrentDeepLab, model_spec
from recseg.tracking.model_uri import build_network

WEIGHTS, ARCHITECTURE = "weights", "architecture"
CHUNK_FRAMES = 8
MIN_SIZE = 16
EXPECTED = "(T, 3, H, W) float32 in [0, 1] with T >= 1 and H, W >= 16"
# Distributions the model script and the logged recseg code import (checked by a test).
REQUIREMENTS = ("mlflow", "numpy", "torch", "torchvision")


class ClipSegmenter(mlflow.pyfunc.PythonModel):
    """``predict(clip (T, 3, H, W) float32 in [0, 1]) -> foreground probability (T, H, W)``.

    Frames go through the model ``chunk_frames`` at a time; the recurrent state carries over
    between chunks, so the result does not depend on the chunk size.
    """

    def __init__(self, chunk_frames: int = CHUNK_FRAMES) -> None:
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        self.chunk_frames = chunk_frames
        self._model: RecurrentDeepLab | None = None
        self._device = torch.device("cpu")

    def __getstate__(self) -> dict[str, Any]:
        # Never pickle a loaded network: the weights live in their own artifact.
        return {"chunk_frames": self.chunk_frames}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    @property
    def device(self) -> torch.device:
        """Where the network runs: CUDA when available at load time, else the CPU."""
        return self._device

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Build the architecture from its JSON and load the weights strictly."""
        self._device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model, _ = build_network(
            Path(context.artifacts[ARCHITECTURE]), Path(context.artifacts[WEIGHTS]), self._device
        )
        self._model = model.to(self._device).eval()

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext | None,
        model_input: np.ndarray,
        params: dict[str, Any] | None = None,
    ) -> np.ndarray:
        """Foreground probability ``softmax(logits)[:, 1]`` as float32 ``(T, H, W)``."""
        if self._model is None:
            raise RuntimeError("ClipSegmenter.predict needs load_context first")
        clip = _check_clip(model_input)
        t, _, h, w = clip.shape
        out = np.empty((t, h, w), dtype=np.float32)
        state = None
        with torch.inference_mode():
            for start in range(0, t, self.chunk_frames):
                stop = min(start + self.chunk_frames, t)
                frames = torch.from_numpy(np.ascontiguousarray(clip[start:stop]))
                logits, state = self._model(frames.to(self._device).unsqueeze(0), state)
                probs = torch.softmax(logits.float(), dim=2)[0, :, 1]
                out[start:stop] = probs.cpu().numpy()
        return out


def _check_clip(model_input: Any) -> np.ndarray:
    """The input as a float32 ``(T, 3, H, W)`` array; ``ValueError`` naming the shape otherwise."""
    clip = np.asarray(model_input)
    ok = clip.ndim == 4 and clip.shape[0] >= 1 and clip.shape[1] == 3
    if not ok or min(clip.shape[2:]) < MIN_SIZE:
        raise ValueError(f"clip must have shape {EXPECTED}, got shape {clip.shape}")
    if not np.issubdtype(clip.dtype, np.floating):
        raise ValueError(f"clip must be {EXPECTED}, got dtype {clip.dtype}")
    return clip.astype(np.float32, copy=False)


def clip_signature() -> ModelSignature:
    """Any clip length and frame size in; one probability map per frame out."""
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, -1, -1))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, -1))]),
    )


def pip_requirements() -> list[str]:
    """The installed versions of what the model needs, pinned (local labels like ``+cu128``
    dropped so the pins install from PyPI)."""
    return [f"{name}=={version(name).split('+')[0]}" for name in REQUIREMENTS]


MODEL_CODE = """\
\"\"\"recseg's clip segmenter as an MLflow model from code (nothing is unpickled).\"\"\"

from mlflow.models import set_model

from recseg.tracking.pyfunc import ClipSegmenter

set_model(ClipSegmenter())
"""


def log_clip_model(
    model: RecurrentDeepLab,
    model_name: str,
    *,
    name: str = "model",
    registered_model_name: str | None = None,
    size: tuple[int, int] | None = None,
) -> ModelInfo:
    """Log ``model`` (built as ``model_name``) as a ``ClipSegmenter`` pyfunc in the active run.

    The weights are stored once, as a CPU state dict. The model is logged "from code" (a
    three-line script that builds a ``ClipSegmenter``), so loading it unpickles nothing.
    ``size`` (H, W), the frame size it was trained at, is recorded with the architecture.
    """
    if model_spec(model_name) != model.spec:
        raise InputError(f"model_name '{model_name}' does not name this model's architecture")
    architecture = {
        "model": model_name,
        "options": {**model.options.to_dict(), "pretrained": None},
        "size": list(size) if size else None,
    }
    with tempfile.TemporaryDirectory(prefix="recseg-pyfunc-") as tmp:
        weights, arch = Path(tmp, "weights.pt"), Path(tmp, "architecture.json")
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, weights)
        arch.write_text(json.dumps(architecture, indent=2))
        code = Path(tmp, "clip_segmenter.py")
        code.write_text(MODEL_CODE)
        with warnings.catch_warnings():  # "no input example": the signature says it all
            warnings.simplefilter("ignore", UserWarning)
            return _log(name, code, weights, arch, registered_model_name)


def _log(
    name: str, code: Path, weights: Path, arch: Path, registered_model_name: str | None
) -> ModelInfo:
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(code),
        artifacts={WEIGHTS: str(weights), ARCHITECTURE: str(arch)},
        signature=clip_signature(),
        pip_requirements=pip_requirements(),
        code_paths=[str(Path(recseg.__file__).parent)],
        registered_model_name=registered_model_name,
    )
