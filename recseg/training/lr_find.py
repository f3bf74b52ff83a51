"""The learning-rate range test (``recseg lr-find``): Leslie Smith's test as torch-lr-finder runs
it, on real ``B x T`` batches of the temporal loader with the recurrent state carried per lane.

The learning rate grows exponentially from ``start_lr`` to ``end_lr`` over ``num_iter``
optimiser steps; the loss is smoothed with a bias-corrected exponential moving average and the
test stops once the smoothed loss exceeds ``diverge`` x the best one. Unlike the thesis code,
lanes play shuffled clips (a new order per epoch, from ``seed``), every weight decay starts from
the same weights and sees the same batches, and ``--batch-size`` really sets the batch.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from recseg.config import accepts, at_least, device_field, one_of, option, parse_size
from recseg.data.loader import TemporalLoader, clip_windows, make_loader
from recseg.data.store import ClipStore
from recseg.errors import InputError
from recseg.models.deeplab import RecurrentDeepLab
from recseg.models.state import State, detach_state
from recseg.training.config import (
    batch_size_field,
    configured_model,
    data_field,
    faithful_field,
    loss_field,
    model_field,
    norm_field,
    num_workers_field,
    output_stride_field,
    pretrained_field,
    seed_field,
    seq_len_field,
    size_field,
)
from recseg.training.losses import build_loss
from recseg.training.optim import OPTIMIZERS, build_optimizer
from recseg.training.setup import seed_everything

DEFAULT_EXPERIMENT = "lr_find"
SKIP_START, SKIP_END = 10, 5  # points left out of the suggestion (torch-lr-finder's defaults)


def parse_weight_decays(text: str) -> tuple[float, ...]:
    """``"0,1e-4"`` -> ``(0.0, 0.0001)``; ``InputError`` for anything but distinct, finite,
    non-negative numbers."""
    parts = [p.strip() for p in str(text).split(",")]
    if not any(parts):
        raise InputError("expected a comma-separated list of weight decays (e.g. 0,1e-4)")
    values: list[float] = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            raise InputError(
                f"'{part}' is not a number (expected a comma-separated list, e.g. 0,1e-4)"
            ) from None
        if not math.isfinite(value) or value < 0:
            raise InputError(f"each weight decay must be a finite number >= 0, got '{part}'")
        if value in values:
            raise InputError(f"weight decay {part} is given twice")
        values.append(value)
    return tuple(values)


def wd_label(value: float) -> str:
    """A short label of a weight decay: ``0``, ``1e-4``, ``0.5``, ``2.5e-8``."""
    if value == 0:
        return "0"
    fixed = format(value, ".12f").rstrip("0").rstrip(".")
    mantissa, _, exponent = format(value, ".11e").partition("e")
    sci = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return fixed if len(fixed) <= len(sci) and float(fixed) == value else sci


def _positive(value: float) -> str | None:
    ok = math.isfinite(value) and value > 0
    return None if ok else f"must be a positive number, got {value}"


def _fraction(value: float) -> str | None:
    return None if 0 <= value <= 1 else f"must be between 0 and 1, got {value}"


def _above_one(value: float) -> str | None:
    return None if math.isfinite(value) and value > 1 else f"must be above 1, got {value}"


@dataclasses.dataclass(frozen=True)
class LrFindConfig:
    """Options of ``recseg lr-find`` (see ``recseg lr-find --help``)."""

    data: str = data_field()
    model: str = model_field()
    loss: str = loss_field()
    weight_decays: str = dataclasses.field(
        default="1e-4",
        metadata=option(
            "Comma-separated weight decays, one sweep (MLflow run) each, e.g. 0,1e-4,1e-6,1e-8 "
            "(the thesis's).",
            check=accepts(parse_weight_decays),
        ),
    )
    batch_size: int = batch_size_field()
    seq_len: int = seq_len_field()
    size: str = size_field()
    start_lr: float = dataclasses.field(
        default=1e-7, metadata=option("Learning rate of the first step.", check=_positive)
    )
    end_lr: float = dataclasses.field(
        default=10.0,
        metadata=option("Learning rate of the last step (reached exponentially).", check=_positive),
    )
    num_iter: int = dataclasses.field(
        default=100, metadata=option("Optimiser steps of each sweep.", check=at_least(2))
    )
    smoothing: float = dataclasses.field(
        default=0.05,
        metadata=option(
            "Weight of the newest loss in the smoothed loss (moving average); 0: no smoothing.",
            check=_fraction,
        ),
    )
    diverge: float = dataclasses.field(
        default=5.0,
        metadata=option(
            "Stop when the smoothed loss exceeds this x the best one.", check=_above_one
        ),
    )
    optimizer: str = dataclasses.field(
        default="adam",
        metadata=option(
            "Optimiser (the thesis used adam, whose weight decay is L2).",
            check=one_of(*OPTIMIZERS),
        ),
    )
    seed: int = seed_field()
    num_workers: int = num_workers_field()
    device: str = device_field(purpose="Where to train")
    output_stride: int = output_stride_field()
    pretrained: str = pretrained_field()
    norm: str = norm_field()
    faithful: bool = faithful_field()
    experiment: str = dataclasses.field(
        default=DEFAULT_EXPERIMENT, metadata=option("MLflow experiment of the runs.")
    )

    def __post_init__(self) -> None:
        lrs = (self.start_lr, self.end_lr)
        if all(isinstance(v, int | float) for v in lrs) and self.end_lr <= self.start_lr:
            raise InputError(f"--end-lr {self.end_lr} must be above --start-lr {self.start_lr}")

    @property
    def decays(self) -> tuple[float, ...]:
        """``--weight-decays`` parsed."""
        return parse_weight_decays(self.weight_decays)

    @property
    def frame_size(self) -> tuple[int, int] | None:
        """``--size`` parsed, or None for the store's size."""
        return parse_size(self.size) if self.size else None


