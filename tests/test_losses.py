"""Tests for recseg.training.losses against values computed by hand."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from recseg.training.losses import (
    LOSSES,
    CrossDiceLoss,
    CrossEntropyLoss,
    SoftDiceLoss,
    build_loss,
    cross_entropy_loss,
    loss_names,
    soft_dice_loss,
)
from tests.tolerance import approx

S = 1e-4  # default smooth
BIG = 20.0  # logits (+20, -20) give softmax probabilities 1 and 0 in float32


def _confident(pred: list[list[int]]) -> torch.Tensor:
    """(1, 2, H, W) logits: +20 on the predicted class, -20 on the other."""
    p = torch.tensor(pred, dtype=torch.float32)
    return torch.stack([BIG * (1 - 2 * p), BIG * (2 * p - 1)]).unsqueeze(0)


def _labels(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.long).unsqueeze(0)


# Sample A: all logits 0 -> p = 0.5 for both classes on every pixel; target [[0, 1], [1, 1]].
#   class 0: y = [1, 0, 0, 0] -> TP = 0.5, FP = 3 * 0.5 = 1.5, FN = 1 * 0.5 = 0.5
#   class 1: y = [0, 1, 1, 1] -> TP = 3 * 0.5 = 1.5, FP = 1 * 0.5 = 0.5, FN = 3 * 0.5 = 1.5
A_LOGITS = torch.zeros(1, 2, 2, 2)
A_TARGET = _labels([[0, 1], [1, 1]])
A_DICE = [(2 * 0.5 + S) / (2 * 0.5 + 1.5 + 0.5 + S), (2 * 1.5 + S) / (2 * 1.5 + 0.5 + 1.5 + S)]

# Sample B: confident prediction [[0, 1], [0, 0]], all-background target [[0, 0], [0, 0]].
#   class 0: TP = 3, FP = 0, FN = 1 (the pixel predicted as person)
#   class 1: TP = 0, FP = 1, FN = 0 -> dice term (0 + s) / (1 + s)
B_LOGITS = _confident([[0, 1], [0, 0]])
B_TARGET = _labels([[0, 0], [0, 0]])
B_DICE = [(2 * 3 + S) / (2 * 3 + 0 + 1 + S), (0 + S) / (0 + 1 + 0 + S)]


def test_soft_dice_uniform_probabilities() -> None:
    loss = SoftDiceLoss()(A_LOGITS, A_TARGET)
    assert loss.item() == approx(1 - sum(A_DICE) / 2)


def test_soft_dice_uniform_probabilities_without_smoothing() -> None:
    # dice0 = 1 / 3, dice1 = 3 / 5 -> loss = 1 - (1/3 + 3/5) / 2 = 1 - 7/15 = 8/15
    loss = SoftDiceLoss(smooth=0.0)(A_LOGITS, A_TARGET)
    assert loss.item() == approx(8 / 15)


def test_soft_dice_all_background_target() -> None:
    loss = SoftDiceLoss()(B_LOGITS, B_TARGET)
    # 1 - (6.0001/7.0001 + 0.0001/1.0001) / 2
    assert loss.item() == approx(1 - sum(B_DICE) / 2)
    assert loss.item() == approx(1 - (6.0001 / 7.0001 + 0.0001 / 1.0001) / 2)


def test_soft_dice_averages_per_sample_and_class() -> None:
    logits = torch.cat([A_LOGITS, B_LOGITS])
    target = torch.cat([A_TARGET, B_TARGET])
    loss = SoftDiceLoss()(logits, target)
    # mean over 2 samples x 2 classes (not batch dice)
    assert loss.item() == approx(1 - sum(A_DICE + B_DICE) / 4)


def test_soft_dice_clip_equals_flattened_batch() -> None:
    # clip of B=2 lanes, T=2 frames: lane 0 = (A, B), lane 1 = (B, A)
    logits = torch.stack([torch.cat([A_LOGITS, B_LOGITS]), torch.cat([B_LOGITS, A_LOGITS])])
    target = torch.stack([torch.cat([A_TARGET, B_TARGET]), torch.cat([B_TARGET, A_TARGET])])
    assert logits.shape == (2, 2, 2, 2, 2) and target.shape == (2, 2, 2, 2)
    clip = SoftDiceLoss()(logits, target)
    flat = SoftDiceLoss()(logits.flatten(0, 1), target.flatten(0, 1))
    assert clip.item() == approx(flat.item())
    # 4 frames: A, B, B, A -> 8 (frame, class) terms
    assert clip.item() == approx(1 - 2 * sum(A_DICE + B_DICE) / 8)


# Two pixels (1, 2, 1, 2): pixel a logits (0, 0), target 0 -> p0 = 1/2, CE = ln 2;
# pixel b logits (0, ln 3), target 1 -> p1 = 3 / (1 + 3) = 3/4, CE = -ln(3/4) = ln(4/3).
CE_LOGITS = torch.tensor([[[[0.0, 0.0]], [[0.0, math.log(3.0)]]]])
CE_TARGET = torch.tensor([[[0, 1]]])
CE_VALUE = (math.log(2.0) + math.log(4.0 / 3.0)) / 2  # = ln(8/3) / 2
# Soft dice on the same pixels: p0 = (1/2, 1/4), p1 = (1/2, 3/4), y0 = (1, 0), y1 = (0, 1)
#   class 0: TP = 1/2, FP = 1/4, FN = 1/2;  class 1: TP = 3/4, FP = 1/2, FN = 1/4
CE_DICE = 1 - ((1.0 + S) / (1.75 + S) + (1.5 + S) / (2.25 + S)) / 2


def test_cross_entropy_hand_computed() -> None:
    loss = CrossEntropyLoss()(CE_LOGITS, CE_TARGET)
    assert loss.item() == approx(CE_VALUE)
    assert loss.item() == approx(math.log(8 / 3) / 2)


def test_cross_entropy_clip_is_mean_over_all_pixels() -> None:
    # frame 1: pixel a only -> ln 2 at both pixels with logits 0 and targets (0, 1)
    logits = torch.stack([CE_LOGITS[0], torch.zeros(2, 1, 2)]).unsqueeze(0)  # (1, 2, 2, 1, 2)
    target = torch.stack([CE_TARGET[0], torch.tensor([[0, 1]])]).unsqueeze(0)
    loss = CrossEntropyLoss()(logits, target)
    # 4 pixels: ln 2, ln(4/3), ln 2, ln 2
    assert loss.item() == approx((3 * math.log(2) + math.log(4 / 3)) / 4)


def test_soft_dice_on_ce_example() -> None:
    # without smoothing: 1 - (4/7 + 2/3) / 2 = 8/21
    assert SoftDiceLoss(smooth=0.0)(CE_LOGITS, CE_TARGET).item() == approx(8 / 21)
    assert SoftDiceLoss()(CE_LOGITS, CE_TARGET).item() == approx(CE_DICE)


def test_cross_dice_is_average() -> None:
    loss = CrossDiceLoss()(CE_LOGITS, CE_TARGET)
    assert loss.item() == approx((CE_DICE + CE_VALUE) / 2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_logits_computed_in_float32(dtype: torch.dtype) -> None:
    # 0 and +-20 are exact in float16/bfloat16; the result must match the float32 hand value.
    dice = SoftDiceLoss()(B_LOGITS.to(dtype), B_TARGET)
    assert dice.dtype == torch.float32
    assert dice.item() == approx(1 - sum(B_DICE) / 2)
    ce = CrossEntropyLoss()(A_LOGITS.to(dtype), A_TARGET)
    assert ce.dtype == torch.float32
    assert ce.item() == approx(math.log(2.0))


@pytest.mark.parametrize("name", ["SoftDice", "CrossEntropy", "CrossDice"])
def test_gradient_flows(name: str) -> None:
    logits = torch.cat([A_LOGITS, CE_LOGITS.expand(1, 2, 2, 2)]).clone().requires_grad_(True)
    target = torch.cat([A_TARGET, _labels([[0, 1], [0, 1]])])
    build_loss(name)(logits, target).backward()
    assert logits.grad is not None
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


def test_registry_and_build_loss() -> None:
    assert loss_names() == ["CrossDice", "CrossEntropy", "SoftDice"]
    expected = {
        "SoftDice": SoftDiceLoss,
        "CrossEntropy": CrossEntropyLoss,
        "CrossDice": CrossDiceLoss,
    }
    assert expected == LOSSES
    for name, cls in LOSSES.items():
        loss = build_loss(name)
        assert type(loss) is cls
    assert build_loss("SoftDice").smooth == S


def test_build_loss_unknown_name() -> None:
    expected = "unknown loss 'Dice'; valid losses: CrossDice, CrossEntropy, SoftDice"
    with pytest.raises(ValueError, match=re.escape(expected)) as info:
        build_loss("Dice")
    assert str(info.value) == expected


@pytest.mark.parametrize("loss_cls", [SoftDiceLoss, CrossEntropyLoss, CrossDiceLoss])
def test_shape_mismatch_raises(loss_cls: type[torch.nn.Module]) -> None:
    loss = loss_cls()
    with pytest.raises(ValueError, match=re.escape("(1, 2, 2, 2)")) as info:
        loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 3, dtype=torch.long))
    assert "(1, 2, 3)" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match=re.escape("(2, 3, 2, 4, 4)")) as info:
        loss(torch.zeros(2, 3, 2, 4, 4), torch.zeros(6, 4, 4, dtype=torch.long))
    assert "(6, 4, 4)" in str(info.value)
    with pytest.raises(ValueError, match=re.escape("(2, 4, 4)")):
        loss(torch.zeros(2, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long))


def test_float_target_rejected() -> None:
    with pytest.raises(ValueError, match="integer"):
        SoftDiceLoss()(A_LOGITS, A_TARGET.float())


# ----- ignore_index (padded pixels) ---------------------------------------------------------

PAD = 255
LOSS_CLASSES = [SoftDiceLoss, CrossEntropyLoss, CrossDiceLoss]


def _reference_dice(logits: torch.Tensor, target: torch.Tensor, smooth: float = S) -> torch.Tensor:
    """The formula before ignore_index existed, on (N, C, H, W) logits."""
    probs = torch.softmax(logits.float(), dim=1)
    onehot = F.one_hot(target, num_classes=logits.shape[1]).permute(0, 3, 1, 2).float()
    tp = (probs * onehot).sum((2, 3))
    fp = (probs * (1 - onehot)).sum((2, 3))
    fn = ((1 - probs) * onehot).sum((2, 3))
    return 1 - ((2 * tp + smooth) / (2 * tp + fp + fn + smooth).clamp_min(1e-8)).mean()


def _random(shape: tuple[int, ...], classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``(B, T, C, H, W)`` and labels ``(B, T, H, W)`` for ``shape = (B, T, H, W)``."""
    g = torch.Generator().manual_seed(seed)
    b, t, h, w = shape
    logits = torch.randn(b, t, classes, h, w, generator=g) * 3
    return logits, torch.randint(0, classes, shape, generator=g)


