"""The training loop, checkpoints and stop handling, in-process on a small real clip store."""

from __future__ import annotations

import io
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from recseg.config import as_params, build
from recseg.data.loader import TemporalLoader, make_loader
from recseg.errors import InputError
from recseg.tracking.train_job import legacy_norm
from recseg.training import checkpoint as ckpt
from recseg.training.config import TrainConfig, changed_params, check_unchanged
from recseg.training.setup import build_setup
from recseg.training.stopping import StopRequest, TimeBudget
from recseg.training.trainer import EpochRecord, Trainer
from tests.stores import make_store

TIMING = ("epoch_seconds",)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_store(tmp_path_factory.mktemp("train-store"))


@pytest.fixture(scope="module")
def store_v1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store as an older recseg made it: no layers, so training augments fixed composites."""
    return make_store(tmp_path_factory.mktemp("train-store-v1"), version=1)


def config(store: Path, **over: object) -> TrainConfig:
    values = {
        "data": str(store), "model": "Deep_mobile_gruV1", "loss": "CrossDice", "epochs": 2,
        "batch_size": 2, "seq_len": 3, "num_workers": 0, "system_metrics": False,
    }  # fmt: skip
    values.update(over)
    return build(TrainConfig, values)


class StopAfter(StopRequest):
    """A stop request that fires once the trainer has taken ``steps`` steps in total."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = steps
        self.trainer: Trainer | None = None

    @property
    def requested(self) -> bool:  # type: ignore[override]
        return self.trainer is not None and self.trainer.progress.step >= self.steps


def make_trainer(cfg: TrainConfig, stop: StopRequest | None = None) -> Trainer:
    setup = build_setup(cfg, warn=lambda m: None)
    trainer = Trainer(
        setup.model, setup.loss_fn, setup.optimizer, setup.scheduler,
        setup.train_loader, setup.val_loader, epochs=cfg.epochs, eval_every=cfg.eval_every,
        best_metric=cfg.best_metric, device=setup.device, amp=False,
        stop=stop or StopRequest(), budget=TimeBudget(0),
    )  # fmt: skip
    if isinstance(stop, StopAfter):
        stop.trainer = trainer
    return trainer


def fit(trainer: Trainer) -> tuple[bool, list[EpochRecord], list[str]]:
    records: list[EpochRecord] = []
    stops: list[str] = []
    done = trainer.fit(records.append, stops.append)
    return done, records, stops


def deterministic(history: dict) -> dict:
    return {k: v for k, v in history.items() if k not in TIMING}


