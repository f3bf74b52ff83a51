"""Optimisers, learning-rate schedules and the thesis's per-model learning-rate settings.

Schedules are stepped once per optimiser step. ``LRSchedule`` is a picklable callable giving
the multiplier of the peak ``lr`` at a step, for ``torch.optim.lr_scheduler.LambdaLR``; its
``cyclic`` and ``onecycle`` kinds reproduce torch's ``CyclicLR`` and ``OneCycleLR`` exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from recseg.errors import InputError
from recseg.models.deeplab import ModelSpec
from recseg.models.registry import SEED_VERSIONS

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cyclic", "onecycle", "poly", "constant")

# OneCycleLR settings (torch's defaults, spelled out): warm-up share, start and end divisors.
ONECYCLE_PCT_START = 0.3
ONECYCLE_DIV = 25.0
ONECYCLE_FINAL_DIV = 1e4
POLY_POWER = 0.9


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters split into "decay" (ndim > 1) and "no_decay" (biases, norms)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim > 1 else no_decay).append(param)
    groups = [
        {"name": "decay", "params": decay, "weight_decay": weight_decay},
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return groups


def build_optimizer(
    name: str, model: nn.Module, lr: float, weight_decay: float, momentum: float = 0.9
) -> torch.optim.Optimizer:
    """An optimiser over ``model``'s trainable parameters, weight decay only on ndim > 1 tensors.

    ``adam`` adds L2 to the gradient, ``adamw`` decays decoupled, ``sgd`` is Nesterov SGD.
    """
    if name not in OPTIMIZERS:
        raise InputError(f"--optimizer: unknown optimizer '{name}'; valid: {', '.join(OPTIMIZERS)}")
    if not lr > 0:
        raise InputError(f"--lr: must be positive, got {lr}")
    if not weight_decay >= 0:
        raise InputError(f"--weight-decay: must be >= 0, got {weight_decay}")
    groups = _param_groups(model, weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr)
    if not momentum > 0:
        raise InputError(f"--momentum: Nesterov SGD needs momentum > 0, got {momentum}")
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)


def _cyclic(step: int, lr: float, lr_min: float, cycle_steps: int) -> float:
    """torch ``CyclicLR(mode="triangular2")`` with ``step_size_up = step_size_down``."""
    up = float(max(cycle_steps // 2, 1))
    total_size = up + up
    step_ratio = up / total_size
    cycle = math.floor(1 + step / total_size)
    x = 1.0 + step / total_size - cycle
    scale = x / step_ratio if x <= step_ratio else (x - 1) / (step_ratio - 1)
    return lr_min + (lr - lr_min) * scale * (1 / (2.0 ** (cycle - 1)))


def _onecycle(step: int, lr: float, total_steps: int) -> float:
    """torch ``OneCycleLR`` (two phases, cosine); held at its final lr after ``total_steps``."""
    initial = lr / ONECYCLE_DIV
    final = initial / ONECYCLE_FINAL_DIV
    if step > total_steps:
        return final
    warm_end = float(ONECYCLE_PCT_START * total_steps) - 1
    if step <= warm_end:
        start, end, pct = initial, lr, step / warm_end
    else:
        start, end = lr, final
        pct = (step - warm_end) / (total_steps - 1 - warm_end)
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


@dataclass(frozen=True)
class LRSchedule:
    """Learning rate at each optimiser step; calling it gives the multiplier of ``lr``.

    ``lr`` is the peak; ``lr_min`` the floor of ``cyclic`` and ``poly`` (``onecycle`` uses
    torch's divisors); ``total_steps`` is used by ``onecycle`` and ``poly``, ``cycle_steps``
    (one full up-and-down cycle) by ``cyclic``.
    """

    kind: str
    total_steps: int
    lr: float
    lr_min: float = 0.0
    cycle_steps: int = 2

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise InputError(
                f"--schedule: unknown schedule '{self.kind}'; valid: {', '.join(SCHEDULES)}"
            )
        if not self.lr > 0:
            raise InputError(f"--lr: must be positive, got {self.lr}")
        if not 0 <= self.lr_min <= self.lr:
            raise InputError(f"--lr-min: must be between 0 and --lr ({self.lr}), got {self.lr_min}")
        if self.kind in ("onecycle", "poly") and self.total_steps < 1:
            raise InputError(
                f"--schedule {self.kind}: needs at least one step, got {self.total_steps}"
            )
        if self.kind == "cyclic" and self.cycle_steps < 1:
            raise InputError(f"--schedule cyclic: cycle steps must be >= 1, got {self.cycle_steps}")

    def lr_at(self, step: int) -> float:
        """The learning rate after ``step`` scheduler steps (0 = the first optimiser step)."""
        if self.kind == "cyclic":
            return _cyclic(step, self.lr, self.lr_min, self.cycle_steps)
        if self.kind == "onecycle":
            return _onecycle(step, self.lr, self.total_steps)
        if self.kind == "poly":
            left = max(1.0 - step / self.total_steps, 0.0)
            return self.lr_min + (self.lr - self.lr_min) * left**POLY_POWER
        return self.lr

    def __call__(self, step: int) -> float:
        return self.lr_at(step) / self.lr


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    kind: str,
    *,
    total_steps: int,
    lr: float,
    lr_min: float,
    cycle_steps: int,
) -> LambdaLR:
    """A ``LambdaLR`` following ``LRSchedule``; every group's base lr is set to the peak ``lr``.

    Build it on a fresh optimiser, then ``load_state_dict`` both to resume.
    """
    schedule = LRSchedule(kind, total_steps, lr, lr_min, cycle_steps)
    for group in optimizer.param_groups:
        group["lr"] = lr
        group["initial_lr"] = lr
    return LambdaLR(optimizer, schedule)


# (lr_low, lr_high, weight_decay) per (cell, seed version), spec.md §3.2; version None = Deep+.
_MOBILE: dict[tuple[str | None, int | None], tuple[float, float, float]] = {
    (None, None): (1e-5, 1e-3, 1e-8),
    ("lstm", 1): (8e-5, 1e-3, 0.0),
    ("lstm", 2): (8e-5, 1e-3, 0.0),
    ("lstm", 3): (1e-6, 2e-4, 0.0),
    ("lstm", 4): (1e-6, 1e-3, 0.0),
    ("lstm", 5): (2e-6, 2e-4, 0.0),
    ("lstm", 6): (2e-6, 2e-4, 0.0),
    ("gru", 1): (7e-5, 1e-3, 1e-8),
    ("gru", 2): (7e-5, 1e-3, 1e-8),
    ("gru", 3): (2e-6, 1e-3, 0.0),
    ("gru", 4): (2e-6, 4e-2, 0.0),
    ("gru", 5): (2e-6, 1e-3, 1e-8),
    ("gru", 6): (8e-6, 4e-2, 1e-8),
}
_RESNET50: dict[tuple[str | None, int | None], tuple[float, float, float]] = {
    (None, None): (1e-6, 1e-3, 1e-8),
    ("lstm", 1): (6e-5, 1e-3, 0.0),
    ("lstm", 2): (1e-5, 1e-3, 0.0),
    ("lstm", 3): (6e-7, 3e-4, 0.0),
    ("lstm", 4): (1e-6, 2e-4, 1e-8),
    ("lstm", 5): (2e-6, 2e-4, 0.0),
    ("lstm", 6): (2e-6, 2e-4, 0.0),
    ("gru", 1): (1e-6, 1e-3, 1e-8),
    ("gru", 2): (2e-6, 1e-3, 0.0),
    ("gru", 3): (5e-7, 2e-4, 0.0),
    ("gru", 4): (6e-7, 2e-4, 0.0),
    ("gru", 5): (2e-6, 1e-3, 0.0),
    ("gru", 6): (2e-6, 1e-3, 0.0),
}
SEED_LR_SETTINGS = {"mobilenet_v2": _MOBILE, "resnet50": _RESNET50}
_VERSION_OF = {layout: version for version, layout in SEED_VERSIONS.items()}


def seed_lr_settings(spec: ModelSpec) -> tuple[float, float, float]:
    """The thesis's ``(lr_low, lr_high, weight_decay)`` for an architecture.

    Backbones the thesis did not train (MobileNetV3) take the MobileNetV2 values.
    """
    table = SEED_LR_SETTINGS.get(spec.backbone, _MOBILE)
    version = None
    if spec.cell is not None:
        version = _VERSION_OF.get((spec.position, spec.store_previous))
    key = (spec.cell, version)
    if key not in table:
        raise InputError(f"--model: no seed learning-rate settings for {spec}")
    return table[key]
