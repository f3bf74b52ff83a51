"""Part "tracking": MLflow logging + checkpointing cost at most 2 % of epoch time.

Starts a real ``mlflow server`` on 127.0.0.1 (sqlite backend, local artifacts, under
``args.work``) so uploads go over HTTP as on a cluster, trains each model with ``recseg train``
on the demo store (``demo/store`` from ``make demo``, else one built the same way under
``args.work``) and reads the runs' ``epoch_seconds`` (train steps + evaluation) and
``overhead_seconds`` (local checkpoints, metrics, plots, sample PNG and checkpoint uploads at
each epoch end) back from the server. The first model's logged MLflow model is downloaded to a
local folder (``args.shared["trained_model"]``) before the server stops.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from benchmarks.common import REPO, TARGETS, Part, note
from recseg.tracking.runs import quiet_mlflow

NAME = "tracking"
DEMO_STORE = REPO / "demo" / "store"
EXPERIMENT = "bench-overhead"
MODEL_TAG = "recseg.model_uri"  # recseg.tracking.tags.MODEL_LOGGED
TARGET = TARGETS["tracking_overhead_pct"][1]  # most overhead in % of epoch time


@dataclass
class Result:
    """What one training run logged, read back from the server."""

    model: str
    run_id: str
    model_uri: str | None
    size: str
    steps: int
    epoch_s: list[float]
    overhead_s: list[float]
    checkpoint_mb: float
    wall_s: float
    model_log_s: float | None

    def percents(self) -> list[float]:
        """Overhead in % of each epoch's time."""
        return [
            100 * o / e if e > 0 else float("nan")
            for e, o in zip(self.epoch_s, self.overhead_s, strict=False)
        ]

    def mean_percent(self) -> float:
        """Mean over epochs of the overhead %."""
        p = self.percents()
        return sum(p) / len(p) if p else float("nan")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--tracking-*`` options."""
    g = parser.add_argument_group("tracking part")
    g.add_argument("--tracking-models", default="Deep+_mobile", help="comma-separated")
    g.add_argument("--tracking-epochs", type=int, default=None, help="default 2 (quick: 1)")
    g.add_argument("--tracking-size", default="135x256", help="train size HxW")
    g.add_argument("--tracking-batch-size", type=int, default=2)
    g.add_argument("--tracking-seq-len", type=int, default=4)
    g.add_argument("--tracking-loss", default="CrossDice")
    g.add_argument(
        "--tracking-num-workers", type=int, default=None, help="default: recseg train's default"
    )


def _env(uri: str, threads: int | None = None) -> dict[str, str]:
    """The environment of child processes: our server, no telemetry, no outer run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=uri, MLFLOW_DISABLE_TELEMETRY="true")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def _stop(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM the process group of ``proc`` (started in its own session), SIGKILL after
    ``grace`` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def mlflow_server(root: Path) -> Iterator[str]:
    """A real ``mlflow server`` on a free port of 127.0.0.1; yields its URI, stops it after."""
    root.mkdir(parents=True, exist_ok=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"]
    command += ["--artifacts-destination", str(root / "artifacts")]
    log_path = root / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=_env(uri), start_new_session=True
        )
        try:
            deadline = time.monotonic() + 120
            while not _healthy(uri):
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = log_path.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"mlflow server did not start:\n{tail}")
                time.sleep(0.5)
            yield uri
        finally:
            _stop(proc, grace=20)


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _run(command: list[str], uri: str, log: Path, threads: int | None = None) -> float:
    """Run ``python -m recseg ...`` with its output in ``log``; its wall seconds. Stopped
    (SIGTERM: checkpoint and exit) when we are interrupted; raises when it fails."""
    start = time.perf_counter()
    with open(log, "ab") as out:
        out.write(f"$ recseg {' '.join(command)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            [sys.executable, "-m", "recseg", *command],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_env(uri, threads),
            cwd=REPO,
            start_new_session=True,
        )
        try:
            code = proc.wait()
        finally:
            _stop(proc, grace=60)
    if code != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"`recseg {' '.join(command)}` exited with code {code}:\n{tail}")
    return time.perf_counter() - start


def demo_store(work: Path, uri: str, quick: bool = False) -> Path:
    """``demo/store`` when ``make demo`` made it, else the same store built under ``work``
    (quick: from 3 videos of 4 s instead of 6 of 6 s)."""
    if (DEMO_STORE / "store.json").is_file():
        return DEMO_STORE
    footage, store = work / "footage", work / "store"
    if (store / "store.json").is_file():
        return store
    log = work / "demo.log"
    videos, seconds = ("3", "4") if quick else ("6", "6")
    note(
        f"no demo/store (make demo): making demo footage ({videos} x {seconds} s), preprocessing it"
    )
    _run(["footage", str(footage), "--videos", videos, "--seconds", seconds], uri, log)
    videos, backgrounds = str(footage / "videos"), str(footage / "backgrounds")
    command = ["preprocess", "--videos", videos, "--backgrounds", backgrounds]
    _run([*command, "--out", str(store), "--experiment", "bench"], uri, log)
    return store


def train(model: str, args: argparse.Namespace, store: Path, work: Path, uri: str) -> Result:
    """Train ``model`` with ``recseg train`` and read its run back from the server."""
    command = ["train", "--data", str(store), "--model", model, "--loss", args.tracking_loss]
    command += ["--epochs", str(args.tracking_epochs or (1 if args.quick else 2))]
    command += ["--size", args.tracking_size, "--seed", "0", "--device", args.device.type]
    command += ["--batch-size", str(args.tracking_batch_size)]
    command += ["--seq-len", str(args.tracking_seq_len)]
    command += ["--checkpoint-dir", str(work / "checkpoints"), "--experiment", EXPERIMENT]
    if args.tracking_num_workers is not None:
        command += ["--num-workers", str(args.tracking_num_workers)]
    note(f"recseg train {model}: {command[command.index('--epochs') + 1]} epoch(s) ...")
    wall = _run(command, uri, work / f"train-{model}.log", args.threads)
    return read_run(MlflowClient(tracking_uri=uri), model, wall)