@pytest.mark.parametrize("classes", [2, 3])
def test_without_ignored_pixels_values_equal_the_old_formula(classes: int) -> None:
    logits, target = _random((2, 3, 5, 6), classes, seed=classes)
    flat_l, flat_t = logits.flatten(0, 1), target.flatten(0, 1)
    dice, ce = _reference_dice(flat_l, flat_t), F.cross_entropy(flat_l, flat_t)
    for smooth in (S, 0.0, 1.0):
        ref = _reference_dice(flat_l, flat_t, smooth)
        torch.testing.assert_close(soft_dice_loss(logits, target, smooth), ref)
    torch.testing.assert_close(SoftDiceLoss()(flat_l, flat_t), dice)
    torch.testing.assert_close(CrossEntropyLoss()(logits, target), ce)
    torch.testing.assert_close(CrossDiceLoss()(logits, target), (dice + ce) / 2)
    torch.testing.assert_close(cross_entropy_loss(flat_l, flat_t, ignore_index=-100), ce)


@pytest.mark.parametrize("loss_cls", LOSS_CLASSES)
def test_padded_frames_and_pixels_do_not_change_the_loss(loss_cls: type[torch.nn.Module]) -> None:
    logits, target = _random((2, 3, 4, 5), 2, seed=1)
    expected = loss_cls()(logits, target)
    g = torch.Generator().manual_seed(9)
    # two extra all-padding frames per lane (their logits are anything)
    more_l = torch.cat([logits, torch.randn(2, 2, 2, 4, 5, generator=g) * 5], dim=1)
    more_t = torch.cat([target, torch.full((2, 2, 4, 5), PAD)], dim=1)
    torch.testing.assert_close(loss_cls()(more_l, more_t), expected)
    # extra padded rows and columns on every frame
    wide_l = torch.randn(2, 3, 2, 7, 9, generator=g) * 5
    wide_l[..., :4, :5] = logits
    wide_t = torch.full((2, 3, 7, 9), PAD)
    wide_t[..., :4, :5] = target
    torch.testing.assert_close(loss_cls()(wide_l, wide_t), expected)
    # an all-padding frame in the (N, C, H, W) layout
    flat_l = torch.cat([logits.flatten(0, 1), more_l[:, 3:].flatten(0, 1)])
    flat_t = torch.cat([target.flatten(0, 1), more_t[:, 3:].flatten(0, 1)])
    torch.testing.assert_close(loss_cls()(flat_l, flat_t), expected)


