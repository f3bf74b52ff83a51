"""Benchmark: MLflow logging + checkpointing cost at most 2 % of epoch time on the demo data.

Starts a real ``mlflow server`` on 127.0.0.1 (sqlite backend, local artifacts, all in a temp
folder) so uploads go over HTTP as on a cluster, trains each model with ``recseg train`` on the
demo store (``demo/store`` from ``make demo``, else one built the same way in the temp folder),
reads the runs' ``epoch_seconds`` (train steps + evaluation) and ``overhead_seconds`` (local
checkpoints, metrics, plots, sample PNG and checkpoint uploads at each epoch end) back from the
server and prints a markdown table. Exits 1 when a model misses the target. Run:

    .venv/bin/python benchmarks/train_overhead.py [--models Deep+_mobile,Deep_mobile_gruV3]
        [--epochs 2] [--size 135x256] [--batch-size 2] [--seq-len 4] [--target 2]

The second table (information only) splits each run's wall time into the epochs, the final
model logging (last epoch's ``overhead_seconds`` timestamp to the run's end) and the rest
(interpreter and imports, setup, run start, data set logging, exit).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[1]
DEMO_STORE = REPO / "demo" / "store"
EXPERIMENT = "bench-overhead"


@dataclass
class Result:
    """What one training run logged, read back from the server."""

    model: str
    size: str
    steps: int
    epoch_s: list[float]
    overhead_s: list[float]
    checkpoint_mb: float
    wall_s: float
    model_log_s: float | None


def _env(uri: str) -> dict[str, str]:
    """The environment of child processes: our server, no telemetry, no outer run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return {**env, "MLFLOW_TRACKING_URI": uri, "MLFLOW_DISABLE_TELEMETRY": "true"}


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


def _run(command: list[str], uri: str) -> float:
    """Run ``python -m recseg ...`` (output to our stderr); its wall seconds. Stopped (SIGTERM:
    checkpoint and exit) when we are interrupted; raises when it fails."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "recseg", *command],
        stdout=sys.stderr,
        env=_env(uri),
        cwd=REPO,
        start_new_session=True,
    )
    try:
        code = proc.wait()
    finally:
        _stop(proc, grace=60)
    if code != 0:
        raise RuntimeError(f"`recseg {' '.join(command)}` exited with code {code}")
    return time.perf_counter() - start


def demo_store(tmp: Path, uri: str) -> Path:
    """``demo/store`` when ``make demo`` made it, else the same store built under ``tmp``."""
    if (DEMO_STORE / "store.json").is_file():
        return DEMO_STORE
    footage, store = tmp / "footage", tmp / "store"
    print(f"no {DEMO_STORE}: building the demo store in {store}", file=sys.stderr)
    _run(["footage", str(footage), "--videos", "6", "--seconds", "6"], uri)
    videos, backgrounds = str(footage / "videos"), str(footage / "backgrounds")
    command = ["preprocess", "--videos", videos, "--backgrounds", backgrounds]
    _run([*command, "--out", str(store), "--experiment", "bench"], uri)
    return store


def train(model: str, args: argparse.Namespace, store: Path, tmp: Path, uri: str) -> Result:
    """Train ``model`` with ``recseg train`` and read its run back from the server."""
    command = ["train", "--data", str(store), "--model", model, "--loss", args.loss]
    command += ["--epochs", str(args.epochs), "--size", args.size, "--seed", "0"]
    command += ["--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len)]
    command += ["--checkpoint-dir", str(tmp / "checkpoints"), "--experiment", EXPERIMENT]
    if args.num_workers is not None:
        command += ["--num-workers", str(args.num_workers)]
    print(f"\n$ recseg {' '.join(command)}", file=sys.stderr)
    wall = _run(command, uri)
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
        size=run.data.params.get("resolved_size", "?"),
        steps=int(run.data.params.get("steps_per_epoch", 0)),
        epoch_s=[m.value for m in epochs],
        overhead_s=[m.value for m in overheads],
        checkpoint_mb=latest / 2**20,
        wall_s=wall,
        model_log_s=model_log,
    )


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def print_tables(results: list[Result], target: float) -> bool:
    """Print the overhead table and the wall-time table; True when every target is met."""
    print(
        "| model | size | steps/epoch | epoch s (mean) | overhead s (mean) | overhead % "
        "| checkpoint MiB | target | met |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---|---|")
    ok = True
    for r in results:
        epoch, overhead = _mean(r.epoch_s), _mean(r.overhead_s)
        percent = 100 * overhead / epoch if epoch > 0 else float("nan")
        met = percent <= target
        ok &= met
        print(
            f"| {r.model} | {r.size} | {r.steps} | {epoch:.1f} | {overhead:.2f} | "
            f"{percent:.2f} % | {r.checkpoint_mb:.1f} | ≤ {target:g} % | {'yes' if met else 'NO'} |"
        )
    print("\n| model | wall s | epochs s | model logging s | other s | overhead per epoch s |")
    print("|---|---:|---:|---:|---:|---|")
    for r in results:
        epochs = sum(r.epoch_s) + sum(r.overhead_s)
        logging = r.model_log_s if r.model_log_s is not None else float("nan")
        other = r.wall_s - epochs - (r.model_log_s or 0.0)
        per_epoch = ", ".join(f"{s:.2f}" for s in r.overhead_s)
        print(
            f"| {r.model} | {r.wall_s:.1f} | {epochs:.1f} | {logging:.1f} | {other:.1f} | "
            f"{per_epoch} |"
        )
    return ok


def _size(text: str) -> str:
    h, w = text.lower().split("x")
    return f"{int(h)}x{int(w)}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="Deep+_mobile,Deep_mobile_gruV3", help="comma-separated")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--size", type=_size, default="135x256", help="train size HxW")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=4)
    p.add_argument("--loss", default="CrossDice")
    p.add_argument("--num-workers", type=int, default=None, help="default: recseg's default")
    p.add_argument("--target", type=float, default=2.0, help="most overhead in %% of epoch time")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    with tempfile.TemporaryDirectory(prefix="recseg-bench-overhead-") as name:
        tmp = Path(name)
        (tmp / "server").mkdir()
        with mlflow_server(tmp / "server") as uri:
            store = demo_store(tmp, uri)
            results = [train(model, args, store, tmp, uri) for model in models]
    print(
        f"\nmachine: {os.cpu_count()} CPUs, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads; store {store}; mlflow server over HTTP (sqlite, "
        f"local artifacts); {args.epochs} epochs, batch {args.batch_size} x seq-len "
        f"{args.seq_len}, loss {args.loss}\n"
    )
    ok = print_tables(results, args.target)
    print(f"\ntarget: MLflow logging + checkpointing <= {args.target:g} % of epoch time")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
