"""A real single-node Grid Engine for tests: bring it up with grid/local-sge.sh, submit jobs,
wait for them, read ``qacct`` and the job logs."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

GRID = Path(__file__).resolve().parents[1] / "grid"


def _queue_ready() -> bool:
    if shutil.which("qstat") is None:
        return False
    done = subprocess.run(["qstat", "-f", "-q", "all.q"], capture_output=True, text=True)
    lines = [ln.split() for ln in done.stdout.splitlines() if ln.startswith("all.q@")]
    return done.returncode == 0 and any(len(parts) == 5 for parts in lines)


def _qmaster() -> str:
    """The host named in the cell's ``act_qmaster`` ("" when there is no cell)."""
    root = os.environ.get("SGE_ROOT", "/var/lib/gridengine")
    path = Path(root) / os.environ.get("SGE_CELL", "default") / "common" / "act_qmaster"
    return path.read_text().strip() if path.exists() else ""


def ensure_grid_engine() -> bool:
    """Make sure a single-node Grid Engine with a usable all.q runs here; True when this call
    started it. Skips (saying why) where that cannot be done: not root, no apt-get, the
    packages cannot be installed, or this host submits to a cluster (tests never submit to a
    real cluster unless RECSEG_TEST_GRID=any)."""
    master = _qmaster()
    local = {"", "localhost", socket.gethostname(), socket.getfqdn()}
    if master not in local and os.environ.get("RECSEG_TEST_GRID") != "any":
        pytest.skip(f"this host submits to the Grid Engine cluster of {master}: the grid tests "
                    "use a local one only (or set RECSEG_TEST_GRID=any)")  # fmt: skip
    if _queue_ready():
        return False
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(
            "no Grid Engine here, and setting one up needs root and apt-get: run "
            "`sudo bash grid/local-sge.sh start` to include the grid tests"
        )
    done = subprocess.run(
        ["bash", str(GRID / "local-sge.sh"), "start"], capture_output=True, text=True, timeout=900
    )
    if done.returncode == 3:  # the packages could not be installed (no network, no such ones)
        pytest.skip(f"could not install Grid Engine: {done.stderr.strip()}")
    assert done.returncode == 0, done.stdout + done.stderr
    return True


def stop_grid_engine() -> None:
    subprocess.run(["bash", str(GRID / "local-sge.sh"), "stop"], capture_output=True, timeout=120)


def qsub(script: str, variables: dict[str, str], *options: str, cwd: Path) -> str:
    """Submit a grid script as a user would; the job id."""
    listed = ",".join(f"{k}={v}" for k, v in variables.items())
    cmd = ["qsub", "-terse", *options, "-v", listed, str(GRID / script)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def queued(names: set[str] | None = None) -> list[tuple[str, str, str]]:
    """``(id, name, state)`` of the jobs in the system whose name is in ``names`` (all: None)."""
    out = subprocess.run(
        ["qstat", "-u", "*", "-xml"], capture_output=True, text=True, timeout=60
    ).stdout
    jobs = []
    for job in ET.fromstring(out).iter("job_list"):
        name = job.findtext("JB_name") or ""
        if names is None or name in names:
            jobs.append((job.findtext("JB_job_number") or "", name, job.findtext("state") or ""))
    return jobs


def delete_leftover_jobs() -> None:
    """Delete the test jobs (``t-…``) an interrupted earlier session left in the queue: their
    folders are gone, and their names would be taken for this session's jobs."""
    deadline = time.monotonic() + 60
    while leftovers := [job for job, name, _ in queued() if name.startswith("t-")]:
        assert time.monotonic() < deadline, f"cannot delete leftover jobs {leftovers}"
        subprocess.run(["qdel", "-f", *leftovers], capture_output=True, timeout=60)
        time.sleep(1)


def wait_until_gone(names: set[str], timeout: float) -> None:
    """Wait until no job of these names is queued or running (copies included)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = queued(names)
        if not jobs:
            return
        assert not any("E" in state for _, _, state in jobs), jobs
        time.sleep(1)
    jobs = queued(names)
    why = [subprocess.run(["qstat", "-j", job], capture_output=True, text=True, timeout=60).stdout
           for job, _, state in jobs if "w" in state]  # fmt: skip
    every = subprocess.run(["qstat", "-f", "-u", "*"], capture_output=True, text=True, timeout=60)
    raise AssertionError(f"jobs still there after {timeout} s: {jobs}\n{''.join(why)}\n"
                         f"{every.stdout}")  # fmt: skip


@dataclass(frozen=True)
class Accounted:
    """One finished job in ``qacct``."""

    job: str
    exit_status: int
    start: str
    end: str
    wallclock: float


def _parse_time(text: str) -> float:
    return time.mktime(time.strptime(text.strip(), "%a %b %d %H:%M:%S %Y"))


def accounting(name: str, since: str, expected: int, timeout: float = 30) -> list[Accounted]:
    """The ``qacct`` records of the jobs called ``name`` whose id is ``since`` or later (an
    earlier session's jobs of the same name are left out); waits for ``expected`` of them."""
    deadline = time.monotonic() + timeout
    records: list[Accounted] = []
    while time.monotonic() < deadline:
        done = subprocess.run(["qacct", "-j", name], capture_output=True, text=True)
        records = []
        for block in done.stdout.split("=" * 62)[1:]:
            fields = dict(
                (m.group(1), m.group(2).strip())
                for m in re.finditer(r"^(\w+)\s+(.*)$", block, re.MULTILINE)
            )
            if int(fields["jobnumber"]) < int(since):
                continue
            records.append(
                Accounted(
                    fields["jobnumber"],
                    int(fields["exit_status"].split()[0]),
                    fields["start_time"],
                    fields["end_time"],
                    float(fields["ru_wallclock"].rstrip("s")),
                )
            )
        if len(records) >= expected:
            return sorted(records, key=lambda r: int(r.job))
        time.sleep(1)
    return sorted(records, key=lambda r: int(r.job))


def started_after_end(later: Accounted, earlier: Accounted) -> bool:
    return _parse_time(later.start) >= _parse_time(earlier.end)


def log_of(cwd: Path, name: str, job: str) -> str:
    """The job's log (the scripts' default ``-o $JOB_NAME.$JOB_ID.log`` in its folder)."""
    return (cwd / f"{name}.{job}.log").read_text()
