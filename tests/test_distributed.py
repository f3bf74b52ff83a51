"""Data-parallel training (``--nproc``): sharded loaders, the single-process no-ops, and real
gloo processes: the same weights as one process (benchmarks/ddp.py), and ``recseg train
--nproc 2`` against a real MLflow server: stop and resume across process counts, bad
``--nproc``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch

from benchmarks import ddp
from recseg.cli.train import train_cmd
from recseg.config import build
from recseg.data.loader import TemporalLoader
from recseg.errors import InputError
from recseg.training import checkpoint as ckpt
from recseg.training.config import TrainConfig
from recseg.training.distributed import Dist, Handoff
from recseg.training.launch import _code, _first_stop, launch, needs_launch, worker_args
from tests.media import recseg_in_process
from tests.trainruns import assert_each_step_once, histories, only_run


def loader(store: Path, shard: tuple[int, int] = (0, 1)) -> TemporalLoader:
    return TemporalLoader(store, "train", batch_size=4, seq_len=3, seed=3, shard=shard)


def test_sharded_loaders_read_the_lanes_of_one_loader(train_store: Path) -> None:
    whole, ranks = loader(train_store), [loader(train_store, (r, 2)) for r in range(2)]
    assert {len(whole)} == {len(r) for r in ranks} and len(whole) > 2
    for step, batches in enumerate(zip(whole, *ranks, strict=True)):
        full, parts = batches[0], batches[1:]
        for key in ("frames", "labels", "reset", "valid", "start"):
            joined = torch.cat([p[key] for p in parts])
            assert torch.equal(full[key], joined), (step, key)
        assert full["clip"] == parts[0]["clip"] + parts[1]["clip"]
        if step == 1:
            break
    assert all(r.state_dict() == whole.state_dict() for r in ranks)
    resumed = loader(train_store, (1, 2))
    resumed.load_state_dict(whole.state_dict())  # a one-process checkpoint, two processes
    assert resumed.step == 2 and len(resumed) == len(whole)
    with pytest.raises(InputError, match="not a multiple of --nproc 3"):
        loader(train_store, (0, 3))


def test_a_single_process_dist_changes_nothing() -> None:
    dist = Dist()
    state = {"h": torch.randn(4, 2, 3, 3)}
    assert not dist.distributed and dist.is_leader and dist.shard == (0, 1)
    assert dist.agree(True) and not dist.agree(False)
    t = torch.arange(5.0)
    assert dist.sum(t) is t and dist.broadcast_object("x") == "x"
    assert dist.gather_lanes(state) is state and dist.my_lanes(state) is state
    with Handoff(dist) as handoff:
        handoff.send("go")
    assert Handoff.receive(dist) is None  # nothing was sent to a single process
    dist.close()


def test_workers_get_every_option_back_and_signals_map_to_codes(tmp_path: Path) -> None:
    cfg = build(TrainConfig, {"data": "d", "model": "Deep+_mobile", "loss": "CrossDice",
                              "nproc": 2, "augment": False, "pretrained": "", "lr": 2.5e-3,
                              "size": "32x48", "experiment": "a b,c"})  # fmt: skip
    with train_cmd.make_context("train", worker_args(cfg)) as ctx:
        assert build(TrainConfig, dict(ctx.params)) == cfg
    assert needs_launch(cfg, {}) and not needs_launch(cfg, {"WORLD_SIZE": "2"})
    assert _code(-signal.SIGKILL) == 137 and _code(99) == 99
    usr1, usr2 = signal.SIGUSR1, signal.SIGUSR2
    assert _first_stop([usr1, usr2, usr1]) == usr2 and _first_stop([usr1]) == usr1
    assert _first_stop([]) is None


def test_bad_nproc_is_one_line_and_no_run(
    train_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    base = ["train", "--data", str(train_store), *ARGS, "--experiment", "bad-nproc"]
    for bad, needle in (("0", "--nproc: must be at least 1, got 0"),
                        ("3", "--nproc 3: --batch-size 2 is not a multiple of it")):  # fmt: skip
        result = recseg_in_process([*base, "--nproc", bad], capsys)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert lines[0].startswith("recseg: error: ") and needle in lines[0], lines
    assert mlflow.MlflowClient(uri).get_experiment_by_name("bad-nproc") is None
    assert not (tmp_path / "checkpoints").exists()


ARGS = ("--model", "Deep_mobile_gruV1", "--loss", "CrossEntropy", "--epochs", "3",
        "--batch-size", "2", "--seq-len", "3", "--eval-every", "0", "--num-workers", "0",
        "--device", "cpu", "--no-system-metrics")  # fmt: skip


def train_cmd_line(store: Path, experiment: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "recseg", "train", "--data", str(store), *ARGS,
            "--experiment", experiment, *extra]  # fmt: skip


@pytest.mark.slow
def test_two_processes_train_the_weights_of_one(train_store: Path, tmp_path: Path) -> None:
    figures = ddp.compare(train_store, tmp_path)
    assert figures["ddp_processes"] == 2 and figures["ddp_steps"] > 2 * ddp.CONFIG["epochs"]
    assert figures["ddp_max_abs_diff"] <= ddp.BOUND, figures


@pytest.mark.slow
def test_stopped_two_process_run_resumes_with_any_process_count(
    train_store: Path, tmp_path: Path, mlflow_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes stop at --time-limit (the launcher in this process reports the run) and
    at SIGUSR1 to the launcher: one checkpoint each time, exit 99; one process finishes."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    args = train_cmd_line(train_store, "ddp-stop", "--nproc", "2", "--time-limit", "1")[4:]
    with train_cmd.make_context("train", args) as ctx:
        cfg = build(TrainConfig, dict(ctx.params))
    launched = launch(cfg)  # this process started long ago: the limit allows one step
    client, run = only_run(mlflow_server, "ddp-stop")
    run_id = run.info.run_id
    assert (launched.code, launched.run_id, launched.signal) == (99, run_id, None)
    assert run.info.status == "KILLED" and run.data.tags["processes"] == "2"
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == [run_id]
    assert ckpt.load(tmp_path / "checkpoints" / run_id / ckpt.LATEST)["progress"]["step"] == 1

    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
    cmd = train_cmd_line(train_store, "ddp-stop", "--nproc", "2", "--run-id", run_id)
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    first = next((line for line in proc.stdout if line.startswith("epoch 1/")), "")
    os.kill(proc.pid, signal.SIGUSR1)
    out, err = proc.communicate(timeout=300)
    assert first and proc.returncode == 99, (first, out, err[-3000:])
    assert out.count("stopped: signal SIGUSR1") == 1, out
    done = subprocess.run(train_cmd_line(train_store, "ddp-stop", "--run-id", run_id),
                          cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, (done.stdout, done.stderr[-3000:])
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["processes"] == "1"
    hist = histories(client, run_id)
    assert_each_step_once(hist)
    assert [s for s, _ in hist["train_loss"]] == [0, 1, 2]
    final = ckpt.load(tmp_path / "checkpoints" / run_id / ckpt.LATEST)
    assert final["progress"]["step"] == 24  # 3 epochs of 8 steps
    assert final["lanes"] and all(v.shape[0] == 2 for v in final["lanes"].values())