def test_padded_frame_is_not_counted_as_perfect_dice() -> None:
    # B_LOGITS/B_TARGET alone vs with a padded frame: a frame counted as dice 1 would halve it
    logits = torch.cat([B_LOGITS, B_LOGITS])
    target = torch.cat([B_TARGET, torch.full_like(B_TARGET, PAD)])
    assert SoftDiceLoss()(logits, target).item() == approx(1 - sum(B_DICE) / 2)


@pytest.mark.parametrize("loss_cls", LOSS_CLASSES)
def test_all_ignored_is_zero_with_working_backward(loss_cls: type[torch.nn.Module]) -> None:
    for shape in ((2, 2, 3, 3), (3, 3, 3)):
        logits = torch.randn(*shape[:-2], 2, *shape[-2:]).requires_grad_(True)
        loss = loss_cls()(logits, torch.full(shape, PAD))
        assert loss.item() == 0.0 and loss.grad_fn is not None
        loss.backward()
        assert logits.grad is not None and torch.equal(logits.grad, torch.zeros_like(logits))


@pytest.mark.parametrize("loss_cls", LOSS_CLASSES)
def test_no_gradient_at_ignored_pixels(loss_cls: type[torch.nn.Module]) -> None:
    logits, target = _random((2, 2, 4, 4), 2, seed=3)
    target[0, 1] = PAD  # a padded frame
    target[1, :, 2:, :] = PAD  # padded rows
    logits.requires_grad_(True)
    loss_cls()(logits, target).backward()
    assert logits.grad is not None
    ignored = (target == PAD).unsqueeze(2).expand_as(logits)
    assert (logits.grad[ignored] == 0).all()
    assert (logits.grad[~ignored] != 0).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_logits_with_padding(dtype: torch.dtype) -> None:
    logits = torch.cat([B_LOGITS, A_LOGITS]).to(dtype)
    target = torch.cat([B_TARGET, torch.full_like(B_TARGET, PAD)])
    assert SoftDiceLoss()(logits, target).item() == approx(1 - sum(B_DICE) / 2)
    assert CrossEntropyLoss()(logits, target).dtype == torch.float32


