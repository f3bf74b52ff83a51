"""``TrainConfig``: every option of ``recseg train`` and the MLproject ``train`` entry point.

The same dataclass gives the click options, the MLproject parameters and the MLflow params. Some
options describe the job, not the run (``run_id``, ``time_limit``, ``num_workers``, ...): a resumed
run may change them; every other option must match the values the run was started with.
"""

from __future__ import annotations

import dataclasses
import math
import shlex
from typing import Any

from recseg.config import (
    Check,
    accepts,
    at_least,
    device_field,
    fields,
    flag,
    one_of,
    option,
    parse_size,
    size_check,
    size_or_default,
)
from recseg.errors import InputError
from recseg.models.deeplab import RecurrentDeepLab
from recseg.models.norms import NORMS
from recseg.models.registry import build_model, model_spec
from recseg.training.losses import build_loss
from recseg.training.optim import OPTIMIZERS, SCHEDULES

# Val metrics a best checkpoint can be chosen by; lower is better for the ones in LOWER_IS_BETTER.
BEST_METRICS = (
    "val_fg_iou",
    "val_miou",
    "val_dice",
    "val_fg_dice",
    "val_pixel_accuracy",
    "val_loss",
    "val_flicker",
)
LOWER_IS_BETTER = ("val_loss", "val_flicker")
# Which weights become the run's model: "best" (by --best-metric), "last" (after the final
# epoch), or "auto": last for schedules that anneal the learning rate to ~0 (onecycle, poly),
# whose final weights are the settled ones, best for cyclic and constant schedules.
FINAL_WEIGHTS = ("auto", "best", "last")
ANNEALED_SCHEDULES = ("onecycle", "poly")
# Options of the job rather than the run: not compared (nor re-logged) when a run resumes.
DEFAULT_EXPERIMENT = "train"
JOB_OPTIONS = (
    "run_id",
    "time_limit",
    "tracking_timeout",
    "num_workers",
    "nproc",
    "experiment",
    "checkpoint_dir",
    "device",
)


def _non_negative(value: float) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value}"
    return None if value >= 0 else f"must be 0 or more, got {value}"


# Fields that several commands share (train, lr-find, evaluate, describe, thesis): one definition
# each, so their flags, types and checks cannot drift apart. Each call makes a new dataclass
# field; ``default=`` and ``help=`` fit one to a command whose default or meaning differs (the
# defaults here are train's). ``--device`` is in ``recseg.config``: segment shares it too.
REQUIRED: Any = dataclasses.MISSING  # ``default=REQUIRED``: the option has no default


def _shared(default: Any, help: str, **option_kw: Any) -> Any:
    if default is REQUIRED:
        return dataclasses.field(metadata=option(help, **option_kw))
    return dataclasses.field(default=default, metadata=option(help, **option_kw))


def _empty_or(check: Check) -> Check:
    """A check that also accepts ``""`` (the option's "decided later" value)."""
    return lambda value: None if value == "" else check(value)


def data_field(*, help: str = "Clip store written by `recseg preprocess`.") -> Any:
    return _shared(REQUIRED, help, mltype="path")


def model_field() -> Any:
    return _shared(REQUIRED, "Model name (`recseg models` lists them).", check=accepts(model_spec))


def loss_field(
    *, default: Any = REQUIRED, help: str = "SoftDice, CrossEntropy or CrossDice."
) -> Any:
    """``--loss``; with ``default=""`` the empty value means "decided later" (evaluate: the
    run's training loss)."""
    check = accepts(build_loss)
    return _shared(default, help, check=_empty_or(check) if default == "" else check)


def batch_size_field(
    *, default: int = 4, help: str = "Clips per step (B lanes, each streaming its clip)."
) -> Any:
    return _shared(default, help, check=at_least(1))


def seq_len_field(
    *,
    default: int = 4,
    help: str = "Frames per lane per step (T): back-propagation through time window.",
) -> Any:
    return _shared(default, help, check=at_least(1))


def size_field(
    *, default: str = "", help: str = "Train at this frame size HxW; default: the store's size."
) -> Any:
    """``--size HxW``; with ``default=""`` the empty value means "the default size"."""
    return _shared(default, help, check=size_or_default if default == "" else size_check)


def seed_field(*, help: str = "Seed of the weights, clip order and augmentation.") -> Any:
    return _shared(0, help)


def output_stride_field() -> Any:
    return _shared(8, "Backbone output stride.", check=one_of(8, 16))


