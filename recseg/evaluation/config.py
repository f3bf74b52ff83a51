"""``EvaluateConfig``: every option of ``recseg evaluate`` and the MLproject ``evaluate`` entry
point (the click options, MLproject parameters and MLflow params all derive from it)."""

from __future__ import annotations

import dataclasses

from recseg.config import MODEL_URIS, accepts, at_least, one_of, option, parse_size, size_or_default
from recseg.errors import InputError
from recseg.inference import compile_field, precision_field
from recseg.training.losses import build_loss

SPLITS = ("train", "val", "test")
DEFAULT_EXPERIMENT = "evaluate"  # where a --model-uri evaluation is logged


def parse_splits(text: str) -> tuple[str, ...]:
    """``"test,train"`` -> ``("test", "train")``; ``InputError`` for an unknown or empty list."""
    names = tuple(dict.fromkeys(p.strip() for p in str(text).split(",") if p.strip()))
    unknown = [n for n in names if n not in SPLITS]
    if not names or unknown:
        raise InputError(f"expected a comma list of {', '.join(SPLITS)}, got '{text}'")
    return names


def _loss_or_run(value: str) -> str | None:
    return None if value == "" else accepts(build_loss)(value)


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """Options of ``recseg evaluate`` (see ``recseg evaluate --help``)."""

    data: str = dataclasses.field(
        metadata=option(
            "Clip store written by `recseg preprocess` (its test split).", mltype="path"
        )
    )
    run_id: str = dataclasses.field(
        default="", metadata=option("Evaluate this finished training run's model.")
    )
    model_uri: str = dataclasses.field(
        default="",
        metadata=option(f"Evaluate this model ({MODEL_URIS}); logged in a run of its own."),
    )
    experiment: str = dataclasses.field(
        default="",
        metadata=option(
            "Evaluate every finished training run of this experiment, then log a summary run "
            "(table and figures)."
        ),
    )
    splits: str = dataclasses.field(
        default="test",
        metadata=option(
            "Splits to score, comma separated: test -> test_* metrics; train, val -> "
            "eval_train_*, eval_val_* (the per-epoch train_*/val_* are training's).",
            check=accepts(parse_splits),
        ),
    )
    size: str = dataclasses.field(
        default="",
        metadata=option(
            "Evaluate at HxW; default: the size the model was trained at (else the store's).",
            check=size_or_default,
        ),
    )
    loss: str = dataclasses.field(
        default="",
        metadata=option(
            "Loss reported as test_loss; default: the run's training loss (CrossDice for a "
            "bare --model-uri).",
            check=_loss_or_run,
        ),
    )
    batch_size: int = dataclasses.field(
        default=4,
        metadata=option(
            "Clips scored at once (lanes); the metrics do not depend on it.", check=at_least(1)
        ),
    )
    seq_len: int = dataclasses.field(
        default=8, metadata=option("Frames per lane per step.", check=at_least(1))
    )
    latency_frames: int = dataclasses.field(
        default=50,
        metadata=option(
            "Frames timed for the latency (batch 1, streaming, after the warm-up); 0: skip.",
            check=at_least(0),
        ),
    )
    warmup: int = dataclasses.field(
        default=10, metadata=option("Untimed warm-up frames before the latency.", check=at_least(0))
    )
    video_frames: int = dataclasses.field(
        default=90,
        metadata=option(
            "Frames in the input | truth | prediction mp4 per model; 0: no video.",
            check=at_least(0),
        ),
    )
    force: bool = dataclasses.field(
        default=False,
        metadata=option(
            "With --experiment: also re-evaluate runs already evaluated on this store."
        ),
    )
    seed: int = dataclasses.field(default=0, metadata=option("Seed (evaluation is deterministic)."))
    num_workers: int = dataclasses.field(
        default=2, metadata=option("Loader worker processes.", check=at_least(0))
    )
    device: str = dataclasses.field(
        default="auto",
        metadata=option(
            "auto (CUDA when available), cpu or cuda.",
            check=one_of("auto", "cpu", "cuda"),
        ),
    )
    precision: str = precision_field()
    compile: bool = compile_field()

    @property
    def split_names(self) -> tuple[str, ...]:
        return parse_splits(self.splits)

    @property
    def frame_size(self) -> tuple[int, int] | None:
        return parse_size(self.size) if self.size else None

    def check_target(self) -> None:
        """Exactly one of --run-id, --model-uri, --experiment."""
        given = [f for f in ("run_id", "model_uri", "experiment") if getattr(self, f)]
        if len(given) != 1:
            raise InputError(
                "give exactly one of --run-id, --model-uri, --experiment"
                + (
                    f" (got {', '.join('--' + g.replace('_', '-') for g in given)})"
                    if given
                    else ""
                )
            )
