"""Tests for recseg.tracking.plots (history PNGs) and recseg.evaluation.samples (panels)."""

from __future__ import annotations

import math
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from recseg.evaluation.samples import encode_png, prediction_panel
from recseg.tracking.plots import DPI, FIGSIZE, history_plots

FILES = {"loss.png", "lr.png", "miou.png"}
PNG_SHAPE = (round(FIGSIZE[1] * DPI), round(FIGSIZE[0] * DPI), 3)


def _decode(png: bytes) -> np.ndarray:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def _full_history(epochs: int = 50) -> dict[str, list[tuple[int, float]]]:
    return {
        "train_loss": [(e, 1 / (e + 1)) for e in range(epochs)],
        "val_loss": [(e, 1.1 / (e + 1)) for e in range(0, epochs, 2)],
        "lr": [(e, 1e-5 + 1e-3 * abs(math.sin(e / 4))) for e in range(epochs)],
        "val_miou": [(e, 0.5 + e / 200) for e in range(0, epochs, 2)],
        "val_fg_iou": [(e, 0.4 + e / 200) for e in range(0, epochs, 2)],
        "train_miou": [(e, 0.6) for e in range(epochs)],
    }


def test_history_plots_are_pngs() -> None:
    plots = history_plots(_full_history())
    assert set(plots) == FILES
    for png in plots.values():
        assert _decode(png).shape == PNG_SHAPE
        assert 2_000 < len(png) < 200_000


@pytest.mark.parametrize(
    "history",
    [
        {},
        {"lr": [(0, 1e-3)]},
        {"train_loss": [(0, math.nan), (1, math.nan)], "lr": [(0, 0.0), (1, 1e-3)]},
        {"val_miou": [(3, math.nan)], "val_loss": [(2, math.inf), (0, 0.5), (1, 0.4)]},
        {"lr": [(0, 3e-4), (1, 3e-4)], "train_miou": [], "other": [(0, 1.0)]},
        {"train_loss": [[1.0, 0.5], [0.0, 1.0]]},  # JSON-style lists, float epochs, unsorted
    ],
)
def test_history_plots_tolerate_sparse_history(history: dict) -> None:
    plots = history_plots(history)
    assert set(plots) == FILES
    for png in plots.values():
        assert _decode(png).shape == PNG_SHAPE


def test_history_plots_do_not_use_pyplot() -> None:
    code = (
        "import sys; from recseg.tracking.plots import history_plots; history_plots({}); "
        "assert 'matplotlib.pyplot' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two 4x8 black frames: columns 0-1 TP, 2-3 FP, 4-5 FN, 6 TN, 7 padding."""
    frames = torch.zeros(2, 3, 4, 8)
    labels = torch.tensor([1, 1, 0, 0, 1, 1, 0, 255]).repeat(2, 4, 1)
    probs = torch.tensor([0.9, 0.6, 0.5, 1.0, 0.1, 0.4, 0.0, 0.9]).repeat(2, 4, 1)
    return frames, labels, probs


def test_panel_shape_and_rows() -> None:
    frames, labels, probs = _batch()
    panel = prediction_panel(frames, labels, probs, width=16)
    assert panel.dtype == np.uint8 and panel.shape == (2 * 8, 3 * 16, 3)
    one = prediction_panel(frames, labels, probs, max_rows=1, width=256)
    assert one.shape == (128, 3 * 256, 3)
    frames = torch.rand(6, 3, 30, 40)
    many = prediction_panel(frames, torch.zeros(6, 30, 40, dtype=torch.long), torch.rand(6, 30, 40))
    assert many.shape == (4 * 192, 3 * 256, 3)


def test_panel_colours() -> None:
    frames, labels, probs = _batch()
    panel = prediction_panel(frames, labels, probs, max_rows=1, width=8)  # no rescaling
    image, truth, pred = panel[:, :8], panel[:, 8:16], panel[:, 16:]
    assert (image == 0).all()
    assert (truth[:, :2] == 255).all() and (truth[:, 4:6] == 255).all()
    assert (truth[:, 2:4] == 0).all() and (truth[:, 6] == 0).all()
    assert (truth[:, 7] == 128).all() and (pred[:, 7] == 128).all()
    assert (pred[:, :2] == (0, 128, 0)).all()  # true positive: green tint
    assert (pred[:, 2:4] == (128, 0, 0)).all()  # false positive: red
    assert (pred[:, 4:6] == (0, 0, 128)).all()  # false negative: blue
    assert (pred[:, 6] == 0).all()  # true negative: the input


def test_panel_tints_over_the_input() -> None:
    frames, labels, probs = _batch()
    frames[:] = 0.4  # 102
    pred = prediction_panel(frames, labels, probs, max_rows=1, width=8)[:, 16:]
    assert (pred[:, 0] == (51, 178, 51)).all()
    assert (pred[:, 6] == 102).all()


def test_panel_rejects_mismatched_shapes() -> None:
    frames, labels, probs = _batch()
    with pytest.raises(ValueError, match="labels"):
        prediction_panel(frames, labels[:, :2], probs)
    with pytest.raises(ValueError, match="frames"):
        prediction_panel(frames[:, :1], labels, probs)


def test_encode_png_round_trip() -> None:
    frames, labels, probs = _batch()
    panel = prediction_panel(frames, labels, probs, width=8)
    decoded = _decode(encode_png(panel))
    np.testing.assert_array_equal(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), panel)
    with pytest.raises(ValueError):
        encode_png(panel.astype(np.float32))