def pretrained_field() -> Any:
    return _shared(
        "",
        "Backbone weights: 'imagenet' (torchvision's weights, downloaded into the torch hub "
        "cache), a local file, or empty for random init.",
        mltype="string",
    )


def norm_field() -> Any:
    return _shared(
        "auto",
        "Normalisation: group (GroupNorm everywhere: the same in train and eval mode, for "
        "small correlated batches), frozen (the backbone's BatchNorm with frozen pretrained "
        "statistics, GroupNorm in the head), batch (BatchNorm everywhere, as the thesis), "
        "auto (frozen with --pretrained, else group; batch with --faithful).",
        check=one_of(*NORMS),
    )


def faithful_field() -> Any:
    return _shared(False, "Use the thesis code's model choices (frozen backbone, ...).")


def configured_model(cfg: Any) -> RecurrentDeepLab:
    """The model a config's shared model options name (``model``, ``faithful``,
    ``output_stride``, ``pretrained``, ``norm``): train, lr-find and describe build it so."""
    return build_model(
        cfg.model,
        faithful=cfg.faithful,
        output_stride=cfg.output_stride,
        pretrained=cfg.pretrained or None,
        norm=cfg.norm,
    )


def num_workers_field(
    *, help: str = "Loader worker processes (0: load in the main process)."
) -> Any:
    return _shared(2, help, check=at_least(0))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Options of ``recseg train`` (see ``recseg train --help``)."""

    data: str = data_field()
    model: str = model_field()
    loss: str = loss_field()
    epochs: int = dataclasses.field(
        default=10, metadata=option("Epochs to train.", check=at_least(1))
    )
    batch_size: int = batch_size_field()
    seq_len: int = seq_len_field()
    lr: float = dataclasses.field(
        default=0.0,
        metadata=option(
            "Peak learning rate; 0: the thesis's per-model upper bound.", check=_non_negative
        ),
    )
    lr_min: float = dataclasses.field(
        default=0.0,
        metadata=option(
            "Lowest learning rate of the cyclic and poly schedules; 0: the thesis's "
            "per-model lower bound.",
            check=_non_negative,
        ),
    )
    weight_decay: float = dataclasses.field(
        default=1e-4,
        metadata=option(
            "Weight decay (AdamW: decoupled; adam/sgd: L2); not applied to biases and norms.",
            check=_non_negative,
        ),
    )
    optimizer: str = dataclasses.field(
        default="adamw", metadata=option("Optimiser.", check=one_of(*OPTIMIZERS))
    )
    schedule: str = dataclasses.field(
        default="cyclic",
        metadata=option(
            "LR schedule, stepped every step: cyclic (the thesis's triangular2), onecycle, "
            "poly or constant.",
            check=one_of(*SCHEDULES),
        ),
    )
    cycle_epochs: float = dataclasses.field(
        default=4.0,
        metadata=option(
            "Length of one cyclic LR cycle in epochs (half up, half down).", check=at_least(0.01)
        ),
    )
    eval_every: int = dataclasses.field(
        default=1,
        metadata=option(
            "Evaluate on the val split every K epochs (and always after the last); 0: only "
            "after the last.",
            check=at_least(0),
        ),
    )
    best_metric: str = dataclasses.field(
        default="val_fg_iou",
        metadata=option("Val metric that picks the best checkpoint.", check=one_of(*BEST_METRICS)),
    )
    final_weights: str = dataclasses.field(
        default="auto",
        metadata=option(
            "Weights logged as the run's model: best (by --best-metric), last (after the final "
            "epoch), or auto: last for onecycle/poly schedules (annealed to ~0), else best.",
            check=one_of(*FINAL_WEIGHTS),
        ),
    )
    size: str = size_field()
    seed: int = seed_field()
    output_stride: int = output_stride_field()
    pretrained: str = pretrained_field()
    norm: str = norm_field()
    init_from: str = dataclasses.field(
        default="",
        metadata=option(
            "Start from this model's weights (runs:/RID/model, models:/NAME@ALIAS, a folder): "
            "every layer whose name and shape match is copied, so a recurrent model "
            "warm-starts from a trained plain one; empty: --pretrained or random init.",
            mltype="string",
        ),
    )
    faithful: bool = faithful_field()
    augment: bool = dataclasses.field(
        default=True,
        metadata=option(
            "Augment training clips (one draw per clip and epoch): composite each clip's "
            "person over a fresh background (stores made by this recseg), else augment the "
            "fixed composite."
        ),
    )
    piece_frames: int = dataclasses.field(
        default=0,
        metadata=option(
            "Train on pieces of this many frames of each clip, each with its own background "
            "and augmentation and a fresh recurrent state (more composites per epoch; val and "
            "test keep whole clips); 0: whole clips.",
            check=at_least(0),
        ),
    )
    amp: bool = dataclasses.field(
        default=True,
        metadata=option(
            "Mixed precision: float16 on CUDA, bfloat16 on CPUs with AVX-512 BF16/AMX (about "
            "1.5x faster there); param resolved_amp says which."
        ),
    )
    system_metrics: bool = dataclasses.field(
        default=True, metadata=option("Log system metrics (CPU, memory, GPU) to MLflow.")
    )
    run_id: str = dataclasses.field(
        default="",
        metadata=option(
            "Continue this MLflow run from its latest checkpoint (inside `mlflow run`: "
            "MLFLOW_RUN_ID)."
        ),
    )
    time_limit: float = dataclasses.field(
        default=0.0,
        metadata=option(
            "Seconds this job may run: checkpoint and exit 99 before the next epoch (or "
            "step) would not fit; 0: no limit.",
            check=_non_negative,
        ),
    )
    tracking_timeout: float = dataclasses.field(
        default=900.0,
        metadata=option(
            "Seconds the tracking server may stay unreachable: training goes on meanwhile "
            "(metrics wait locally and land when it is back); after this long, checkpoint and "
            "exit 99.",
            check=at_least(1),
        ),
    )
    num_workers: int = num_workers_field()
    nproc: int = dataclasses.field(
        default=1,
        metadata=option(
            "Processes for data-parallel training on this node (gloo on the CPU, nccl on "
            "CUDA: one GPU each); --batch-size is the global batch, split across them.",
            check=at_least(1),
        ),
    )
    device: str = device_field(purpose="Where to train")
    checkpoint_dir: str = dataclasses.field(
        default="checkpoints",
        metadata=option(
            "Local folder for checkpoints (<dir>/<run id>/); the run's artifacts keep a copy."
        ),
    )
    experiment: str = dataclasses.field(
        default="",
        metadata=option(
            "MLflow experiment of a new run (default: train); with --run-id, when given, the "
            "run must belong to it."
        ),
    )

    @property
    def experiment_name(self) -> str:
        """The experiment of a new run."""
        return self.experiment or DEFAULT_EXPERIMENT

    @property
    def resolved_final_weights(self) -> str:
        """``final_weights`` with ``auto`` resolved for this run's schedule."""
        if self.final_weights != "auto":
            return self.final_weights
        return "last" if self.schedule in ANNEALED_SCHEDULES else "best"

    @property
    def frame_size(self) -> tuple[int, int] | None:
        """``--size`` parsed, or None for the store's size."""
        return parse_size(self.size) if self.size else None

    def run_options(self) -> dict[str, Any]:
        """The options a resumed run must keep (everything but the job's)."""
        return {
            f.name: getattr(self, f.name)
            for f, _ in fields(TrainConfig)
            if f.name not in JOB_OPTIONS
        }


