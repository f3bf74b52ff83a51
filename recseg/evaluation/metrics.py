"""Split-level segmentation metrics from a confusion matrix, plus temporal flicker.

Everything is accumulated over the whole split (one confusion matrix, one pair of flicker
counts) and only divided at the end; nothing is averaged per frame. A per-class quantity
whose denominator is zero is NaN (undefined), and a mean over classes containing a NaN is
NaN: a split without any person pixels has an undefined foreground IoU, never 1.0.
Target pixels equal to ``ignore_index`` (the loader's padding, 255) count nowhere.
"""

from __future__ import annotations

import math

import torch


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """Element-wise ``num / den`` in float64, NaN where ``den == 0``."""
    num, den = num.double(), den.double()
    return torch.where(den > 0, num / den.clamp_min(1), torch.full_like(num, math.nan))


def metrics_from_confusion(confusion: torch.Tensor) -> dict[str, float]:
    """Metrics from a ``(C, C)`` confusion matrix (rows = true class, columns = predicted).

    Returns ``miou``, ``fg_iou`` (class 1), ``bg_iou`` (class 0), ``dice``, ``fg_dice``,
    ``pixel_accuracy``, ``per_class_accuracy`` (mean per-class recall) and ``pixels``.
    """
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1] or confusion.shape[0] < 2:
        raise ValueError(
            f"confusion must be a square (C, C) matrix with C >= 2, got {tuple(confusion.shape)}"
        )
    conf = confusion.detach().to("cpu", torch.float64)
    tp = conf.diagonal()
    true_count = conf.sum(dim=1)  # TP + FN per class
    pred_count = conf.sum(dim=0)  # TP + FP per class
    fp = pred_count - tp
    fn = true_count - tp
    iou = _ratio(tp, tp + fp + fn)
    dice = _ratio(2 * tp, 2 * tp + fp + fn)
    recall = _ratio(tp, true_count)
    total = conf.sum()
    return {
        "miou": iou.mean().item(),
        "fg_iou": iou[1].item(),
        "bg_iou": iou[0].item(),
        "dice": dice.mean().item(),
        "fg_dice": dice[1].item(),
        "pixel_accuracy": _ratio(tp.sum(), total).item(),
        "per_class_accuracy": recall.mean().item(),
        "pixels": total.item(),
    }


def _check_labels(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = None
) -> None:
    """Raise ValueError unless pred/target are matching integer label maps in range.

    Target pixels equal to ``ignore_index`` (if not None) are allowed; pred must always be in
    range."""
    if pred.shape != target.shape:
        raise ValueError(
            f"pred shape {tuple(pred.shape)} and target shape {tuple(target.shape)} do not match"
        )
    if pred.ndim not in (3, 4):
        raise ValueError(
            f"pred/target must have shape (B, H, W) or (B, T, H, W), got {tuple(pred.shape)}"
        )
    for name, t in (("pred", pred), ("target", target)):
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise ValueError(f"{name} must be an integer label tensor, got dtype {t.dtype}")
    if pred.device != target.device:
        raise ValueError(f"pred is on {pred.device} but target is on {target.device}")
    bad_target = (target < 0) | (target >= num_classes)
    if ignore_index is not None:
        bad_target &= target != ignore_index
    if pred.numel() and bool(((pred < 0) | (pred >= num_classes) | bad_target).any()):
        allowed = "" if ignore_index is None else f" (targets may also be {ignore_index})"
        raise ValueError(f"labels must lie in [0, {num_classes - 1}]{allowed}")


