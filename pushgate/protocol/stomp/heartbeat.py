"""One timing wheel for the heart-beats of every STOMP connection.

Each connection is filed under the tick at which it next needs attention (a beat to
send, or a deadline for the peer's beat); a tick only visits the connections due in
it. No task, timer or future per connection. Pure: the caller supplies the time and
drives ``due`` from one periodic timer.
"""

from __future__ import annotations

import math
from typing import Protocol


class Beating(Protocol):
    #: the wheel's slot this connection is filed under (None = not filed)
    hb_slot: int | None

    def heartbeat(self, now: float) -> float | None:
        """Send a beat / check the peer's; return when next due, or None to stop."""


class HeartbeatWheel:
    __slots__ = ("_slots", "tick")

    def __init__(self, tick: float = 0.5) -> None:
        self.tick = tick
        self._slots: dict[int, set[Beating]] = {}

    def __len__(self) -> int:
        return sum(len(s) for s in self._slots.values())

    def schedule(self, item: Beating, when: float) -> None:
        self.remove(item)
        # filed a little early rather than late: a beat goes out on time, and a
        # deadline visited before it is due is simply filed again
        slot = math.floor(when / self.tick)
        self._slots.setdefault(slot, set()).add(item)
        item.hb_slot = slot

    def remove(self, item: Beating) -> None:
        slot = item.hb_slot
        if slot is None:
            return
        item.hb_slot = None
        bucket = self._slots.get(slot)
        if bucket is not None:
            bucket.discard(item)
            if not bucket:
                del self._slots[slot]

    def run(self, now: float) -> None:
        """Visit every connection due by ``now`` and file it again when it says so."""
        current = math.floor(now / self.tick)
        for slot in sorted(s for s in self._slots if s <= current):
            for item in self._slots.pop(slot, ()):
                item.hb_slot = None
                when = item.heartbeat(now)
                if when is not None:
                    self.schedule(item, max(when, now + self.tick))
