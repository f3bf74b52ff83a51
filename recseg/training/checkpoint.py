"""Checkpoints: the complete training state in one file, written atomically, checksummed,
loaded safely.

A checkpoint is a ``torch.save``d dict of tensors and plain Python values only, so it loads with
``torch.load(weights_only=True)`` (no arbitrary unpickling). On disk it is ``MAGIC``, the SHA-256
of the rest, then the ``torch.save`` bytes: a truncated or damaged file fails the checksum and is
never loaded. ``latest.pt`` holds everything a resumed job needs, ``previous.pt`` the latest one
before it (the fallback when ``latest.pt`` is damaged); ``best.pt`` holds the best weights and
the metric that chose them.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recseg.data.store import atomic_write_bytes
from recseg.errors import InputError
from recseg.faults import fail_point

FORMAT = "recseg-checkpoint"
VERSION = 2  # 2: checksummed (MAGIC + SHA-256); 1: plain torch.save, still read
MAGIC = b"RECSEGCK"
LATEST = "latest.pt"
PREVIOUS = "previous.pt"
BEST = "best.pt"


class CorruptCheckpoint(InputError):
    """A checkpoint file that is truncated, damaged or not a checkpoint at all."""


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


def seal(raw: bytes) -> bytes:
    """``torch.save`` bytes as a checkpoint file's bytes (``MAGIC``, SHA-256, ``raw``)."""
    return MAGIC + hashlib.sha256(raw).digest() + raw


def unseal(data: bytes, path: Path) -> bytes:
    """The ``torch.save`` bytes of a checkpoint file, checked; a version-1 file as it is."""
    if not data.startswith(MAGIC):
        return data  # version 1 (no checksum): torch.load still checks the zip's structure
    digest, raw = data[len(MAGIC) : len(MAGIC) + 32], data[len(MAGIC) + 32 :]
    if hashlib.sha256(raw).digest() != digest:
        raise CorruptCheckpoint(
            f"checkpoint {path} is damaged or truncated (checksum mismatch, {len(data)} bytes)"
        )
    return raw


def save(path: str | Path, payload: dict[str, Any], keep_previous: bool = False) -> int:
    """Write ``payload`` (plus format and version) to ``path`` atomically: a temp file, fsynced,
    renamed over ``path``. ``keep_previous`` first keeps the old file as ``previous.pt`` (a hard
    link, so some complete checkpoint is there at every instant). Returns the bytes written."""
    path = Path(path)
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **to_cpu(payload)}, buf)
    data = seal(buf.getvalue())

    def before_replace() -> None:
        fail_point("checkpoint-temp")
        if keep_previous and path.exists():
            _keep(path, path.with_name(PREVIOUS))
            fail_point("checkpoint-rotate")

    atomic_write_bytes(path, data, before_replace)
    return len(data)


def _keep(path: Path, previous: Path) -> None:
    """Make ``previous`` a complete copy of ``path`` atomically (hard link, else a copy)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{previous.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        os.link(path, tmp)
    except OSError:  # no hard links on this file system
        import shutil

        shutil.copyfile(path, tmp)
    os.replace(tmp, previous)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely; ``InputError`` names a missing file, ``CorruptCheckpoint`` a
    truncated, damaged or foreign one."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist")
    raw = unseal(path.read_bytes(), path)
    try:
        payload = torch.load(io.BytesIO(raw), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # what weights_only refuses: arbitrary Python objects
        raise CorruptCheckpoint(
            f"checkpoint {path} holds Python objects beyond tensors and plain values; refused "
            "(recseg never unpickles arbitrary objects)"
        ) from None
    except Exception as exc:  # truncated zip, foreign file
        reason = " ".join(str(exc).split())[:160]
        raise CorruptCheckpoint(
            f"checkpoint {path} is truncated or not a recseg checkpoint ({reason})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CorruptCheckpoint(f"checkpoint {path} is not a recseg checkpoint")
    if payload.get("version", 0) > VERSION:
        raise InputError(
            f"checkpoint {path} has version {payload['version']}; this recseg reads up to {VERSION}"
        )
    return payload
