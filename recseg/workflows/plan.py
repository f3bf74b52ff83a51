"""The commands the demo and the thesis run, at a scale: footage, clip store, training,
evaluation. One place builds them, so both workflows ask for the same kind of data."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from recseg.workflows.steps import Step


@dataclasses.dataclass(frozen=True)
class Scale:
    """How much footage and training a workflow asks for."""

    videos: int  # footage videos (split into train/val/test by video)
    seconds: float  # length of each video
    footage_size: str  # HxW the footage is filmed at
    size: str  # HxW of the clip store (the models train and are scored at it)
    clip_seconds: float
    epochs: int
    batch_size: int
    seq_len: int
    num_workers: int
    train_options: tuple[str, ...] = ()  # more `recseg train` options (schedule, lr, ...)
    heldout_videos: int = 0  # videos of other people in the held-out set (0: none)
    warm_start: bool = False  # the later models start from the first model's weights
    warm_epochs: int = 0  # epochs of a warm-started model (0: ``epochs``)
    warm_options: tuple[str, ...] = ()  # its own `recseg train` options (a lower LR, ...)

    def with_epochs(self, epochs: int) -> Scale:
        """This scale, with ``epochs`` (warm-started models too) when non-zero."""
        return dataclasses.replace(self, epochs=epochs, warm_epochs=epochs) if epochs else self


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a workflow's outputs go, under one folder."""

    root: Path

    @property
    def footage(self) -> Path:
        return self.root / "footage"

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def heldout(self) -> Path:
        return self.root / "heldout"

    @property
    def heldout_store(self) -> Path:
        return self.heldout / "store"


def footage_step(layout: Layout, scale: Scale) -> Step:
    """Hard greenscreen footage (occlusions, flashes, dropped frames: what memory is for)."""
    args = ("footage", str(layout.footage), "--videos", str(scale.videos),
            "--seconds", f"{scale.seconds:g}", "--size", scale.footage_size, "--hard")  # fmt: skip
    return Step(f"footage: {scale.videos} hard greenscreen videos of {scale.seconds:g} s", args)


def preprocess_step(layout: Layout, scale: Scale, experiment: str) -> Step:
    """Chroma key -> clip store; the hard footage's true masks are the labels."""
    args = ("preprocess", "--videos", str(layout.footage / "videos"),
            "--backgrounds", str(layout.footage / "backgrounds"), "--out", str(layout.store),
            "--size", scale.size, "--clip-seconds", f"{scale.clip_seconds:g}",
            "--labels", "truth", "--experiment", experiment)  # fmt: skip
    return Step(f"preprocess: clip store at {scale.size}", args)


def train_step(layout: Layout, scale: Scale, model: str, loss: str, experiment: str,
               seed: int = 0, init_from: str = "", epochs: int = 0) -> Step:  # fmt: skip
    """Train one model at the store's size (``init_from``: warm-started from that model)."""
    epochs = epochs or scale.epochs
    init = ("--init-from", init_from) if init_from else ()
    args = ("train", "--data", str(layout.store), "--model", model, "--loss", loss,
            "--epochs", str(epochs), "--batch-size", str(scale.batch_size),
            "--seq-len", str(scale.seq_len), "--num-workers", str(scale.num_workers),
            "--seed", str(seed), "--checkpoint-dir", str(layout.checkpoints),
            "--experiment", experiment, *scale.train_options, *init)  # fmt: skip
    seeded = f", seed {seed}" if seed else ""
    warm = f", from {init_from}" if init_from else ""
    return Step(f"train {model} ({loss}, {epochs} epoch{'s' if epochs != 1 else ''}{seeded}{warm})",
                args)  # fmt: skip


def evaluate_step(layout: Layout, experiment: str) -> Step:
    """Score every finished training run of the experiment on the test split."""
    args = ("evaluate", "--data", str(layout.store), "--experiment", experiment)
    return Step("evaluate on the test split (metrics, latency, videos, summary run)", args)


def parse_models(text: str) -> tuple[str, ...]:
    """``"a,b"`` -> ``("a", "b")`` (blanks dropped, order kept, no repeats)."""
    return tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
