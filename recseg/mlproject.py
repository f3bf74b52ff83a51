"""The MLproject file, rendered from the typed configs (``make mlproject`` rewrites it)."""

from __future__ import annotations

from pathlib import Path

import yaml

from recseg.config import mlproject_command, mlproject_parameters
from recseg.data.preprocess import PreprocessConfig
from recseg.tracking.evaluate_config import EvaluateConfig
from recseg.training.config import TrainConfig
from recseg.training.lr_find import LrFindConfig
from recseg.training.summary import DescribeConfig

# entry point name -> (module run with ``python -m``, config class)
ENTRY_POINTS: dict[str, tuple[str, type]] = {
    "preprocess": ("entrypoints.preprocess", PreprocessConfig),
    "train": ("entrypoints.train", TrainConfig),
    "lr_find": ("entrypoints.lr_find", LrFindConfig),
    "evaluate": ("entrypoints.evaluate", EvaluateConfig),
    "describe": ("entrypoints.describe", DescribeConfig),
}

HEADER = """\
# Generated from recseg's typed configs by `make mlproject`; a test checks it is current.
# Installed environment: mlflow run . -e ENTRY --env-manager local -P key=value ...
# Cluster with conda:    mlflow run . -e ENTRY -P key=value ...   (uses conda.yaml)
"""


def render() -> str:
    """The MLproject text."""
    doc = {"name": "recseg", "conda_env": "conda.yaml", "entry_points": {}}
    for name, (module, cls) in ENTRY_POINTS.items():
        command = mlproject_command(module, cls).replace(
            "python entrypoints.", "python -m entrypoints."
        )
        doc["entry_points"][name] = {"parameters": mlproject_parameters(cls), "command": command}
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=100)


def write(path: str | Path = "MLproject") -> None:
    """Rewrite the MLproject file atomically."""
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(render())
    tmp.replace(path)


if __name__ == "__main__":
    write()
