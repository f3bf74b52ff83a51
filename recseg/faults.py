"""Fail points: named places where the reliability tests kill a process on purpose.

``RECSEG_KILL_AT=NAME[:N][,NAME[:N]...]`` makes the process SIGKILL itself the N-th time (default
1) it passes ``fail_point(NAME)`` - mid-step, between a checkpoint's temp file and its rename,
mid-upload, mid-evaluation - points a kill at a random time would rarely hit. Without the
variable a fail point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "RECSEG_KILL_AT"
POINTS = (
    "train-step",  # after an optimiser step, mid-epoch
    "evaluate",  # after a validation batch
    "log-metrics",  # an epoch's metrics logged, its checkpoint not yet written
    "checkpoint-temp",  # a checkpoint's temp file written, not yet renamed
    "checkpoint-rotate",  # the old checkpoint kept as previous.pt, the new one not yet in place
    "upload",  # one checkpoint file uploaded to the run's artifacts, the tags not yet set
    "log-model",  # the final model logged, the run not yet FINISHED
)
_hits: dict[str, int] = {}


def parse(spec: str) -> dict[str, int]:
    """``"upload:2,evaluate"`` -> ``{"upload": 2, "evaluate": 1}``."""
    plan: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, count = item.partition(":")
        if name not in POINTS:
            raise ValueError(f"{ENV}: unknown fail point {name!r} (known: {', '.join(POINTS)})")
        plan[name] = int(count or 1)
    return plan


def fail_point(name: str) -> None:
    """SIGKILL this process if ``RECSEG_KILL_AT`` asks for it here (see the module doc)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if parse(spec).get(name) == _hits[name]:
        os.kill(os.getpid(), signal.SIGKILL)
