"""Sweeps (the thesis's ``train_multiple``): the product of lists of ``recseg train`` options,
one MLflow run per configuration under a parent sweep run, one grid job per run.

A configuration that already has a training run in the experiment (the same options, whatever
started it) is not submitted again, so running a sweep twice submits nothing new; ``retry``
resubmits the ones whose run FAILED or was KILLED, continuing those runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import click
import mlflow
from mlflow.entities import Param, Run
from mlflow.tracking import MlflowClient

from recseg.config import as_params, build, fields, flag
from recseg.errors import InputError
from recseg.grid.envvars import env_from_values, option_args
from recseg.grid.job import MAX_RESTARTS
from recseg.grid.sge import GridError, qsub
from recseg.tracking import tags as T
from recseg.tracking.listing import search_all
from recseg.tracking.runs import quiet_mlflow
from recseg.tracking.train import mark_failed, set_run_tags
from recseg.training.config import TrainConfig, changed_params

Echo = Callable[[str], None]
# Options a sweep takes one value of (the others take comma-separated lists to sweep over).
SINGLE = ("experiment", "checkpoint_dir")
NOT_SWEPT = ("run_id",)
RETRY = ("FAILED", "KILLED")


@dataclasses.dataclass(frozen=True)
class Grid:
    """What to submit: option -> values, and how."""

    values: dict[str, list[str]]  # train option -> the values to sweep over (as typed)
    script: Path  # grid/train.sge
    environment: str  # RECSEG_ENV of the jobs
    qsub_args: tuple[str, ...] = ()
    log_dir: str = ""
    max_restarts: int | None = None
    retry: bool = False
    evaluate: bool = False

    @property
    def swept(self) -> list[str]:
        """Options with more than one value (what tells the configurations apart)."""
        return [k for k, v in self.values.items() if len(v) > 1]

    @property
    def key(self) -> str:
        """A hash of what the sweep covers: a second call finds its parent run by it."""
        text = json.dumps({k: v for k, v in sorted(self.values.items())}, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:16]


def configurations(grid: Grid, train_cmd: click.Command) -> list[TrainConfig]:
    """Every combination of the grid's values as a checked ``TrainConfig``."""
    names = list(grid.values)
    out = []
    for combo in itertools.product(*(grid.values[n] for n in names)):
        args: list[str] = []
        for name, value in zip(names, combo, strict=True):
            args += _args(train_cmd, name, value)
        cfg = train_config(train_cmd, args)
        out.append(dataclasses.replace(cfg, data=str(Path(cfg.data).resolve())))
    return out


def train_config(train_cmd: click.Command, args: list[str]) -> TrainConfig:
    """The checked ``TrainConfig`` of ``recseg train ARGS`` (``InputError`` names the option)."""
    try:
        with train_cmd.make_context("train", args) as ctx:
            return build(TrainConfig, dict(ctx.params))
    except click.ClickException as exc:
        raise InputError(exc.format_message()) from None


def _args(train_cmd: click.Command, name: str, value: str) -> list[str]:
    opt = next(p for p in train_cmd.params if p.name == name)
    assert isinstance(opt, click.Option)
    return option_args(opt, value, flag(name))


def matches(cfg: TrainConfig, run: Run) -> bool:
    """Was ``run`` started with ``cfg``'s run options?"""
    params = run.data.params
    options = cfg.run_options()
    return all(k in params for k in options) and not changed_params(cfg, params)


