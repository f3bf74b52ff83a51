"""When to stop: signals (which only set a flag) and a wall-clock budget (``--time-limit``).

The training loop asks at every step boundary; on a stop it checkpoints and exits with code 99
so that the job is requeued and the run continues (as the thesis's ``Time_logger`` intended).
"""

from __future__ import annotations

import signal
import time
from types import FrameType

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)
# A soft request (Grid Engine's s_rt sends SIGUSR1) waits until this process made one step, so
# a soft limit shorter than the job's start-up still makes progress; the others stop at once.
SOFT_SIGNALS = (signal.SIGUSR1,)


class StopRequest:
    """Installs handlers that record a stop request; ``reason`` says which.

    SIGUSR1, SIGUSR2 and SIGTERM (as Grid Engine's ``-notify`` and ``qdel`` send) and a first
    Ctrl-C set the flag; a second Ctrl-C interrupts at once. ``restore()`` puts the previous
    handlers back.
    """

    def __init__(self) -> None:
        self.reason: str | None = None
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> StopRequest:
        for sig in (*STOP_SIGNALS, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.reason is not None:
            raise KeyboardInterrupt
        # the first request stands, but a hard one (SIGUSR2: killed soon; SIGTERM) replaces
        # a soft one (SIGUSR1), so the job knows it must stop now and why
        if self.reason is None or (self.signal in SOFT_SIGNALS and signum not in SOFT_SIGNALS):
            self.reason = f"signal {signal.Signals(signum).name}"
            self.signal = signum

    def request(self, reason: str) -> None:
        """Ask for a stop from code (tests, other watchers)."""
        self.reason = self.reason or reason

    @property
    def requested(self) -> bool:
        return self.reason is not None

    def due(self, steps_taken: int) -> bool:
        """Stop now? A soft request (SIGUSR1) once this process has taken a step."""
        return self.requested and (steps_taken > 0 or self.signal not in SOFT_SIGNALS)

    def __enter__(self) -> StopRequest:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.restore()


class TimeBudget:
    """``--time-limit`` seconds from ``start``; estimates whether the next step or epoch fits.

    ``reserve`` seconds are kept for the checkpoint written on the way out (the measured cost
    of the last checkpoint, at least ``min_reserve``).
    """

    def __init__(self, limit: float, start: float | None = None, min_reserve: float = 1.0):
        self.limit = float(limit)
        self.start = time.monotonic() if start is None else start
        self.min_reserve = min_reserve
        self.step_seconds: float | None = None
        self.checkpoint_seconds = 0.0

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def record_step(self, seconds: float) -> None:
        """An exponential average of the step time (alpha 0.5, as the thesis's logger)."""
        prev = self.step_seconds
        self.step_seconds = seconds if prev is None else (prev + seconds) / 2

    def _left(self) -> float:
        return self.limit - self.elapsed - max(self.min_reserve, self.checkpoint_seconds)

    def step_fits(self) -> bool:
        """Would one more step (1.5 times the average) end before the limit?"""
        if not self.limit or self.step_seconds is None:
            return True
        return 1.5 * self.step_seconds < self._left()

    def epoch_fits(self, epoch_seconds: float | None) -> bool:
        """Would a whole epoch of ``epoch_seconds`` end before the limit?"""
        if not self.limit or epoch_seconds is None:
            return True
        return epoch_seconds < self._left()
