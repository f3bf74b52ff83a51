"""Helpers for recurrent state: a flat ``dict[str, Tensor]`` whose tensors are batch-first.

The state is owned by the caller. Every tensor has the batch (lane) dimension first, so a state
can be detached, indexed per sample, moved between devices and saved with ``torch.save`` (it
loads with ``torch.load(..., weights_only=True)``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

State = dict[str, torch.Tensor]


def detach_state(state: Mapping[str, torch.Tensor] | None) -> State | None:
    """Cut the autograd graph (truncated back-propagation through time)."""
    if state is None:
        return None
    return {k: v.detach() for k, v in state.items()}


def select_state(
    state: Mapping[str, torch.Tensor] | None, index: torch.Tensor | slice | int
) -> State | None:
    """The state of the samples picked by ``index`` (a bool mask, indices or a slice)."""
    if state is None:
        return None
    if isinstance(index, int):
        index = slice(index, index + 1)
    return {k: v[index] for k, v in state.items()}


def state_to(
    state: Mapping[str, torch.Tensor] | None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> State | None:
    """Move (and optionally cast) every tensor of a state."""
    if state is None:
        return None
    return {k: v.to(device=device, dtype=dtype) for k, v in state.items()}


def reset_state(
    state: Mapping[str, torch.Tensor] | None, reset: torch.Tensor | None
) -> State | None:
    """Zero the state of the samples where ``reset`` (``(B,)`` bools) is True."""
    if state is None or reset is None:
        return None if state is None else dict(state)
    first = next(iter(state.values()))
    mask = torch.as_tensor(reset, device=first.device).to(torch.bool)
    if mask.shape != (first.shape[0],):
        raise ValueError(f"reset must have shape ({first.shape[0]},), got {tuple(mask.shape)}")
    out: State = {}
    for k, v in state.items():
        keep = mask.to(v.device).view(-1, *([1] * (v.dim() - 1)))
        out[k] = torch.where(keep, torch.zeros((), dtype=v.dtype, device=v.device), v)
    return out


def stack_states(states: list[Mapping[str, torch.Tensor]]) -> State:
    """Concatenate per-sample states along the batch dimension."""
    keys = states[0].keys()
    return {k: torch.cat([s[k] for s in states], dim=0) for k in keys}
