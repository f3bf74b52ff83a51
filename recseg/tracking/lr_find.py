"""The MLflow side of ``recseg lr-find``: one run per weight decay, nested under a parent run
when there are several; per-step metrics, plots and the thesis's ``results.json``.

Each sweep run has every option as a param plus its ``weight_decay``, the metrics
``lr_find_loss``, ``lr_find_smoothed_loss`` and ``lr_find_lr`` at ``step`` = iteration, the final
``suggested_lr`` and ``min_loss_lr``, and the artifacts ``lr_find.png`` and ``lr_find.json``
(``{"lr", "loss" (raw), "smoothed"}``). The parent (or the single run) has ``lr_find.png`` with
one curve per weight decay, ``results.json`` in the seed's format (``{"wds": [...], "hists":
[{"lr": [...], "loss": [...]}]}``, ``loss`` smoothed like torch-lr-finder's history) and the
metrics ``suggested_lr_wd_<wd>`` / ``min_loss_lr_wd_<wd>``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

import mlflow
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from recseg.config import as_params
from recseg.machine import pick_device
from recseg.models.registry import model_spec
from recseg.tracking import tags as T
from recseg.tracking.plots import DPI, FIGSIZE, MARGINS
from recseg.tracking.preprocess import store_dataset
from recseg.tracking.runs import log_files, log_new_params, quiet_mlflow, tracked_run
from recseg.training.lr_find import (
    LrCurve,
    LrFindConfig,
    fresh_model,
    sweep,
    train_loader,
    wd_label,
)
from recseg.training.setup import open_store

LR_FIND = "lr_find"  # the value of the recseg.kind tag
MAX_BATCH = 1000  # metrics per log_batch call (MLflow's limit)
Echo = Callable[[str], None]


@dataclasses.dataclass
class Sweep:
    """One finished sweep and the run it is logged in."""

    weight_decay: float
    curve: LrCurve
    run_id: str


@dataclasses.dataclass
class LrFindResult:
    """The top-level run (the parent, or the single sweep's run) and every sweep."""

    run_id: str
    experiment_id: str
    experiment: str  # its name (inside `mlflow run`, the one MLflow picked)
    sweeps: list[Sweep]


def describe(weight_decay: float, curve: LrCurve) -> str:
    """One line: ``weight decay 1e-4: suggested lr 3.2e-03 (min loss at 1.1e-02), 87
    iterations, diverged``."""
    suggested = "none" if curve.suggestion is None else f"{curve.suggestion:.1e}"
    end = "diverged" if curve.stopped_early else "reached --end-lr"
    return (
        f"weight decay {wd_label(weight_decay)}: suggested lr {suggested} (min loss at "
        f"{curve.min_loss_lr:.1e}), {len(curve.lrs)} iterations, {end}"
    )


def model_tags(cfg: LrFindConfig) -> dict[str, str]:
    """The tags training runs carry too, so the UI groups lr-find runs the same way."""
    spec = model_spec(cfg.model)
    return {
        T.KIND: LR_FIND,
        T.MODEL: cfg.model,
        T.BACKBONE: spec.backbone,
        T.CELL: spec.cell or "none",
        T.POSITION: spec.position or "none",
        "store_previous": str(spec.store_previous),
        "loss": cfg.loss,
    }


# ---- plots ------------------------------------------------------------------------------------
def _figure() -> tuple[Figure, Any]:
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _png(fig: Figure, ax: Any, title: str, drawn: bool) -> bytes:
    if drawn:
        ax.set_xscale("log")
        ax.legend(loc="best", fontsize="small")
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.grid(True, alpha=0.3)
    fig.subplots_adjust(*MARGINS)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _mark(ax: Any, curve: LrCurve, color: Any) -> None:
    if curve.suggestion is not None:
        i = curve.lrs.index(curve.suggestion)
        ax.plot([curve.suggestion], [curve.smoothed[i]], "o", color=color, markersize=5)


def curve_plot(curve: LrCurve, title: str) -> bytes:
    """Loss vs lr (log x): the raw loss faint, the smoothed loss, the suggestion marked."""
    fig, ax = _figure()
    if curve.lrs:
        ax.plot(curve.lrs, curve.losses, color="C0", alpha=0.3, linewidth=1, label="loss")
        ax.plot(curve.lrs, curve.smoothed, color="C0", label="smoothed")
        if curve.suggestion is not None:
            ax.axvline(curve.suggestion, color="C3", linestyle="--", linewidth=1,
                       label=f"suggested {curve.suggestion:.1e}")  # fmt: skip
            _mark(ax, curve, "C3")
    return _png(fig, ax, title, bool(curve.lrs))


def combined_plot(sweeps: list[Sweep], title: str) -> bytes:
    """The smoothed loss vs lr of every weight decay (suggestions marked), like the seed's."""
    fig, ax = _figure()
    drawn = False
    for k, s in enumerate(sweeps):
        if s.curve.lrs:
            color = f"C{k % 10}"
            ax.plot(
                s.curve.lrs, s.curve.smoothed, color=color, label=f"wd {wd_label(s.weight_decay)}"
            )
            _mark(ax, s.curve, color)
            drawn = True
    return _png(fig, ax, title, drawn)


def results_json(sweeps: list[Sweep]) -> dict[str, Any]:
    """The seed's ``results.json``: weight decays and, per decay, lr and (smoothed) loss."""
    return {
        "wds": [s.weight_decay for s in sweeps],
        "hists": [{"lr": s.curve.lrs, "loss": s.curve.smoothed} for s in sweeps],
    }


# ---- logging ----------------------------------------------------------------------------------
def _finite(metrics: dict[str, float | None]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)}


