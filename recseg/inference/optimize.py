"""A network prepared for fast inference, with the same ``forward(frames, state, reset)``.

``optimize(model, precision, device)`` returns a copy with:

- BatchNorm folded into the convolution before it (eval statistics, exact up to rounding);
- dilated convolutions that skip the taps which, at the input's size, can only ever land in zero
  padding (a dilation-36 3x3 conv on a 34x64 map is a 1x3 conv): the same sums, fewer FLOPs;
- large 3x3 convolutions as Winograd F(4x4, 3x3) (fp32 only): a quarter of the
  multiplications of a direct convolution (``recseg.inference.convs``);
- channels-last memory, ``torch.inference_mode``, the recurrent state left on the device;
- ``precision="bf16"``: weights, activations and state in bfloat16 on a CPU (oneDNN's AVX-512
  BF16/AMX kernels; widely dilated convolutions as tap-by-tap GEMMs, which those kernels run
  4-10x faster), autocast on a GPU (tensor cores); logits are returned as float32;
- ``compile=True`` (or ``"auto"`` where a compiler is present): ``torch.compile`` with weight
  freezing on top; if compiling fails the eager path is used.

The eager reference (``model`` itself, fp32, NCHW) stays the definition of the output: the
optimised fp32 path matches it within 1e-4 of the logits' scale (tests/test_optimize.py).
"""

from __future__ import annotations

import copy
import itertools
import logging
import shutil
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from recseg.errors import InputError
from recseg.inference import PRECISIONS
from recseg.inference.convs import (
    TapGemmConv2d,
    TapPrunedConv2d,
    WinogradConv2d,
    eligible,
    prunable,
)
from recseg.models.state import State

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}  # one per PRECISIONS
WINOGRAD_MIN_CHANNELS = 128  # below this the direct kernels are as fast
COMPILE_LIMIT = 64  # compiled graphs per model code object and process
TAP_GEMM_MIN_DILATION, TAP_GEMM_MIN_CHANNELS = 8, 1024  # ResNet's ASPP at output stride 8
log = logging.getLogger(__name__)


def check_precision(precision: str) -> torch.dtype:
    """The dtype of ``precision`` (``fp32`` or ``bf16``); ``InputError`` otherwise."""
    if precision not in DTYPES:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    return DTYPES[precision]


def _conv_bn_pairs(module: nn.Module) -> Iterator[tuple[nn.Module, str, str]]:
    """``(parent, conv_name, bn_name)`` for every BatchNorm right after a convolution: in a
    ``Sequential``, or as ``convN``/``bnN`` attributes (torchvision's ResNet blocks)."""
    for parent in module.modules():
        children = dict(parent.named_children())
        names = list(children)
        if isinstance(parent, nn.Sequential):
            pairs = itertools.pairwise(names)
        else:
            pairs = ((n, "bn" + n[4:]) for n in names if n.startswith("conv") and n[4:].isdigit())
        for conv, bn in pairs:
            if isinstance(children.get(conv), nn.Conv2d) and _foldable(children.get(bn)):
                yield parent, conv, bn


def _foldable(bn: nn.Module | None) -> bool:
    return isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats and bn.running_mean is not None


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every (eval-mode) BatchNorm that follows a convolution into it, in place; returns
    how many were folded."""
    pairs = list(_conv_bn_pairs(model))
    for parent, conv, bn in pairs:
        fused = fuse_conv_bn_eval(getattr(parent, conv).eval(), getattr(parent, bn).eval())
        setattr(parent, conv, fused)
        setattr(parent, bn, nn.Identity())
    return len(pairs)


def _tap_gemm(conv: nn.Conv2d) -> bool:
    """Where oneDNN's bf16 kernels are slow: wide dilations over many input channels."""
    return (
        prunable(conv)
        and conv.groups == 1
        and min(conv.dilation) >= TAP_GEMM_MIN_DILATION
        and conv.in_channels >= TAP_GEMM_MIN_CHANNELS
    )


