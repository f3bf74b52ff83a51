"""Sample-prediction panels: input | truth | prediction overlaid on the input, one row a frame."""

from __future__ import annotations

import cv2
import numpy as np
import torch

IGNORE_INDEX = 255
THRESHOLD = 0.5  # foreground probability at which a pixel is predicted foreground
TINT = 0.5  # weight of the tint colour over the input
GREY = (128, 128, 128)  # padding pixels (label 255)
WHITE = (255, 255, 255)  # truth foreground
TP_COLOUR = (0, 255, 0)  # green
FP_COLOUR = (255, 0, 0)  # red
FN_COLOUR = (0, 0, 255)  # blue


def _check(frames: torch.Tensor, labels: torch.Tensor, probs: torch.Tensor) -> None:
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must have shape (N, 3, H, W), got {tuple(frames.shape)}")
    n, _, h, w = frames.shape
    for name, t in (("labels", labels), ("probs", probs)):
        if tuple(t.shape) != (n, h, w):
            raise ValueError(f"{name} must have shape {(n, h, w)}, got {tuple(t.shape)}")
    if n == 0 or h == 0 or w == 0:
        raise ValueError(f"no pixels to draw: frames have shape {tuple(frames.shape)}")


def _resize(tile: np.ndarray, width: int, nearest: bool) -> np.ndarray:
    """``tile`` scaled to ``width`` wide, keeping its aspect ratio."""
    h, w = tile.shape[:2]
    height = max(round(h * width / w), 1)
    smooth = cv2.INTER_AREA if width < w else cv2.INTER_LINEAR
    interp = cv2.INTER_NEAREST if nearest else smooth
    return cv2.resize(tile, (width, height), interpolation=interp)


def _tint(image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> None:
    """Blend ``colour`` over ``image`` where ``mask`` is set, in place."""
    blended = (1 - TINT) * image[mask].astype(np.float32) + TINT * np.float32(colour)
    image[mask] = np.round(blended).astype(np.uint8)


def _row(frame: np.ndarray, label: np.ndarray, prob: np.ndarray, width: int) -> np.ndarray:
    """One panel row from an (H, W, 3) uint8 frame, (H, W) labels and probabilities."""
    pad = label == IGNORE_INDEX
    truth = (label != 0) & ~pad
    pred = (prob >= THRESHOLD) & ~pad
    mask = np.zeros_like(frame)
    mask[truth] = WHITE
    mask[pad] = GREY
    overlay = frame.copy()
    _tint(overlay, pred & truth, TP_COLOUR)
    _tint(overlay, pred & ~truth, FP_COLOUR)
    _tint(overlay, ~pred & truth, FN_COLOUR)
    overlay[pad] = GREY
    tiles = [
        _resize(frame, width, False),
        _resize(mask, width, True),
        _resize(overlay, width, False),
    ]
    return np.concatenate(tiles, axis=1)


def prediction_panel(
    frames: torch.Tensor,
    labels: torch.Tensor,
    probs: torch.Tensor,
    *,
    max_rows: int = 4,
    width: int = 256,
) -> np.ndarray:
    """An RGB uint8 panel ``(rows * tile_h, 3 * width, 3)`` of the first ``max_rows`` frames.

    ``frames`` (N, 3, H, W) in [0, 1], ``labels`` (N, H, W) with 255 = padding (grey),
    ``probs`` (N, H, W) foreground probabilities. Each row: the input, the truth (foreground
    white), and the prediction over the input: true positives green, false positives red,
    false negatives blue. Every tile is scaled to ``width`` pixels wide.
    """
    if max_rows < 1 or width < 1:
        raise ValueError(f"max_rows and width must be >= 1, got {max_rows} and {width}")
    _check(frames, labels, probs)
    rows = min(max_rows, frames.shape[0])
    images = frames[:rows].detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    images_np = images.permute(0, 2, 3, 1).cpu().numpy()
    labels_np = labels[:rows].detach().cpu().numpy()
    probs_np = probs[:rows].detach().float().cpu().numpy()
    panel = [_row(images_np[i], labels_np[i], probs_np[i], width) for i in range(rows)]
    return np.ascontiguousarray(np.concatenate(panel, axis=0))


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an (H, W, 3) RGB uint8 image."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {rgb.dtype} {rgb.shape}")
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("OpenCV could not encode the image as PNG")
    return buf.tobytes()