def read_run(client: MlflowClient, model: str, wall: float) -> Result:
    """The newest run of ``EXPERIMENT`` (the one just trained): histories, sizes, timings."""
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None, f"no experiment {EXPERIMENT} on the server"
    run = client.search_runs([experiment.experiment_id], order_by=["start_time DESC"])[0]
    rid = run.info.run_id

    def history(key: str) -> list:
        return sorted(client.get_metric_history(rid, key), key=lambda m: m.step)

    epochs, overheads = history("epoch_seconds"), history("overhead_seconds")
    sizes = {a.path: a.file_size for a in client.list_artifacts(rid, "checkpoints")}
    latest = sizes.get("checkpoints/latest.pt") or 0
    model_log = None
    if overheads and run.info.end_time:
        model_log = (run.info.end_time - overheads[-1].timestamp) / 1000
    return Result(
        model=model,
        run_id=rid,
        model_uri=run.data.tags.get(MODEL_TAG),
        size=run.data.params.get("resolved_size", "?"),
        steps=int(run.data.params.get("steps_per_epoch", 0)),
        epoch_s=[m.value for m in epochs],
        overhead_s=[m.value for m in overheads],
        checkpoint_mb=latest / 2**20,
        wall_s=wall,
        model_log_s=model_log,
    )


def download_model(result: Result, uri: str, dst: Path) -> Path:
    """The run's logged MLflow model, downloaded from the server into ``dst``; checked to load
    with ``load_network`` (a local model folder is a model URI of its own)."""
    from recseg.tracking.model_uri import load_network

    source = result.model_uri or f"runs:/{result.run_id}/model"
    if source.startswith("models:/m-"):  # resolved here: MLflow would ask the default server
        model = MlflowClient(tracking_uri=uri).get_logged_model(source.removeprefix("models:/"))
        source = model.artifact_location
    dst.mkdir(parents=True, exist_ok=True)
    folder = mlflow.artifacts.download_artifacts(
        artifact_uri=source, dst_path=str(dst), tracking_uri=uri
    )
    loaded = load_network(folder)
    if loaded.name != result.model:
        raise RuntimeError(f"{folder} holds {loaded.name}, not {result.model}")
    return Path(folder)


def run(args: argparse.Namespace) -> Part:
    """Train the models against a local MLflow server; figure ``tracking_overhead_pct``: the
    worst model's mean overhead in % of epoch time. Leaves ``args.shared["tracking"]`` and
    ``args.shared["trained_model"]`` (the first model, downloaded)."""
    quiet_mlflow()  # no telemetry, no download progress bars
    models = [m.strip() for m in args.tracking_models.split(",") if m.strip()]
    work = args.work / NAME
    for old in ("server", "checkpoints", "model"):  # a reused --work: start afresh
        shutil.rmtree(work / old, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    note("starting a local mlflow server ...")
    with mlflow_server(work / "server") as uri:
        store = demo_store(work, uri, args.quick)
        results = []
        for model in models:
            results.append(train(model, args, store, work, uri))
            note(f"{model}: overhead {results[-1].mean_percent():.2f} % of epoch time")
        model_dir = download_model(results[0], uri, work / "model")
    trained = {"model_dir": str(model_dir), "store": str(store), "size": args.tracking_size}
    args.shared["trained_model"] = trained
    worst = max(results, key=lambda r: r.mean_percent())
    args.shared["tracking"] = {
        "server": f"{uri} (stopped when the part ended)",
        "runs": {r.model: r.run_id for r in results},
        "model_uris": {r.model: r.model_uri for r in results},
        "overhead_pct": {r.model: r.mean_percent() for r in results},
        "trained_model": trained,
    }
    return Part(
        name=NAME,
        columns=["model", "epoch", "steps", "epoch s", "logging + checkpoint s", "% of epoch"],
        rows=[row for r in results for row in _rows(r)],
        figures={"tracking_overhead_pct": worst.mean_percent()},
        method=(
            f"`recseg train` ({len(results[0].epoch_s)} epoch(s), {args.tracking_size}, batch "
            f"{args.tracking_batch_size} x seq-len {args.tracking_seq_len}, {args.device.type}) "
            f"on {'demo/store' if store == DEMO_STORE else 'a demo store'} against a local "
            "`mlflow server` over HTTP; per epoch, the MLflow logging + checkpointing seconds "
            "at the epoch's end (local checkpoint, metrics, plots, sample PNG, checkpoint "
            f"upload) in % of the epoch's train + eval seconds. Target <= {TARGET:g} %."
        ),
        details={
            "runs": [{**asdict(r), "mean_percent": r.mean_percent()} for r in results],
            "worst_model": worst.model,
            "target_pct": TARGET,
            "met": worst.mean_percent() <= TARGET,
            "store": str(store),
            "model_dir": str(model_dir),
        },
    )


def _rows(r: Result) -> list[list[Any]]:
    """One row per epoch and a mean row."""
    rows: list[list[Any]] = [
        [r.model, k + 1, r.steps, e, o, p]
        for k, (e, o, p) in enumerate(zip(r.epoch_s, r.overhead_s, r.percents(), strict=False))
    ]
    mean_e = sum(r.epoch_s) / len(r.epoch_s) if r.epoch_s else None
    mean_o = sum(r.overhead_s) / len(r.overhead_s) if r.overhead_s else None
    rows.append([r.model, "mean", r.steps, mean_e, mean_o, r.mean_percent()])
    return rows
