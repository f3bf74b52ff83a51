"""Segmentation losses on logits ``(N, C, H, W)`` or ``(B, T, C, H, W)``.

Targets are integer label maps ``(N, H, W)`` or ``(B, T, H, W)``; pixels labelled
``ignore_index`` (default 255, the loader's padding) count nowhere, every other label must lie
in ``[0, C - 1]``. A clip is flattened to ``B*T`` frames and every frame is one sample.
Losses are computed in float32 (float16 and bfloat16 logits are cast up).
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


def _valid_mask(target: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """``target != ignore_index``; raise ValueError if another label lies outside the classes."""
    valid = target != ignore_index
    bad = valid & ((target < 0) | (target >= num_classes))
    if bool(bad.any()):
        raise ValueError(
            f"target labels must lie in [0, {num_classes - 1}] or equal ignore_index "
            f"{ignore_index}, got {int(target[bad][0])}"
        )
    return valid


def soft_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-4, ignore_index: int = 255
) -> torch.Tensor:
    """nnU-Net soft Dice (batch_dice=False, do_bg=True, square=False); see :class:`SoftDiceLoss`."""
    logits, target = _flatten(logits, target)
    valid = _valid_mask(target, logits.shape[1], ignore_index)
    mask = valid.unsqueeze(1).to(logits.dtype)
    probs = torch.softmax(logits, dim=1) * mask
    labels = torch.where(valid, target, 0)
    onehot = F.one_hot(labels, num_classes=logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    onehot = onehot * mask
    axes = (2, 3)
    tp = (probs * onehot).sum(axes)
    fp = (probs * (1 - onehot)).sum(axes)  # probs are 0 on ignored pixels
    fn = ((1 - probs) * onehot).sum(axes)  # onehot is 0 on ignored pixels
    dice = (2 * tp + smooth) / (2 * tp + fp + fn + smooth).clamp_min(1e-8)
    frames = valid.flatten(1).any(1).to(dice.dtype)  # frames with at least one valid pixel
    terms = (frames.sum() * dice.shape[1]).clamp_min(1)
    return ((1 - dice) * frames.unsqueeze(1)).sum() / terms  # 0 (with grad) if none is valid


def cross_entropy_loss(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255
) -> torch.Tensor:
    """Mean pixel-wise cross entropy over the valid pixels (``target != ignore_index``)."""
    logits, target = _flatten(logits, target)
    valid = _valid_mask(target, logits.shape[1], ignore_index)
    total = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum")
    return total / valid.sum().clamp_min(1)  # 0 (with grad) if no pixel is valid


class SoftDiceLoss(nn.Module):
    """Soft Dice loss: ``1 - mean_{b,c} (2TP + s) / (2TP + FP + FN + s)``.

    TP, FP and FN are soft counts per sample ``b`` (frame) and class ``c`` from softmax
    probabilities and the one-hot target over the pixels whose target is not
    ``ignore_index``; background is included. The mean runs over frames with at least one
    such pixel (0 if there is none).
    """

    def __init__(self, smooth: float = 1e-4, ignore_index: int = 255) -> None:
        super().__init__()
        self.smooth = smooth
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return soft_dice_loss(logits, target, self.smooth, self.ignore_index)

    def extra_repr(self) -> str:
        return f"smooth={self.smooth}, ignore_index={self.ignore_index}"


class CrossEntropyLoss(nn.Module):
    """Mean cross entropy over all pixels whose target is not ``ignore_index`` (0 if none)."""

    def __init__(self, ignore_index: int = 255) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return cross_entropy_loss(logits, target, self.ignore_index)

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}"


class CrossDiceLoss(nn.Module):
    """Average of soft Dice and cross entropy: ``(SoftDice + CrossEntropy) / 2``."""

    def __init__(self, smooth: float = 1e-4, ignore_index: int = 255) -> None:
        super().__init__()
        self.dice = SoftDiceLoss(smooth, ignore_index)
        self.ce = CrossEntropyLoss(ignore_index)

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