def test_custom_ignore_index() -> None:
    target = torch.cat([B_TARGET, torch.full_like(B_TARGET, -1)])
    logits = torch.cat([B_LOGITS, A_LOGITS])
    loss = SoftDiceLoss(ignore_index=-1)(logits, target)
    assert loss.item() == approx(1 - sum(B_DICE) / 2)
    ce = cross_entropy_loss(logits, target, ignore_index=-1)
    assert ce.item() == approx(F.cross_entropy(B_LOGITS, B_TARGET).item())
    assert CrossDiceLoss(ignore_index=-1).ce.ignore_index == -1
    assert "ignore_index=-1" in repr(CrossDiceLoss(ignore_index=-1))
    with pytest.raises(ValueError, match="ignore_index -1"):
        SoftDiceLoss(ignore_index=-1)(logits, torch.full_like(target, PAD))


@pytest.mark.parametrize("loss_cls", LOSS_CLASSES)
@pytest.mark.parametrize("bad", [2, -1, 254])
def test_labels_out_of_range_raise(loss_cls: type[torch.nn.Module], bad: int) -> None:
    target = A_TARGET.clone()
    target[0, 1, 1] = bad
    target[0, 0, 0] = PAD
    expected = f"target labels must lie in [0, 1] or equal ignore_index 255, got {bad}"
    with pytest.raises(ValueError, match=re.escape(expected)):
        loss_cls()(A_LOGITS, target)


def test_build_loss_defaults_to_ignore_255() -> None:
    for name in loss_names():
        loss = build_loss(name)
        padded = torch.cat([A_TARGET, torch.full_like(A_TARGET, PAD)])
        logits = torch.cat([A_LOGITS, torch.randn(1, 2, 2, 2)])
        torch.testing.assert_close(loss(logits, padded), loss(A_LOGITS, A_TARGET))
    assert build_loss("SoftDice").ignore_index == PAD
