"""``recseg thesis``: a small version of the thesis's comparison — does memory help?

Hard greenscreen footage (occlusions, flashes, dropped frames) -> clip store -> the base model
and recurrent variants (GRU and LSTM at the decoder and at the output) trained with several
seeds each -> every run scored on the test split -> ``recseg report``: the table with mean ± std
over seeds and the flicker verdict. Each call gets an experiment of its own, so the table holds
exactly the runs it trained.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import mlflow

from recseg.tracking.runs import quiet_mlflow, redact_uri
from recseg.workflows import plan
from recseg.workflows.demo import QUICK as DEMO_QUICK
from recseg.workflows.steps import Step, duration, run_steps

Echo = Callable[[str], None]
FAST = ("--schedule", "onecycle", "--lr", "0.002")
# base, GRU at the decoder (V3) and output (V1), LSTM at the decoder and output
VARIANTS = ("Deep+_mobile", "Deep_mobile_gruV3", "Deep_mobile_gruV1", "Deep_mobile_lstmV3",
            "Deep_mobile_lstmV1")  # fmt: skip
# The demo's recipe (docs/recipe.md) for every variant from random init (no warm start: the
# same training for all); 34 videos of 8 s: the test split holds 5 videos, 600 frames at 15 fps.
RECIPE = ("--schedule", "onecycle", "--lr", "0.003", "--output-stride", "16",
          "--piece-frames", "8")  # fmt: skip
FULL = plan.Scale(videos=34, seconds=8, footage_size="144x256", size="144x256", clip_seconds=4,
                  epochs=1, batch_size=4, seq_len=2, num_workers=1,
                  train_options=RECIPE)  # fmt: skip
QUICK = dataclasses.replace(DEMO_QUICK, warm_start=False)  # the quick demo's scale


@dataclasses.dataclass(frozen=True)
class ThesisPlan:
    """What one comparison trains and where its outputs go."""

    layout: plan.Layout
    scale: plan.Scale
    experiment: str
    variants: tuple[str, ...]
    loss: str
    seeds: int

    @property
    def report_dir(self) -> str:
        return str(self.layout.root / "report")


def default_experiment() -> str:
    """``thesis-YYYYmmdd-HHMMSS`` (UTC): one experiment per comparison."""
    return time.strftime("thesis-%Y%m%d-%H%M%S", time.gmtime())


def steps(p: ThesisPlan) -> list[Step]:
    """Every command of the comparison, in order (seeds outermost: a cut-short run still has
    every variant at the first seeds)."""
    train = [
        plan.train_step(p.layout, p.scale, model, p.loss, p.experiment, seed)
        for seed in range(p.seeds)
        for model in p.variants
    ]
    title = f"thesis table of {p.experiment}"
    report = ("report", "--experiment", p.experiment, "--out", p.report_dir,
              "--title", f"Does memory help? {p.experiment}")  # fmt: skip
    return [
        plan.footage_step(p.layout, p.scale),
        plan.preprocess_step(p.layout, p.scale, p.experiment),
        *train,
        plan.evaluate_step(p.layout, p.experiment),
        Step(title, report),
    ]


def run_thesis(p: ThesisPlan, echo: Echo = print) -> int:
    """Run the comparison; 0 when done (a failing step raises ``StepFailed``)."""
    quiet_mlflow()
    todo = steps(p)
    runs = len(p.variants) * p.seeds
    echo(f"thesis: {len(p.variants)} variants x {p.seeds} seeds = {runs} training runs at "
         f"{p.scale.size}, {p.scale.epochs} epochs each; experiment {p.experiment!r} in "
         f"{redact_uri(mlflow.get_tracking_uri())}")  # fmt: skip
    seconds = run_steps(todo, "thesis", echo)
    echo(f"thesis: done in {duration(seconds)}; report in {p.report_dir}/report.md")
    return 0
