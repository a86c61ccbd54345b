"""Closed connections' goodbyes, a few at a time, so a node stays responsive when its
clients all leave at once.

A load balancer restarted, a network blip, a fleet of load generators stopped: tens of
thousands of a node's sockets close in the same instant and the event loop hears of all
of them in one pass. Each goodbye (leaving the connection's channels, telling the
engine, announcing the user offline) is tens of microseconds of Python; started
together, 16,000 of them were one block of 0.7 s of CPU, and with 15 nodes on 2 cores
every node's loop stood still for ten seconds: pings and pong deadlines waited, and the
engine's heartbeats came so late that the other nodes declared the nodes dead (c1m
benchmark, docs/performance.md).

Here a goodbye waits in a queue and ``PER_PASS`` of them start per pass of the event
loop, one pass per loop iteration, so the node's timers, reads and heartbeat run between
every two passes. Goodbyes keep their order; one of a quiet node starts at once (in the
next iteration).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

log = logging.getLogger("pushgate.hub")

#: goodbyes started per pass of the event loop (at ~40 µs each: a few milliseconds)
PER_PASS = 128


class Departures:
    """A queue of goodbyes started ``per_pass`` per loop iteration."""

    __slots__ = ("_draining", "_waiting", "per_pass")

    def __init__(self, per_pass: int = PER_PASS) -> None:
        self.per_pass = per_pass
        self._waiting: deque[Callable[[], object]] = deque()
        self._draining = False

    def __len__(self) -> int:
        """Goodbyes waiting for their turn."""
        return len(self._waiting)

    def add(self, goodbye: Callable[[], object]) -> None:
        """Start ``goodbye`` (a callable that starts the work, e.g. a task) in turn."""
        self._waiting.append(goodbye)
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().call_soon(self._pass)

    def _pass(self) -> None:
        waiting = self._waiting
        for _ in range(min(self.per_pass, len(waiting))):
            goodbye = waiting.popleft()
            try:
                goodbye()
            except Exception:
                log.exception("a closed connection's goodbye failed")
        if waiting:
            asyncio.get_running_loop().call_soon(self._pass)
        else:
            self._draining = False
