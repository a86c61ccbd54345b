"""A circuit breaker: after some failures in a row, stop calling a backend for a while.

Closed: calls go through, and ``failures`` consecutive failures open it. Open: calls fail
at once (the backend is given room to recover, and clients get their temporary error
without waiting for a timeout each) until ``open_for`` seconds have passed. Then it is
half-open: one call tries the backend (the others still fail at once); its success
closes the breaker, its failure opens it again. ``failures = 0`` never opens it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitBreaker:
    __slots__ = ("_clock", "_failures", "_opened_at", "_trial", "failures", "open_for")

    def __init__(
        self, failures: int, open_for: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failures = failures
        self.open_for = open_for
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return CLOSED
        if self._clock() - self._opened_at < self.open_for:
            return OPEN
        return HALF_OPEN

    def allow(self) -> bool:
        """May a call go to the backend now? In the half-open state, only one at a time
        (the trial), until ``success`` or ``failure`` says how it went."""
        state = self.state
        if state == CLOSED:
            return True
        if state == OPEN or self._trial:
            return False
        self._trial = True
        return True

    def release(self) -> None:
        """A call that ``allow`` let through was not made after all."""
        self._trial = False

    def success(self) -> bool:
        """The backend answered; True when this closes an open breaker."""
        self._failures = 0
        self._trial = False
        if self._opened_at is None:
            return False
        self._opened_at = None
        return True

    def failure(self) -> bool:
        """The call failed; True when this opens the breaker (or opens it again)."""
        self._trial = False
        self._failures += 1
        if not self.failures:
            return False
        if self._opened_at is not None or self._failures >= self.failures:
            self._opened_at = self._clock()
            return True
        return False
