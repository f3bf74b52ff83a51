"""Options of ``recseg footage``: a typed config validated with one-line errors."""

from __future__ import annotations

from dataclasses import dataclass, field

from recseg.config import Check, at_least, option, parse_size, size_check
from recseg.errors import InputError

GENERATOR_VERSION = "1.0"
MAX_FRAMES = 100_000  # per video: a guard against a typo such as --seconds 60000


def positive(limit: float) -> Check:
    """A check: 0 < value <= limit."""
    return lambda v: None if 0 < v <= limit else f"must be > 0 and <= {limit:g}, got {v}"


def even_size_check(text: str) -> str | None:
    """A check: a valid HxW whose sides are even (H.264 yuv420p needs even sides)."""
    message = size_check(text)
    if message:
        return message
    h, w = parse_size(text)
    if h % 2 or w % 2:
        return f"height and width must be even for H.264 yuv420p, got '{text}'"
    return None


@dataclass(frozen=True)
class FootageConfig:
    """Options of ``recseg footage``."""

    videos: int = field(
        default=6, metadata=option("Number of videos to generate.", check=at_least(1))
    )
    seconds: float = field(
        default=6.0, metadata=option("Length of each video in seconds.", check=positive(3600))
    )
    fps: float = field(default=30.0, metadata=option("Frames per second.", check=positive(240)))
    size: str = field(
        default="360x640", metadata=option("Frame size HxW (even sides).", check=even_size_check)
    )
    seed: int = field(
        default=0, metadata=option("Random seed: same seed, same footage.", check=at_least(0))
    )
    hard: bool = field(
        default=False,
        metadata=option(
            "Add events only memory resolves: occlusions, flashes, noise bursts, "
            "dropped/corrupt frames and motion blur."
        ),
    )
    backgrounds: int = field(
        default=0,
        metadata=option(
            "Most background images to write (0 = every one available).", check=at_least(0)
        ),
    )

    @property
    def frames(self) -> int:
        """Frames per video."""
        return max(1, round(self.seconds * self.fps))

    @property
    def shape(self) -> tuple[int, int]:
        """Frame (height, width)."""
        return parse_size(self.size)


def check_footage_config(cfg: FootageConfig) -> None:
    """Cross-field checks the per-field checks cannot make; ``InputError`` names the flag."""
    frames = cfg.seconds * cfg.fps
    if frames < 1:
        raise InputError(f"--seconds: {cfg.seconds:g} s at {cfg.fps:g} fps is less than one frame")
    if frames > MAX_FRAMES:
        raise InputError(f"--seconds: {frames:.0f} frames per video is more than {MAX_FRAMES}")