def training_runs(client: MlflowClient, experiment: str) -> list[Run]:
    """Training runs of the experiment, scheduled ones included (not sweeps, evaluations...)."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = search_all(client, [exp.experiment_id], "")
    return [r for r in runs if r.data.tags.get(T.KIND) in (None, "train")]


def job_tracking_uri() -> str:
    """The tracking URI for jobs, a relative sqlite or file path made absolute."""
    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///") :]).resolve())
    if "://" not in uri and not uri.startswith("databricks"):  # a file store folder
        return str(Path(uri).resolve())
    return uri


@dataclasses.dataclass
class Plan:
    """One configuration: its config, its run (existing or new) and what happens to it."""

    cfg: TrainConfig
    run: Run | None = None
    job: str = ""
    orphan: bool = False  # SCHEDULED, but its job is no longer in Grid Engine

    @property
    def action(self) -> str:
        if self.run is None:
            return "new"
        return "retry" if self.run.info.status in RETRY or self.orphan else "exists"


def plan(grid: Grid, train_cmd: click.Command, client: MlflowClient) -> list[Plan]:
    """The configurations, each with the training run it already has (if any)."""
    from recseg.grid.sge import queued_jobs

    configs = configurations(grid, train_cmd)
    runs = training_runs(client, configs[0].experiment_name)
    queued = None
    out = []
    for cfg in configs:
        found = next((r for r in runs if matches(cfg, r)), None)
        orphan = False
        if found is not None and found.info.status == "SCHEDULED":
            queued = queued_jobs() if queued is None else queued
            orphan = queued is not None and found.data.tags.get(T.JOB, "") not in queued
        out.append(Plan(cfg, found, orphan=orphan))
    return out


def label(grid: Grid, cfg: TrainConfig) -> str:
    shown = grid.swept or ["model", "loss"]
    return " ".join(f"{k}={getattr(cfg, k)}" for k in shown)


def variables(
    grid: Grid, cfg: TrainConfig, run_id: str, train_cmd: click.Command
) -> dict[str, str]:
    """The ``qsub -v`` variables of one training job."""
    out = env_from_values(train_cmd, dataclasses.asdict(cfg))
    out.update({"DATA": cfg.data, "RUN_ID": run_id, "RECSEG_ENV": grid.environment})
    out["MLFLOW_TRACKING_URI"] = job_tracking_uri()
    if grid.max_restarts is not None:
        out[MAX_RESTARTS] = str(grid.max_restarts)
    return out


def qsub_options(grid: Grid, name: str) -> list[str]:
    opts = ["-N", name]
    if grid.log_dir:
        opts += ["-o", str(Path(grid.log_dir).resolve()) + "/"]
    return [*opts, *grid.qsub_args]


def parent_run(client: MlflowClient, grid: Grid, experiment: str, size: int) -> str:
    """The sweep's parent run: the one an earlier call made for the same grid, or a new one."""
    exp = client.get_experiment_by_name(experiment)
    ml = {T.EXPERIMENT_KIND: T.ML_EXPERIMENT}
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment, tags=ml)
    found = search_all(client, [exp_id], f"tags.`{T.SWEEP_KEY}` = '{grid.key}'")
    if found:
        return found[0].info.run_id
    run = client.create_run(
        exp_id, run_name=f"sweep-{size}", tags={T.KIND: "sweep", T.SWEEP_KEY: grid.key}
    )
    params = {k: ",".join(v) for k, v in grid.values.items()}
    client.log_batch(run.info.run_id, params=[Param(k, v[:6000]) for k, v in params.items()])
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def new_run(client: MlflowClient, cfg: TrainConfig, parent: str) -> str:
    """A SCHEDULED training run under ``parent`` with every option as a param."""
    exp = client.get_experiment_by_name(cfg.experiment_name)
    assert exp is not None
    run = client.create_run(
        exp.experiment_id,
        run_name=f"{cfg.model}-{cfg.loss}",
        tags={"mlflow.parentRunId": parent, T.SWEEP: parent},
    )
    params = {**as_params(cfg), "experiment": cfg.experiment_name}
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()])
    client.update_run(run.info.run_id, status="SCHEDULED")
    return run.info.run_id


def submit(grid: Grid, plans: Sequence[Plan], train_cmd: click.Command, echo: Echo) -> str:
    """Create the runs and submit the jobs; returns the parent run id."""
    quiet_mlflow()
    client = MlflowClient()
    experiment = plans[0].cfg.experiment_name
    parent = parent_run(client, grid, experiment, len(plans))
    for p in plans:
        if p.action == "exists" or (p.action == "retry" and not grid.retry):
            assert p.run is not None
            hint = "  (--retry resubmits it)" if p.action == "retry" else ""
            status = p.run.info.status.lower() + (" without a job" if p.orphan else "")
            echo(f"  {status}: run {p.run.info.run_id}  {label(grid, p.cfg)}{hint}")
            continue
        run_id = p.run.info.run_id if p.run is not None else new_run(client, p.cfg, parent)
        try:
            p.job = qsub(
                str(grid.script),
                variables(grid, p.cfg, run_id, train_cmd),
                qsub_options(grid, f"{p.cfg.model}-{p.cfg.loss}"),
            )
        except (GridError, InputError) as exc:
            mark_failed(run_id, f"sweep could not submit its job: {exc}")
            raise
        set_run_tags(run_id, {T.JOB: p.job})
        echo(f"  submitted job {p.job}: run {run_id}  {label(grid, p.cfg)}")
    return parent


