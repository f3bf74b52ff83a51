"""``recseg demo`` and ``recseg thesis``: the platform end to end, and the thesis's comparison."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import click

from recseg.config import at_least, build, click_options, option
from recseg.errors import InputError
from recseg.training.config import loss_field


def _models(text: str) -> str | None:
    from recseg.models.registry import model_spec
    from recseg.workflows.plan import parse_models

    names = parse_models(text)
    if not names:
        return "name at least one model"
    for name in names:
        try:
            model_spec(name)
        except InputError as exc:
            return str(exc)
    return None


VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm")
# real videos of a person that Debian packages ship (kphotoalbum: a webcam clip, 160x120)
KNOWN_VIDEOS = (Path("/usr/share/kphotoalbum/demo/movie.avi"),)


def _videos(text: str) -> str | None:
    for name in (p.strip() for p in text.split(",") if p.strip()):
        if not Path(name).is_file():
            return f"{name}: no such video file"
    return None


def user_videos(text: str, home: Path | None = None) -> tuple[Path, ...]:
    """The videos ``--videos`` names; else at most 2 real videos found on the machine: in
    ``~/Videos``, then those Debian packages ship (``KNOWN_VIDEOS``)."""
    named = [Path(p.strip()) for p in text.split(",") if p.strip()]
    if named:
        return tuple(named)
    folder = (home or Path.home()) / "Videos"
    found = sorted(f for f in folder.glob("*") if f.suffix.lower() in VIDEO_SUFFIXES)
    found += [f for f in KNOWN_VIDEOS if f.is_file()]
    return tuple(found[:2])


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Options of ``recseg demo``."""

    out: str = dataclasses.field(
        default="demo",
        metadata=option("Folder for the footage, clip store, checkpoints and segmented video."),
    )
    experiment: str = dataclasses.field(
        default="demo", metadata=option("MLflow experiment of the demo's runs.")
    )
    models: str = dataclasses.field(
        default="Deep+_mobile,Deep_mobile_gruV1",
        metadata=option("Models to train and compare, comma separated.", check=_models),
    )
    epochs: int = dataclasses.field(
        default=0,
        metadata=option(
            "Epochs per model; 0: 4, and 2 for the warm-started recurrent one (2 each with "
            "--quick).",
            check=at_least(0),
        ),
    )
    quick: bool = dataclasses.field(
        default=False,
        metadata=option("A reduced demo (3 short videos, tiny frames, 2 epochs): a smoke test."),
    )
    videos: str = dataclasses.field(
        default="",
        metadata=option(
            "Also segment these videos (comma separated), e.g. real videos of a person; "
            "default: up to 2 found on the machine (~/Videos, kphotoalbum's demo movie).",
            check=_videos,
        ),
    )


@dataclasses.dataclass(frozen=True)
class ThesisConfig:
    """Options of ``recseg thesis``."""

    out: str = dataclasses.field(
        default="thesis",
        metadata=option("Folder for the footage, clip store, checkpoints and the report."),
    )
    experiment: str = dataclasses.field(
        default="", metadata=option("MLflow experiment; default: thesis-<UTC date-time>.")
    )
    variants: str = dataclasses.field(
        default="Deep+_mobile,Deep_mobile_gruV3,Deep_mobile_gruV1,Deep_mobile_lstmV3,"
        "Deep_mobile_lstmV1",
        metadata=option(
            "Models to compare, comma separated (base, GRU and LSTM at the decoder and output).",
            check=_models,
        ),
    )
    loss: str = loss_field(default="CrossDice")
    seeds: int = dataclasses.field(
        default=3, metadata=option("Seeds per variant (0, 1, ...).", check=at_least(1))
    )
    epochs: int = dataclasses.field(
        default=0, metadata=option("Epochs per run; 0: 1 (2 with --quick).", check=at_least(0))
    )
    quick: bool = dataclasses.field(
        default=False,
        metadata=option("A reduced comparison (3 short videos, tiny frames, 2 epochs)."),
    )


@click.command("demo")
@click_options(DemoConfig)
def demo_cmd(**values: object) -> None:
    """The platform end to end on embedded demo data: hard greenscreen footage -> clip store
    -> train a plain model, then a recurrent one from its weights -> evaluate -> promote the
    better one -> score it on held-out people and backgrounds -> segment a held-out person in
    front of a real photo (and real videos found on the machine) with it.

    Every step is a recseg command, shown as it runs. Ends with the paths of the outputs, the
    runs' test scores, the champion's held-out foreground IoU and the command that opens the
    runs' compare view in the MLflow UI. About 10 minutes on 2 CPU cores; --quick runs a
    reduced version in about two.
    """
    cfg = build(DemoConfig, values)
    from recseg.workflows import demo, plan

    scale = (demo.QUICK if cfg.quick else demo.FULL).with_epochs(cfg.epochs)
    layout = plan.Layout(_folder(cfg.out))
    models = plan.parse_models(cfg.models)
    p = demo.DemoPlan(layout, scale, cfg.experiment, models, user_videos(cfg.videos))
    _run_workflow(lambda: demo.run_demo(p, echo=click.echo))


@click.command("thesis")
@click_options(ThesisConfig)
def thesis_cmd(**values: object) -> None:
    """A small version of the thesis's comparison on hard demo footage: the base model vs GRU
    and LSTM at the decoder and at the output, 3 seeds each, scored on a test split of 5
    videos (600 frames); prints the table (`recseg report`) with mean ± std over seeds, and
    each recurrent variant − base per metric (fg IoU on clean and event frames, temporal
    error, frames to recover after an event) with a 95 % bootstrap interval over test clips
    and seeds, in plain words.

    About 90 minutes on 2 CPU cores with the defaults (estimated from measured run times: about
    3 minutes per base or V1 run, 9 per V3 run).
    """
    cfg = build(ThesisConfig, values)
    from recseg.workflows import plan, thesis

    scale = (thesis.QUICK if cfg.quick else thesis.FULL).with_epochs(cfg.epochs)
    p = thesis.ThesisPlan(plan.Layout(_folder(cfg.out)), scale,
                          cfg.experiment or thesis.default_experiment(),
                          plan.parse_models(cfg.variants), cfg.loss, cfg.seeds)  # fmt: skip
    _run_workflow(lambda: thesis.run_thesis(p, echo=click.echo))


def _folder(text: str) -> Path:
    folder = Path(text)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"--out: not a folder: {folder}")
    return folder


def _run_workflow(run: Callable[[], int]) -> None:
    from recseg.workflows.steps import StepFailed

    try:
        run()
    except StepFailed as failed:
        click.echo(f"recseg: error: {failed}", err=True)
        raise SystemExit(failed.code) from None
