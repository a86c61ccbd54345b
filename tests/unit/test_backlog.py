"""The write-queue gauge's backlog: only writers that fell behind are read at a scrape,
drained and closed ones leave, and the list stays bounded without scrapes."""

from __future__ import annotations

from pushgate.hub.backlog import SWEEP_MIN, Backlog


class FakeWriter:
    def __init__(self, queued: int = 0) -> None:
        self.queued = queued
        self.closed = False
        self.reads = 0

    def queued_bytes(self) -> int:
        self.reads += 1
        return self.queued


def test_sums_the_writers_behind_and_drops_the_drained():
    backlog = Backlog()
    slow, drained, gone = FakeWriter(300), FakeWriter(0), FakeWriter(50)
    gone.closed = True
    for writer in (slow, drained, gone):
        backlog.add(writer)
    assert backlog.queued_bytes() == 300
    assert backlog.writers == {slow}
    slow.queued = 0
    assert backlog.queued_bytes() == 0
    assert not backlog.writers


def test_a_writer_listed_twice_counts_once():
    backlog = Backlog()
    writer = FakeWriter(10)
    backlog.add(writer)
    backlog.add(writer)
    assert backlog.queued_bytes() == 10


def test_without_scrapes_the_list_stays_bounded():
    backlog = Backlog()
    behind = [FakeWriter(1) for _ in range(100)]
    for writer in behind:
        backlog.add(writer)
    for _ in range(20 * SWEEP_MIN):
        backlog.add(FakeWriter(0))  # writers that drained at once and were never read
    assert len(backlog.writers) <= SWEEP_MIN + 1
    assert backlog.queued_bytes() == 100