class SegmentationMetrics:
    """Accumulates a confusion matrix and temporal flicker counts over a split.

    ``update`` takes predicted and true label maps ``(B, H, W)`` (one frame per lane) or
    ``(B, T, H, W)`` (T consecutive frames per lane). Flicker is the share of pixels whose
    predicted label changes between consecutive frames of a clip, among pixels whose true
    label does not change. The last frame of every lane is kept so that the pair across two
    ``update`` calls is counted unless ``reset[b]`` marks the start of a new clip.

    Target pixels equal to ``ignore_index`` (None: none) are left out of the confusion matrix,
    a flicker pair counts only where both targets are valid, and a frame without any valid
    target pixel is not counted in ``frames``.
    """

    def __init__(self, num_classes: int = 2, ignore_index: int | None = 255) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.reset_state()

    def reset_state(self) -> None:
        """Forget all counts and the per-lane last frames."""
        self._confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)
        self._flicker_changed = torch.zeros((), dtype=torch.int64)
        self._flicker_stable = torch.zeros((), dtype=torch.int64)
        self._frames = 0
        self._last_pred: torch.Tensor | None = None
        self._last_target: torch.Tensor | None = None

    clear = reset_state

    @property
    def confusion(self) -> torch.Tensor:
        """Copy of the ``(C, C)`` int64 confusion matrix (rows true, columns predicted)."""
        return self._confusion.clone()

    @property
    def flicker_counts(self) -> tuple[int, int]:
        """``(changed, stable)``: flicker numerator and denominator pixel counts."""
        return int(self._flicker_changed), int(self._flicker_stable)

    @property
    def frames(self) -> int:
        """Number of frames counted so far (frames with at least one valid target pixel)."""
        return self._frames

    def _to(self, device: torch.device) -> None:
        if self._confusion.device != device:
            self._confusion = self._confusion.to(device)
            self._flicker_changed = self._flicker_changed.to(device)
            self._flicker_stable = self._flicker_stable.to(device)

    def _continue_mask(self, pred: torch.Tensor, reset: torch.Tensor | None) -> torch.Tensor | None:
        """``(B,)`` bool mask of lanes continuing from the last call, or None if none can."""
        lanes = pred.shape[0]
        if reset is not None:
            reset = torch.as_tensor(reset, device=pred.device)
            if reset.dtype != torch.bool or tuple(reset.shape) != (lanes,):
                raise ValueError(
                    f"reset must be a ({lanes},) bool tensor, got {reset.dtype} "
                    f"of shape {tuple(reset.shape)}"
                )
        if self._last_pred is None:
            return None
        if self._last_pred.shape != pred[:, 0].shape:
            if reset is None or not bool(reset.all()):
                raise ValueError(
                    f"lane frames changed from {tuple(self._last_pred.shape)} to "
                    f"{tuple(pred[:, 0].shape)} (B, H, W) without resetting every lane"
                )
            return None
        if reset is None:
            return torch.ones(lanes, dtype=torch.bool, device=pred.device)
        return ~reset

    def _count_pairs(
        self,
        prev_p: torch.Tensor,
        prev_t: torch.Tensor,
        next_p: torch.Tensor,
        next_t: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Flicker counts over aligned ``(B, T, H, W)`` frame pairs, each of shape ``(B, T)``.

        First: pixels whose prediction changes while the truth does not; second: pixels whose
        truth does not change (both truths valid).
        """
        stable = next_t == prev_t
        if self.ignore_index is not None:
            stable &= next_t != self.ignore_index  # equal truths: both valid
        changed = (next_p != prev_p) & stable
        return changed.flatten(2).sum(-1), stable.flatten(2).sum(-1)

    @torch.no_grad()
    def update(
        self, pred: torch.Tensor, target: torch.Tensor, reset: torch.Tensor | None = None
    ) -> None:
        """Add a batch of predicted/true label maps ``(B, H, W)`` or ``(B, T, H, W)``.

        ``reset`` is an optional ``(B,)`` bool tensor; ``reset[b]`` True means lane ``b``
        starts a new clip here (no flicker pair with the lane's previous frame). None
        continues every lane.
        """
        _check_labels(pred, target, self.num_classes, self.ignore_index)
        if pred.ndim == 3:
            pred, target = pred.unsqueeze(1), target.unsqueeze(1)
        cont = self._continue_mask(pred, reset)
        self._to(pred.device)
        pred, target = pred.long(), target.long()
        c = self.num_classes
        index = target * c + pred
        if self.ignore_index is not None:
            valid = target != self.ignore_index
            index = index[valid]
            frames = int(valid.flatten(2).any(-1).sum())
        else:
            index, frames = index.reshape(-1), pred.shape[0] * pred.shape[1]
        self._confusion += torch.bincount(index, minlength=c * c).reshape(c, c)
        if pred.shape[1] > 1:
            changed, stable = self._count_pairs(
                pred[:, :-1], target[:, :-1], pred[:, 1:], target[:, 1:]
            )
            self._flicker_changed += changed.sum()
            self._flicker_stable += stable.sum()
        if cont is not None and self._last_pred is not None and self._last_target is not None:
            prev_p = self._last_pred.to(pred.device).unsqueeze(1)
            prev_t = self._last_target.to(pred.device).unsqueeze(1)
            changed, stable = self._count_pairs(prev_p, prev_t, pred[:, :1], target[:, :1])
            self._flicker_changed += (changed[:, 0] * cont).sum()
            self._flicker_stable += (stable[:, 0] * cont).sum()
        self._last_pred = pred[:, -1].clone()
        self._last_target = target[:, -1].clone()
        self._frames += frames

    def merge(self, other: SegmentationMetrics) -> SegmentationMetrics:
        """Add ``other``'s confusion, flicker and frame counts into this object; returns self.

        Per-lane last frames are not merged: the two objects saw separate streams.
        """
        if other.num_classes != self.num_classes:
            raise ValueError(
                f"cannot merge metrics with {other.num_classes} classes into {self.num_classes}"
            )
        device = self._confusion.device
        self._confusion += other._confusion.to(device)
        self._flicker_changed += other._flicker_changed.to(device)
        self._flicker_stable += other._flicker_stable.to(device)
        self._frames += other._frames
        return self

    def compute(self) -> dict[str, float]:
        """Split-level metrics; see :func:`metrics_from_confusion` plus flicker and frames."""
        result = metrics_from_confusion(self._confusion)
        changed, stable = self.flicker_counts
        result["flicker"] = changed / stable if stable > 0 else math.nan
        result["frames"] = float(self._frames)
        return result
