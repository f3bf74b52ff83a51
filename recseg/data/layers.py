"""Rendering a training window from a clip's layers and its drawn :class:`CompositeParams`.

``Compositor.window`` makes frames ``[start, stop)`` of a clip: the background (a train image
under the clip's camera path, a stored background video, or a flat screen; with clutter and a
colour jitter of its own), the foreground colour, alpha and label warped by the clip's affine
(colour: border replicated; alpha and label: zero border; label: nearest), the foreground's
colour jitter and channel permutation, ``out = bg + (fg - bg) * alpha / 255`` in float32
rounded to uint8, then blur, noise and a light global colour jitter. Every pixel is a function
of the parameters and the frame index only: a window read twice, or by another worker, is
identical. Background images and videos load lazily and stay in a small per-worker LRU.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from recseg.data.backdrop import pan_zoom
from recseg.data.clipfile import ClipFile, FrameFile
from recseg.data.composite import Colour, CompositeParams, Paste, Shape, frame_rng
from recseg.errors import InputError

_DECODE = getattr(cv2, "IMREAD_COLOR_RGB", cv2.IMREAD_COLOR)
_SCREEN_NOISE_STREAM = 1  # frame_rng stream of a screen's sensor noise (0: the final noise)


class Scratch:
    """Float32 work buffers reused from window to window (by name and shape)."""

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape:
            buf = self._buffers[name] = np.empty(shape, np.float32)
        return buf


def _lru_get(cache: collections.OrderedDict, key: Any, limit: int, make: Any) -> Any:
    value = cache.get(key)
    if value is None:
        value = make()
        cache[key] = value
        while len(cache) > limit:
            cache.popitem(last=False)
    cache.move_to_end(key)
    return value


def _read_image(path: Path) -> np.ndarray:
    data = np.fromfile(str(path), np.uint8) if path.is_file() else None
    image = cv2.imdecode(data, _DECODE) if data is not None and data.size else None
    if image is None:
        raise InputError(f"{path}: missing or damaged background; re-run `recseg preprocess`")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if _DECODE == cv2.IMREAD_COLOR else image


def _colour(block: np.ndarray, colour: Colour, permute: tuple[int, ...] = (0, 1, 2)) -> None:
    """Colour-jitter (and permute) an RGB uint8 block (one contiguous image) in place."""
    if colour != Colour() or permute != (0, 1, 2):
        cv2.transform(block, colour.matrix(permute), dst=block)


def _draw(image: np.ndarray, shape: Shape) -> None:
    """Draw one filled clutter shape into ``image`` (in place)."""
    h, w = image.shape[:2]
    x, y = shape.at[0] * w, shape.at[1] * h
    colour = tuple(int(c) for c in shape.colour)
    e = shape.extent
    if shape.kind == "ellipse":
        axes = (max(1, round(e[0] * h)), max(1, round(e[1] * h)))
        cv2.ellipse(image, (round(x), round(y)), axes, shape.angle, 0, 360, colour, -1, cv2.LINE_AA)
    elif shape.kind == "rectangle":
        end = (round(x + e[0] * h), round(y + e[1] * h))
        cv2.rectangle(image, (round(x), round(y)), end, colour, -1)
    elif shape.kind == "line":
        end = (round(x + e[0] * h), round(y + e[1] * h))
        thickness = max(1, round(e[2] * h))
        cv2.line(image, (round(x), round(y)), end, colour, thickness, cv2.LINE_AA)
    else:
        corners = np.array(e, np.float64).reshape(-1, 2) * h + (x, y)
        cv2.fillPoly(image, [np.rint(corners).astype(np.int32)], colour, cv2.LINE_AA)


def _paste(image: np.ndarray, paste: Paste, other: np.ndarray) -> None:
    """Paste a rectangle of ``other`` into ``image`` (in place)."""
    h, w = image.shape[:2]
    oh, ow = other.shape[:2]
    pw, ph = min(ow, w, round(paste.size[0] * w)), min(oh, h, round(paste.size[1] * h))
    if pw < 1 or ph < 1:
        return
    sx, sy = round(paste.src[0] * (ow - pw)), round(paste.src[1] * (oh - ph))
    dx, dy = round(paste.dst[0] * (w - pw)), round(paste.dst[1] * (h - ph))
    image[dy : dy + ph, dx : dx + pw] = other[sy : sy + ph, sx : sx + pw]


def screen_image(params: CompositeParams, size: tuple[int, int]) -> np.ndarray:
    """A flat screen of ``params.screen``'s colour with a linear brightness gradient."""
    h, w = size
    r, g, b, gx, gy = params.screen[:5]
    xs = np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :]
    ys = np.linspace(-1.0, 1.0, h, dtype=np.float32)[:, None]
    gain = 1.0 + gx * xs + gy * ys
    rgb = np.array([r, g, b], np.float32)
    return np.clip(gain[..., None] * rgb + 0.5, 0, 255).astype(np.uint8)


