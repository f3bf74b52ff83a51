"""``LoadedModel``: a network loaded from a logged model, with what its artifact says about it.

``recseg.tracking.model_uri`` produces it; inference, deploy and evaluate consume it, so it lives
here, below all of them.
"""

from __future__ import annotations

import dataclasses

from recseg.models.deeplab import RecurrentDeepLab


@dataclasses.dataclass
class LoadedModel:
    """A network in eval mode with what its model artifact says about it."""

    model: RecurrentDeepLab
    name: str  # the --model name it was built with
    uri: str
    run_id: str | None  # the run that logged it, when known
    size: tuple[int, int] | None  # the (H, W) it was trained at, when recorded
