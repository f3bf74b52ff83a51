"""Tests for recseg.training.losses against values computed by hand."""

from __future__ import annotations

import math
import re

import pytest
import torch

from recseg.training.losses import (
    LOSSES,
    CrossDiceLoss,
    CrossEntropyLoss,
    SoftDiceLoss,
    build_loss,
    loss_names,
)

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
    assert loss.item() == pytest.approx(1 - sum(A_DICE) / 2, abs=1e-6)


def test_soft_dice_uniform_probabilities_without_smoothing() -> None:
    # dice0 = 1 / 3, dice1 = 3 / 5 -> loss = 1 - (1/3 + 3/5) / 2 = 1 - 7/15 = 8/15
    loss = SoftDiceLoss(smooth=0.0)(A_LOGITS, A_TARGET)
    assert loss.item() == pytest.approx(8 / 15, abs=1e-6)


def test_soft_dice_all_background_target() -> None:
    loss = SoftDiceLoss()(B_LOGITS, B_TARGET)
    # 1 - (6.0001/7.0001 + 0.0001/1.0001) / 2
    assert loss.item() == pytest.approx(1 - sum(B_DICE) / 2, abs=1e-6)
    assert loss.item() == pytest.approx(1 - (6.0001 / 7.0001 + 0.0001 / 1.0001) / 2, abs=1e-6)


def test_soft_dice_averages_per_sample_and_class() -> None:
    logits = torch.cat([A_LOGITS, B_LOGITS])
    target = torch.cat([A_TARGET, B_TARGET])
    loss = SoftDiceLoss()(logits, target)
    # mean over 2 samples x 2 classes (not batch dice)
    assert loss.item() == pytest.approx(1 - sum(A_DICE + B_DICE) / 4, abs=1e-6)


def test_soft_dice_clip_equals_flattened_batch() -> None:
    # clip of B=2 lanes, T=2 frames: lane 0 = (A, B), lane 1 = (B, A)
    logits = torch.stack([torch.cat([A_LOGITS, B_LOGITS]), torch.cat([B_LOGITS, A_LOGITS])])
    target = torch.stack([torch.cat([A_TARGET, B_TARGET]), torch.cat([B_TARGET, A_TARGET])])
    assert logits.shape == (2, 2, 2, 2, 2) and target.shape == (2, 2, 2, 2)
    clip = SoftDiceLoss()(logits, target)
    flat = SoftDiceLoss()(logits.flatten(0, 1), target.flatten(0, 1))
    assert clip.item() == pytest.approx(flat.item(), abs=1e-7)
    # 4 frames: A, B, B, A -> 8 (frame, class) terms
    assert clip.item() == pytest.approx(1 - 2 * sum(A_DICE + B_DICE) / 8, abs=1e-6)


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
    assert loss.item() == pytest.approx(CE_VALUE, abs=1e-6)
    assert loss.item() == pytest.approx(math.log(8 / 3) / 2, abs=1e-6)


def test_cross_entropy_clip_is_mean_over_all_pixels() -> None:
    # frame 1: pixel a only -> ln 2 at both pixels with logits 0 and targets (0, 1)
    logits = torch.stack([CE_LOGITS[0], torch.zeros(2, 1, 2)]).unsqueeze(0)  # (1, 2, 2, 1, 2)
    target = torch.stack([CE_TARGET[0], torch.tensor([[0, 1]])]).unsqueeze(0)
    loss = CrossEntropyLoss()(logits, target)
    # 4 pixels: ln 2, ln(4/3), ln 2, ln 2
    assert loss.item() == pytest.approx((3 * math.log(2) + math.log(4 / 3)) / 4, abs=1e-6)


def test_soft_dice_on_ce_example() -> None:
    # without smoothing: 1 - (4/7 + 2/3) / 2 = 8/21
    assert SoftDiceLoss(smooth=0.0)(CE_LOGITS, CE_TARGET).item() == pytest.approx(8 / 21, abs=1e-6)
    assert SoftDiceLoss()(CE_LOGITS, CE_TARGET).item() == pytest.approx(CE_DICE, abs=1e-6)


def test_cross_dice_is_average() -> None:
    loss = CrossDiceLoss()(CE_LOGITS, CE_TARGET)
    assert loss.item() == pytest.approx((CE_DICE + CE_VALUE) / 2, abs=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_logits_computed_in_float32(dtype: torch.dtype) -> None:
    # 0 and +-20 are exact in float16/bfloat16; the result must match the float32 hand value.
    dice = SoftDiceLoss()(B_LOGITS.to(dtype), B_TARGET)
    assert dice.dtype == torch.float32
    assert dice.item() == pytest.approx(1 - sum(B_DICE) / 2, abs=1e-6)
    ce = CrossEntropyLoss()(A_LOGITS.to(dtype), A_TARGET)
    assert ce.dtype == torch.float32
    assert ce.item() == pytest.approx(math.log(2.0), abs=1e-6)


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
