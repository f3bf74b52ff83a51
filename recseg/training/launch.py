"""``recseg train --nproc N``: start N training processes on this node and watch them.

Each worker is ``python -m recseg train`` with the same options and torchrun's variables
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR=127.0.0.1``, a free ``MASTER_PORT``)
and ``OMP_NUM_THREADS`` = the job's threads / N (``OMP_NUM_THREADS``, else the cores). The
launcher is the job's process: it forwards stop signals (SIGUSR1, SIGUSR2, SIGTERM, SIGINT) to
the workers (they run in their own process group, so a terminal's Ctrl-C reaches them once;
the first three are repeated every few seconds, as a worker ignores them while it starts),
ends the others when one fails, and exits with rank 0's code: 0 (finished) or 99 (stopped
after a checkpoint: requeue), as a single process would. A killed launcher takes its workers
with it (Linux: parent-death signal).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from recseg.config import fields, flag
from recseg.errors import EXIT_OK, EXIT_REQUEUE, InputError
from recseg.training.config import TrainConfig
from recseg.training.distributed import launched

JOB_START = "RECSEG_JOB_START"  # when the launcher started (the job's clock for --time-limit)
OUTCOME = "RECSEG_OUTCOME"  # where rank 0 writes its exit code and run id for the launcher
STOPS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)  # repeated until the workers end
FORWARDED = (*STOPS, signal.SIGINT)  # SIGINT once: a second one interrupts at once
RESEND = 2.0  # seconds between repeats (a worker ignores them until it can act on them)
GRACE = 10.0  # seconds rank 0 gets to report a failure of its own after another worker failed
ENDED = (EXIT_OK, EXIT_REQUEUE)


@dataclasses.dataclass(frozen=True)
class Launched:
    """How the workers ended: the exit code, rank 0's run and the first stop signal."""

    code: int
    run_id: str
    signal: int | None


