"""The connections that have bytes waiting to go out: the ``pushgate_write_queue_bytes``
gauge without walking every connection at each scrape.

A writer adds itself when a write leaves bytes queued (its socket did not take them all,
or, for polling and BOSH, messages wait for the client's next request). A scrape sums
the queues of those listed and drops the ones that have drained or closed, so it costs
the connections that fell behind since the last scrape, not all of a node's. Nobody
needs to take a writer out: the list is swept whenever it doubles, so without scrapes it
stays within twice the writers really behind (and at least ``SWEEP_MIN``).
"""

from __future__ import annotations

from typing import Protocol

#: the list is never swept below this many entries
SWEEP_MIN = 1024


class Queue(Protocol):
    def queued_bytes(self) -> int: ...

    @property
    def closed(self) -> bool: ...


class Backlog:
    """Writers that had bytes queued; ``queued_bytes`` is their sum now."""

    __slots__ = ("_sweep_at", "writers")

    def __init__(self) -> None:
        self.writers: set[Queue] = set()
        self._sweep_at = SWEEP_MIN

    def add(self, writer: Queue) -> None:
        writers = self.writers
        writers.add(writer)
        if len(writers) > self._sweep_at:
            self.queued_bytes()

    def queued_bytes(self) -> int:
        """Bytes queued by every writer listed; those with none left leave the list."""
        total = 0
        behind: set[Queue] = set()
        for writer in self.writers:
            queued = 0 if writer.closed else writer.queued_bytes()
            if queued:
                total += queued
                behind.add(writer)
        self.writers = behind
        self._sweep_at = max(SWEEP_MIN, 2 * len(behind))
        return total