@dataclasses.dataclass
class LrCurve:
    """One sweep: learning rates, raw and smoothed losses per step, and what they suggest."""

    lrs: list[float]
    losses: list[float]  # raw
    smoothed: list[float]
    stopped_early: bool
    suggestion: float | None  # lr at the steepest descent of the smoothed loss
    min_loss_lr: float  # lr at the lowest smoothed loss (NaN without any point)

    def to_dict(self) -> dict[str, list[float]]:
        return {"lr": self.lrs, "loss": self.losses, "smoothed": self.smoothed}


def lr_at(i: int, start_lr: float, end_lr: float, num_iter: int) -> float:
    """The exponential schedule: ``start * (end / start) ** (i / (num_iter - 1))``."""
    return start_lr * (end_lr / start_lr) ** (i / max(1, num_iter - 1))


def suggest(lrs: list[float], smoothed: list[float]) -> float | None:
    """The lr where the smoothed loss falls fastest (per log-lr), leaving out the first and last
    few points; None with fewer than 3 points left or when the loss never falls."""
    n = len(lrs)
    start, end = min(SKIP_START, max(1, n // 10)), min(SKIP_END, max(1, n // 20))
    lr = np.asarray(lrs[start : n - end], dtype=float)
    loss = np.asarray(smoothed[start : n - end], dtype=float)
    if len(lr) < 3:
        return None
    slope = np.gradient(loss, np.log(lr))
    best = int(np.argmin(slope))
    return float(lr[best]) if slope[best] < 0 else None


def _batches(loader: TemporalLoader) -> Any:
    """Batches for ever: the next epoch (``set_epoch``) whenever one is exhausted."""
    while True:
        got = False
        for batch in loader:
            got = True
            yield batch
        if not got:
            raise RuntimeError(f"the {loader.split} loader yields no batches")
        loader.set_epoch(loader.epoch)  # iterating has advanced it: start that epoch afresh


def _snapshot(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    return {
        "model": copy.deepcopy(model.state_dict()),
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "training": model.training,
    }


def _restore(model: nn.Module, optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    for param, grad in zip(model.parameters(), saved["grads"], strict=True):
        param.grad = grad
    model.train(saved["training"])


class Smoother:
    """The exponential moving average of the loss, bias-corrected (so the first value is the
    first loss); ``weight`` is the newest loss's share, 0 passes losses through."""

    def __init__(self, weight: float) -> None:
        self.weight, self.average, self.count = weight, 0.0, 0

    def __call__(self, value: float) -> float:
        if self.weight <= 0:
            return value
        self.count += 1
        self.average = (1 - self.weight) * self.average + self.weight * value
        return self.average / (1 - (1 - self.weight) ** self.count)


def _step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    batch: dict[str, Any],
    state: State | None,
    device: torch.device,
) -> tuple[float, State | None]:
    """One training step on a ``B x T`` batch like the trainer's; the loss and the detached
    state to carry to the next window (zeroed by the model where ``reset``)."""
    frames = batch["frames"].to(device, non_blocking=True)
    labels = batch["labels"].to(device, non_blocking=True)
    logits, state = model(frames, state, batch["reset"].to(device))
    loss = loss_fn(logits.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach()), detach_state(state)


def range_test(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: TemporalLoader,
    loss_fn: nn.Module,
    device: torch.device,
    *,
    start_lr: float,
    end_lr: float,
    num_iter: int,
    smoothing: float,
    diverge: float,
    progress: bool = False,
) -> LrCurve:
    """Train ``num_iter`` steps with the lr rising exponentially from ``start_lr`` to ``end_lr``
    and record the loss; stop early once the smoothed loss exceeds ``diverge`` x its best (or
    the loss is not finite). The model, the optimiser and the loader's position are left
    untouched (restored afterwards, also on errors)."""
    if num_iter < 2 or not 0 < start_lr < end_lr:
        raise ValueError(
            f"need num_iter >= 2, 0 < start_lr < end_lr: {num_iter}, {start_lr}, {end_lr}"
        )
    saved, position = _snapshot(model, optimizer), loader.state_dict()
    batches = _batches(loader)
    curve = LrCurve([], [], [], False, None, math.nan)
    smooth, best, state = Smoother(smoothing), math.inf, None
    try:
        model.train()
        for i in tqdm(range(num_iter), unit="step", leave=False, disable=not progress):
            lr = lr_at(i, start_lr, end_lr, num_iter)
            for group in optimizer.param_groups:
                group["lr"] = lr
            value, state = _step(model, optimizer, loss_fn, next(batches), state, device)
            if not math.isfinite(value):
                curve.stopped_early = True
                break
            smoothed = smooth(value)
            best = min(best, smoothed)
            curve.lrs.append(lr)
            curve.losses.append(value)
            curve.smoothed.append(smoothed)
            if smoothed > diverge * best:
                curve.stopped_early = True
                break
    finally:
        batches.close()
        _restore(model, optimizer, saved)
        loader.load_state_dict(position)
    curve.suggestion = suggest(curve.lrs, curve.smoothed)
    if curve.smoothed:
        curve.min_loss_lr = curve.lrs[int(np.argmin(curve.smoothed))]
    return curve


# ---- building a sweep from the config ---------------------------------------------------------
def lanes(cfg: LrFindConfig, store: ClipStore, warn: Callable[[str], None]) -> int:
    """``--batch-size``, or fewer lanes (with a warning) when the train split has fewer clips."""
    usable = sum(1 for r in store.clips("train") if clip_windows(r.frames, cfg.seq_len, True))
    if 0 < usable < cfg.batch_size:
        warn(
            f"the train split has {usable} clips of at least --seq-len {cfg.seq_len} frames; "
            f"sweeping with {usable} lanes instead of --batch-size {cfg.batch_size}"
        )
        return usable
    return cfg.batch_size


def train_loader(
    cfg: LrFindConfig, store: ClipStore, warn: Callable[[str], None] = print
) -> TemporalLoader:
    """The shuffled, augmented train loader every sweep runs on."""
    return make_loader(store, "train", batch_size=lanes(cfg, store, warn), seq_len=cfg.seq_len,
                       train=True, augment=True, seed=cfg.seed, num_workers=cfg.num_workers,
                       size=cfg.frame_size)  # fmt: skip


def fresh_model(cfg: LrFindConfig, device: torch.device) -> RecurrentDeepLab:
    """The model with the weights of ``--seed`` (the same for every sweep)."""
    seed_everything(cfg.seed)
    model = configured_model(cfg)
    return model.to(device, memory_format=torch.channels_last)


def sweep(
    cfg: LrFindConfig,
    weight_decay: float,
    model: nn.Module,
    loader: TemporalLoader,
    device: torch.device,
    progress: bool = False,
) -> LrCurve:
    """One range test of ``model`` with ``--optimizer`` at ``weight_decay``."""
    seed_everything(cfg.seed)
    optimizer = build_optimizer(cfg.optimizer, model, cfg.start_lr, weight_decay)
    return range_test(model, optimizer, loader, build_loss(cfg.loss).to(device), device,
                      start_lr=cfg.start_lr, end_lr=cfg.end_lr, num_iter=cfg.num_iter,
                      smoothing=cfg.smoothing, diverge=cfg.diverge, progress=progress)  # fmt: skip
