"""``recseg describe``: build a model, run a synthetic clip through it and report."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from recseg.config import parse_size
from recseg.models.deeplab import count_parameters
from recseg.models.registry import model_spec, readable_name
from recseg.models.state import State
from recseg.training.config import (
    batch_size_field,
    configured_model,
    faithful_field,
    loss_field,
    model_field,
    norm_field,
    output_stride_field,
    pretrained_field,
    seed_field,
    seq_len_field,
    size_field,
)
from recseg.training.losses import build_loss


@dataclass(frozen=True)
class DescribeConfig:
    """Options of ``recseg describe``."""

    model: str = model_field()
    loss: str = loss_field(default="CrossDice", help="Loss for the backward pass.")
    size: str = size_field(default="270x512", help="Frame size HxW.")
    seq_len: int = seq_len_field(help="Frames per clip (T).")
    batch_size: int = batch_size_field(default=1, help="Clips per batch (B).")
    output_stride: int = output_stride_field()
    pretrained: str = pretrained_field()
    norm: str = norm_field()
    faithful: bool = faithful_field()
    seed: int = seed_field(help="Random seed for weights and the synthetic clip.")


def _backward(
    model: torch.nn.Module,
    frames: torch.Tensor,
    loss: torch.nn.Module,
    target: torch.Tensor,
    last_only: bool,
) -> tuple[torch.Tensor, State | None, float]:
    """One forward and backward pass; returns logits, state and the loss value."""
    frames.grad = None
    logits, state = model(frames)
    value = loss(logits[:, -1], target[:, -1]) if last_only else loss(logits, target)
    value.backward()
    return logits.detach(), state, float(value.item())


def describe(cfg: DescribeConfig) -> dict:
    """Build ``cfg.model``, run forward/backward on a random clip, check streaming; report."""
    torch.manual_seed(cfg.seed)
    h, w = parse_size(cfg.size)
    model = configured_model(cfg)
    spec = model_spec(cfg.model)
    frames = torch.rand(cfg.batch_size, cfg.seq_len, 3, h, w, requires_grad=True)
    target = (torch.rand(cfg.batch_size, cfg.seq_len, h, w) > 0.5).long()
    loss_fn = build_loss(cfg.loss)
    model.eval()  # eval-mode norms: only a recurrent unit can link one frame to another
    # Pass 1 (also the warm-up): a loss on the last frame only; does its gradient reach frame 1?
    logits, state, _ = _backward(model, frames, loss_fn, target, last_only=True)
    grad_first = frames.grad[:, 0].abs().sum().item()
    start = time.perf_counter()
    _, _, loss_value = _backward(model, frames, loss_fn, target, last_only=False)
    train_s = time.perf_counter() - start
    with torch.inference_mode():
        start = time.perf_counter()
        whole, _ = model(frames.detach())
        infer_s = time.perf_counter() - start
        streamed, carried = [], None
        for t in range(cfg.seq_len):
            out, carried = model(frames.detach()[:, t], carried)
            streamed.append(out)
    n = cfg.batch_size * cfg.seq_len
    return {
        "model": cfg.model,
        "readable_name": readable_name(spec),
        "backbone": spec.backbone,
        "cell": spec.cell or "none",
        "position": spec.position or "none",
        "store_previous": spec.store_previous,
        "output_stride": cfg.output_stride,
        "norm": model.options.norm,
        "pretrained": model.backbone.source,
        "params_total": count_parameters(model),
        "params_trainable": count_parameters(model, trainable_only=True),
        "params_backbone": count_parameters(model.backbone),
        "input_shape": list(frames.shape),
        "logits_shape": list(logits.shape),
        "state_shapes": {k: list(v.shape) for k, v in (state or {}).items()},
        "loss": cfg.loss,
        "loss_value": loss_value,
        "grad_reaches_first_frame": grad_first > 0,
        "stream_max_abs_diff": float((whole - torch.stack(streamed, 1)).abs().max().item()),
        "logits_max_abs": float(whole.abs().max().item()),
        "train_ms_per_frame": 1000 * train_s / n,
        "infer_ms_per_frame": 1000 * infer_s / n,
        "threads": torch.get_num_threads(),
    }
