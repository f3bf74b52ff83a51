"""The training loop: B lanes x T frames per step, BPTT inside the window, state carried across.

Every lane streams one clip window after window; the recurrent state of each lane is detached
between steps (truncated back-propagation through time) and zeroed where the loader marks a new
clip. The loop asks :class:`StopRequest` and :class:`TimeBudget` at every step boundary; the
caller (``recseg.tracking.train_job``) owns MLflow, checkpoints and exit codes through the hooks.

Data-parallel (``dist`` of several processes, ``recseg.training.distributed``): each process
trains its share of the lanes through ``DistributedDataParallel`` (gradients averaged), the
step's loss and confusion counts are summed over the processes, and every stop decision is
agreed, so all stop at the same step. Rank 0 alone evaluates (the other processes wait for it
in the next collective) and then hands its ``Progress`` to the others; before each hook the
lanes' state is gathered, so :meth:`Trainer.state_dict` is what one process would save.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from recseg.data.loader import TemporalLoader
from recseg.evaluation.evaluate import EvalResult, Samples, evaluate
from recseg.evaluation.metrics import metrics_from_confusion
from recseg.faults import fail_point
from recseg.models.state import State, detach_state
from recseg.training.config import LOWER_IS_BETTER
from recseg.training.distributed import Dist
from recseg.training.precision import CUDA_FP16, amp_mode, train_autocast
from recseg.training.stopping import StopRequest, TimeBudget


@dataclasses.dataclass
class EpochRecord:
    """What one finished epoch produced."""

    epoch: int  # 0-based; the MLflow step of its metrics
    metrics: dict[str, float]
    evaluated: bool
    improved: bool
    samples: Samples | None


@dataclasses.dataclass
class Progress:
    """The loop's own state (all of it goes into a checkpoint)."""

    epoch: int = 0  # epochs complete
    step: int = 0  # optimiser steps taken in total
    history: dict[str, list[list[float]]] = dataclasses.field(default_factory=dict)
    best_value: float | None = None
    best_epoch: int | None = None
    last_epoch_seconds: float | None = None
    # the current epoch so far
    loss_sum: float = 0.0
    steps: int = 0
    seconds: float = 0.0
    confusion: list[list[int]] = dataclasses.field(default_factory=lambda: [[0, 0], [0, 0]])

    def start_epoch(self) -> None:
        self.loss_sum, self.steps, self.seconds = 0.0, 0, 0.0
        self.confusion = [[0, 0], [0, 0]]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Progress:
        return cls(**data)


