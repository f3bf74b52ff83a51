"""Deployment: a trained network as a TorchScript or ONNX program that streams frames.

The exported program takes one frame batch ``src`` (B, 3, H, W) float32 in [0, 1] and the
recurrent state tensors ``r1i, r2i, ...`` and returns ``(prob, r1o, r2o, ...)``: the foreground
probability (B, 1, H, W) and the new state, fed back as ``r1i, r2i, ...`` with the next frame.
On a clip's first frame every state input is zeros of shape (1, 1, 1, 1). The heavy part lives
in :mod:`recseg.deploy.export`; this module only holds what the command checks before loading
torch.
"""

from __future__ import annotations

from pathlib import Path

from recseg.errors import InputError

FORMATS = ("torchscript", "onnx")
SUFFIXES = {"torchscript": (".pt", ".torchscript"), "onnx": (".onnx",)}
MIN_OPSET, MAX_OPSET = 18, 23  # what torch 2.14's dynamo exporter writes without conversion


def check_output(fmt: str, out: str | Path) -> Path:
    """``out`` as a Path when its suffix fits ``fmt``; ``InputError`` (one line) otherwise."""
    if fmt not in FORMATS:
        raise InputError(f"--format: must be one of {', '.join(FORMATS)}, got '{fmt}'")
    out = Path(out)
    suffixes = SUFFIXES[fmt]
    if out.suffix.lower() not in suffixes:
        raise InputError(
            f"-o {out}: {fmt} files end in {' or '.join(suffixes)}, got "
            f"'{out.suffix or 'no suffix'}'"
        )
    if out.is_dir():
        raise InputError(f"-o {out}: is a folder, expected a file path")
    from recseg.data.paths import check_target  # here: importing recseg.data loads PyAV

    check_target("-o", out)
    return out


__all__ = ["FORMATS", "MAX_OPSET", "MIN_OPSET", "SUFFIXES", "check_output"]
