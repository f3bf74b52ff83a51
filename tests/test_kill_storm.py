"""Kill storm: one training run SIGKILLed again and again - mid-step, mid-evaluation, between an
epoch's metrics and its checkpoint, between a checkpoint's temp file and its rename, mid-upload,
while logging the final model, at random times - and with its latest checkpoint damaged twice.
Resumed after every kill, it ends FINISHED with the weights and metrics of an uninterrupted run."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import torch

from recseg.faults import ENV as KILL_AT
from recseg.training import checkpoint as ckpt
from tests.trainruns import (
    assert_each_step_once,
    histories,
    only_run,
    same_history,
    start,
    weights,
)

EXPERIMENT = "storm"


def plan(rng: random.Random) -> list[tuple[str, str]]:
    """The jobs of the storm: (fail point to die at - at a drawn step or batch - or "random"
    for a SIGKILL at a random time; the damage done to the latest checkpoint first). Only the
    fifth job gets past the first epoch's checkpoint, so every point is hit before the end:
    ten kills."""
    step, batch = (
        (lambda: f"train-step:{rng.randint(1, 8)}"),
        (lambda: f"evaluate:{rng.randint(1, 3)}"),
    )
    return [
        (step(), ""),
        (batch(), ""),
        ("log-metrics:1", ""),
        ("checkpoint-temp:1", ""),
        ("upload:1", ""),  # the first epoch's checkpoint is saved, then the upload dies
        ("checkpoint-rotate:1", ""),  # previous.pt kept, latest.pt not yet replaced
        (batch(), "flip"),  # latest.pt damaged: previous.pt must be used
        (step(), "truncate"),
        ("random", ""),  # at 1-4 s: starting up or in the first epoch
        ("log-model:1", ""),  # trains to the end, dies while logging the model
    ]


def damage(path: Path, how: str) -> None:
    """Flip one bit in the middle of ``path``, or cut it in half."""
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0x10
    else:
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))


def attempt(store: Path, cwd: Path, uri: str, run_id: str | None, point: str, rng):
    """One job: start it (resuming ``run_id``), let it die at ``point``; (exit code, output)."""
    extra = ("--run-id", run_id) if run_id else ()
    env = {} if point == "random" else {KILL_AT: point}
    os.environ.update(env)
    try:
        proc = start(store, cwd, uri, EXPERIMENT, *extra)
    finally:
        for key in env:
            del os.environ[key]
    if point == "random":
        time.sleep(rng.uniform(1.0, 4.0))
        proc.send_signal(signal.SIGKILL)
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, out + err


def test_kill_storm_ends_like_an_uninterrupted_run(
    train_store: Path, tmp_path: Path, mlflow_server: str, train_reference, tally
) -> None:
    _, ref_hist, ref_weights = train_reference
    seed = int(os.environ.get("RECSEG_STORM_SEED", time.time_ns() % 10_000))
    tally(f"kill storm: runs with seed {seed} (RECSEG_STORM_SEED={seed} replays it)", 1)
    rng = random.Random(seed)
    run_id, kills, log = None, 0, []
    for point, harm in plan(rng):
        folder = tmp_path / "checkpoints" / str(run_id)
        if harm and (folder / ckpt.LATEST).exists():
            damage(folder / ckpt.LATEST, harm)
        code, output = attempt(train_store, tmp_path, mlflow_server, run_id, point, rng)
        log.append(f"--- {point} {harm}: exit {code}\n{output[-1500:]}")
        assert "Traceback" not in output, "\n".join(log)
        assert code in (-signal.SIGKILL, 0), "\n".join(log)
        if harm and (folder / ckpt.PREVIOUS).exists():
            assert "damaged or truncated" in output and "not using it" in output, log[-1]
        kills += code == -signal.SIGKILL
        if run_id is None:
            run_id = only_run(mlflow_server, EXPERIMENT)[1].info.run_id
        if code == 0:
            break
    tally("kill storm: kills survived", kills)
    assert kills >= 10, "\n".join(log)
    if code != 0:  # the last kill hit the end: one more job finishes the run
        code, output = attempt(train_store, tmp_path, mlflow_server, run_id, "", rng)
        assert code == 0, output[-3000:]
    client, run = only_run(mlflow_server, EXPERIMENT)
    assert run.info.status == "FINISHED" and run.info.run_id == run_id
    hist = histories(client, run_id)
    assert_each_step_once(hist)
    same_history(ref_hist, hist)
    tally("kill storm: metric points verified", sum(len(points) for points in hist.values()))
    final = weights(tmp_path, run_id)
    assert all(torch.equal(final[k], v) for k, v in ref_weights.items())
    assert not list((tmp_path / "checkpoints" / run_id).rglob("*.tmp"))
    uploaded = Path(client.download_artifacts(run_id, "checkpoints/latest.pt", str(tmp_path)))
    assert all(torch.equal(ckpt.load(uploaded)["model"][k], v) for k, v in ref_weights.items())
