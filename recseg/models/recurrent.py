"""A recurrent unit that runs a conv cell over time with caller-owned state."""

from __future__ import annotations

import torch
from torch import nn

from recseg.models.cells import CELLS
from recseg.models.state import State, reset_state

PREVIOUS = ("prev1", "prev2")


class RecurrentUnit(nn.Module):
    """Runs a ConvLSTM/ConvGRU cell over the time axis of ``(B, T, C, H, W)`` features.

    With ``store_previous`` (the thesis's V2/V4/V6 variants) the cell sees, for every frame,
    the three-step sequence ``[out(t-2), out(t-1), x(t)]`` where ``out`` are the unit's own
    earlier outputs (zeros at a clip start); the cell state also carries over.

    The state is a dict of ``(B, C, H, W)`` tensors; zeros are created lazily at the input's
    size, so any resolution works. A state tensor of shape ``(1, 1, 1, 1)`` (or ``(B, 1, 1, 1)``)
    is broadcast to the full shape: exported programs take zeros of that shape on a first frame.
    """

    def __init__(
        self, cell: str, in_channels: int, hidden_channels: int, store_previous: bool = False
    ) -> None:
        super().__init__()
        if store_previous and in_channels != hidden_channels:
            raise ValueError("store_previous needs in_channels == hidden_channels")
        self.cell = CELLS[cell](in_channels, hidden_channels)
        self.store_previous = store_previous
        self.hidden_channels = hidden_channels

    @property
    def state_names(self) -> tuple[str, ...]:
        names = tuple(self.cell.state_names)
        return names + PREVIOUS if self.store_previous else names

    def initial_state(self, x: torch.Tensor) -> State:
        """Zero state for a ``(B, C, H, W)`` input frame."""
        b, _, h, w = x.shape
        zeros = x.new_zeros(b, self.hidden_channels, h, w)
        return {name: zeros for name in self.state_names}

    def _check(self, state: State, x: torch.Tensor) -> State:
        missing = set(self.state_names) - set(state)
        if missing:
            raise ValueError(
                f"recurrent state lacks {sorted(missing)}; pass the state the model returned"
            )
        expected = (x.shape[0], self.hidden_channels, *x.shape[-2:])
        for name in self.state_names:
            if not _fits(tuple(state[name].shape), expected):
                raise ValueError(
                    f"recurrent state '{name}' has shape {tuple(state[name].shape)}, expected "
                    f"{expected}: keep batch and frame size while a state is carried"
                )
        # A first-frame placeholder (zeros of shape (1, 1, 1, 1), as exported programs take it)
        # broadcasts to the real shape; for a real state expand and contiguous change nothing.
        return {
            name: state[name].to(dtype=x.dtype).expand(expected).contiguous()
            for name in self.state_names
        }

    def forward(
        self, x: torch.Tensor, state: State | None = None, reset: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        """``x``: ``(B, T, C, H, W)``; returns ``(B, T, hidden, H, W)`` outputs and the state."""
        first = x[:, 0]
        state = (
            self.initial_state(first)
            if state is None
            else reset_state(self._check(state, first), reset)
        )
        cell_state = tuple(state[name] for name in self.cell.state_names)
        prev1, prev2 = (state["prev1"], state["prev2"]) if self.store_previous else (None, None)
        outputs = []
        for t in range(x.shape[1]):
            inputs = [prev2, prev1, x[:, t]] if self.store_previous else [x[:, t]]
            for inp in inputs:
                cell_state = self.cell(inp, cell_state)
            out = cell_state[0]
            prev2, prev1 = prev1, out
            outputs.append(out)
        new_state = dict(zip(self.cell.state_names, cell_state, strict=True))
        if self.store_previous:
            new_state.update(prev1=prev1, prev2=prev2)
        return torch.stack(outputs, dim=1), new_state


def _fits(shape: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    """``shape`` is the expected state shape, or a placeholder ``(1 or B, 1, 1, 1)``."""
    if shape == expected:
        return True
    return len(shape) == 4 and shape[0] in (1, expected[0]) and shape[1:] == (1, 1, 1)