def submit_evaluation(grid: Grid, plans: Sequence[Plan], echo: Echo) -> str | None:
    """One evaluation job of the experiment, held until every training job of this call ends."""
    jobs = [p.job for p in plans if p.job]
    stores = {p.cfg.data for p in plans}
    if not jobs:
        return None
    if len(stores) > 1:
        echo("  no evaluation job: the sweep trains on several stores (evaluate each one)")
        return None
    env = {
        "DATA": stores.pop(),
        "EXPERIMENT": plans[0].cfg.experiment_name,
        "RECSEG_ENV": grid.environment,
        "MLFLOW_TRACKING_URI": job_tracking_uri(),
    }
    script = grid.script.with_name("evaluate.sge")
    job = qsub(str(script), env, qsub_options(grid, "evaluate"), hold=jobs)
    echo(f"  evaluation: job {job}, held until the training jobs end")
    return job


def default_script() -> Path:
    """``grid/train.sge`` of the recseg checkout this package runs from."""
    return Path(__file__).resolve().parents[2] / "grid" / "train.sge"


def default_environment(environ: Mapping[str, str] = os.environ) -> str:
    """The Python environment running now (a venv or conda prefix)."""
    return environ.get("RECSEG_ENV") or sys.prefix


def sweep_fields() -> list[str]:
    """The train options a sweep accepts."""
    return [f.name for f, _ in fields(TrainConfig) if f.name not in NOT_SWEPT]


def split_values(name: str, text: str) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]`` (one value for the single-valued options)."""
    if name in SINGLE:
        return [text]
    values = [v.strip() for v in text.split(",")]
    if any(not v for v in values):
        raise InputError(f"--{name.replace('_', '-')}: an empty value in '{text}'")
    return list(dict.fromkeys(values))


def values_from_options(options: Mapping[str, Any]) -> dict[str, list[str]]:
    """Option -> values for the options given (model and loss first)."""
    flags = {k[3:] for k, v in options.items() if k.startswith("no_") and v}  # --no-x
    given = {k: split_values(k, str(v)) for k, v in options.items()
             if v is not None and not k.startswith("no_")}  # fmt: skip
    for name in flags:
        if name in given and given[name] != ["false"]:
            raise InputError(f"--no-{name.replace('_', '-')} and --{name.replace('_', '-')} "
                             "disagree")  # fmt: skip
        given[name] = ["false"]
    order = ["model", "loss", *[k for k in given if k not in ("model", "loss")]]
    return {k: given[k] for k in order if k in given}


def split_qsub_args(text: str) -> tuple[str, ...]:
    try:
        return tuple(shlex.split(text))
    except ValueError as exc:
        raise InputError(f"--qsub-args: {exc}") from None


OWN_OPTIONS = ("script", "environment", "qsub_args", "log_dir", "max_restarts", "retry",
               "evaluate", "dry_run")  # fmt: skip


def grid_from_options(options: Mapping[str, Any]) -> Grid:
    """The :class:`Grid` of ``recseg sweep``'s options (checked)."""
    script = Path(options["script"] or default_script()).resolve()
    if not script.is_file():
        raise InputError(f"--script: {script} does not exist (pass the path of grid/train.sge)")
    train = {k: v for k, v in options.items() if k not in OWN_OPTIONS}
    return Grid(
        values=values_from_options(train),
        script=script,
        environment=options["environment"] or default_environment(),
        qsub_args=split_qsub_args(options["qsub_args"]),
        log_dir=options["log_dir"],
        max_restarts=options["max_restarts"],
        retry=options["retry"],
        evaluate=options["evaluate"],
    )


def run_sweep(options: Mapping[str, Any], echo: Echo) -> None:
    """``recseg sweep``: plan, then (unless a dry run) create the runs and submit the jobs."""
    from recseg.cli.train import train_cmd
    from recseg.data.store import ClipStore
    from recseg.grid.sge import check_client

    grid = grid_from_options(options)
    quiet_mlflow()
    plans = plan(grid, train_cmd, MlflowClient())
    for store in sorted({p.cfg.data for p in plans}):
        ClipStore(store)  # a missing or unfinished store fails here, before any job
    todo = [p for p in plans if p.action == "new" or (p.action == "retry" and grid.retry)]
    experiment = plans[0].cfg.experiment_name
    echo(f"sweep of {len(plans)} configurations in experiment '{experiment}': "
         f"{len(todo)} to submit, {len(plans) - len(todo)} with a run already")  # fmt: skip
    if options["dry_run"]:
        for p in plans:
            echo(f"  {p.action}: {label(grid, p.cfg)}")
        return
    if todo:
        check_client()
        if grid.log_dir:
            Path(grid.log_dir).mkdir(parents=True, exist_ok=True)
    parent = submit(grid, plans, train_cmd, echo)
    if grid.evaluate:
        submit_evaluation(grid, plans, echo)
    echo(f"sweep run {parent}: {len(todo)} job(s) submitted")
