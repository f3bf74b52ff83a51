"""Where to look at runs in the MLflow UI: the command that serves it and the page addresses.

MLflow's UI is a single-page app whose routes follow ``#``: ``#/experiments/<id>`` and
``#/compare-runs?runs=[...]&experiments=[...]`` (JSON lists, as the UI itself builds them).
``workflowType=machine_learning`` opens the machine-learning view (runs, params, metric charts)
rather than the GenAI one. recseg also tags its experiments as model-training ones
(``use_experiment`` in :mod:`recseg.tracking.runs`), but MLflow 3.17's UI does not read that
tag to pick the view, so the addresses carry the parameter.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from recseg.tracking.runs import redact_uri

UI_HOST = "127.0.0.1"
UI_PORT = 5000


def is_served(tracking_uri: str) -> bool:
    """Whether the tracking URI is an MLflow server (its UI is already there)."""
    return urllib.parse.urlsplit(tracking_uri).scheme in {"http", "https"}


def ui_base(tracking_uri: str, port: int = UI_PORT) -> str:
    """The UI's address: the server itself (no credentials), else ``mlflow ui``'s default."""
    if is_served(tracking_uri):
        parts = urllib.parse.urlsplit(tracking_uri)
        host = parts.netloc.rpartition("@")[2]
        return urllib.parse.urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))
    return f"http://{UI_HOST}:{port}"


def ui_command(tracking_uri: str, port: int = UI_PORT) -> str | None:
    """The shell command that serves the UI over a local store; None for a server URI."""
    if is_served(tracking_uri):
        return None
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    with contextlib.suppress(ValueError):  # outside the working directory: keep it absolute
        mlflow_bin = mlflow_bin.relative_to(Path.cwd())
    return (
        f"MLFLOW_DISABLE_TELEMETRY=true {shlex.quote(str(mlflow_bin))} ui "
        f"--backend-store-uri {shlex.quote(redact_uri(tracking_uri))} "
        f"--host {UI_HOST} --port {port}"
    )


def experiment_url(base: str, experiment_id: str) -> str:
    """The experiment page (its runs table and charts). ``workflowType`` picks the UI's
    machine-learning view: MLflow 3.17's UI ignores the experiment's kind tag and opens a
    browser's first visit in the GenAI view (a traces overview, no runs)."""
    experiment = urllib.parse.quote(str(experiment_id))
    return f"{base}/#/experiments/{experiment}?workflowType=machine_learning"


def compare_url(base: str, experiment_id: str, run_ids: Sequence[str]) -> str:
    """The compare view of runs: params, metrics and per-epoch curves side by side."""
    runs = json.dumps(sorted(set(run_ids)), separators=(",", ":"))
    experiments = json.dumps([str(experiment_id)], separators=(",", ":"))
    query = urllib.parse.urlencode(
        {"runs": runs, "experiments": experiments, "workflowType": "machine_learning"},
        safe="[],",
    )
    return f"{base}/#/compare-runs?{query}"
