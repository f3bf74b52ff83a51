"""Load the network behind a logged recseg model: ``runs:/RID/model``, ``models:/NAME@ALIAS``,
``models:/NAME/VERSION``, ``models:/m-ID`` or a local model folder.

The weights and the architecture JSON that :func:`recseg.tracking.pyfunc.log_clip_model` stored
are read directly, so the caller gets a plain :class:`RecurrentDeepLab` (state and all) rather
than the clip-level pyfunc wrapper.
"""

from __future__ import annotations

import json
import pickle
import tempfile
from pathlib import Path

import mlflow
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import Model

from recseg.config import MODEL_URIS
from recseg.errors import InputError
from recseg.models import RecurrentDeepLab, rebuild_model
from recseg.models.loaded import LoadedModel
from recseg.tracking.runs import quiet_mlflow, refused_message, tracking_server

ARCHITECTURE_FILE = "artifacts/architecture.json"
WEIGHTS_FILE = "artifacts/weights.pt"


def _download(uri: str, dst: Path) -> Path:
    local = Path(uri)
    if local.is_dir():
        return local
    if "://" not in uri and ":/" not in uri:
        raise InputError(f"model {uri}: no such folder, and not a model URI ({MODEL_URIS})")
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
    except MlflowException as exc:
        if refused_message(exc):  # a login or permission problem: the CLI says which
            raise
        reason = str(exc.message if hasattr(exc, "message") else exc).splitlines()[0]
        raise InputError(f"model {uri}: not found on {tracking_server()} ({reason})") from None
    except OSError as exc:
        raise InputError(f"model {uri}: cannot be read ({exc})") from None


def build_network(
    arch_file: Path, weights_file: Path, device: torch.device | str = "cpu"
) -> tuple[RecurrentDeepLab, dict]:
    """The network an architecture JSON describes, with its weights loaded strictly (weights
    only, nothing unpickled); also the architecture dict."""
    arch = json.loads(Path(arch_file).read_text())
    weights = torch.load(weights_file, weights_only=True, map_location=device)
    model = rebuild_model(arch["model"], arch["options"])  # no "norm" (older recseg): BatchNorm
    check_fit(model, weights, arch["model"])
    model.load_state_dict(weights, strict=True)
    return model, arch


class WeightsMismatch(ValueError):
    """The weights file holds another architecture's weights."""


def check_fit(model: torch.nn.Module, weights: object, name: str) -> None:
    """``WeightsMismatch`` (one line: counts and an example) when ``weights`` is not a state
    dict of ``model`` (built as ``name``): missing or unexpected keys, or other shapes."""
    if not isinstance(weights, dict):
        raise WeightsMismatch(f"the weights file holds a {type(weights).__name__}, not weights")
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shapes = [
        k
        for k in own
        if k in weights and tuple(getattr(weights[k], "shape", ())) != tuple(own[k].shape)
    ]
    if not (missing or unexpected or shapes):
        return
    counts = f"{len(missing)} missing, {len(unexpected)} unexpected, {len(shapes)} of other shapes"
    example = (unexpected or missing or shapes)[0]
    raise WeightsMismatch(
        f"the weights do not fit its architecture {name}: they belong to another model "
        f"({counts}, e.g. {example})"
    )


def read_model_dir(folder: Path, uri: str, device: torch.device | str = "cpu") -> LoadedModel:
    """Build the network from a downloaded recseg model folder."""
    arch_file, weights_file = folder / ARCHITECTURE_FILE, folder / WEIGHTS_FILE
    if not arch_file.is_file() or not weights_file.is_file():
        raise InputError(f"model {uri}: not a recseg model (no {ARCHITECTURE_FILE})")
    try:
        model, arch = build_network(arch_file, weights_file, device)
    except WeightsMismatch as exc:
        raise InputError(f"model {uri}: {exc}") from None
    except Exception as exc:  # truncated or foreign file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if isinstance(exc, pickle.UnpicklingError):  # weights_only=True refused an object
            first = "it holds Python objects besides tensors: refused, they could run code"
        raise InputError(f"model {uri}: {WEIGHTS_FILE} cannot be loaded ({first})") from None
    size = arch.get("size")
    run_id = None
    if (folder / "MLmodel").is_file():
        run_id = Model.load(str(folder / "MLmodel")).run_id
    return LoadedModel(
        model=model.to(device).eval(),
        name=arch["model"],
        uri=uri,
        run_id=run_id,
        size=(int(size[0]), int(size[1])) if size else None,
    )


def load_network(uri: str, device: torch.device | str = "cpu") -> LoadedModel:
    """The recseg network at ``uri`` on ``device`` in eval mode; ``InputError`` (one line) when
    the URI names nothing or something that is not a recseg model."""
    quiet_mlflow()
    with tempfile.TemporaryDirectory(prefix="recseg-model-") as tmp:
        folder = _download(uri, Path(tmp))
        return read_model_dir(folder, uri, device)
