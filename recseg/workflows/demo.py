"""``recseg demo``: what the platform is for, in minutes on a laptop CPU.

Hard greenscreen footage -> clip store -> a plain and a recurrent model trained -> evaluated
-> the better one promoted -> a demo video segmented onto a new background with it. Ends with
the outputs and the command (and address) that show the runs side by side in the MLflow UI.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from recseg.errors import InputError
from recseg.tracking import tags as T
from recseg.tracking.runs import quiet_mlflow, redact_uri
from recseg.tracking.ui import compare_url, experiment_url, ui_base, ui_command
from recseg.workflows import plan
from recseg.workflows.steps import Step, duration, run_steps

Echo = Callable[[str], None]
LOSS = "CrossDice"
# small frames, many steps: random-init models learn the person in minutes on a CPU
FAST = ("--schedule", "onecycle", "--lr", "0.002")
FULL = plan.Scale(videos=6, seconds=6, footage_size="144x256", size="72x128", clip_seconds=4,
                  epochs=6, batch_size=2, seq_len=4, num_workers=1, train_options=FAST)  # fmt: skip
# quick: 2 epochs, so that the UI shows per-epoch curves
QUICK = plan.Scale(videos=3, seconds=2, footage_size="144x256", size="72x128", clip_seconds=1,
                   epochs=2, batch_size=2, seq_len=2, num_workers=0,
                   train_options=FAST)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class DemoPlan:
    """What one demo does and where its outputs go."""

    layout: plan.Layout
    scale: plan.Scale
    experiment: str
    models: tuple[str, ...]

    @property
    def registered(self) -> str:
        return f"recseg-{self.experiment}"

    @property
    def segmented(self) -> Path:
        return self.layout.root / "segmented.mp4"

    @property
    def masks(self) -> Path:
        return self.layout.root / "segmented-masks.mp4"


def _test_inputs(layout: plan.Layout) -> tuple[Path, Path]:
    """A test-split video of the footage and a background the models never trained on."""
    store_plan = json.loads((layout.store / "plan.json").read_text())
    manifest = json.loads((layout.store / "store.json").read_text())
    clips = manifest["splits"].get("test") or manifest["splits"]["val"]
    video = layout.footage / "videos" / clips[0]["video"]
    if not video.is_file():
        video = sorted((layout.footage / "videos").glob("*.mp4"))[-1]
    names = store_plan["backgrounds"].get("test") or store_plan["backgrounds"]["val"]
    return video, Path(store_plan["backgrounds_dir"]) / names[0]


def _tail_steps(p: DemoPlan) -> list[Step]:
    video, background = _test_inputs(p.layout)
    champion = f"models:/{p.registered}@champion"
    segment = ("segment", str(video), "-o", str(p.segmented), "--model", champion,
               "--background", str(background), "--masks", str(p.masks))  # fmt: skip
    promote = ("promote", "--experiment", p.experiment, "--name", p.registered)
    return [
        plan.evaluate_step(p.layout, p.experiment),
        Step("promote the better model by test fg IoU", promote),
        Step(f"segment {video.name} onto {background.name} with {champion}", segment),
    ]


def _demo_runs(client: MlflowClient, experiment: str, since_ms: int) -> tuple[str, list]:
    """The experiment id and the training runs this demo started (oldest first)."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise InputError(f"--experiment: no experiment named {experiment!r} after training")
    runs = client.search_runs([exp.experiment_id], f"tags.`{T.KIND}` = 'train'")
    mine = [r for r in runs if r.info.start_time >= since_ms]
    return exp.experiment_id, sorted(mine, key=lambda r: r.info.start_time)


def _champion(client: MlflowClient, name: str) -> str:
    version = client.get_model_version_by_alias(name, "champion")
    run = client.get_run(version.run_id)
    return f"{run.info.run_name} (version {version.version})"


def _scores(run) -> str:
    """A run's test scores as the closing lists them."""
    metric = run.data.metrics
    names = (("test_miou", "test mIoU"), ("test_fg_iou", "fg IoU"), ("test_flicker", "flicker"))
    return ", ".join(f"{label} {metric.get(key, float('nan')):.3f}" for key, label in names)


def _closing(p: DemoPlan, exp_id: str, runs: list, seconds: float, echo: Echo) -> None:
    client = MlflowClient()
    uri = mlflow.get_tracking_uri()
    base = ui_base(uri)
    root = p.layout.root
    echo(f"\ndemo: done in {duration(seconds)}. Outputs:")
    echo(f"  footage          {p.layout.footage}/videos (true masks in {p.layout.footage}/truth)")
    echo(f"  clip store       {p.layout.store} (samples: {p.layout.store}/samples.png)")
    echo(f"  checkpoints      {p.layout.checkpoints}")
    echo(f"  segmented video  {p.segmented} (masks: {p.masks})")
    echo(f"  tracking         {redact_uri(uri)}, experiment {p.experiment!r}")
    for run in runs:
        echo(f"  run              {run.info.run_name} {run.info.run_id} ({_scores(run)})")
    champion = f"models:/{p.registered}@champion = {_champion(client, p.registered)}"
    echo(f"  champion         {champion}")
    command = ui_command(uri)
    echo("\nSee the runs in the MLflow UI" + (": start it with" if command else " at the server:"))
    if command:
        echo(f"  {command}")
    echo("then open the compare view of the demo runs (params, test_* metrics, curves):")
    echo(f"  {compare_url(base, exp_id, [r.info.run_id for r in runs])}")
    echo(f"(all runs of the experiment: {experiment_url(base, exp_id)}; outputs under {root})")


def run_demo(p: DemoPlan, echo: Echo = print) -> int:
    """Run the demo; 0 when done (a failing step raises ``StepFailed``)."""
    quiet_mlflow()
    start = time.monotonic()
    since_ms = int(time.time() * 1000) - 1000
    train = [plan.train_step(p.layout, p.scale, m, LOSS, p.experiment) for m in p.models]
    head = [plan.footage_step(p.layout, p.scale),
            plan.preprocess_step(p.layout, p.scale, p.experiment), *train]  # fmt: skip
    total = len(head) + 3
    where = redact_uri(mlflow.get_tracking_uri())
    echo(f"demo: {total} steps into {p.layout.root}, tracked in {where}")
    run_steps(head, "demo", echo, total=total)
    run_steps(_tail_steps(p), "demo", echo, start_at=len(head) + 1, total=total)
    exp_id, runs = _demo_runs(MlflowClient(), p.experiment, since_ms)
    _closing(p, exp_id, runs, time.monotonic() - start, echo)
    return 0
