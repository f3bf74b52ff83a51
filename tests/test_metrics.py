"""Tests for recseg.evaluation.metrics against counts computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from recseg.evaluation.metrics import SegmentationMetrics, metrics_from_confusion
from tests import tolerance

KEYS = {
    "miou",
    "fg_iou",
    "bg_iou",
    "dice",
    "fg_dice",
    "pixel_accuracy",
    "per_class_accuracy",
    "flicker",
    "pixels",
    "frames",
}


def t(*frames: list[list[int]]) -> torch.Tensor:
    """Stack 2-D label frames into a long tensor of shape (len(frames), H, W)."""
    return torch.tensor(list(frames), dtype=torch.long)


def approx(x: float) -> object:
    """Metrics are ratios of integer counts computed in float64."""
    return tolerance.approx(x, torch.float64)


# Two consecutive frames (2 x 3) of one clip.
GT0 = [[0, 0, 1], [0, 1, 1]]
PR0 = [[0, 1, 1], [0, 0, 1]]
GT1 = [[0, 0, 1], [1, 1, 1]]
PR1 = [[0, 1, 1], [1, 1, 1]]
# frame 0 (true, pred): (0,0) x2, (0,1) x1, (1,1) x2, (1,0) x1
# frame 1 (true, pred): (0,0) x1, (0,1) x1, (1,1) x4
# confusion = [[3, 2], [1, 6]]
# class 0: TP 3, FP 1, FN 2 -> IoU 3/6, dice 6/9, recall 3/5
# class 1: TP 6, FP 2, FN 1 -> IoU 6/9, dice 12/15, recall 6/7
# flicker pair (0 -> 1): truth changes only at (1, 0) -> 5 stable pixels;
#   prediction changes at (1, 0) (excluded: truth changed) and (1, 1) (counted) -> 1 / 5
TWO_FRAME = {
    "miou": (3 / 6 + 6 / 9) / 2,  # 7/12
    "fg_iou": 6 / 9,
    "bg_iou": 3 / 6,
    "dice": (6 / 9 + 12 / 15) / 2,  # 11/15
    "fg_dice": 12 / 15,
    "pixel_accuracy": 9 / 12,
    "per_class_accuracy": (3 / 5 + 6 / 7) / 2,  # 51/70
    "flicker": 1 / 5,
    "pixels": 12.0,
    "frames": 2.0,
}


def test_two_frame_window_every_key() -> None:
    m = SegmentationMetrics()
    m.update(t(PR0, PR1).unsqueeze(0), t(GT0, GT1).unsqueeze(0))  # (B=1, T=2, 2, 3)
    assert torch.equal(m.confusion, torch.tensor([[3, 2], [1, 6]]))
    result = m.compute()
    assert set(result) == KEYS
    for key, value in TWO_FRAME.items():
        assert result[key] == approx(value), key
    assert all(isinstance(v, float) for v in result.values())


def test_two_frames_in_two_calls_same_as_window() -> None:
    m = SegmentationMetrics()
    m.update(t(PR0), t(GT0))  # (B=1, 2, 3)
    m.update(t(PR1), t(GT1))  # continues lane 0 (reset=None)
    result = m.compute()
    for key, value in TWO_FRAME.items():
        assert result[key] == approx(value), key


def test_two_lanes_are_not_a_clip() -> None:
    # same two frames as separate lanes of one call: same confusion, but no frame pair
    m = SegmentationMetrics()
    m.update(t(PR0, PR1), t(GT0, GT1))
    result = m.compute()
    assert result["miou"] == approx(7 / 12)
    assert result["frames"] == 2.0
    assert math.isnan(result["flicker"])


def test_confusion_is_a_copy() -> None:
    m = SegmentationMetrics()
    m.update(t(PR0), t(GT0))
    m.confusion.zero_()
    assert m.confusion.sum().item() == 6
    assert m.confusion.dtype == torch.int64


ZEROS = [[0, 0, 0], [0, 0, 0]]
ONE_FP = [[0, 0, 0], [0, 1, 0]]
PERSON = [[0, 1, 1], [0, 1, 1]]


def test_all_background_perfect_is_undefined_not_one() -> None:
    m = SegmentationMetrics()
    m.update(t(ZEROS), t(ZEROS))
    r = m.compute()
    # class 1: TP = FP = FN = 0 -> 0/0
    assert math.isnan(r["fg_iou"])
    assert math.isnan(r["miou"])
    assert math.isnan(r["fg_dice"])
    assert math.isnan(r["dice"])
    assert math.isnan(r["per_class_accuracy"])  # no true person pixel -> recall undefined
    assert r["bg_iou"] == 1.0
    assert r["pixel_accuracy"] == 1.0
    assert r["pixels"] == 6.0
    assert math.isnan(r["flicker"])  # a single frame has no pair


def test_background_frame_with_false_positive_alone() -> None:
    m = SegmentationMetrics()
    m.update(t(ONE_FP), t(ZEROS))
    r = m.compute()
    # confusion [[5, 1], [0, 0]]: class 1 TP 0, FP 1, FN 0 -> IoU 0/1; class 0 IoU 5/6
    assert r["fg_iou"] == 0.0
    assert r["bg_iou"] == approx(5 / 6)
    assert r["miou"] == approx(5 / 12)
    assert r["fg_dice"] == 0.0


def test_false_positive_frame_lowers_split_fg_iou() -> None:
    person_only = SegmentationMetrics()
    person_only.update(t(PERSON), t(PERSON))
    assert person_only.compute()["fg_iou"] == 1.0  # TP 4, FP 0, FN 0

    both = SegmentationMetrics()
    both.update(t(PERSON, ONE_FP), t(PERSON, ZEROS))
    # confusion [[2 + 5, 0 + 1], [0, 4]] = [[7, 1], [0, 4]]: fg IoU = 4 / (4 + 1 + 0)
    assert torch.equal(both.confusion, torch.tensor([[7, 1], [0, 4]]))
    r = both.compute()
    assert r["fg_iou"] == approx(4 / 5)
    assert 1.0 - r["fg_iou"] == approx(1 / 5)  # lowered by exactly 1/5
    assert r["bg_iou"] == approx(7 / 8)  # 7 / (7 + 0 + 1)


def test_per_class_accuracy_is_recall_not_precision() -> None:
    m = SegmentationMetrics()
    m.update(t([[0, 1, 1], [1, 1, 1]]), t([[0, 0, 0], [0, 1, 1]]))
    # (true, pred): (0,0) x1, (0,1) x3, (1,1) x2 -> confusion [[1, 3], [0, 2]]
    # recall: class 0 1/4, class 1 2/2 -> 5/8; precision would be (1/1 + 2/5) / 2 = 7/10
    assert torch.equal(m.confusion, torch.tensor([[1, 3], [0, 2]]))
    assert m.compute()["per_class_accuracy"] == approx(5 / 8)


# Two lanes, each one frame per call.
# lane 0: truth constant -> 6 stable pixels; prediction changes at (0,0), (1,0), (1,2) -> 3
L0_GT = [[0, 1, 1], [0, 0, 1]]
L0_P1 = [[0, 1, 1], [0, 0, 1]]
L0_P2 = [[1, 1, 1], [1, 0, 0]]
# lane 1: truth changes at (1,0), (1,1), (1,2) -> 3 stable pixels;
#   prediction changes at (0,0) (counted), (1,0), (1,1) (excluded: truth changed) -> 1
L1_G1 = [[0, 0, 0], [0, 0, 0]]
L1_G2 = [[0, 0, 0], [1, 1, 1]]
L1_P1 = [[0, 0, 0], [0, 0, 0]]
L1_P2 = [[1, 0, 0], [1, 1, 0]]


@pytest.mark.parametrize(
    ("reset", "counts"),
    [
        (None, (3 + 1, 6 + 3)),
        ([False, False], (3 + 1, 6 + 3)),
        ([True, False], (1, 3)),  # lane 0 starts a new clip: its pair is not counted
        ([False, True], (3, 6)),
        ([True, True], (0, 0)),
    ],
)
def test_flicker_across_calls_with_reset(reset: list[bool] | None, counts: tuple[int, int]) -> None:
    m = SegmentationMetrics()
    m.update(t(L0_P1, L1_P1), t(L0_GT, L1_G1))
    r = None if reset is None else torch.tensor(reset)
    m.update(t(L0_P2, L1_P2), t(L0_GT, L1_G2), reset=r)
    assert m.flicker_counts == counts
    flicker = m.compute()["flicker"]
    if counts[1] == 0:
        assert math.isnan(flicker)
    else:
        assert flicker == approx(counts[0] / counts[1])
    assert m.compute()["frames"] == 4.0


def test_first_call_has_no_cross_call_pair() -> None:
    m = SegmentationMetrics()
    m.update(t(L0_P1), t(L0_GT), reset=torch.tensor([False]))
    assert m.flicker_counts == (0, 0)
    assert math.isnan(m.compute()["flicker"])


def test_flicker_within_window_per_lane() -> None:
    # lane 0, frames 1 x 2: truth [0,1], [0,1], [1,1]; prediction [0,1], [1,1], [0,0]
    #   pair 0->1: 2 stable, prediction changes at px0 -> 1
    #   pair 1->2: truth changes at px0 -> 1 stable (px1); prediction px1 1->0 -> 1
    # lane 1: truth [1,1] x3, prediction [1,0] x3 -> 2 pairs x 2 stable, 0 changes
    # lanes must not be compared with each other: total 2 / (3 + 4)
    gt = torch.tensor([[[[0, 1]], [[0, 1]], [[1, 1]]], [[[1, 1]], [[1, 1]], [[1, 1]]]])
    pr = torch.tensor([[[[0, 1]], [[1, 1]], [[0, 0]]], [[[1, 0]], [[1, 0]], [[1, 0]]]])
    assert gt.shape == (2, 3, 1, 2)
    m = SegmentationMetrics()
    m.update(pr, gt)
    assert m.flicker_counts == (2, 7)
    assert m.compute()["flicker"] == approx(2 / 7)
    assert m.compute()["frames"] == 6.0


def test_next_call_continues_from_last_frame_of_window() -> None:
    # lane 0 window: truth [0,0] x2, prediction [0,0] then [1,1] -> 2 stable, 2 changes
    # next call: truth [0,0], prediction [1,1] equals the window's LAST frame -> 2 stable, 0
    m = SegmentationMetrics()
    m.update(torch.tensor([[[[0, 0]], [[1, 1]]]]), torch.zeros(1, 2, 1, 2, dtype=torch.long))
    m.update(torch.tensor([[[1, 1]]]), torch.zeros(1, 1, 2, dtype=torch.long))
    assert m.flicker_counts == (2, 4)
    assert m.compute()["flicker"] == approx(2 / 4)


def test_truth_change_excluded_from_denominator() -> None:
    # every pixel's truth changes: no stable pixel, so prediction changes do not count
    m = SegmentationMetrics()
    m.update(t([[0, 1]], [[1, 0]]).unsqueeze(0), t([[0, 1]], [[1, 0]]).unsqueeze(0))
    assert m.flicker_counts == (0, 0)
    assert math.isnan(m.compute()["flicker"])


def test_lane_count_change_requires_reset() -> None:
    m = SegmentationMetrics()
    m.update(t(L0_P1, L1_P1), t(L0_GT, L1_G1))  # B = 2
    with pytest.raises(ValueError) as info:
        m.update(t(L0_P1), t(L0_GT))  # B = 1, continuing
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError):
        m.update(t(L0_P1, L1_P1, L1_P1), t(L0_GT, L1_G1, L1_G1), reset=torch.tensor([1, 0, 1]) > 0)
    assert m.compute()["frames"] == 2.0  # failed calls changed nothing
    m.update(t(L0_P2), t(L0_GT), reset=torch.tensor([True]))  # all lanes reset: allowed
    assert m.flicker_counts == (0, 0)
    m.update(t(L0_P1), t(L0_GT))  # continues the new single lane: 3 changes / 6 stable
    assert m.flicker_counts == (3, 6)
    assert m.compute()["frames"] == 4.0


def test_invalid_inputs_raise() -> None:
    m = SegmentationMetrics()
    with pytest.raises(ValueError, match=r"\(1, 2, 3\).*\(1, 3, 2\)"):
        m.update(torch.zeros(1, 2, 3, dtype=torch.long), torch.zeros(1, 3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        m.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        m.update(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        m.update(t([[0, 2]]), t([[0, 1]]))
    with pytest.raises(ValueError, match="reset"):
        m.update(t(ZEROS), t(ZEROS), reset=torch.tensor([True, False]))
    assert m.confusion.sum().item() == 0


def test_merge_adds_counts() -> None:
    a = SegmentationMetrics()
    a.update(t(PR0, PR1).unsqueeze(0), t(GT0, GT1).unsqueeze(0))  # [[3, 2], [1, 6]], 1/5
    b = SegmentationMetrics()
    b.update(t(L0_P1, L1_P1), t(L0_GT, L1_G1))
    b.update(t(L0_P2, L1_P2), t(L0_GT, L1_G2))  # flicker 4/9
    # b confusion: lane 0 frame 1 perfect (0: 3, 1: 3); lane 1 frame 1 all (0,0): 6;
    #   lane 0 frame 2 (true, pred): (0,1) x2 [(0,0),(1,0)], (0,0) x1, (1,1) x2, (1,0) x1;
    #   lane 1 frame 2: (0,1) x1, (0,0) x2, (1,1) x2, (1,0) x1
    #   -> [[3 + 6 + 1 + 2, 2 + 1], [1 + 1, 3 + 2 + 2]] = [[12, 3], [2, 7]]
    assert torch.equal(b.confusion, torch.tensor([[12, 3], [2, 7]]))
    assert a.merge(b) is a
    assert torch.equal(a.confusion, torch.tensor([[15, 5], [3, 13]]))
    assert a.flicker_counts == (1 + 4, 5 + 9)
    r = a.compute()
    assert r["flicker"] == approx(5 / 14)
    assert r["frames"] == 6.0
    assert r["pixels"] == 36.0
    assert r["fg_iou"] == approx(13 / (13 + 5 + 3))
    assert torch.equal(b.confusion, torch.tensor([[12, 3], [2, 7]]))  # other unchanged


def test_clear_and_reset_state() -> None:
    m = SegmentationMetrics()
    m.update(t(PR0, PR1).unsqueeze(0), t(GT0, GT1).unsqueeze(0))
    m.clear()
    assert m.confusion.sum().item() == 0
    assert m.flicker_counts == (0, 0)
    m.update(t(PR1), t(GT1))  # no pair with the frame seen before clear()
    assert m.flicker_counts == (0, 0)
    assert m.compute()["frames"] == 1.0
    m.reset_state()
    assert m.compute()["frames"] == 0.0
    assert math.isnan(m.compute()["pixel_accuracy"])


def test_metrics_from_confusion_direct() -> None:
    r = metrics_from_confusion(torch.tensor([[3, 2], [1, 6]]))
    assert set(r) == KEYS - {"flicker", "frames"}
    for key in r:
        assert r[key] == approx(TWO_FRAME[key]), key
    with pytest.raises(ValueError, match="square"):
        metrics_from_confusion(torch.zeros(2, 3, dtype=torch.long))


def test_three_classes() -> None:
    m = SegmentationMetrics(num_classes=3)
    m.update(t([[0, 1, 2]]), t([[0, 1, 1]]))
    # confusion rows true: 0 -> [1, 0, 0]; 1 -> [0, 1, 1]; 2 -> [0, 0, 0]
    # IoU: class 0 1/1, class 1 1/2, class 2 0/1 -> miou (1 + 1/2 + 0) / 3 = 1/2
    r = m.compute()
    assert r["miou"] == approx(1 / 2)
    assert r["fg_iou"] == approx(1 / 2)


# ----- ignore_index (padded pixels and frames) ----------------------------------------------

PAD = 255


def _padded(x: torch.Tensor, value: int) -> torch.Tensor:
    """(B, T, H, W) -> (B, T + 1, H + 1, W + 2): one extra frame, row and two columns."""
    b, n, h, w = x.shape
    out = torch.full((b, n + 1, h + 1, w + 2), value, dtype=x.dtype)
    out[:, :n, :h, :w] = x
    return out


def test_padding_changes_neither_confusion_nor_flicker() -> None:
    gt = torch.stack([t(L0_GT, L0_GT), t(L1_G1, L1_G2)])  # (B=2, T=2, 2, 3)
    pr = torch.stack([t(L0_P1, L0_P2), t(L1_P1, L1_P2)])
    plain = SegmentationMetrics()
    plain.update(pr, gt)
    assert plain.flicker_counts == (3 + 1, 6 + 3)
    padded = SegmentationMetrics()
    pad_pred = _padded(pr, 1)  # predictions under padding: anything in range
    pad_pred[:, -1, 0, 0] = 0
    padded.update(pad_pred, _padded(gt, PAD))
    assert torch.equal(padded.confusion, plain.confusion)
    assert padded.flicker_counts == plain.flicker_counts
    assert padded.compute() == plain.compute()
    assert padded.frames == 4  # the all-padding frames are not counted


def test_padded_frame_after_a_real_one_adds_no_pair_across_calls() -> None:
    m = SegmentationMetrics()
    m.update(t(L0_P1), t(L0_GT))
    m.update(t(L0_P2), t([[PAD] * 3] * 2))  # continues lane 0 with a padded frame
    assert m.flicker_counts == (0, 0)
    m.update(t(L0_P1), t([[PAD] * 3] * 2))  # padded -> padded
    m.update(t(L0_P2), t(L0_GT))  # padded -> real
    assert m.flicker_counts == (0, 0)
    assert m.confusion.sum().item() == 12 and m.frames == 2


def test_partial_padding_counts_only_valid_pixel_pairs() -> None:
    # frame 0 truth [0, 0, PAD], frame 1 [0, PAD, 0]: only pixel 0 has two valid truths
    gt = t([[0, 0, PAD]], [[0, PAD, 0]]).unsqueeze(0)
    pr = t([[0, 1, 1]], [[1, 0, 0]]).unsqueeze(0)
    m = SegmentationMetrics()
    m.update(pr, gt)
    assert m.flicker_counts == (1, 1)
    # confusion: frame 0 (0,0), (0,1); frame 1 (0,1), (0,0)
    assert torch.equal(m.confusion, torch.tensor([[2, 2], [0, 0]]))
    assert m.compute()["pixels"] == 4.0


def test_ignore_index_none_keeps_the_strict_check() -> None:
    strict = SegmentationMetrics(ignore_index=None)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\]$"):
        strict.update(t([[0, 1]]), t([[0, PAD]]))
    assert strict.confusion.sum().item() == 0
    strict.update(t(PR0, PR1).unsqueeze(0), t(GT0, GT1).unsqueeze(0))
    for key, value in TWO_FRAME.items():
        assert strict.compute()[key] == approx(value), key


def test_ignore_index_allows_only_itself_in_targets() -> None:
    m = SegmentationMetrics()
    assert m.ignore_index == PAD
    with pytest.raises(ValueError, match="labels must lie in"):
        m.update(t([[0, 1]]), t([[0, 254]]))
    with pytest.raises(ValueError, match="labels must lie in"):
        m.update(t([[0, PAD]]), t([[0, PAD]]))  # predictions must be in range
    other = SegmentationMetrics(ignore_index=-1)
    other.update(t([[0, 1, 1]]), t([[0, -1, 1]]))
    assert torch.equal(other.confusion, torch.tensor([[1, 0], [0, 1]]))
    with pytest.raises(ValueError, match="labels must lie in"):
        other.update(t([[0, 1]]), t([[0, PAD]]))
