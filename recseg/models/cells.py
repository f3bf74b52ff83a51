"""Convolutional recurrent cells (ConvLSTM, ConvGRU) with caller-owned state."""

from __future__ import annotations

import torch
from torch import nn


class ConvLSTMCell(nn.Module):
    """ConvLSTM cell (Shi et al. 2015), as in ndrplz/ConvLSTM_pytorch.

    One convolution over ``cat(x, h)`` yields the input, forget, output and candidate
    gates; ``c' = f*c + i*g`` and ``h' = o*tanh(c')``.
    """

    state_names = ("h", "c")

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.conv = nn.Conv2d(
            in_channels + hidden_channels,
            4 * hidden_channels,
            kernel_size,
            padding=kernel_size // 2,
            bias=True,
        )

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        h, c = state
        i, f, o, g = torch.split(self.conv(torch.cat([x, h], dim=1)), self.hidden_channels, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class ConvGRUCell(nn.Module):
    """ConvGRU cell, as in happyjin/ConvGRU-pytorch.

    ``conv_gates`` over ``cat(x, h)`` gives the reset and update gates, ``conv_can`` over
    ``cat(x, r*h)`` the candidate; ``h' = (1-z)*h + z*tanh(candidate)``.
    """

    state_names = ("h",)

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        padding = kernel_size // 2
        total = in_channels + hidden_channels
        self.conv_gates = nn.Conv2d(total, 2 * hidden_channels, kernel_size, padding=padding)
        self.conv_can = nn.Conv2d(total, hidden_channels, kernel_size, padding=padding)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        (h,) = state
        gates = torch.sigmoid(self.conv_gates(torch.cat([x, h], dim=1)))
        r, z = torch.split(gates, self.hidden_channels, dim=1)
        candidate = torch.tanh(self.conv_can(torch.cat([x, r * h], dim=1)))
        return ((1 - z) * h + z * candidate,)


CELLS: dict[str, type[nn.Module]] = {"lstm": ConvLSTMCell, "gru": ConvGRUCell}
