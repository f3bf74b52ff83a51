"""Pretrained ImageNet weights for a torchvision backbone.

``pretrained="imagenet"`` resolves torchvision's default weights for the backbone
(``MobileNet_V2_Weights.DEFAULT``, ...) and reads them from the torch hub cache
(``$TORCH_HOME/hub/checkpoints/``, default ``~/.cache/torch``), downloading them there first
(hash-checked, with a bounded socket timeout) when the file is missing. Any other value is a
local file holding a torchvision state dict. Both load strictly and unpickle no objects.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision import models as tvm

from recseg.errors import InputError

IMAGENET = "imagenet"
DOWNLOAD_TIMEOUT = 60.0  # seconds a socket may wait for the network before the download fails


def imagenet_weights(name: str) -> tvm.WeightsEnum:
    """torchvision's default ImageNet weights of backbone ``name``."""
    return tvm.get_model_weights(name).DEFAULT


def cache_file(weights: tvm.WeightsEnum) -> Path:
    """Where torch hub keeps ``weights``: ``<hub dir>/checkpoints/<file name of the URL>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def load_pretrained(model: nn.Module, pretrained: str | Path, name: str) -> str:
    """Load ``pretrained`` (``"imagenet"`` or a local file) into torchvision's ``name`` model
    (strict); returns what was loaded, for the run's params."""
    if str(pretrained) == IMAGENET:
        weights = imagenet_weights(name)
        path = cache_file(weights)
        data = _imagenet_state_dict(weights, path)
        source = f"{weights} ({path})"
    else:
        path = Path(pretrained)
        data = _read_file(path)
        source = str(path)
    _load_strict(model, data, source, name)
    return source


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """A default socket timeout of at most ``seconds`` (urllib's downloads have none)."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds if old is None else min(old, seconds))
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _reason(exc: BaseException) -> str:
    """One line saying why: urllib's ``reason`` when it has one, else the message."""
    reason = getattr(exc, "reason", None) or exc
    text = " ".join(str(reason).split())
    return (text or type(exc).__name__)[:300]


def _imagenet_state_dict(weights: tvm.WeightsEnum, path: Path) -> dict[str, Any]:
    """The cached file's state dict, downloaded first when it is not there."""
    cached = path.is_file()
    # torch hub announces a download on stdout: swallowed, so a command's output stays its
    # own and a failed download says one line (a terminal shows the download's progress bar)
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT), contextlib.redirect_stdout(io.StringIO()):
            return weights.get_state_dict(
                progress=sys.stderr.isatty(), check_hash=True, weights_only=True
            )
    except Exception as exc:
        if cached or path.is_file():  # the file is there but does not load
            raise InputError(_unreadable(path, exc)) from None
        raise InputError(
            f"--pretrained imagenet: cannot download {weights.url} ({_reason(exc)}); place that "
            f"file at {path} (TORCH_HOME)"
        ) from None


def _unreadable(path: Path, exc: BaseException) -> str:
    if isinstance(exc, pickle.UnpicklingError) and "Unsupported global" in str(exc):
        return (
            f"--pretrained imagenet: the cached file {path} holds Python objects besides "
            "tensors: refused, they could run code (delete it to download it again)"
        )
    if isinstance(exc, pickle.UnpicklingError):
        why = "not a torch weights file"
    else:  # torch's messages go on for sentences: the first says what
        why = _reason(exc).split(". ")[0]
    return (
        f"--pretrained imagenet: the cached file {path} is damaged ({why}); delete it to "
        "download it again"
    )


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
