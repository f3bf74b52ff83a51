"""Pretrained ImageNet weights for a torchvision backbone: a local file holding a torchvision
state dict, loaded strictly without unpickling any object; nothing is ever downloaded."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from recseg.errors import InputError


def load_pretrained(model: nn.Module, pretrained: str | Path, name: str) -> str:
    """Load the local file ``pretrained`` into torchvision's ``name`` model (strict); returns
    what was loaded, for the run's params."""
    path = Path(pretrained)
    data = _read_file(path)
    source = str(path)
    _load_strict(model, data, source, name)
    return source


def _read_file(path: Path) -> Any:
    """A local weights file's contents (tensors and plain containers only)."""
    if not path.is_file():
        raise InputError(f"pretrained weights file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # weights_only=True refused an object
        raise InputError(
            f"pretrained weights {path} hold Python objects besides tensors: refused, they "
            "could run code"
        ) from None
    except Exception as exc:
        raise InputError(f"cannot read pretrained weights {path}: {type(exc).__name__}") from exc


def _load_strict(model: nn.Module, data: Any, source: str, name: str) -> None:
    """Load a (possibly wrapped, ``module.``-prefixed) state dict into ``model`` strictly."""
    for key in ("state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict):
        raise InputError(f"pretrained weights {source} do not hold a state dict")
    data = {k.removeprefix("module."): v for k, v in data.items()}
    try:
        model.load_state_dict(data, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise InputError(
            f"pretrained weights {source} do not fit torchvision {name}: {first}"
        ) from exc
