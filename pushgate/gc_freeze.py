"""Keeping connections' long-lived objects out of the cyclic garbage collector's walks.

A node holds ~50 GC-tracked objects per connection for as long as the connection lives
(hours). CPython's full collection walks every tracked object; at 17k connections per
process that is a pause of several hundred milliseconds, which every client of the node
feels as latency. ``gc.freeze()`` moves every tracked object to a permanent generation
that no collection walks (an O(1) list splice); frozen objects are still freed by
reference counting when they are no longer used, so a closed connection's objects go
away as before — pushgate's connections break their reference cycles when they close
(tests/hub/test_gc_cycles.py), so nothing of theirs needs the collector.

The policy: every ``interval`` seconds, when connections opened since the last freeze
reach 10% of the node's connections (at least ``min_growth``) — a ramp, or churn that
replaced a tenth of them — collect the young generations (cheap: what is garbage among
recent objects goes) and freeze the rest. When connections fall
below half of what they were at the last freeze (clients left en masse, so the node is
quiet), unfreeze and run one full collection, so cyclic garbage that was frozen — from
code that does not break its cycles — is reclaimed, then freeze again.
Off by default (``server.gc_freeze = true`` turns it on): in the c100k benchmark it
bought nothing measurable — with the young-generation threshold of ``server.tune_gc``
and connections that leave no cycles, a node at 17k connections showed no full
collection over 0.1 s without it — while its thaw is a full collection of everything
(about a second at that size) when half the connections leave at once. It is for a
node whose ``pushgate_gc_pause_seconds{generation="2"}`` shows long pauses.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger("pushgate.gc")


class Freezer:
    """Freezes the collector's view of long-lived objects as connections grow."""

    def __init__(
        self,
        connections: Callable[[], int],
        opened: Callable[[], int],
        *,
        interval: float = 1.0,
        growth: float = 0.1,
        min_growth: int = 256,
    ) -> None:
        self._connections = connections
        self._opened = opened
        self._interval = interval
        self._growth = growth
        self._min_growth = min_growth
        #: connections, and connections opened so far, at the last freeze (or thaw)
        self.frozen_at = 0
        self.opened_at = 0
        self.freezes = 0
        self.thaws = 0

    def check(self) -> None:
        """Freeze or thaw if the connections moved enough; called every interval."""
        now, opened = self._connections(), self._opened()
        if opened - self.opened_at >= max(self._min_growth, self._growth * now):
            self.freeze(now, opened)
        elif self.frozen_at and now < self.frozen_at / 2:
            self.thaw(now, opened)

    def freeze(self, connections: int, opened: int) -> None:
        started = time.perf_counter()
        gc.collect(1)
        gc.freeze()
        self.frozen_at, self.opened_at = connections, opened
        self.freezes += 1
        log.debug(
            "gc: %d objects frozen at %d connections (%.1f ms)",
            gc.get_freeze_count(),
            connections,
            (time.perf_counter() - started) * 1000,
        )

    def thaw(self, connections: int, opened: int) -> None:
        started = time.perf_counter()
        gc.unfreeze()
        collected = gc.collect()
        gc.freeze()
        self.frozen_at, self.opened_at = connections, opened
        self.thaws += 1
        log.info(
            "gc: connections fell to %d; full collection of everything frozen: %d "
            "unreachable objects (%.0f ms)",
            connections,
            collected,
            (time.perf_counter() - started) * 1000,
        )

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                self.check()
            except Exception:  # never let a policy take the node down
                log.exception("gc freeze check failed")