def log_curve(client: MlflowClient, run_id: str, curve: LrCurve, title: str) -> None:
    """Per-step metrics (batched), final metrics, ``lr_find.png`` and ``lr_find.json``."""
    now = int(time.time() * 1000)
    metrics = [
        Metric(key, float(value), now, step)
        for step, (lr, loss, smooth) in enumerate(
            zip(curve.lrs, curve.losses, curve.smoothed, strict=True)
        )
        for key, value in (
            ("lr_find_loss", loss),
            ("lr_find_smoothed_loss", smooth),
            ("lr_find_lr", lr),
        )
    ]
    final = _finite({"suggested_lr": curve.suggestion, "min_loss_lr": curve.min_loss_lr})
    metrics += [Metric(k, v, now, 0) for k, v in final.items()]
    for i in range(0, len(metrics), MAX_BATCH):
        client.log_batch(run_id, metrics=metrics[i : i + MAX_BATCH])
    client.set_tag(run_id, "lr_find.stopped_early", str(curve.stopped_early))
    files = {"lr_find.png": curve_plot(curve, title),
             "lr_find.json": json.dumps(curve.to_dict()).encode()}  # fmt: skip
    log_files(files, client=client, run_id=run_id)


def log_summary(client: MlflowClient, run_id: str, sweeps: list[Sweep], title: str) -> None:
    """The parent's (or single run's) ``results.json``, per-decay metrics and, for several
    decays, the combined ``lr_find.png``."""
    metrics: dict[str, float | None] = {}
    for s in sweeps:
        label = wd_label(s.weight_decay)
        metrics[f"suggested_lr_wd_{label}"] = s.curve.suggestion
        metrics[f"min_loss_lr_wd_{label}"] = s.curve.min_loss_lr
    now = int(time.time() * 1000)
    items = [Metric(k, v, now, 0) for k, v in _finite(metrics).items()]
    for i in range(0, len(items), MAX_BATCH):
        client.log_batch(run_id, metrics=items[i : i + MAX_BATCH])
    files = {"results.json": json.dumps(results_json(sweeps)).encode()}
    if len(sweeps) > 1 or sweeps[0].run_id != run_id:
        files["lr_find.png"] = combined_plot(sweeps, title)
    log_files(files, client=client, run_id=run_id)


def _sweep_params(cfg: LrFindConfig, wd: float, resolved: dict[str, str]) -> dict[str, str]:
    return {**as_params(cfg), **resolved, "weight_decay": wd_label(wd)}


def run_lr_find(
    cfg: LrFindConfig, echo: Echo = print, progress: bool | None = None
) -> LrFindResult:
    """Every sweep of ``cfg``, tracked in MLflow (see the module doc); a failing sweep ends its
    run (and the parent) FAILED and propagates. Bad input raises before any run starts."""
    quiet_mlflow()
    bars = os.isatty(2) if progress is None else progress
    decays = cfg.decays
    store = open_store(cfg.data)
    device = pick_device(cfg.device)
    loader = train_loader(cfg, store, warn=echo)
    first = fresh_model(cfg, device)  # bad --pretrained fails here
    model: torch.nn.Module | None = first
    h, w = loader.size
    resolved = {"resolved_batch_size": str(loader.batch_size), "resolved_size": f"{h}x{w}",
                "device": str(device), "model_norm": first.options.norm,
                "resolved_pretrained": first.backbone.source}  # fmt: skip
    del first  # each later decay builds its own model: keep no reference to this one
    title = f"{cfg.model}, {cfg.loss}"
    tags = model_tags(cfg)
    client = MlflowClient()
    sweeps: list[Sweep] = []
    with tracked_run(cfg.experiment, f"lr_find-{cfg.model}", tags) as top:
        top_id = top.info.run_id
        mlflow.log_input(store_dataset(store), context="lr_find")
        single = len(decays) == 1
        log_new_params(
            _sweep_params(cfg, decays[0], resolved) if single else {**as_params(cfg), **resolved}
        )
        for wd in decays:
            model = model if model is not None else fresh_model(cfg, device)
            if single:
                curve = sweep(cfg, wd, model, loader, device, bars)
                log_curve(client, top_id, curve, f"{title}, wd {wd_label(wd)}")
                sweeps.append(Sweep(wd, curve, top_id))
            else:
                sweeps.append(_child(cfg, wd, model, loader, device, bars, tags, resolved, top))
            model = None  # the next decay starts from freshly built (identical) weights
            echo(describe(wd, sweeps[-1].curve))
        log_summary(client, top_id, sweeps, title)
    exp_id = top.info.experiment_id
    return LrFindResult(top_id, exp_id, client.get_experiment(exp_id).name, sweeps)


def _child(
    cfg: LrFindConfig,
    wd: float,
    model: torch.nn.Module,
    loader: Any,
    device: torch.device,
    bars: bool,
    tags: dict[str, str],
    resolved: dict[str, str],
    parent: mlflow.ActiveRun,
) -> Sweep:
    """One sweep in its own run nested under ``parent``."""
    client = MlflowClient()
    label = wd_label(wd)
    with mlflow.start_run(
        run_name=f"lr_find-{cfg.model}-wd-{label}",
        nested=True,
        experiment_id=parent.info.experiment_id,
        tags=tags,
    ) as child:
        run_id = child.info.run_id
        params = _sweep_params(cfg, wd, resolved)
        client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
        curve = sweep(cfg, wd, model, loader, device, bars)
        log_curve(client, run_id, curve, f"{cfg.model}, {cfg.loss}, wd {label}")
    return Sweep(wd, curve, run_id)
