"""Running a logged model on videos: ``recseg segment``'s options (``SegmentConfig``) and path
checks here, light to import; ``recseg.inference.segment`` streams a video through the network
(``segment_video``, ``stream_masks``); ``recseg.inference.background`` has the colours, images and
videos to composite onto."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from recseg.config import MODEL_URIS, at_least, device_field, one_of, option, size_or_default
from recseg.errors import InputError

CHUNK = 8  # frames per forward pass
PRECISIONS = ("fp32", "bf16")


def precision_field() -> dataclasses.Field:
    """``--precision``: the shared option of segment and evaluate."""
    return dataclasses.field(
        default="fp32",
        metadata=option(
            "Arithmetic of the optimised network: fp32 (matches the trained model within 1e-4) "
            "or bf16 (2-4x faster on CPUs with AVX-512 BF16/AMX and on GPUs; foreground IoU "
            "within ~0.5 points).",
            check=one_of(*PRECISIONS),
        ),
    )


def compile_field() -> dataclasses.Field:
    """``--compile``: the shared option of segment and evaluate."""
    return dataclasses.field(
        default=False,
        metadata=option(
            "torch.compile the network first (10-30 s once per input size, then up to 1.5x "
            "faster on a CPU; runs uncompiled where no C++ compiler / Triton is found)."
        ),
    )


def _threshold_check(value: float) -> str | None:
    return None if 0 < value < 1 else f"must be between 0 and 1 (exclusive), got {value}"


@dataclasses.dataclass(frozen=True)
class SegmentConfig:
    """Options of ``recseg segment`` besides INPUT_VIDEO and ``-o OUTPUT_VIDEO``."""

    model: str = dataclasses.field(
        metadata=option(
            f"Logged model: {MODEL_URIS}.",
            mltype="uri",
        )
    )
    background: str = dataclasses.field(
        default="",
        metadata=option(
            "Composite the person onto this image, video (looped) or colour (a name such as "
            "green, #RRGGBB or R,G,B); default: write the mask video (white person on black)."
        ),
    )
    masks: str = dataclasses.field(
        default="",
        metadata=option(
            "Also write the binary masks: FILE.mp4 (mask video) or a new folder of lossless "
            "PNGs 000000.png, ... (0 background, 255 person)."
        ),
    )
    size: str = dataclasses.field(
        default="",
        metadata=option(
            "Working size HxW the network sees; default: the size the model was trained at "
            "(else 270x512) fitted to the video's aspect ratio.",
            check=size_or_default,
        ),
    )
    threshold: float = dataclasses.field(
        default=0.5, metadata=option("Foreground probability threshold.", check=_threshold_check)
    )
    device: str = device_field()
    chunk: int = dataclasses.field(
        default=CHUNK,
        metadata=option("Frames per forward pass (state carried between them).", check=at_least(1)),
    )
    precision: str = precision_field()
    compile: bool = compile_field()


def check_paths(input_path: Path, output_path: Path, masks: Path | None) -> None:
    """``InputError`` for an output that is not .mp4, the input as output, or a masks target
    that is the input/output or an existing non-empty folder."""
    if output_path.suffix.lower() != ".mp4":
        raise InputError(f"-o {output_path}: the output must be an .mp4 file")
    if _same(input_path, output_path):
        raise InputError(f"-o {output_path}: the output must not be the input video")
    if output_path.is_dir():
        raise InputError(f"-o {output_path}: is a folder")
    from recseg.data.paths import check_target  # here: importing recseg.data loads PyAV

    check_target("-o", output_path)
    if masks is None:
        return
    check_target("--masks", masks)
    if _same(masks, input_path) or _same(masks, output_path):
        raise InputError(f"--masks {masks}: must differ from the input and the output")
    if masks.suffix.lower() == ".mp4":
        if masks.is_dir():
            raise InputError(f"--masks {masks}: is a folder")
    elif masks.exists() and not masks.is_dir():
        raise InputError(f"--masks {masks}: exists and is not a folder (or end it in .mp4)")
    elif masks.is_dir() and any(masks.iterdir()):
        raise InputError(f"--masks {masks}: the folder exists and is not empty")


def _same(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False
