"""``EvaluateConfig``: every option of ``recseg evaluate`` and the MLproject ``evaluate`` entry
point (the click options, MLproject parameters and MLflow params all derive from it);
``recseg.tracking.evaluate_run`` runs the command."""

from __future__ import annotations

import dataclasses

from recseg.config import MODEL_URIS, accepts, at_least, device_field, option, parse_size
from recseg.errors import InputError
from recseg.inference import compile_field, precision_field
from recseg.training.config import (
    batch_size_field,
    data_field,
    loss_field,
    num_workers_field,
    seed_field,
    seq_len_field,
    size_field,
)

SPLITS = ("train", "val", "test")
DEFAULT_EXPERIMENT = "evaluate"  # where a --model-uri evaluation is logged


def parse_splits(text: str) -> tuple[str, ...]:
    """``"test,train"`` -> ``("test", "train")``; ``InputError`` for an unknown or empty list."""
    names = tuple(dict.fromkeys(p.strip() for p in str(text).split(",") if p.strip()))
    unknown = [n for n in names if n not in SPLITS]
    if not names or unknown:
        raise InputError(f"expected a comma list of {', '.join(SPLITS)}, got '{text}'")
    return names


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """Options of ``recseg evaluate`` (see ``recseg evaluate --help``)."""

    data: str = data_field(help="Clip store written by `recseg preprocess` (its test split).")
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
    size: str = size_field(
        help="Evaluate at HxW; default: the size the model was trained at (else the store's)."
    )
    loss: str = loss_field(
        default="",
        help="Loss reported as test_loss; default: the run's training loss (CrossDice for a "
        "bare --model-uri).",
    )
    batch_size: int = batch_size_field(
        help="Clips scored at once (lanes); the metrics do not depend on it."
    )
    seq_len: int = seq_len_field(default=8, help="Frames per lane per step.")
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
    seed: int = seed_field(help="Seed (evaluation is deterministic).")
    num_workers: int = num_workers_field(help="Loader worker processes.")
    device: str = device_field()
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