def needs_launch(cfg: TrainConfig, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``cfg`` asks for several processes and this is not already one of them."""
    return cfg.nproc > 1 and not launched(environ)


def check_nproc(cfg: TrainConfig) -> None:
    """``InputError`` for an ``--nproc`` this node cannot run (before anything starts)."""
    if cfg.batch_size % cfg.nproc:
        raise InputError(
            f"--nproc {cfg.nproc}: --batch-size {cfg.batch_size} is not a multiple of it (each "
            "process trains an equal share of the lanes)"
        )
    if cfg.device == "cpu":
        return
    from recseg.machine import pick_device

    device = pick_device(cfg.device)
    import torch

    if device.type == "cuda" and cfg.nproc > torch.cuda.device_count():
        raise InputError(
            f"--nproc {cfg.nproc}: this node has {torch.cuda.device_count()} CUDA device(s), "
            "one per process"
        )


def worker_args(cfg: TrainConfig) -> list[str]:
    """``recseg train`` options that give ``cfg`` (every option, bools as ``--x/--no-x``)."""
    args: list[str] = []
    for f, kind in fields(TrainConfig):
        value = getattr(cfg, f.name)
        if kind is bool:
            args.append(flag(f.name) if value else f"--no-{f.name.replace('_', '-')}")
        else:
            args += [flag(f.name), str(value)]
    return args


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for the rendezvous, servers of a benchmark)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker_env(rank: int, nproc: int, port: int, outcome: Path) -> dict[str, str]:
    threads = int(os.environ.get("OMP_NUM_THREADS") or 0) or os.cpu_count() or 1
    env = {
        **os.environ,
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(nproc),
        "LOCAL_WORLD_SIZE": str(nproc),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "OMP_NUM_THREADS": str(max(1, threads // nproc)),
        JOB_START: os.environ.get(JOB_START) or f"{_started():.3f}",
        OUTCOME: str(outcome) if rank == 0 else "",
    }
    if os.environ.get("MKL_NUM_THREADS"):
        env["MKL_NUM_THREADS"] = env["OMP_NUM_THREADS"]
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # one node: the loopback interface
    return env


def _started() -> float:
    """When this process started (``time.time()``)."""
    import psutil

    return psutil.Process().create_time()


def _prepare_worker() -> None:
    """In the worker before it runs: ignore stop signals until its handlers are installed (the
    launcher repeats them), and SIGKILL when the launcher dies (Linux), so a job killed for
    good leaves no worker behind, though the workers have their own process group."""
    for sig in STOPS:
        signal.signal(sig, signal.SIG_IGN)
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def launch(cfg: TrainConfig) -> Launched:
    """Train with ``cfg.nproc`` worker processes (see the module doc); how they ended."""
    check_nproc(cfg)
    command = [sys.executable, "-m", "recseg", "train", *worker_args(cfg)]
    received: list[int] = []

    def record(signum: int, frame: FrameType | None) -> None:
        received.append(signum)  # forwarded by the wait loop

    previous = {sig: signal.signal(sig, record) for sig in FORWARDED}
    try:
        with tempfile.TemporaryDirectory(prefix="recseg-launch-") as tmp:
            outcome, port = Path(tmp) / "outcome.json", free_port()
            workers = [
                subprocess.Popen(command, env=_worker_env(rank, cfg.nproc, port, outcome),
                                 process_group=0, preexec_fn=_prepare_worker)
                for rank in range(cfg.nproc)
            ]  # fmt: skip
            code = _supervise(workers, received)
            run_id = read_outcome(outcome).get("run_id", "")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return Launched(code, run_id, _first_stop(received))


def _first_stop(received: list[int]) -> int | None:
    """The stop signal that counts: the first, unless a hard one came after a soft SIGUSR1."""
    hard = [s for s in received if s != signal.SIGUSR1]
    return (hard or received or [None])[0]


def _supervise(workers: list[subprocess.Popen], received: list[int]) -> int:
    """Forward signals until every worker ended; end them all when one fails. The exit code:
    rank 0's, unless another one failed while rank 0 did not."""
    forwarded, repeated, failed_at = 0, time.monotonic(), None
    while any(w.poll() is None for w in workers):
        new = received[forwarded:]
        forwarded += len(new)
        if time.monotonic() - repeated > RESEND:  # again, for a worker that was starting
            new = [*sorted({s for s in received[:forwarded] if s in STOPS}), *new]
            repeated = time.monotonic()
        _send(workers, new)
        codes = [w.poll() for w in workers]
        if failed_at is None and any(c not in (None, *ENDED) for c in codes):
            failed_at = time.monotonic()
        if failed_at is not None and (codes[0] is not None or time.monotonic() - failed_at > GRACE):
            _end(workers)
            break
        time.sleep(0.1)
    codes = [_code(w.wait()) for w in workers]
    if codes[0] not in ENDED:
        return codes[0]
    return next((c for c in codes if c not in ENDED), codes[0])


def _send(workers: list[subprocess.Popen], signals: list[int]) -> None:
    for signum in signals:
        for w in workers:
            if w.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    w.send_signal(signum)


def _code(returncode: int) -> int:
    """A shell's exit status for a return code (killed by signal N: 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


def _end(workers: list[subprocess.Popen], wait: float = 5.0) -> None:
    """SIGTERM the live workers (blocked in a collective, they may not act on it), then
    SIGKILL what is left after ``wait`` seconds."""
    for w in workers:
        if w.poll() is None:
            w.terminate()
    deadline = time.monotonic() + wait
    while any(w.poll() is None for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    for w in workers:
        if w.poll() is None:
            w.kill()


def write_outcome(code: int, run_id: str, environ: Mapping[str, str] = os.environ) -> None:
    """Rank 0: tell the launcher (when there is one) the exit code and the run."""
    path = environ.get(OUTCOME)
    if path:
        Path(path).write_text(json.dumps({"code": code, "run_id": run_id}))


def read_outcome(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}
