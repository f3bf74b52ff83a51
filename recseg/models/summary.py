"""``recseg describe``: build a model, run a synthetic clip through it and report."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from recseg.config import accepts, at_least, one_of, option, parse_size, size_check
from recseg.models.deeplab import count_parameters
from recseg.models.registry import build_model, model_spec, readable_name
from recseg.models.state import State
from recseg.training.config import norm_field, pretrained_field
from recseg.training.losses import build_loss


@dataclass(frozen=True)
class DescribeConfig:
    """Options of ``recseg describe``."""

    model: str = field(
        metadata=option("Model name (`recseg models` lists them).", check=accepts(model_spec))
    )
    loss: str = field(
        default="CrossDice",
        metadata=option("Loss for the backward pass.", check=accepts(build_loss)),
    )
    size: str = field(default="270x512", metadata=option("Frame size HxW.", check=size_check))
    seq_len: int = field(default=4, metadata=option("Frames per clip (T).", check=at_least(1)))
    batch_size: int = field(default=1, metadata=option("Clips per batch (B).", check=at_least(1)))
    output_stride: int = field(
        default=8, metadata=option("Backbone output stride.", check=one_of(8, 16))
    )
    pretrained: str = pretrained_field()
    norm: str = norm_field()
    faithful: bool = field(default=False, metadata=option("Use the thesis code's model choices."))
    seed: int = field(default=0, metadata=option("Random seed for weights and the synthetic clip."))


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
    model = build_model(
        cfg.model,
        faithful=cfg.faithful,
        output_stride=cfg.output_stride,
        pretrained=cfg.pretrained or None,
        norm=cfg.norm,
    )
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
        "train_ms_per_frame": 1000 * train_s / n,
        "infer_ms_per_frame": 1000 * infer_s / n,
        "threads": torch.get_num_threads(),
    }
