"""Segmentation losses on logits ``(N, C, H, W)`` or ``(B, T, C, H, W)``.

Targets are integer label maps ``(N, H, W)`` or ``(B, T, H, W)``. A clip is flattened to
``B*T`` frames and every frame is one sample. Losses are computed in float32 (float16 and
bfloat16 logits are cast up).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recseg.errors import InputError

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _flatten(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate shapes and return ``(N, C, H, W)`` float logits and ``(N, H, W)`` long target."""
    if logits.ndim == 4:
        expected = (logits.shape[0], *logits.shape[2:])
    elif logits.ndim == 5:
        expected = (*logits.shape[:2], *logits.shape[3:])
    else:
        raise ValueError(
            f"logits must have shape (N, C, H, W) or (B, T, C, H, W), got {tuple(logits.shape)}"
        )
    if tuple(target.shape) != expected:
        raise ValueError(
            f"logits shape {tuple(logits.shape)} and target shape {tuple(target.shape)} "
            f"do not match; expected target shape {expected}"
        )
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise ValueError(f"target must be an integer label tensor, got dtype {target.dtype}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor, got dtype {logits.dtype}")
    if logits.dtype in _LOW_PRECISION:
        logits = logits.float()
    if logits.ndim == 5:
        logits = logits.flatten(0, 1)
        target = target.flatten(0, 1)
    return logits, target.long()


def soft_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-4
) -> torch.Tensor:
    """nnU-Net soft Dice (batch_dice=False, do_bg=True, square=False); see :class:`SoftDiceLoss`."""
    logits, target = _flatten(logits, target)
    probs = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target, num_classes=logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    axes = (2, 3)
    tp = (probs * onehot).sum(axes)
    fp = (probs * (1 - onehot)).sum(axes)
    fn = ((1 - probs) * onehot).sum(axes)
    dice = (2 * tp + smooth) / (2 * tp + fp + fn + smooth).clamp_min(1e-8)
    return 1 - dice.mean()


def cross_entropy_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean pixel-wise cross entropy over every pixel of every frame."""
    logits, target = _flatten(logits, target)
    return F.cross_entropy(logits, target)


class SoftDiceLoss(nn.Module):
    """Soft Dice loss: ``1 - mean_{b,c} (2TP + s) / (2TP + FP + FN + s)``.

    TP, FP and FN are soft counts per sample ``b`` (frame) and class ``c`` from softmax
    probabilities and the one-hot target; background is included.
    """

    def __init__(self, smooth: float = 1e-4) -> None:
        super().__init__()
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return soft_dice_loss(logits, target, self.smooth)

    def extra_repr(self) -> str:
        return f"smooth={self.smooth}"


class CrossEntropyLoss(nn.Module):
    """Mean cross entropy over all pixels."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return cross_entropy_loss(logits, target)


class CrossDiceLoss(nn.Module):
    """Average of soft Dice and cross entropy: ``(SoftDice + CrossEntropy) / 2``."""

    def __init__(self, smooth: float = 1e-4) -> None:
        super().__init__()
        self.dice = SoftDiceLoss(smooth)
        self.ce = CrossEntropyLoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (self.dice(logits, target) + self.ce(logits, target)) / 2


LOSSES: dict[str, type[nn.Module]] = {
    "SoftDice": SoftDiceLoss,
    "CrossEntropy": CrossEntropyLoss,
    "CrossDice": CrossDiceLoss,
}


def loss_names() -> list[str]:
    """Registered loss names, sorted."""
    return sorted(LOSSES)


def build_loss(name: str) -> nn.Module:
    """Instantiate the loss registered as ``name`` with default arguments."""
    try:
        cls = LOSSES[name]
    except KeyError:
        raise InputError(
            f"unknown loss {name!r}; valid losses: {', '.join(loss_names())}"
        ) from None
    return cls()
