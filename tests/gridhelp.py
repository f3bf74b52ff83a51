"""Shared helpers of the grid tests: train configs and a clean set of job variables."""

from __future__ import annotations

from pathlib import Path

from recseg.cli.train import train_cmd
from recseg.config import build
from recseg.grid.envvars import options, variable
from recseg.grid.sge import RESTARTS
from recseg.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def train_config(data: str | Path = "/x/store", **over: object) -> TrainConfig:
    values: dict[str, object] = {"data": str(data), "model": "Deep+_mobile", "loss": "CrossDice"}
    values.update(over)
    return build(TrainConfig, values)


def non_default_config(data: str | Path = "/x/store") -> TrainConfig:
    return train_config(
        data, model="Deep_mobile_gruV3", loss="SoftDice", epochs=3, batch_size=2, seq_len=3,
        size="32x48", augment=False, weight_decay=1e-4, lr=2.5e-3, schedule="poly",
        faithful=True, amp=False, experiment="grid,test", time_limit=600.0, seed=7,
    )  # fmt: skip


def blank_train_variables(**given: str) -> dict[str, str]:
    """Every ``recseg train`` variable empty (so the caller's environment cannot leak in), no
    Grid Engine job, then ``given``."""
    env = {variable(o): "" for o in options(train_cmd)}
    env.update({"JOB_ID": "", "SGE_ROOT": "", RESTARTS: "", "MAX_RESTARTS": "", **ONE_THREAD})
    env.update(given)
    return env