def test_stopped_and_resumed_training_is_bit_identical(store: Path, tmp_path: Path) -> None:
    cfg = config(store, epochs=3)
    whole = make_trainer(cfg)
    done, records, _ = fit(whole)
    assert done and [r.epoch for r in records] == [0, 1, 2]
    steps = whole.progress.step
    # stop twice mid-epoch (through a checkpoint file each time), then finish
    state_path = tmp_path / "latest.pt"
    trainer = make_trainer(cfg, StopAfter(steps // 3 + 1))
    for stop_at in (2 * steps // 3 + 1, None):
        done, _, stops = fit(trainer)
        assert not done and stops
        assert 0 < trainer.train_loader.step < len(trainer.train_loader)
        ckpt.save(state_path, {**trainer.state_dict(), "rng": ckpt.rng_state()})
        torch.manual_seed(1234)  # whatever the new process does to the RNGs before loading
        trainer = make_trainer(cfg, StopAfter(stop_at) if stop_at else None)
        state = ckpt.load(state_path)
        trainer.load_state_dict(state)
        ckpt.set_rng_state(state["rng"])
    done, _, _ = fit(trainer)
    assert done and trainer.progress.step == steps
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, trainer.model.state_dict()[key]), key
    assert deterministic(trainer.progress.history) == deterministic(whole.progress.history)


def test_epoch_metrics_and_best(store: Path) -> None:
    trainer = make_trainer(config(store, epochs=2, eval_every=0, best_metric="val_loss"))
    done, records, _ = fit(trainer)
    assert done and not records[0].evaluated and records[1].evaluated
    assert set(records[0].metrics) == {
        "train_loss", "train_miou", "train_fg_iou", "lr", "epoch_seconds"
    }  # fmt: skip
    val = records[1].metrics
    for key in ("val_loss", "val_miou", "val_fg_iou", "val_dice", "val_pixel_accuracy",
                "val_flicker"):  # fmt: skip
        assert math.isfinite(val[key]), key
    assert records[1].improved and trainer.progress.best_epoch == 1
    assert records[1].samples is not None and records[1].samples.frames.shape[1] == 3


def test_the_loss_falls_on_learnable_clips(store_v1: Path) -> None:
    """(On the fixed composites: 4 epochs of on-the-fly composites over fresh backgrounds are
    too few for a steady fall on 4 tiny clips.)"""
    trainer = make_trainer(config(store_v1, model="Deep+_mobile", epochs=4, lr=1e-3,
                                  schedule="constant", eval_every=4))  # fmt: skip
    done, records, _ = fit(trainer)
    losses = [r.metrics["train_loss"] for r in records]
    assert done and losses[-1] < 0.8 * losses[0], losses


def test_an_older_store_trains_on_its_fixed_composites_with_one_warning(
    store: Path, store_v1: Path
) -> None:
    warnings: list[str] = []
    old = build_setup(config(store_v1), warn=warnings.append)
    assert not old.train_loader.composites_on_the_fly
    assert warnings == [
        f"{store_v1} was made by an older recseg and has no foreground layers: training "
        "augments its fixed composites; re-run `recseg preprocess` into a new --out to "
        "composite on the fly"
    ]
    assert old.resolved["composite_on_the_fly"] is False
    warnings.clear()
    new = build_setup(config(store), warn=warnings.append)
    assert new.train_loader.composites_on_the_fly and not warnings
    assert not new.val_loader.composites_on_the_fly
    build_setup(config(store_v1, augment=False), warn=warnings.append)
    assert not warnings  # nothing to augment: nothing to say


def test_time_budget_stops_before_a_step_that_would_not_fit(store: Path) -> None:
    trainer = make_trainer(config(store, epochs=2))
    trainer.budget = TimeBudget(limit=1e-3)  # already spent: one step per process, then stop
    done, records, stops = fit(trainer)
    assert not done and stops == ["time limit"] and trainer.progress.step == 1 and not records


def test_checkpoint_holds_everything_and_loads_safely(store: Path, tmp_path: Path) -> None:
    trainer = make_trainer(config(store, epochs=1))
    fit(trainer)
    path = tmp_path / "c.pt"
    size = ckpt.save(path, {**trainer.state_dict(), "rng": ckpt.rng_state(), "run_id": "r"})
    assert path.stat().st_size == size and not list(tmp_path.glob("*.tmp"))
    raw = ckpt.unseal(path.read_bytes(), path)
    state = torch.load(io.BytesIO(raw), weights_only=True)  # only tensors and plain values
    assert {"model", "optimizer", "scheduler", "scaler", "progress", "loader", "lanes",
            "rng"} <= set(state)  # fmt: skip
    assert state["lanes"] and state["loader"]["epoch"] == 1
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ckpt.CorruptCheckpoint, match="checksum mismatch"):
        ckpt.load(path)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x01  # one bit: the zip may still parse; the checksum does not
    path.write_bytes(bytes(flipped))
    with pytest.raises(ckpt.CorruptCheckpoint, match="checksum mismatch"):
        ckpt.load(path)
    path.write_bytes(raw)  # a version-1 checkpoint (no checksum) still loads
    assert ckpt.load(path)["run_id"] == "r"


def test_keep_previous_leaves_a_complete_checkpoint_at_every_instant(tmp_path: Path) -> None:
    path = tmp_path / ckpt.LATEST
    for n in range(3):
        ckpt.save(path, {"n": n}, keep_previous=True)
    assert ckpt.load(path)["n"] == 2
    assert ckpt.load(tmp_path / ckpt.PREVIOUS)["n"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [ckpt.LATEST, ckpt.PREVIOUS]
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() makes it, not private


def test_rng_state_round_trip() -> None:
    import random

    import numpy as np

    state = ckpt.rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt.set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_atomic_save_survives_sigkill(tmp_path: Path) -> None:
    """Kill a process while it rewrites a checkpoint over and over: the file always loads."""
    path = tmp_path / "latest.pt"
    ckpt.save(path, {"model": {"w": torch.zeros(10)}, "n": -1})
    code = (
        "import torch\nfrom recseg.training import checkpoint as c\n"
        f"p = {str(path)!r}\n"
        "for n in range(10_000):\n"
        "    c.save(p, {'model': {'w': torch.full((4_000_000,), float(n))}, 'n': n})\n"
        "    print(n, flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for _ in range(3):
        proc.stdout.readline()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = ckpt.load(path)  # the last complete write, never a partial one
    assert state["n"] >= 2
    assert torch.equal(state["model"]["w"], torch.full((4_000_000,), float(state["n"])))


def test_signals_only_set_a_flag() -> None:
    with StopRequest() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.reason == "signal SIGUSR1"
        os.kill(os.getpid(), signal.SIGUSR1)  # the first reason stays
        assert stop.reason == "signal SIGUSR1" and not stop.due(0)
        os.kill(os.getpid(), signal.SIGTERM)  # a hard request replaces a soft one
        assert stop.reason == "signal SIGTERM" and stop.due(0)
        os.kill(os.getpid(), signal.SIGUSR2)  # ... but not another hard one
        assert stop.reason == "signal SIGTERM"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_params_compare_as_typed_values(store: Path) -> None:
    cfg = config(store, lr=0.001, weight_decay=1e-4, augment=False)
    logged = {**as_params(cfg), "lr": "1e-3", "weight_decay": "0.0001", "augment": "false",
              "epochs": "2", "time_limit": "600", "run_id": "abc", "pretrained": "''",
              "size": "''"}  # fmt: skip
    assert changed_params(cfg, logged) == []
    logged["loss"] = "SoftDice"
    with pytest.raises(InputError, match="--loss: the run was started with loss=SoftDice"):
        check_unchanged(cfg, logged)


def test_config_rejects_bad_values(store: Path) -> None:
    for over, needle in (({"epochs": 0}, "--epochs"), ({"model": "nope"}, "--model"),
                         ({"size": "12"}, "--size"), ({"schedule": "x"}, "--schedule"),
                         ({"lr": -1.0}, "--lr")):  # fmt: skip
        with pytest.raises(InputError, match=needle):
            config(store, **over)


def _run(params: dict[str, str]) -> SimpleNamespace:
    """What ``legacy_norm`` reads of an MLflow run."""
    return SimpleNamespace(data=SimpleNamespace(params=params), info=SimpleNamespace(run_id="r1"))


def test_a_run_started_before_norm_existed_goes_on_with_batchnorm(store: Path) -> None:
    """A run (or checkpoint) of a recseg without --norm trained BatchNorm: resuming it must
    build BatchNorm again, else its checkpoint does not load."""
    cfg = config(store)
    old = {"model_output_stride": "8", "model_init": "kaiming"}  # params of such a run
    resumed = legacy_norm(cfg, _run(old), None)
    assert resumed.norm == "batch" and legacy_norm(cfg, _run({}), {"resolved": {}}).norm == "batch"
    assert legacy_norm(cfg, _run({**old, "model_norm": "group"}), None) is cfg
    assert legacy_norm(cfg, _run({}), {"resolved": {"model_norm": "frozen"}}) is cfg
    assert legacy_norm(cfg, _run({}), None) is cfg  # a scheduled run: nothing trained yet
    with pytest.raises(InputError, match=r"^--norm group: run r1 .* --norm auto or batch$"):
        legacy_norm(config(store, norm="group"), _run(old), None)
    state = make_trainer(config(store, norm="batch")).state_dict()  # an older run's checkpoint
    make_trainer(resumed).load_state_dict(state)
    with pytest.raises(RuntimeError, match="running_mean"):
        make_trainer(cfg).load_state_dict(state)


def _fg_iou(model: torch.nn.Module, loader: TemporalLoader, train_mode: bool) -> float:
    """Foreground IoU over ``loader``'s clips with the model in train or eval mode (dropout off
    either way: BatchNorm's statistics are the difference under test)."""
    dropout = model.aspp.project[3]
    p, dropout.p = dropout.p, 0.0
    model.train(train_mode)
    inter = union = 0
    with torch.no_grad():
        state = None
        for batch in loader:
            logits, state = model(batch["frames"], state, batch["reset"])
            pred, label = logits.argmax(2) == 1, batch["labels"] == 1
            inter += int((pred & label).sum())
            union += int((pred | label).sum())
    dropout.p = p
    model.train()
    return inter / max(union, 1)


def test_train_and_eval_mode_score_alike_at_every_checkpoint(store: Path) -> None:
    """Why GroupNorm is the default: with BatchNorm on these small correlated batches the same
    weights scored val foreground IoU 0.48 in train mode and 0.00 in eval mode here; with
    GroupNorm the two agree within 2 points at every epoch's checkpoint."""
    trainer = make_trainer(config(store, model="Deep_mobile_gruV3", epochs=3))
    assert trainer.model.options.norm == "group"
    val = make_loader(store, "val", batch_size=2, seq_len=3, train=False, num_workers=0)
    scores: list[tuple[float, float]] = []

    def check(record: EpochRecord) -> None:
        scores.append((_fg_iou(trainer.model, val, True), _fg_iou(trainer.model, val, False)))

    assert trainer.fit(check, lambda reason: None)
    assert len(scores) == 3
    assert all(abs(train - evaluated) <= 0.02 for train, evaluated in scores), scores
    assert scores[-1][1] > 0.3, scores  # it learned something: not 0 = 0


def test_mixed_precision_mode_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """--amp: float16 on CUDA, bfloat16 on a CPU with native bf16, else off; under bf16 the
    step's matmuls run in bfloat16 while the weights stay float32."""
    from recseg.training import precision

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert precision.amp_mode(cuda, True) == "fp16" and precision.amp_mode(cuda, False) == "off"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.amp_mode(cpu, True) == "off"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.amp_mode(cpu, True) == "bf16" and precision.amp_mode(cpu, False) == "off"
    layer = torch.nn.Linear(4, 3)
    with precision.train_autocast(cpu, "bf16"):
        out = layer(torch.rand(2, 4))
    assert out.dtype == torch.bfloat16 and layer.weight.dtype == torch.float32
    with precision.train_autocast(cpu, "off"):
        assert layer(torch.rand(2, 4)).dtype == torch.float32