def _unquote(text: str) -> str:
    """``mlflow run`` logs a string param as the shell saw it (``''`` for empty)."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        try:
            parts = shlex.split(text)
        except ValueError:
            return text
        return parts[0] if len(parts) == 1 else text
    return text


def parse_param(name: str, text: str) -> Any:
    """A logged MLflow param (a string, maybe as typed to ``mlflow run``) as the field's type."""
    kinds = {f.name: kind for f, kind in fields(TrainConfig)}
    kind = kinds[name]
    text = _unquote(str(text).strip())
    if kind is bool:
        return text.lower() in ("true", "1", "yes")
    if kind in (int, float):
        try:
            return float(text)
        except ValueError:
            return text
    return text


def changed_params(cfg: TrainConfig, logged: dict[str, str]) -> list[str]:
    """Run options whose logged value differs from ``cfg``'s (compared as typed values)."""
    changed = []
    for name, value in cfg.run_options().items():
        if name not in logged:
            continue
        old = parse_param(name, logged[name])
        new = (
            float(value)
            if isinstance(value, int | float) and not isinstance(value, bool)
            else value
        )
        if old != new:
            changed.append(name)
    return changed


def check_unchanged(cfg: TrainConfig, logged: dict[str, str]) -> None:
    """``InputError`` naming the first option that differs from the run's logged param."""
    changed = changed_params(cfg, logged)
    if changed:
        name = changed[0]
        raise InputError(
            f"{flag(name)}: the run was started with {name}={logged[name]}, now "
            f"{getattr(cfg, name)}; MLflow keeps a run's params fixed (start a new run instead)"
        )
