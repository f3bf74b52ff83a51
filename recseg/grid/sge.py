"""Grid Engine from Python: submit jobs, and let a running job resubmit itself.

:class:`SgeJob` is the job-environment object (as submitit's): it knows the job it runs in and
owns requeueing. A requeue makes a copy of this job with ``qresub`` (held, so it cannot start
early), so everything the user gave ``qsub`` -- resources and limits, queue, parallel
environment, job name, log paths, the job script itself -- carries over unchanged; then it sets
the copy's variables (the run id, the restart count), points jobs that wait for this one
(``-hold_jid``) at the copy, and releases it.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence

from recseg.errors import InputError

# Variables the requeue adds to a job's copy.
RESTARTS = "RECSEG_RESTARTS"
# Variables qsub adds to every job (SGE_O_*, shown by qstat under this prefix).
_INTERNAL = "__SGE_PREFIX__"


class GridError(RuntimeError):
    """A Grid Engine command failed (the message holds its output)."""


def _run(cmd: Sequence[str], timeout: float = 60) -> str:
    try:
        done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise GridError(f"{cmd[0]} is not installed (Grid Engine's client commands)") from None
    except subprocess.TimeoutExpired:
        raise GridError(f"{cmd[0]} did not answer within {timeout:.0f} s") from None
    if done.returncode != 0:
        said = " ".join((done.stderr or done.stdout).split())
        raise GridError(f"{' '.join(cmd[:2])} failed (exit {done.returncode}): {said}")
    return done.stdout


def check_client() -> None:
    """``InputError`` when ``qsub`` is not on PATH or no Grid Engine answers."""
    if shutil.which("qsub") is None:
        raise InputError(
            "qsub not found: run this on a Grid Engine submit host (to try one locally: "
            "sudo bash grid/local-sge.sh start)"
        )
    try:
        _run(["qstat"], timeout=30)
    except GridError as exc:
        raise InputError(f"Grid Engine does not answer: {exc}") from None


def variables_arg(variables: Mapping[str, str]) -> str:
    """The ``-v`` list; ``InputError`` for a value ``qsub -v`` would split at its comma."""
    for name, value in variables.items():
        if "," in value:
            raise InputError(f"{name}: a value for qsub -v cannot hold a comma (write %2C)")
    return ",".join(f"{k}={v}" for k, v in variables.items())


def qsub(
    script: str,
    variables: Mapping[str, str],
    options: Sequence[str] = (),
    hold: Sequence[str] = (),
) -> str:
    """Submit ``script`` with ``variables`` (``-v``) and extra ``qsub`` options; the job id."""
    cmd = ["qsub", "-terse"]
    if hold:
        cmd += ["-hold_jid", ",".join(hold)]
    cmd += [*options, "-v", variables_arg(variables), script]
    out = _run(cmd).strip()
    match = re.match(r"^(\d+)", out)
    if not match:
        raise GridError(f"qsub said '{out}', not a job id")
    return match.group(1)


def job_xml(job_id: str) -> ET.Element:
    """``qstat -xml -j`` of one job."""
    return ET.fromstring(_run(["qstat", "-xml", "-j", job_id]))


def job_variables(info: ET.Element) -> dict[str, str]:
    """The job's ``-v`` variables (those with a value) from its ``qstat -xml -j``."""
    out: dict[str, str] = {}
    for item in info.iter("JB_env_list"):
        for entry in item:
            name = entry.findtext("VA_variable") or ""
            value = entry.findtext("VA_value")
            if name and value is not None and not name.startswith(_INTERNAL):
                out[name] = value
    return out


def job_numbers(info: ET.Element, tag: str) -> list[str]:
    """Job ids in a list of the job's ``qstat -xml -j`` (``JB_jid_successor_list``, ...)."""
    return [n.text for item in info.iter(tag) for n in item.iter("JRE_job_number") if n.text]


def job_states() -> dict[str, str]:
    """Every job Grid Engine holds, pending or running: id -> state letters (``r``, ``dr``,
    ``hqw``, ...), from ``qstat -u '*'``."""
    rows = (line.split() for line in _run(["qstat", "-u", "*"], timeout=30).splitlines()[2:])
    return {parts[0]: parts[4] for parts in rows if len(parts) > 4}


def queued_jobs() -> set[str] | None:
    """Ids of every job Grid Engine holds; None when it does not answer."""
    try:
        return set(job_states())
    except GridError:
        return None


@dataclasses.dataclass(frozen=True)
class SgeJob:
    """The Grid Engine job this process runs in."""

    job_id: str
    restarts: int  # how many times the work was resubmitted before this job

    @classmethod
    def current(cls, environ: Mapping[str, str]) -> SgeJob | None:
        """The job of ``environ`` (``JOB_ID`` under ``SGE_ROOT``), or None outside a job."""
        job_id = environ.get("JOB_ID", "")
        if not job_id or not environ.get("SGE_ROOT"):
            return None
        raw = environ.get(RESTARTS) or "0"
        if not re.fullmatch(r"[0-9]+", raw):
            raise InputError(f"{RESTARTS}: expected a whole number (0 or more), got '{raw}'")
        return cls(job_id, int(raw))

    def being_deleted(self) -> bool:
        """True while ``qdel`` is ending this job (its notify signal came from a user)."""
        try:
            return "d" in job_states().get(self.job_id, "")
        except GridError:
            return False

    def requeue(self, updates: Mapping[str, str]) -> str:
        """Submit a copy of this job with ``updates`` to its variables; the new job id."""
        info = job_xml(self.job_id)
        # a value with a comma came with ``qsub -V``: written as %2C, which recseg decodes
        env = {k: v.replace(",", "%2C") for k, v in {**job_variables(info), **updates}.items()}
        out = _run(["qresub", "-h", "u", self.job_id])
        ids = re.findall(r"Your job (\d+)", out)
        if not ids:
            raise GridError(f"qresub said '{' '.join(out.split())}', not a job id")
        new = ids[-1]
        try:
            _run(["qalter", "-v", variables_arg(env), new])
            self._hand_over_successors(info, new)
        except (GridError, InputError):
            _run(["qdel", new])
            raise
        _run(["qrls", "-h", "u", new])
        return new

    def _hand_over_successors(self, info: ET.Element, new: str) -> None:
        """Jobs held until this one ends (``-hold_jid``) wait for the copy instead."""
        for successor in job_numbers(info, "JB_jid_successor_list"):
            try:
                waits_for = job_numbers(job_xml(successor), "JB_jid_predecessor_list")
            except GridError:  # it ended or was deleted meanwhile
                continue
            hold = [new if j == self.job_id else j for j in waits_for] or [new]
            _run(["qalter", "-hold_jid", ",".join(dict.fromkeys(hold)), successor])
