"""Checkpoints: the complete training state in one file, written atomically, loaded safely.

A checkpoint is a ``torch.save``d dict of tensors and plain Python values only, so it loads with
``torch.load(weights_only=True)`` (no arbitrary unpickling). ``latest.pt`` holds everything a
resumed job needs; ``best.pt`` holds the best weights and the metric that chose them.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recseg.data.store import atomic_write_bytes
from recseg.errors import InputError

FORMAT = "recseg-checkpoint"
VERSION = 1
LATEST = "latest.pt"
BEST = "best.pt"


def rng_state() -> dict[str, Any]:
    """Every random generator's state: Python, NumPy, torch CPU and CUDA."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])


def to_cpu(obj: Any) -> Any:
    """A copy of nested dicts/lists/tuples with every tensor moved to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def save(path: str | Path, payload: dict[str, Any]) -> int:
    """Write ``payload`` (plus format and version) atomically to ``path``; returns bytes."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **to_cpu(payload)}, buf)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return len(data)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely; ``InputError`` names a missing, truncated or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, pickle error, unsafe content
        reason = " ".join(str(exc).split())[:160]
        raise InputError(
            f"checkpoint {path} is truncated or not a recseg checkpoint ({reason}); delete it "
            "to resume from the run's artifact copy"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"checkpoint {path} is not a recseg checkpoint")
    if payload.get("version", 0) > VERSION:
        raise InputError(
            f"checkpoint {path} has version {payload['version']}; this recseg reads up to {VERSION}"
        )
    return payload