class Compositor:
    """Makes composited training windows; holds the store's train backgrounds (paths), loads
    them lazily and caches them, and each clip's prepared background, per worker."""

    def __init__(
        self, images: list[Path], videos: list[Path], size: tuple[int, int], cache: int = 8
    ):
        self.images, self.videos, self.size = list(images), list(videos), size
        self.cache = max(1, cache)
        self._images: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self._videos: collections.OrderedDict[int, FrameFile] = collections.OrderedDict()
        self._prepared: collections.OrderedDict[tuple, np.ndarray] = collections.OrderedDict()
        self._scratch = Scratch()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("_images", "_videos", "_prepared"):
            state[name] = collections.OrderedDict()
        state["_scratch"] = Scratch()
        return state

    def image(self, index: int) -> np.ndarray:
        """Train background image ``index`` (fitted RGB uint8; cached)."""
        return _lru_get(self._images, index, 16, lambda: _read_image(self.images[index]))

    def video(self, index: int) -> FrameFile:
        """Background video ``index`` (JPEG frames in memory; cached)."""
        return _lru_get(self._videos, index, 4, lambda: FrameFile(self.videos[index]))

    def window(
        self, params: CompositeParams, clip: ClipFile, start: int, stop: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Frames ``(n, H, W, 3)`` RGB uint8 and labels ``(n, H, W)`` uint8 of ``[start, stop)``."""
        frames = range(start, stop)
        bg = self.background(params, frames, len(clip))
        if params.empty:
            out, labels = bg, np.zeros(bg.shape[:3], np.uint8)
        else:
            fg, alpha = clip.layers(start, stop)
            fg, alpha, labels = _warp(params, fg, alpha, clip.labels(start, stop))
            out = _blend(fg, alpha, bg, self._scratch)
        _finish(params, out, frames, self._scratch)
        return out, labels

    def _prepare(self, params: CompositeParams, image: np.ndarray) -> np.ndarray:
        """A background source image made ready: flipped, cluttered, colour-jittered."""
        out = cv2.flip(image, 1) if params.camera.flip and params.source != "screen" else image
        out = out.copy() if out is image else out
        if params.paste is not None:
            _paste(out, params.paste, self.image(params.paste.image))
        for shape in params.clutter:
            _draw(out, shape)
        _colour(out, params.background_colour)
        return out

    def background(self, params: CompositeParams, frames: range, length: int) -> np.ndarray:
        """The background of a clip's ``frames`` (of ``length``), (n, H, W, 3) uint8."""
        h, w = self.size
        out = np.empty((len(frames), h, w, 3), np.uint8)
        if params.source == "video":
            video = self.video(params.index)
            first = int(params.video_start * len(video))
            sources = video.frames([(first + f) % len(video) for f in frames])
            for k, f in enumerate(frames):
                image = self._prepare(params, sources[k])
                pan_zoom(image, self.size, params.camera, f / max(length - 1, 1), out[k])
            return out
        base = _lru_get(self._prepared, params.key, self.cache, lambda: self._base(params))
        for k, f in enumerate(frames):
            if params.source == "screen":  # a still camera, sensor noise per frame
                noise = self._scratch.get("screen", (h, w, 3))
                rng = frame_rng(params.key, f, _SCREEN_NOISE_STREAM)
                rng.standard_normal(dtype=np.float32, out=noise)
                noise *= np.float32(params.screen[5])
                cv2.add(base, noise, out[k], dtype=cv2.CV_8U)
            else:
                pan_zoom(base, self.size, params.camera, f / max(length - 1, 1), out[k])
        return out

    def _base(self, params: CompositeParams) -> np.ndarray:
        """A clip's prepared image background, or its screen (cached per clip and epoch)."""
        if params.source == "screen":
            return self._prepare(params, screen_image(params, self.size))
        return self._prepare(params, self.image(params.index))


def _warp(
    params: CompositeParams, fg: np.ndarray, alpha: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The foreground layers under the clip's affine, colour-jittered and permuted."""
    n, h, w = alpha.shape
    m = params.affine()
    out_f, out_a, out_l = np.empty_like(fg), np.empty_like(alpha), np.empty_like(labels)
    linear, nearest, zero = cv2.INTER_LINEAR, cv2.INTER_NEAREST, cv2.BORDER_CONSTANT
    for k in range(n):
        cv2.warpAffine(fg[k], m, (w, h), out_f[k], linear, cv2.BORDER_REPLICATE)
        cv2.warpAffine(alpha[k], m, (w, h), out_a[k], linear, zero, 0)
        cv2.warpAffine(labels[k], m, (w, h), out_l[k], nearest, zero, 0)
    _colour(out_f.reshape(n * h, w, 3), params.foreground_colour, params.permute)
    return out_f, out_a, out_l


def _blend(fg: np.ndarray, alpha: np.ndarray, bg: np.ndarray, scratch: Scratch) -> np.ndarray:
    """``bg + (fg - bg) * alpha / 255`` in float32, rounded to uint8 (whole window at once;
    OpenCV's same-type float ops into reused buffers: mixed uint8/float ones, or fresh
    buffers' page faults, take several times as long)."""
    n, h, w = alpha.shape
    f, b, a = (scratch.get(name, (n * h, w, 3)) for name in "fba")
    np.copyto(f, fg.reshape(n * h, w, 3))
    np.copyto(b, bg.reshape(n * h, w, 3))
    np.copyto(a, alpha.reshape(n * h, w, 1))
    cv2.subtract(f, b, dst=f)
    cv2.multiply(f, a, dst=f, scale=1.0 / 255.0)
    cv2.add(f, b, dst=f)
    return cv2.convertScaleAbs(f).reshape(n, h, w, 3)  # rounds; all values are in 0..255


def _finish(params: CompositeParams, out: np.ndarray, frames: range, scratch: Scratch) -> None:
    """Blur, per-frame noise and the global colour jitter, in place."""
    n, h, w = out.shape[:3]
    for k, f in enumerate(frames):
        if params.blur:
            cv2.GaussianBlur(out[k], (params.blur, params.blur), 0, dst=out[k])
        if params.noise:
            noise = scratch.get("noise", (h, w, 3))
            frame_rng(params.key, f).standard_normal(dtype=np.float32, out=noise)
            noise *= np.float32(params.noise)
            cv2.add(out[k], noise, out[k], dtype=cv2.CV_8U)
    _colour(out.reshape(n * h, w, 3), params.colour)
