"""``recseg demo``: what the platform is for, in minutes on a laptop CPU.

Hard greenscreen footage -> clip store -> a plain and a recurrent model trained -> evaluated
-> the better one promoted -> a demo video segmented onto a new background with it. Ends with
the outputs and the command (and address) that show the runs side by side in the MLflow UI.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from recseg.errors import InputError
from recseg.tracking import tags as T
from recseg.tracking.runs import quiet_mlflow, redact_uri
from recseg.tracking.ui import compare_url, experiment_url, ui_base, ui_command
from recseg.workflows import heldout, plan
from recseg.workflows.steps import Step, duration, run_steps

Echo = Callable[[str], None]
LOSS = "CrossDice"
# The recipe, from measurements on 2 cores (docs/recipe.md, `python -m benchmarks learning`):
# GroupNorm (the default), output stride 16, bf16 autocast where the CPU has it, one-cycle
# schedule (the last weights are logged), 4-frame pieces of each clip, each composited over
# its own background; the recurrent model starts from the plain one's weights.
RECIPE = ("--schedule", "onecycle", "--lr", "0.003", "--output-stride", "16",
          "--piece-frames", "4")  # fmt: skip
FULL = plan.Scale(videos=24, seconds=6, footage_size="144x256", size="144x256", clip_seconds=3,
                  epochs=4, batch_size=4, seq_len=2, num_workers=1, train_options=RECIPE,
                  heldout_videos=4, warm_start=True, warm_epochs=2,
                  warm_options=("--lr", "0.001", "--piece-frames", "8"))  # fmt: skip
# quick: tiny frames, 2 epochs (so that the UI shows per-epoch curves): a smoke test
QUICK = plan.Scale(videos=3, seconds=2, footage_size="144x256", size="72x128", clip_seconds=1,
                   epochs=2, batch_size=2, seq_len=2, num_workers=0,
                   train_options=("--schedule", "onecycle", "--lr", "0.002"),
                   heldout_videos=1, warm_start=True, warm_epochs=2)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class DemoPlan:
    """What one demo does and where its outputs go."""

    layout: plan.Layout
    scale: plan.Scale
    experiment: str
    models: tuple[str, ...]
    videos: tuple[Path, ...] = ()  # more videos to segment (real videos of people)

    @property
    def registered(self) -> str:
        return f"recseg-{self.experiment}"

    @property
    def segmented(self) -> Path:
        return self.layout.root / "segmented.mp4"

    @property
    def masks(self) -> Path:
        return self.layout.root / "segmented-masks.mp4"

    @property
    def heldout_video(self) -> Path:
        return self.layout.heldout / "person.mp4"


def _photos(layout: plan.Layout) -> list[Path]:
    """The held-out backgrounds (test backgrounds of the main store), photographs first."""
    found = sorted((layout.heldout / "backgrounds").iterdir())
    return sorted(found, key=lambda f: heldout.photo_rank(f.name))


def _segment(p: DemoPlan, video: Path, out: Path, masks: Path, background: Path) -> Step:
    champion = f"models:/{p.registered}@champion"
    args = ("segment", str(video), "-o", str(out), "--model", champion,
            "--background", str(background), "--masks", str(masks))  # fmt: skip
    return Step(f"segment {video.name} onto {background.name} with {champion}", args)


def _tail_steps(p: DemoPlan) -> list[Step]:
    champion = f"models:/{p.registered}@champion"
    promote = ("promote", "--experiment", p.experiment, "--name", p.registered)
    return [
        plan.evaluate_step(p.layout, p.experiment),
        Step("promote the better model by test fg IoU", promote),
        heldout.evaluate_step(p.layout, champion),
    ]


def _segment_steps(p: DemoPlan, echo: Echo) -> list[Step]:
    """The held-out person's video onto another held-out photo, then the user's videos."""
    photos = _photos(p.layout)
    shown = heldout.write_video(p.layout, p.heldout_video)
    echo(f"demo: {p.heldout_video.name}: a held-out person in front of {shown} (never trained on)")
    others = [f for f in photos if f.name != shown] or photos
    steps = [_segment(p, p.heldout_video, p.segmented, p.masks, others[0])]
    for video in p.videos:
        out = p.layout.root / f"segmented-{video.stem}.mp4"
        masks = p.layout.root / f"segmented-{video.stem}-masks.mp4"
        steps.append(_segment(p, video, out, masks, others[0]))
    return steps


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
    echo(f"  held-out set     {p.layout.heldout_store} (new people, backgrounds never trained on)")
    echo(f"  checkpoints      {p.layout.checkpoints}")
    echo(f"  segmented video  {p.segmented} (masks: {p.masks})")
    for video in p.videos:
        echo(f"  segmented video  {root / f'segmented-{video.stem}.mp4'} (from {video})")
    echo(f"  tracking         {redact_uri(uri)}, experiment {p.experiment!r}")
    for run in runs:
        echo(f"  run              {run.info.run_name} {run.info.run_id} ({_scores(run)})")
    champion = f"models:/{p.registered}@champion"
    echo(f"  champion         {champion} = {_champion(client, p.registered)}")
    held = heldout.heldout_fg_iou(champion, p.layout.heldout_store)
    shown = "not measured" if held is None else f"{held:.3f}"
    echo(f"  held-out fg IoU  {shown} (champion on people and backgrounds it never trained on)")
    command = ui_command(uri)
    echo("\nSee the runs in the MLflow UI" + (": start it with" if command else " at the server:"))
    if command:
        echo(f"  {command}")
    echo("then open the compare view of the demo runs (params, test_* metrics, curves):")
    echo(f"  {compare_url(base, exp_id, [r.info.run_id for r in runs])}")
    echo(f"(all runs of the experiment: {experiment_url(base, exp_id)}; outputs under {root})")


def _train(p: DemoPlan, since_ms: int, echo: Echo, start_at: int, total: int) -> None:
    """Train the models in order; with ``warm_start`` the later ones start from the first."""
    first, *rest = p.models
    step = plan.train_step(p.layout, p.scale, first, LOSS, p.experiment)
    run_steps([step], "demo", echo, start_at=start_at, total=total)
    init = ""
    if p.scale.warm_start and rest:
        _, runs = _demo_runs(MlflowClient(), p.experiment, since_ms)
        init = f"runs:/{runs[-1].info.run_id}/model"
    epochs = p.scale.warm_epochs if init else 0
    steps = [plan.train_step(p.layout, p.scale, m, LOSS, p.experiment, init_from=init,
                             epochs=epochs) for m in rest]  # fmt: skip
    if init:  # the warm-started models' own options come last: they win
        steps = [Step(s.title, (*s.args, *p.scale.warm_options)) for s in steps]
    run_steps(steps, "demo", echo, start_at=start_at + 1, total=total)


def run_demo(p: DemoPlan, echo: Echo = print) -> int:
    """Run the demo; 0 when done (a failing step raises ``StepFailed``)."""
    quiet_mlflow()
    start = time.monotonic()
    since_ms = int(time.time() * 1000) - 1000
    data = [plan.footage_step(p.layout, p.scale), heldout.footage_step(p.layout, p.scale),
            plan.preprocess_step(p.layout, p.scale, p.experiment)]  # fmt: skip
    total = len(data) + 1 + len(p.models) + 3 + 1 + len(p.videos)
    where = redact_uri(mlflow.get_tracking_uri())
    echo(f"demo: {total} steps into {p.layout.root}, tracked in {where}")
    done = len(data)
    run_steps(data, "demo", echo, total=total)
    count = heldout.link_inputs(p.layout)
    echo(f"demo: held-out set: new people over the {count} test backgrounds no model trains on")
    run_steps([heldout.preprocess_step(p.layout, p.scale, p.experiment)], "demo", echo,
              start_at=done + 1, total=total)  # fmt: skip
    done += 1
    _train(p, since_ms, echo, done + 1, total)
    done += len(p.models)
    run_steps(_tail_steps(p), "demo", echo, start_at=done + 1, total=total)
    done += 3
    run_steps(_segment_steps(p, echo), "demo", echo, start_at=done + 1, total=total)
    exp_id, runs = _demo_runs(MlflowClient(), p.experiment, since_ms)
    _closing(p, exp_id, runs, time.monotonic() - start, echo)
    return 0
