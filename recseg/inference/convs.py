"""Two exact, faster forms of a convolution for inference.

``TapPrunedConv2d``: a dilated 'same' convolution leaves out the kernel taps that, at the
input's size, only ever multiply zero padding (a dilation-36 3x3 conv on a 34x64 map is a 1x3).

``TapGemmConv2d``: a widely dilated convolution as one 1x1 convolution to every live tap's
outputs, then shifted sums: oneDNN's bf16 (AMX) kernels are fast for that and slow for large
dilations (a 2048->256 3x3 at dilation 12: ~12 ms against ~46 ms on 2 cores).

``WinogradConv2d``: Winograd F(4x4, 3x3) (Lavin & Gray 2016) from plain tensor operations.

A 3x3 stride-1 convolution computed as 36 matrix products over 4x4 output tiles needs 4x fewer
multiplications than the direct one; the input and output transforms are two small matrix
products more. In float32 the result agrees with the direct convolution to ~1e-5 of its scale
(the transforms' constants reach 64, so it is not used for bfloat16).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

TILE = 4  # output tile side; the input tile is TILE + 2


def _alive(kernel: int, dilation: int, size: int) -> slice:
    """Kernel taps along one axis that reach the input somewhere: tap ``k`` is offset by
    ``(k - kernel // 2) * dilation``; with ``|offset| >= size`` it reads padding only."""
    centre = kernel // 2
    reach = (size - 1) // dilation if dilation > 0 else centre
    keep = min(centre, reach)
    return slice(centre - keep, centre + keep + 1)


class TapPrunedConv2d(nn.Conv2d):
    """A 'same'-padded, stride-1 dilated convolution that leaves out the kernel taps which, at
    the input's size, only ever multiply zero padding. The result is the full convolution's."""

    def _conv_forward(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        return pruned_conv2d(x, weight, bias, self.dilation, self.groups)


def pruned_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    dilation: tuple[int, int],
    groups: int = 1,
) -> torch.Tensor:
    """A stride-1 'same' convolution without the taps that only ever read padding at
    ``x``'s size."""
    (kh, kw), (dh, dw) = weight.shape[-2:], dilation
    rows, cols = _alive(kh, dh, x.shape[-2]), _alive(kw, dw, x.shape[-1])
    weight = weight[:, :, rows, cols]
    padding = (dh * (weight.shape[-2] // 2), dw * (weight.shape[-1] // 2))
    return F.conv2d(x, weight, bias, 1, padding, dilation, groups)


def _live_taps(kernel: tuple[int, int], dilation: tuple[int, int], size: tuple[int, int]):
    """``(i, j, dy, dx)`` of the taps that reach the input somewhere at ``size``."""
    rows = _alive(kernel[0], dilation[0], size[0])
    cols = _alive(kernel[1], dilation[1], size[1])
    return [
        (i, j, (i - kernel[0] // 2) * dilation[0], (j - kernel[1] // 2) * dilation[1])
        for i in range(rows.start, rows.stop)
        for j in range(cols.start, cols.stop)
    ]


class TapGemmConv2d(nn.Module):
    """A stride-1 'same' dilated convolution computed tap by tap: one 1x1 convolution yields
    every live tap's contribution at once; each is added, shifted by its offset, into a float32
    sum (so a bf16 network loses nothing more than a direct convolution does)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if not (prunable(conv) and conv.groups == 1):
            raise ValueError(f"not a dilated stride-1 'same' convolution: {conv}")
        # (kh, kw, K, C): the live taps' filters, stacked row-major, are a slice of it (a view
        # when whole kernel rows are live), not a per-frame concatenation
        self.register_buffer("taps", conv.weight.detach().permute(2, 3, 0, 1).contiguous())
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone())
        self.kernel, self.dilation = conv.kernel_size, conv.dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        taps = _live_taps(self.kernel, self.dilation, (h, w))
        rows = _alive(self.kernel[0], self.dilation[0], h)
        cols = _alive(self.kernel[1], self.dilation[1], w)
        k = self.taps.shape[2]
        stacked = self.taps[rows, cols].reshape(len(taps) * k, c, 1, 1)
        every = F.conv2d(x, stacked)  # (n, taps * k, h, w)
        out = x.new_zeros((n, k, h, w), dtype=torch.float32)
        out = out.contiguous(memory_format=torch.channels_last)
        for t, (_, _, dy, dx) in enumerate(taps):
            src = every[
                :, t * k : (t + 1) * k, max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)
            ]
            out[:, :, max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)] += src
        if self.bias is not None:
            out += self.bias.view(1, -1, 1, 1)
        return out.to(x.dtype)


def prunable(conv: nn.Conv2d) -> bool:
    sizes = zip(conv.padding, conv.dilation, conv.kernel_size, strict=True)
    same = all(p == d * (k // 2) for p, d, k in sizes)
    return (
        max(conv.dilation) > 1
        and conv.stride == (1, 1)
        and all(k % 2 == 1 for k in conv.kernel_size)
        and conv.padding_mode == "zeros"
        and isinstance(conv.padding, tuple)
        and same
    )


_BT = [
    [4, 0, -5, 0, 1, 0],
    [0, -4, -4, 1, 1, 0],
    [0, 4, -4, -1, 1, 0],
    [0, -2, -1, 2, 1, 0],
    [0, 2, -1, -2, 1, 0],
    [0, 4, 0, -5, 0, 1],
]
_G = [
    [1 / 4, 0, 0],
    [-1 / 6, -1 / 6, -1 / 6],
    [-1 / 6, 1 / 6, -1 / 6],
    [1 / 24, 1 / 12, 1 / 6],
    [1 / 24, -1 / 12, 1 / 6],
    [0, 0, 1],
]
_AT = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]


@functools.cache
def _matrix(name: str) -> torch.Tensor:
    return torch.tensor({"BT": _BT, "G": _G, "AT": _AT}[name], dtype=torch.float64)


def input_transform() -> torch.Tensor:
    """``(36, 36)``: a flattened 6x6 input tile ``d`` to ``B^T d B``, flattened."""
    bt = _matrix("BT")
    return torch.kron(bt, bt)


def output_transform() -> torch.Tensor:
    """``(16, 36)``: a flattened 6x6 product tile ``m`` to the 4x4 output ``A^T m A``."""
    at = _matrix("AT")
    return torch.kron(at, at)


def transform_weight(weight: torch.Tensor) -> torch.Tensor:
    """``(K, C, 3, 3)`` filters to ``(36, C, K)`` Winograd-domain filters ``G g G^T``
    (computed in float64, returned in ``weight``'s dtype)."""
    g = _matrix("G").to(weight.device)
    u = torch.einsum("ai,kcij,bj->abck", g, weight.double(), g)
    return u.reshape(36, weight.shape[1], weight.shape[0]).to(weight.dtype).contiguous()


def winograd_conv2d(
    x: torch.Tensor,
    u: torch.Tensor,
    bias: torch.Tensor | None,
    kin: torch.Tensor,
    kout: torch.Tensor,
) -> torch.Tensor:
    """``conv2d(x, w, bias, padding=1)`` for ``u = transform_weight(w)``; ``kin``/``kout`` are
    ``input_transform()``/``output_transform()`` in ``x``'s dtype and device. Works on
    channels-last memory and returns a channels-last result."""
    n, c, h, w = x.shape
    th, tw = -(-h // TILE), -(-w // TILE)
    xn = x.permute(0, 2, 3, 1)  # NHWC (a view of channels-last memory)
    xp = F.pad(xn, (0, 0, 1, TILE * tw + 1 - w, 1, TILE * th + 1 - h))
    d = xp.unfold(1, TILE + 2, TILE).unfold(2, TILE + 2, TILE)  # (n, th, tw, c, 6, 6)
    d = d.permute(4, 5, 0, 1, 2, 3).reshape(36, n * th * tw * c)
    v = (kin @ d).view(36, n * th * tw, c)
    k = u.shape[2]
    m = torch.bmm(v, u)  # (36, tiles, k)
    y = (kout @ m.view(36, -1)).view(TILE, TILE, n, th, tw, k)
    y = y.permute(2, 3, 0, 4, 1, 5).reshape(n, TILE * th, TILE * tw, k)[:, :h, :w]
    if bias is not None:
        y = y + bias
    return y.permute(0, 3, 1, 2)


def tile_overhead(size: tuple[int, int], dilation: int) -> float:
    """Pixels Winograd computes per output pixel at ``size`` (H, W): a dilated convolution
    runs on ``dilation**2`` sub-grids, each padded up to whole 4x4 tiles."""
    h, w = size
    sub_h, sub_w = -(-h // dilation), -(-w // dilation)
    tiles = TILE * -(-sub_h // TILE) * TILE * -(-sub_w // TILE)
    return dilation * dilation * tiles / (h * w)


def dilated_winograd_conv2d(
    x: torch.Tensor, dilation: int, u: torch.Tensor, bias: torch.Tensor | None, kin, kout
) -> torch.Tensor:
    """A dilated 3x3 'same' convolution as ``dilation**2`` independent undilated ones on the
    input's polyphase sub-grids (``x[..., i::d, j::d]``), each by Winograd."""
    n, c, h, w = x.shape
    d = dilation
    hp, wp = d * -(-h // d), d * -(-w // d)
    xn = F.pad(x.permute(0, 2, 3, 1), (0, 0, 0, wp - w, 0, hp - h))  # (n, hp, wp, c)
    sub = xn.reshape(n, hp // d, d, wp // d, d, c).permute(0, 2, 4, 5, 1, 3)
    sub = sub.reshape(n * d * d, c, hp // d, wp // d)
    y = winograd_conv2d(sub, u, bias, kin, kout)  # (n*d*d, k, hp/d, wp/d), channels-last
    k = y.shape[1]
    y = y.permute(0, 2, 3, 1).reshape(n, d, d, hp // d, wp // d, k)
    y = y.permute(0, 3, 1, 4, 2, 5).reshape(n, hp, wp, k)[:, :h, :w]
    return y.permute(0, 3, 1, 2)


class WinogradConv2d(nn.Module):
    """An inference-only stand-in for a 3x3 'same' (``padding == dilation``), stride-1,
    ungrouped ``nn.Conv2d``, holding its filters already transformed. At input sizes where the
    tiles would waste more than ``max_overhead``x the work the direct convolution runs."""

    def __init__(self, conv: nn.Conv2d, max_overhead: float = 2.0) -> None:
        super().__init__()
        if not eligible(conv, min_channels=1):
            raise ValueError(f"not a 3x3 stride-1 'same' convolution: {conv}")
        weight = conv.weight.detach()
        self.register_buffer("weight", weight.clone())
        self.register_buffer("u", transform_weight(weight))
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone())
        self.register_buffer("kin", input_transform().to(weight))
        self.register_buffer("kout", output_transform().to(weight))
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.dilation = conv.dilation[0]
        self.max_overhead = max_overhead

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.dilation
        if tile_overhead(tuple(x.shape[-2:]), d) > self.max_overhead or d >= min(x.shape[-2:]):
            return pruned_conv2d(x, self.weight, self.bias, (d, d))
        if d == 1:
            return winograd_conv2d(x, self.u, self.bias, self.kin, self.kout)
        return dilated_winograd_conv2d(x, d, self.u, self.bias, self.kin, self.kout)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, dilation={self.dilation}, F(4x4, 3x3)"


def eligible(conv: nn.Module, min_channels: int) -> bool:
    """Whether ``conv`` is a plain 3x3 'same' convolution (any dilation) Winograd can replace,
    with at least ``min_channels`` input and output channels (below ~128 the direct kernels
    win)."""
    return (
        isinstance(conv, nn.Conv2d)
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.dilation[0] == conv.dilation[1]
        and conv.groups == 1
        and conv.padding == conv.dilation
        and conv.padding_mode == "zeros"
        and min(conv.in_channels, conv.out_channels) >= min_channels
    )
