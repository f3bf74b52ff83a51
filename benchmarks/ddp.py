"""Data-parallel training against one process: ``ddp_max_abs_diff``.

Trains the same run of the training engine (``build_setup`` + ``Trainer``, no MLflow) twice on
a tiny clip store (``recseg.data.tiny_store``): as one process, and as ``PROCESSES`` CPU
processes (gloo) that share the same global batch, seed and steps; then compares the final
weights. The loss is CrossEntropy (a per-pixel mean: the mean of the processes' losses is the
one-process loss), the optimiser SGD (Nesterov momentum; Adam's nearly sign-like first steps
would turn float rounding noise into learning-rate-sized differences). The model's one Dropout
(ASPP, p = 0.1) is turned off: each process draws its own masks, so with it the runs differ by
design, not by the sharding, gradient averaging and lane state this measures. Every process
runs ``THREADS`` intra-op threads (see there). ``tests/test_distributed.py`` runs the same
comparison with a bound of 1e-4.

``python -m benchmarks.ddp STORE OUT`` is one worker (``RANK``, ``WORLD_SIZE``, ... set).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

PROCESSES = 2
BOUND = 1e-4  # the largest weight difference the tests accept
# intra-op threads of every process, one process or several: oneDNN's single-thread kernels
# round differently, and GroupNorm's backward turns that into 1e-4 weight differences in a few
# steps (the same run with 1 and 2 threads in one process differs as much)
THREADS = 2
CONFIG = {"model": "Deep_mobile_gruV1", "loss": "CrossEntropy", "optimizer": "sgd",
          "schedule": "constant", "lr": 0.05, "epochs": 3, "batch_size": 2, "seq_len": 3,
          "eval_every": 0, "num_workers": 0, "device": "cpu", "amp": False,
          "system_metrics": False}  # fmt: skip


def worker(store: Path, out: Path) -> None:
    """Train this process's share (torchrun's variables say which); rank 0 saves the final
    weights and the steps taken to ``out``."""
    from recseg.config import build
    from recseg.training.config import TrainConfig
    from recseg.training.distributed import Dist
    from recseg.training.setup import build_setup
    from recseg.training.stopping import StopRequest, TimeBudget
    from recseg.training.trainer import Trainer

    cfg = build(TrainConfig, {"data": str(store), **CONFIG})
    dist = Dist.from_env(torch.device("cpu"))
    try:
        s = build_setup(cfg, warn=lambda m: None, device=dist.device, shard=dist.shard)
        for module in s.model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        trainer = Trainer(
            s.model, s.loss_fn, s.optimizer, s.scheduler, s.train_loader, s.val_loader,
            epochs=cfg.epochs, eval_every=cfg.eval_every, best_metric=cfg.best_metric,
            device=s.device, amp=cfg.amp, stop=StopRequest(), budget=TimeBudget(0), dist=dist,
        )  # fmt: skip
        assert trainer.fit(lambda record: None, lambda reason: None)
        if dist.is_leader:
            torch.save({"model": s.model.state_dict(), "steps": trainer.progress.step}, out)
    finally:
        dist.close()


def train(store: Path, out: Path, processes: int) -> float:
    """Run ``processes`` workers to the end; their wall seconds."""
    from recseg.training.launch import _worker_env, free_port

    start, port = time.perf_counter(), free_port()
    cmd = [sys.executable, "-m", "benchmarks.ddp", str(store), str(out)]
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    workers = []
    for rank in range(processes):
        wenv = {**env, **_worker_env(rank, processes, port, out)}
        wenv.update(
            OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS), OMP_WAIT_POLICY="PASSIVE"
        )
        workers.append(subprocess.Popen(cmd, env=wenv, cwd=root, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True))  # fmt: skip
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    codes = [w.returncode for w in workers]
    assert codes == [0] * processes, (codes, [o[-2000:] for o in outputs])
    return time.perf_counter() - start


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The largest absolute difference between two state dicts' floating-point tensors."""
    assert a.keys() == b.keys()
    diffs = [(a[k].double() - b[k].double()).abs().max().item() for k in a
             if a[k].is_floating_point() and a[k].numel()]  # fmt: skip
    return max(diffs)


def compare(store: Path, workdir: Path) -> dict[str, Any]:
    """One process against ``PROCESSES`` on ``store`` (files under ``workdir``): the figures."""
    workdir.mkdir(parents=True, exist_ok=True)
    results, seconds = {}, {}
    for n in (1, PROCESSES):
        out = workdir / f"weights-{n}.pt"
        seconds[n] = train(store, out, n)
        results[n] = torch.load(out, weights_only=True)
    steps = {n: r["steps"] for n, r in results.items()}
    assert steps[1] == steps[PROCESSES] > 0, steps
    return {
        "ddp_processes": PROCESSES,
        "ddp_max_abs_diff": max_abs_diff(results[1]["model"], results[PROCESSES]["model"]),
        "ddp_steps": steps[1],
        "ddp_single_s": round(seconds[1], 1),
        "ddp_parallel_s": round(seconds[PROCESSES], 1),
    }


def measure(workdir: Path) -> dict[str, Any]:
    """:func:`compare` on a fresh tiny store under ``workdir``: ``{"ddp_processes": 2,
    "ddp_max_abs_diff": ..., "ddp_steps": ..., "ddp_single_s": ..., "ddp_parallel_s": ...}``."""
    from recseg.data.tiny_store import make_store

    workdir.mkdir(parents=True, exist_ok=True)
    return compare(make_store(workdir / "store"), workdir)


if __name__ == "__main__":
    worker(Path(sys.argv[1]), Path(sys.argv[2]))