def _swap_convs(model: nn.Module, winograd: bool, tap_gemm: bool) -> dict[str, int]:
    """Replace convolutions in place by their tap-pruned / Winograd / tap-GEMM forms; the
    counts."""
    counts = {"pruned": 0, "winograd": 0, "tap_gemm": 0}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not nn.Conv2d:
                continue
            counts["pruned"] += prunable(child)
            if winograd and eligible(child, WINOGRAD_MIN_CHANNELS):
                setattr(parent, name, WinogradConv2d(child))
                counts["winograd"] += 1
            elif tap_gemm and _tap_gemm(child):
                setattr(parent, name, TapGemmConv2d(child))
                counts["tap_gemm"] += 1
            elif prunable(child):
                child.__class__ = TapPrunedConv2d  # same parameters, another forward
    return counts


def compiler_available(device: torch.device | str = "cpu") -> bool:
    """Whether ``torch.compile`` can generate code here: Triton for CUDA, a C++ compiler for
    the CPU."""
    if torch.device(device).type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return False
        return True
    import os

    return any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "c++", "clang++") if c)


class FastModel(nn.Module):
    """An optimised copy of a network behind the same ``forward(frames, state, reset)``: takes
    float frames on any device, returns float32 logits on ``device`` and a state (in the path's
    dtype) to pass back. Always runs under ``torch.inference_mode``."""

    def __init__(
        self, net: nn.Module, precision: str, device: torch.device, compile: bool, info: dict
    ) -> None:
        super().__init__()
        self.net = net
        self.precision = precision
        self.device = device
        self.info = info
        # On a GPU bf16 runs under autocast (fp32 weights and state); on a CPU the weights,
        # activations and state are bf16 (oneDNN's kernels; autocast's casts cost more there).
        self.autocast = device.type == "cuda" and precision == "bf16"
        self.dtype = torch.float32 if self.autocast else DTYPES[precision]
        self._compiled = _compile(net) if compile else None

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

    def forward(
        self, frames: torch.Tensor, state: State | None = None, reset: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State | None]:
        with torch.inference_mode():
            x = frames.to(self.device, self.dtype, non_blocking=True)
            if reset is not None:
                reset = reset.to(self.device, non_blocking=True)
            with torch.autocast("cuda", torch.bfloat16, enabled=self.autocast):
                logits, state = self._run(x, state, reset)
            return logits.float(), state

    def _run(
        self, x: torch.Tensor, state: State | None, reset: torch.Tensor | None
    ) -> tuple[torch.Tensor, State | None]:
        if self._compiled is not None:
            try:
                return self._compiled(x, state, reset)
            except Exception as exc:  # any compiler failure: run eagerly
                log.warning("torch.compile failed (%s); running eagerly", type(exc).__name__)
                self._compiled = None
        return self.net(x, state, reset)


def _compile(net: nn.Module) -> nn.Module:
    """``torch.compile`` with weights frozen into the graph (BatchNorm-free, prepacked)."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "no CUDA" notes
    # Dynamo counts recompilations per code object, i.e. over every optimised copy of every
    # model in the process (each input size, state None or not, ...): the default 8 is soon
    # reached, after which it silently runs eagerly.
    dynamo = torch._dynamo.config
    dynamo.recompile_limit = max(dynamo.recompile_limit, COMPILE_LIMIT)
    dynamo.accumulated_recompile_limit = max(dynamo.accumulated_recompile_limit, 4 * COMPILE_LIMIT)
    return torch.compile(net, dynamic=False, options={"freezing": True})


def optimize(
    model: nn.Module,
    precision: str = "fp32",
    device: torch.device | str | None = None,
    *,
    compile: bool | str = False,
    winograd: bool = True,
) -> FastModel:
    """An inference copy of ``model`` (unchanged itself): see the module docstring.
    ``compile``: True, False or ``"auto"`` (when ``compiler_available``)."""
    dtype = check_precision(precision)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    net = copy.deepcopy(model).eval().to("cpu", torch.float32)
    folded = fold_batchnorm(net)
    cpu = device.type == "cpu"
    counts = _swap_convs(net, winograd and precision == "fp32" and cpu, precision == "bf16" and cpu)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        dtype = torch.float32  # bf16 by autocast
    net = net.to(device, dtype).to(memory_format=torch.channels_last).requires_grad_(False)
    if compile == "auto":
        compile = compiler_available(device)
    info = {"folded_batchnorms": folded, **counts, "precision": precision, "device": str(device)}
    return FastModel(net, precision, device, bool(compile), info)
