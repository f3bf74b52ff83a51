"""``--init-from``: start a new run from another model's weights.

Every tensor whose name and shape match is copied: a recurrent model (GRU/LSTM at the decoder
or output) warm-starts from a trained plain model of the same backbone, and only its recurrent
unit starts from scratch. Training then continues with the run's own schedule.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from recseg.errors import InputError
from recseg.models.deeplab import RecurrentDeepLab
from recseg.models.loaded import LoadedModel


def warm_start(model: RecurrentDeepLab, uri: str, load: Callable[[str], LoadedModel]) -> str:
    """Copy the matching weights of the model at ``uri`` into ``model``; ``"copied/total"``.

    ``load`` reads the model at a URI (the tracked job passes
    :func:`recseg.tracking.model_uri.load_network`). ``InputError`` (one line) when ``uri``
    names no recseg model or nothing matches."""
    try:
        with torch.random.fork_rng():  # building the source model must not move the seed
            source = load(uri).model.state_dict()
    except InputError as exc:
        raise InputError(f"--init-from: {exc}") from None
    target = model.state_dict()
    matched = {
        k: v for k, v in source.items() if k in target and tuple(target[k].shape) == tuple(v.shape)
    }
    if not any(k in target and target[k].is_floating_point() for k in matched):
        raise InputError(f"--init-from {uri}: none of its weights fit this model's layers")
    model.load_state_dict(matched, strict=False)
    return f"{len(matched)}/{len(target)}"
