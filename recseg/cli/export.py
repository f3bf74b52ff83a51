"""``recseg export``: a logged model as a TorchScript or ONNX program with explicit state."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import click

from recseg.config import MODEL_URIS, build, click_options, option, parse_size, size_or_default
from recseg.deploy import FORMATS, MAX_OPSET, MIN_OPSET, check_output
from recseg.errors import EXIT_FAILURE


class _ShortOption(click.Option):
    """A config option that also has a short flag (``-o``)."""

    def __init__(self, param_decls: list[str], short: str | None = None, **kw: Any) -> None:
        super().__init__([short, *param_decls] if short else param_decls, **kw)


def _opset_check(value: int) -> str | None:
    if MIN_OPSET <= value <= MAX_OPSET:
        return None
    return f"must be between {MIN_OPSET} and {MAX_OPSET}, got {value}"


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """Options of ``recseg export``."""

    model: str = dataclasses.field(
        metadata=option(
            f"Model URI: {MODEL_URIS}.",
            metavar="URI",
        )
    )
    format: str = dataclasses.field(
        metadata=option(
            "torchscript (a .pt / .torchscript file for torch.jit.load) or onnx (.onnx).",
            type=click.Choice(FORMATS),
        )
    )
    output: str = dataclasses.field(
        metadata=option(
            "File to write (its folder is created); replaced only once the export checks out.",
            metavar="FILE",
            cls=_ShortOption,
            short="-o",
        )
    )
    size: str = dataclasses.field(
        default="",
        metadata=option(
            "HxW of the example input and the check frames; default: the model's training "
            "size, else 270x512. Batch, H and W stay dynamic in the file.",
            check=size_or_default,
            metavar="HxW",
        ),
    )
    opset: int = dataclasses.field(
        default=MIN_OPSET,
        metadata=option(
            f"ONNX opset, {MIN_OPSET} to {MAX_OPSET} (torch's exporter writes 18 or newer).",
            check=_opset_check,
        ),
    )
    check: bool = dataclasses.field(
        default=True,
        metadata=option("Stream 3 frames through the file and PyTorch; fail above 1e-4."),
    )


@click.command("export")
@click_options(ExportConfig)
def export_cmd(**values: object) -> None:
    """Export a logged model as TorchScript or ONNX: (src, r1i, r2i, ...) -> (prob, r1o, ...).

    src is (B, 3, H, W) float32 RGB in [0, 1]; prob the (B, 1, H, W) foreground probability;
    r1i, r2i, ... the recurrent state (order stored in the file's metadata), zeros of shape
    (1, 1, 1, 1) on the first frame, then the previous call's r1o, r2o, ...
    """
    cfg = build(ExportConfig, values)
    out = check_output(cfg.format, cfg.output)  # before the slow imports
    size = parse_size(cfg.size) if cfg.size else None
    from recseg.deploy.export import ExportError, export_model
    from recseg.tracking.model_uri import load_network

    loaded = load_network(cfg.model, "cpu")
    try:
        info = export_model(loaded, cfg.format, out, size=size, opset=cfg.opset, check=cfg.check)
    except ExportError as exc:
        click.echo(f"recseg: error: {exc}", err=True)
        sys.exit(EXIT_FAILURE)
    click.echo(info.summary())
