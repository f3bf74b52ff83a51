"""Build everything a training run needs from its config: store, loaders, model, optimiser,
schedule, device; and the resolved values worth logging."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from recseg.data.loader import TemporalLoader, clip_windows, make_loader
from recseg.data.store import MANIFEST, ClipStore
from recseg.errors import InputError
from recseg.machine import pick_device
from recseg.models.deeplab import RecurrentDeepLab, count_parameters
from recseg.models.registry import model_spec, readable_name
from recseg.training.config import TrainConfig, configured_model
from recseg.training.losses import build_loss
from recseg.training.optim import build_optimizer, build_scheduler, seed_lr_settings
from recseg.training.precision import CPU_BF16, amp_mode


@dataclasses.dataclass
class Setup:
    """The parts of a training run, before any state is loaded into them."""

    store: ClipStore
    device: torch.device
    model: RecurrentDeepLab
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    train_loader: TemporalLoader
    val_loader: TemporalLoader
    resolved: dict[str, Any]  # logged as params next to the options


def open_store(data: str) -> ClipStore:
    """The clip store at ``--data``; ``InputError`` when there is none."""
    root = Path(data)
    if not root.is_dir():
        raise InputError(f"--data {data}: {'not a folder' if root.exists() else 'no such folder'}")
    if not (root / MANIFEST).is_file():
        raise InputError(
            f"--data {data}: not a clip store ({MANIFEST} missing); make one with "
            "`recseg preprocess`"
        )
    return ClipStore(root)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _lanes(
    cfg: TrainConfig, store: ClipStore, warn: Callable[[str], None], processes: int = 1
) -> int:
    usable = sum(1 for r in store.clips("train") if clip_windows(r.frames, cfg.seq_len, True))
    if 0 < usable < cfg.batch_size:
        if usable % processes:
            raise InputError(
                f"the train split has {usable} clips of at least --seq-len {cfg.seq_len} "
                f"frames, fewer than --batch-size {cfg.batch_size}, and {usable} lanes cannot "
                f"be split across --nproc {processes} processes"
            )
        warn(
            f"the train split has {usable} clips of at least --seq-len {cfg.seq_len} frames; "
            f"training with {usable} lanes instead of --batch-size {cfg.batch_size}"
        )
        return usable
    return cfg.batch_size


def _warn_fixed_composites(
    cfg: TrainConfig, store: ClipStore, loader: TemporalLoader, warn: Callable[[str], None]
) -> None:
    """Say once when augmented training cannot composite on the fly (an older store)."""
    if not cfg.augment or loader.composites_on_the_fly:
        return
    if not any(r.layers for r in store.clips("train")):
        warn(
            f"{cfg.data} was made by an older recseg and has no foreground layers: training "
            "augments its fixed composites; re-run `recseg preprocess` into a new --out to "
            "composite on the fly"
        )
    else:
        warn(
            f"{cfg.data} has no train backgrounds: training augments its fixed composites; "
            "re-run `recseg preprocess` into a new --out to composite on the fly"
        )


def _loaders(
    cfg: TrainConfig, store: ClipStore, lanes: int, shard: tuple[int, int] = (0, 1)
) -> tuple[TemporalLoader, TemporalLoader]:
    if 0 < cfg.piece_frames < cfg.seq_len:
        raise InputError(
            f"--piece-frames {cfg.piece_frames} is shorter than --seq-len {cfg.seq_len}: "
            "a piece must hold at least one window"
        )
    common = {
        "seq_len": cfg.seq_len,
        "seed": cfg.seed,
        "num_workers": cfg.num_workers,
        "size": cfg.frame_size,
    }
    train = make_loader(store, "train", batch_size=lanes, train=True, augment=cfg.augment,
                        piece=cfg.piece_frames, shard=shard, **common)  # fmt: skip
    val = make_loader(store, "val", batch_size=lanes, train=False, **common)
    return train, val


def _learning_rates(cfg: TrainConfig) -> tuple[float, float]:
    low, high, _ = seed_lr_settings(model_spec(cfg.model))
    lr = cfg.lr or high
    lr_min = cfg.lr_min or min(low, lr)
    if lr_min > lr:
        raise InputError(f"--lr-min {lr_min} is above the peak learning rate {lr}")
    return lr, lr_min


def build_setup(
    cfg: TrainConfig,
    warn: Callable[[str], None] = print,
    *,
    device: torch.device | None = None,
    shard: tuple[int, int] = (0, 1),
) -> Setup:
    """Open the store and build loaders, model, loss, optimiser and schedule (seeded).

    ``device``: where to train (default: ``--device``); ``shard=(rank, world)``: the train
    loader of that process of a data-parallel job (the val loader reads everything)."""
    store = open_store(cfg.data)
    device = device or pick_device(cfg.device)
    lanes = _lanes(cfg, store, warn, shard[1])
    train_loader, val_loader = _loaders(cfg, store, lanes, shard)
    _warn_fixed_composites(cfg, store, train_loader, warn)
    seed_everything(cfg.seed)
    amp = amp_mode(device, cfg.amp)
    # oneDNN/cuDNN's fast layout in fp32/fp16: ~1.2-1.4x; CPU bf16 GroupNorm is faster without
    layout = torch.contiguous_format if amp == CPU_BF16 else torch.channels_last
    model = configured_model(cfg).to(device, memory_format=layout)
    lr, lr_min = _learning_rates(cfg)
    sampler = train_loader.sampler
    steps_per_epoch = [len(sampler.plans(e)) for e in range(cfg.epochs)]
    total = max(1, sum(steps_per_epoch))
    cycle = max(2, round(cfg.cycle_epochs * steps_per_epoch[0]))
    optimizer = build_optimizer(cfg.optimizer, model, lr, cfg.weight_decay)
    scheduler = build_scheduler(
        optimizer, cfg.schedule, total_steps=total, lr=lr, lr_min=lr_min, cycle_steps=cycle
    )
    h, w = train_loader.size
    resolved = {
        "resolved_lr": lr,
        "resolved_lr_min": lr_min,
        "resolved_batch_size": lanes,
        "resolved_size": f"{h}x{w}",
        "composite_on_the_fly": train_loader.composites_on_the_fly,
        "steps_per_epoch": steps_per_epoch[0],
        "total_steps": total,
        "cycle_steps": cycle,
        "resolved_final_weights": cfg.resolved_final_weights,
        "resolved_amp": amp,
        "params_total": count_parameters(model),
        "params_trainable": count_parameters(model, trainable_only=True),
        "readable_name": readable_name(model.spec),
        "resolved_pretrained": model.backbone.source,
        **{f"model_{k}": v for k, v in model.options.to_dict().items()},
    }
    return Setup(
        store,
        device,
        model,
        build_loss(cfg.loss),
        optimizer,
        scheduler,
        train_loader,
        val_loader,
        resolved,
    )
