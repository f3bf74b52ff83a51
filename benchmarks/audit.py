"""The audit of ``make scale`` (and of its small version in tests/test_cluster.py): after many
concurrent training jobs, some killed and resumed, everything they logged must be there once.

For every run: it ended FINISHED; each per-epoch metric has every step ``0..epochs-1`` exactly
once; every artifact it lists downloads through the tracking server, and its bytes equal the
object's in the S3 bucket (read with boto3 straight from the store); ``checkpoints/latest.pt``
and ``best.pt`` are there and byte-equal to the job's local files; its logged model loads.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from recseg.tracking import tags as T
from recseg.training import checkpoint as ckpt

# metrics every epoch of every run logs (the val ones with --eval-every 1, the default)
EPOCH_METRICS = ("train_loss", "train_miou", "train_fg_iou", "lr", "epoch_seconds",
                 "overhead_seconds", "log_latency_ms", "val_loss", "val_fg_iou")  # fmt: skip
CHECKPOINTS = (ckpt.LATEST, ckpt.BEST)


@dataclasses.dataclass
class Audit:
    """What the audit found, summed over the runs; ``problems`` says what is wrong where."""

    runs: int = 0
    finished: int = 0
    metric_steps: int = 0  # (run, metric, step) triples checked
    lost_metric_steps: int = 0  # missing
    duplicate_metric_steps: int = 0  # logged more than once
    artifacts: int = 0  # files checked
    lost_artifacts: int = 0  # missing, unreadable or not byte-equal
    models_loaded: int = 0
    latencies_ms: list[float] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (not self.problems and self.finished == self.runs == self.models_loaded
                and self.runs > 0)  # fmt: skip

    def lost(self, run_id: str, what: str) -> None:
        self.lost_artifacts += 1
        self.problems.append(f"run {run_id}: {what}")


@dataclasses.dataclass
class Bucket:
    """Direct access to the artifact store: a boto3 client, the bucket and the key prefix
    that the server's ``--artifacts-destination s3://BUCKET/PREFIX`` names."""

    client: Any
    name: str
    prefix: str

    def read(self, artifact_uri: str, path: str) -> bytes:
        """The object behind a proxied run artifact (``mlflow-artifacts:/<exp>/<run>/...``)."""
        rest = artifact_uri.split(":", 1)[1].strip("/")
        key = "/".join(p for p in (self.prefix, rest, path) if p)
        return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()


def artifact_files(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    """Every artifact file of the run (recursively)."""
    files = []
    for info in client.list_artifacts(run_id, path):
        files.extend(artifact_files(client, run_id, info.path) if info.is_dir else [info.path])
    return files


def check_metrics(client: MlflowClient, run: Any, epochs: int, audit: Audit) -> None:
    """Each per-epoch metric at steps ``0..epochs-1`` exactly once; no metric twice at a
    step. The jobs' ``log_latency_ms`` values go into ``audit.latencies_ms``."""
    run_id = run.info.run_id
    for key in sorted({*EPOCH_METRICS, *run.data.metrics}):
        if key.startswith("system/"):
            continue
        history = client.get_metric_history(run_id, key)
        steps = [m.step for m in history]
        duplicates = len(steps) - len(set(steps))
        audit.duplicate_metric_steps += duplicates
        if key in EPOCH_METRICS:
            missing = set(range(epochs)) - set(steps)
            audit.metric_steps += epochs
            audit.lost_metric_steps += len(missing)
            if missing:
                audit.problems.append(f"run {run_id}: {key} lacks steps {sorted(missing)}")
        if duplicates:
            audit.problems.append(f"run {run_id}: {key} has steps twice: {sorted(steps)}")
        if key == "log_latency_ms":
            audit.latencies_ms.extend(m.value for m in history)


def check_artifacts(client: MlflowClient, run: Any, local: Path, bucket: Bucket | None,
                    audit: Audit) -> None:  # fmt: skip
    """Every listed artifact downloads through the server and equals the S3 object; the
    checkpoints are there and equal the job's local files (``local/<name>``)."""
    run_id = run.info.run_id
    files = artifact_files(client, run_id)
    for name in CHECKPOINTS:
        if f"checkpoints/{name}" not in files:
            audit.lost(run_id, f"checkpoints/{name} missing")
    with tempfile.TemporaryDirectory(prefix="recseg-audit-") as tmp:
        for path in files:
            audit.artifacts += 1
            try:
                got = Path(client.download_artifacts(run_id, path, tmp)).read_bytes()
            except Exception as exc:
                audit.lost(run_id, f"{path} not readable: {exc}")
                continue
            if bucket is not None and bucket.read(run.info.artifact_uri, path) != got:
                audit.lost(run_id, f"{path} differs from its S3 object")
            name = path.removeprefix("checkpoints/")
            if path.startswith("checkpoints/") and name in CHECKPOINTS:
                if not (local / name).exists() or (local / name).read_bytes() != got:
                    audit.lost(run_id, f"{path} differs from the job's {local / name}")
                else:
                    ckpt.load(local / name)  # readable as a checkpoint


def check_model(run: Any, audit: Audit) -> None:
    """The run's logged model loads as a pyfunc model."""
    uri = run.data.tags.get(T.MODEL_LOGGED)
    if not uri:
        audit.lost(run.info.run_id, "no logged model")
        return
    try:
        mlflow.pyfunc.load_model(uri)
    except Exception as exc:
        audit.lost(run.info.run_id, f"model {uri} does not load: {exc}")
        return
    audit.models_loaded += 1


def audit_runs(runs: dict[str, Path], epochs: int, bucket: Bucket | None = None,
               client: MlflowClient | None = None) -> Audit:  # fmt: skip
    """Audit ``runs`` (run id -> the job's local checkpoint folder ``<dir>/<run id>``) on the
    tracking server of ``client`` (default: ``MLFLOW_TRACKING_URI``)."""
    client = client or MlflowClient()
    audit = Audit()
    for run_id, local in sorted(runs.items()):
        audit.runs += 1
        run = client.get_run(run_id)
        if run.info.status == "FINISHED":
            audit.finished += 1
        else:
            audit.problems.append(f"run {run_id}: {run.info.status}, not FINISHED")
        check_metrics(client, run, epochs, audit)
        check_artifacts(client, run, local, bucket, audit)
        check_model(run, audit)
    return audit
