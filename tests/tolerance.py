"""Tolerances derived from dtype and magnitude, as ``torch.testing`` derives its defaults.

Two computations of the same network output in a different batch layout (one clip
versus frame-by-frame chunks, eager versus exported) round differently at every
layer. The difference grows with the output's magnitude and the depth of the
network, not with the test: so the tolerance is ``depth * eps(dtype) * magnitude``.
"""

from __future__ import annotations

import numpy as np
import torch

#: Rounding steps that accumulate through a DeepLabV3+ forward (convs, norms, upsampling).
NETWORK_DEPTH = 64


def logits_atol(logits: torch.Tensor | np.ndarray, depth: int = NETWORK_DEPTH) -> float:
    """Absolute tolerance for logits of this dtype and magnitude after ``depth`` rounding steps."""
    t = torch.as_tensor(logits)
    eps = torch.finfo(t.dtype).eps
    return float(depth * eps * max(1.0, t.abs().max().item()))


def rel_tol(dtype: torch.dtype, depth: int = NETWORK_DEPTH) -> float:
    """Largest difference relative to a result's scale (max |x|) for two computations of it in
    ``dtype`` that round differently ``depth`` times (one convolution: a few; a network: 64)."""
    return depth * torch.finfo(dtype).eps


def probs_atol(logits: torch.Tensor | np.ndarray, depth: int = NETWORK_DEPTH) -> float:
    """Tolerance for softmax/sigmoid probabilities: their slope is at most 1/4 of the logits'."""
    return max(logits_atol(logits, depth) / 4, 1e-6)


#: A different runtime (ONNX Runtime, a TorchScript graph) may pick other conv algorithms
#: (Winograd, blocked GEMM with another accumulation order): each step may add many roundings.
CROSS_RUNTIME_DEPTH = 16 * NETWORK_DEPTH

#: One convolution computed another way (taps left out, another kernel): a few roundings each.
CONV_DEPTH = 16
#: Winograd F(4x4, 3x3): its transforms' constants reach 64, which scales the rounding with them.
WINOGRAD_DEPTH = 8 * CONV_DEPTH

#: ``torch.testing.assert_close``'s default (rtol, atol) per dtype.
DEFAULTS = {
    torch.float16: (1e-3, 1e-5),
    torch.bfloat16: (1.6e-2, 1e-5),
    torch.float32: (1.3e-6, 1e-5),
    torch.float64: (1e-7, 1e-7),
}


def runtime_atol(values: torch.Tensor | np.ndarray) -> float:
    """Tolerance for the same network run by another runtime than eager PyTorch."""
    return logits_atol(values, CROSS_RUNTIME_DEPTH)


def approx(expected: object, dtype: torch.dtype = torch.float32) -> object:
    """``pytest.approx`` with ``torch.testing``'s default tolerances for values computed in
    ``dtype`` (a float32 loss compared with its exact value, for instance)."""
    import pytest

    rtol, atol = DEFAULTS[dtype]
    return pytest.approx(expected, rel=rtol, abs=atol)
