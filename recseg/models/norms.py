"""Normalisation layers: GroupNorm, BatchNorm with frozen statistics, or plain BatchNorm.

Training streams batches of 2-8 highly correlated video frames: BatchNorm's running statistics
then differ from the batch statistics it trained with, and the model scores far worse in eval
mode than in train mode. GroupNorm normalises each sample on its own (the same in both modes);
a pretrained backbone can keep its ImageNet BatchNorm statistics frozen instead.
"""

from __future__ import annotations

from torch import nn

from recseg.errors import InputError

# "auto" resolves when a model is built: "frozen" with pretrained weights, else "group".
NORMS = ("auto", "group", "frozen", "batch")
LEGACY_NORM = "batch"  # what a model saved before the ``norm`` option existed has
MAX_GROUPS, MIN_GROUP_CHANNELS = 32, 4


def resolve_norm(norm: str, pretrained: object) -> str:
    """``norm`` with ``"auto"`` resolved; ``InputError`` for an unknown value."""
    if norm not in NORMS:
        raise InputError(f"norm must be one of {', '.join(NORMS)}, got '{norm}'")
    if norm == "auto":
        return "frozen" if pretrained else "group"
    return norm


def group_count(channels: int) -> int:
    """The largest g <= 32 that divides ``channels`` with at least 4 channels per group (one
    group below 8 channels)."""
    if channels < 2 * MIN_GROUP_CHANNELS:
        return 1
    return max(
        g
        for g in range(1, MAX_GROUPS + 1)
        if channels % g == 0 and channels // g >= MIN_GROUP_CHANNELS
    )


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that always normalises with its running statistics, which never update (it
    stays in eval mode whatever ``train()`` says); its affine weight and bias still train."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.training = False

    def train(self, mode: bool = True) -> FrozenBatchNorm2d:
        return super().train(False)


def group_norm(channels: int, eps: float = 1e-5) -> nn.GroupNorm:
    """GroupNorm over ``channels`` with :func:`group_count` groups."""
    return nn.GroupNorm(group_count(channels), channels, eps=eps)


def head_kind(norm: str) -> str:
    """The norm of the head's layers (ASPP, projection, classifier, branches): BatchNorm for
    ``"batch"``, GroupNorm for ``"group"`` and ``"frozen"``."""
    return "batch" if norm == "batch" else "group"


def head_norm(norm: str, channels: int) -> nn.Module:
    """A new head norm layer over ``channels`` (see :func:`head_kind`)."""
    return nn.BatchNorm2d(channels) if head_kind(norm) == "batch" else group_norm(channels)


def _replacement(bn: nn.BatchNorm2d, kind: str) -> nn.Module:
    """``bn`` as ``kind`` ("group" or "frozen"), its affine weights (and statistics) kept."""
    if kind == "group":
        new: nn.Module = group_norm(bn.num_features, bn.eps)
        new.load_state_dict({"weight": bn.weight.detach(), "bias": bn.bias.detach()})
    else:
        new = FrozenBatchNorm2d(bn.num_features, bn.eps, bn.momentum)
        new.load_state_dict(bn.state_dict())
    return new


def convert_norms(module: nn.Module, kind: str) -> int:
    """Replace every ``BatchNorm2d`` in ``module`` (in place) by GroupNorm (``"group"``) or
    :class:`FrozenBatchNorm2d` (``"frozen"``); ``"batch"`` leaves them. Returns how many."""
    if kind == "batch":
        return 0
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.BatchNorm2d:
                setattr(parent, name, _replacement(child, kind))
                count += 1
    return count
