"""Tests for recseg.training.optim: param groups, schedules against torch's, seed settings."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import CyclicLR, OneCycleLR

from recseg.errors import InputError
from recseg.models import ModelSpec
from recseg.models.registry import SEED_MODELS
from recseg.training.optim import (
    OPTIMIZERS,
    SCHEDULES,
    LRSchedule,
    build_optimizer,
    build_scheduler,
    seed_lr_settings,
)

STEPS = 600


def _model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1, bias=False))


def _sgd(lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=lr)


def _lrs(opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler, n: int) -> list:
    """The lr in use at each of ``n`` optimiser steps."""
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def _ours(kind: str, n: int, **kw: float) -> list[float]:
    opt = _sgd(1.0)
    return _lrs(opt, build_scheduler(opt, kind, **kw), n)


@pytest.mark.parametrize("cycle_steps", [1, 2, 7, 50, 101])
def test_cyclic_matches_torch(cycle_steps: int) -> None:
    lr, lr_min = 1e-3, 1e-5
    ref_opt = _sgd(lr)
    up = max(cycle_steps // 2, 1)
    ref = CyclicLR(ref_opt, lr_min, lr, step_size_up=up, mode="triangular2", cycle_momentum=False)
    expected = _lrs(ref_opt, ref, STEPS)
    got = _ours("cyclic", STEPS, total_steps=STEPS, lr=lr, lr_min=lr_min, cycle_steps=cycle_steps)
    assert got == pytest.approx(expected, rel=1e-9, abs=0)
    assert got[0] == pytest.approx(lr_min, rel=1e-12)


@pytest.mark.parametrize("total", [1, 2, 3, 10, 333, STEPS])
def test_onecycle_matches_torch(total: int) -> None:
    lr = 4e-2
    ref_opt = _sgd(lr)
    ref = OneCycleLR(
        ref_opt,
        max_lr=lr,
        total_steps=total,
        pct_start=0.3,
        anneal_strategy="cos",
        div_factor=25,
        final_div_factor=1e4,
        cycle_momentum=False,
    )
    expected = _lrs(ref_opt, ref, total)
    got = _ours("onecycle", total, total_steps=total, lr=lr, lr_min=0.0, cycle_steps=1)
    assert got == pytest.approx(expected, rel=1e-9, abs=0)
    # Past the end it holds the final lr instead of raising.
    assert LRSchedule("onecycle", total, lr).lr_at(total + 5) == pytest.approx(lr / 25 / 1e4)


def test_poly_and_constant() -> None:
    sched = LRSchedule("poly", 100, 1e-2, 1e-4)
    assert sched.lr_at(0) == pytest.approx(1e-2)
    assert sched.lr_at(50) == pytest.approx(1e-4 + (1e-2 - 1e-4) * 0.5**0.9)
    assert sched.lr_at(100) == pytest.approx(1e-4)
    assert sched.lr_at(1000) == pytest.approx(1e-4)
    assert _ours("constant", 5, total_steps=5, lr=3e-4, lr_min=0.0, cycle_steps=1) == [3e-4] * 5


@pytest.mark.parametrize("kind", SCHEDULES)
def test_state_dict_round_trip_resumes(kind: str) -> None:
    kw = {"total_steps": 300, "lr": 1e-3, "lr_min": 1e-5, "cycle_steps": 40}
    model = _model()
    opt = build_optimizer("adamw", model, 1e-3, 1e-2)
    sched = build_scheduler(opt, kind, **kw)
    full = _lrs(opt, sched, 300)

    model = _model()
    opt = build_optimizer("adamw", model, 1e-3, 1e-2)
    sched = build_scheduler(opt, kind, **kw)
    first = _lrs(opt, sched, 123)
    saved = pickle.loads(pickle.dumps((opt.state_dict(), sched.state_dict())))

    opt2 = build_optimizer("adamw", model, 5.0, 1e-2)
    sched2 = build_scheduler(opt2, kind, **kw)
    opt2.load_state_dict(saved[0])
    sched2.load_state_dict(saved[1])
    rest = _lrs(opt2, sched2, 300 - 123)
    assert first + rest == pytest.approx(full, rel=1e-12)
    assert all(g["lr"] == opt2.param_groups[0]["lr"] for g in opt2.param_groups)


def test_schedule_is_picklable() -> None:
    sched = LRSchedule("cyclic", 10, 1e-3, 1e-5, 6)
    copy = pickle.loads(pickle.dumps(sched))
    assert copy == sched
    assert [copy(s) for s in range(20)] == [sched(s) for s in range(20)]


def test_param_groups() -> None:
    model = _model()
    model[0].weight.requires_grad_(False)
    opt = build_optimizer("adam", model, 1e-3, 0.5)
    groups = {g["name"]: g for g in opt.param_groups}
    ids = {name: {id(p) for p in g["params"]} for name, g in groups.items()}
    assert ids["decay"] == {id(model[2].weight)}
    assert ids["no_decay"] == {id(model[0].bias), id(model[1].weight), id(model[1].bias)}
    assert groups["decay"]["weight_decay"] == 0.5
    assert groups["no_decay"]["weight_decay"] == 0.0
    assert isinstance(opt, torch.optim.Adam) and not isinstance(opt, torch.optim.AdamW)


def test_empty_group_dropped_and_kinds() -> None:
    model = nn.Linear(3, 2, bias=False)
    opt = build_optimizer("sgd", model, 0.1, 1e-4, momentum=0.8)
    assert [g["name"] for g in opt.param_groups] == ["decay"]
    assert isinstance(opt, torch.optim.SGD)
    assert opt.param_groups[0]["nesterov"] and opt.param_groups[0]["momentum"] == 0.8
    assert isinstance(build_optimizer("adamw", model, 0.1, 0.0), torch.optim.AdamW)
    assert set(OPTIMIZERS) == {"adamw", "adam", "sgd"}


def test_adamw_decays_weights_not_biases() -> None:
    model = nn.Linear(4, 3)
    weight, bias = model.weight.detach().clone(), model.bias.detach().clone()
    opt = build_optimizer("adamw", model, 0.1, 0.5)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    torch.testing.assert_close(model.weight.detach(), weight * (1 - 0.1 * 0.5))
    torch.testing.assert_close(model.bias.detach(), bias)


SPOT = {
    "Deep+_mobile": (1e-5, 1e-3, 1e-8),
    "Deep+_resnet50": (1e-6, 1e-3, 1e-8),
    "Deep_mobile_lstmV1": (8e-5, 1e-3, 0),
    "Deep_mobile_lstmV2": (8e-5, 1e-3, 0),
    "Deep_mobile_lstmV3": (1e-6, 2e-4, 0),
    "Deep_mobile_lstmV4": (1e-6, 1e-3, 0),
    "Deep_mobile_lstmV5": (2e-6, 2e-4, 0),
    "Deep_mobile_lstmV6": (2e-6, 2e-4, 0),
    "Deep_mobile_gruV1": (7e-5, 1e-3, 1e-8),
    "Deep_mobile_gruV2": (7e-5, 1e-3, 1e-8),
    "Deep_mobile_gruV3": (2e-6, 1e-3, 0),
    "Deep_mobile_gruV4": (2e-6, 4e-2, 0),
    "Deep_mobile_gruV5": (2e-6, 1e-3, 1e-8),
    "Deep_mobile_gruV6": (8e-6, 4e-2, 1e-8),
    "Deep_resnet50_lstmV1": (6e-5, 1e-3, 0),
    "Deep_resnet50_lstmV2": (1e-5, 1e-3, 0),
    "Deep_resnet50_lstmV3": (6e-7, 3e-4, 0),
    "Deep_resnet50_lstmV4": (1e-6, 2e-4, 1e-8),
    "Deep_resnet50_lstmV5": (2e-6, 2e-4, 0),
    "Deep_resnet50_lstmV6": (2e-6, 2e-4, 0),
    "Deep_resnet50_gruV1": (1e-6, 1e-3, 1e-8),
    "Deep_resnet50_gruV2": (2e-6, 1e-3, 0),
    "Deep_resnet50_gruV3": (5e-7, 2e-4, 0),
    "Deep_resnet50_gruV4": (6e-7, 2e-4, 0),
    "Deep_resnet50_gruV5": (2e-6, 1e-3, 0),
    "Deep_resnet50_gruV6": (2e-6, 1e-3, 0),
}


def test_seed_table_covers_every_seed_model() -> None:
    assert set(SPOT) == set(SEED_MODELS) and len(SPOT) == 26
    for name, expected in SPOT.items():
        assert seed_lr_settings(SEED_MODELS[name]) == expected, name


def test_seed_table_mobilenet_v3_uses_v2_values() -> None:
    v3 = ModelSpec("mobilenet_v3_large", "gru", "decoder", True)
    assert seed_lr_settings(v3) == SPOT["Deep_mobile_gruV4"]
    assert seed_lr_settings(ModelSpec("mobilenet_v3_large")) == SPOT["Deep+_mobile"]
    with pytest.raises(InputError, match="--model"):
        seed_lr_settings(ModelSpec("resnet50", "gru", None))


@pytest.mark.parametrize(
    ("call", "flag"),
    [
        (lambda: build_optimizer("lion", _model(), 1e-3, 0.0), "--optimizer"),
        (lambda: build_optimizer("adam", _model(), 0.0, 0.0), "--lr"),
        (lambda: build_optimizer("adam", _model(), 1e-3, -1.0), "--weight-decay"),
        (lambda: build_optimizer("sgd", _model(), 1e-3, 0.0, momentum=0.0), "--momentum"),
        (
            lambda: build_scheduler(_sgd(1), "step", total_steps=9, lr=1, lr_min=0, cycle_steps=2),
            "--schedule",
        ),
        (lambda: LRSchedule("poly", 0, 1e-3), "--schedule"),
        (lambda: LRSchedule("cyclic", 10, 1e-3, 0.0, 0), "--schedule"),
        (lambda: LRSchedule("cyclic", 10, 1e-3, 1e-2, 4), "--lr-min"),
    ],
)
def test_bad_input_names_the_flag(call, flag: str) -> None:
    with pytest.raises(InputError, match=f"^{flag}"):
        call()