class Trainer:
    """Trains ``model`` on ``train_loader``; evaluates on ``val_loader``; see the module doc."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        train_loader: TemporalLoader,
        val_loader: TemporalLoader,
        *,
        epochs: int,
        eval_every: int,
        best_metric: str,
        device: torch.device,
        amp: bool,
        stop: StopRequest,
        budget: TimeBudget,
        progress_bars: bool = False,
        dist: Dist | None = None,
    ) -> None:
        self.model, self.loss_fn = model, loss_fn
        self.optimizer, self.scheduler = optimizer, scheduler
        self.train_loader, self.val_loader = train_loader, val_loader
        self.epochs, self.eval_every, self.best_metric = epochs, eval_every, best_metric
        self.device, self.amp_mode = device, amp_mode(device, amp)
        self.amp = self.amp_mode == CUDA_FP16  # evaluation's autocast: float16 on CUDA only
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.stop, self.budget = stop, budget
        self.steps_taken = 0  # optimizer steps this process took
        self.bars = progress_bars
        self.progress = Progress()
        self.lanes: State | None = None  # this process's lanes
        self.dist = dist or Dist(device=device)
        self.full_lanes: State | None = None  # every process's lanes, as of the last hook
        self.ddp: nn.Module | None = None  # the model wrapped for data-parallel steps

    # ---- checkpoint state -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "progress": self.progress.to_dict(),
            "loader": self.train_loader.state_dict(),
            "lanes": self.full_lanes if self.dist.distributed else self.lanes,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.progress = Progress.from_dict(state["progress"])
        self.train_loader.load_state_dict(state["loader"])
        lanes = state.get("lanes")
        self.full_lanes = lanes or None
        mine = self.dist.my_lanes(lanes) if lanes else None
        self.lanes = {k: v.to(self.device) for k, v in mine.items()} if mine else None

    @property
    def finished(self) -> bool:
        return self.progress.epoch >= self.epochs

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    # ---- the loop ---------------------------------------------------------------------------
    def fit(
        self, on_epoch_end: Callable[[EpochRecord], None], on_stop: Callable[[str], None]
    ) -> bool:
        """Train until the last epoch (True) or a stop request (False, after ``on_stop``)."""
        self._wrap()
        agree = self.dist.agree
        while not self.finished:
            if agree(self.stop.due(self.steps_taken)):  # came during evaluation or logging
                return self._stopped(on_stop, self.stop.reason or "stop requested")
            last = self.progress.last_epoch_seconds
            if agree(bool(self.steps_taken) and not self.budget.epoch_fits(last)):
                return self._stopped(on_stop, "time limit")
            done = self._train_epoch()
            if not done:
                return self._stopped(on_stop, self.stop.reason or "time limit")
            record = self._end_epoch()
            self.full_lanes = self.dist.gather_lanes(self.lanes)
            on_epoch_end(record)
        return True

    def _stopped(self, on_stop: Callable[[str], None], reason: str) -> bool:
        self.full_lanes = self.dist.gather_lanes(self.lanes)
        on_stop(reason)
        return False

    def _wrap(self) -> None:
        """Wrap the model for data-parallel steps (once; its constructor gives every process
        rank 0's weights and buffers)."""
        if not self.dist.distributed or self.ddp is not None:
            return
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        self.ddp = DistributedDataParallel(self.model, device_ids=ids)

    def _should_stop(self) -> bool:
        due = self.stop.due(self.steps_taken)
        return self.dist.agree(due or (self.steps_taken > 0 and not self.budget.step_fits()))

    def _train_epoch(self) -> bool:
        """Steps to the end of the current epoch; True when the epoch finished."""
        p, loader = self.progress, self.train_loader
        self.model.train()
        bar = tqdm(
            total=len(loader),
            initial=loader.step,
            unit="step",
            leave=False,
            desc=f"epoch {p.epoch + 1}/{self.epochs}",
            disable=not self.bars,
        )
        with bar:
            if loader.step >= len(loader):  # saved right after the epoch's last batch
                list(loader)
                return True
            tick = time.perf_counter()
            for batch in loader:
                self._step(batch)
                now = time.perf_counter()
                self.budget.record_step(now - tick)
                p.seconds += now - tick
                tick = now
                self.steps_taken += 1
                fail_point("train-step")
                bar.update(1)
                bar.set_postfix(loss=f"{p.loss_sum / max(1, p.steps):.4f}", refresh=False)
                if loader.step < len(loader) and self._should_stop():
                    return False
        return True

    def _step(self, batch: dict[str, Any]) -> None:
        p = self.progress
        frames = batch["frames"].to(self.device, non_blocking=True)
        labels = batch["labels"].to(self.device, non_blocking=True)
        reset = batch["reset"].to(self.device)
        with train_autocast(self.device, self.amp_mode):
            logits, state = (self.ddp or self.model)(frames, self.lanes, reset)
            loss = self.loss_fn(logits.float(), labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.lanes = detach_state(state)
        with torch.no_grad():
            pred = logits.argmax(2)
            ok = labels < 2
            counts = torch.bincount((labels[ok] * 2 + pred[ok]).flatten(), minlength=4).cpu()
            # the step's loss (the mean over the processes) and confusion counts (the sum)
            stats = torch.cat([loss.detach().double().reshape(1).cpu(), counts.double()])
        stats = self.dist.sum(stats)
        for i in range(4):
            p.confusion[i // 2][i % 2] += int(stats[i + 1])
        p.loss_sum += float(stats[0]) / self.dist.world_size
        p.steps += 1
        p.step += 1

    def _end_epoch(self) -> EpochRecord:
        """The epoch's record (rank 0 computes it, evaluating; the other processes take it and
        rank 0's progress)."""
        if not self.dist.distributed:
            return self._epoch_record()
        record = self._epoch_record() if self.dist.is_leader else None
        sent = None if record is None else dataclasses.replace(record, samples=None)
        record_sent, progress = self.dist.broadcast_object((sent, self.progress.to_dict()))
        if not self.dist.is_leader:
            record, self.progress = record_sent, Progress.from_dict(progress)
        assert record is not None
        return record

    def _epoch_record(self) -> EpochRecord:
        p = self.progress
        train = metrics_from_confusion(torch.tensor(p.confusion))
        metrics = {
            "train_loss": p.loss_sum / max(1, p.steps),
            "train_miou": train["miou"],
            "train_fg_iou": train["fg_iou"],
            "lr": self.lr,
        }
        epoch = p.epoch
        last = epoch + 1 >= self.epochs
        due = last or (self.eval_every > 0 and (epoch + 1) % self.eval_every == 0)
        result: EvalResult | None = None
        if due:
            result = self.evaluate()
            metrics.update({f"val_{k}": v for k, v in result.metrics.items() if k != "frames"})
            self.model.train()
        seconds = p.seconds + (result.seconds if result else 0.0)
        metrics["epoch_seconds"] = seconds
        improved = bool(result) and self._update_best(metrics, epoch)
        for key, value in metrics.items():
            p.history.setdefault(key, []).append([epoch, float(value)])
        p.epoch += 1
        p.last_epoch_seconds = seconds
        p.start_epoch()
        return EpochRecord(
            epoch, metrics, result is not None, improved, result.samples if result else None
        )

    def evaluate(self) -> EvalResult:
        return evaluate(
            self.model,
            self.val_loader,
            self.loss_fn,
            self.device,
            amp=self.amp,
            progress=self.bars,
        )

    def _update_best(self, metrics: dict[str, float], epoch: int) -> bool:
        """Record ``epoch`` as the best if its metric beats the best so far. An undefined (NaN)
        metric counts only while no epoch is best yet, so there is always a best checkpoint."""
        p = self.progress
        value = metrics.get(self.best_metric, math.nan)
        if not math.isfinite(value):
            improved, value = p.best_epoch is None, None
        else:
            lower = self.best_metric in LOWER_IS_BETTER
            best = p.best_value
            improved = best is None or (value < best if lower else value > best)
        if improved:
            p.best_value, p.best_epoch = value, epoch
        return improved
