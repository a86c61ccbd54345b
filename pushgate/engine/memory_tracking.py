"""The memory engine's memberships, user status, hand-offs, read positions and event log.

Everything is in this process, so "exactly once" is a matter of removing an entry once:
a membership's leave, a connection's disconnect, a user's offline are told by whoever
removes the entry. Timers (offline after ``offline_delay``, hand-offs after their TTL)
live in one heap driven by one task. The event log is a bounded list of this process:
it is lost with the process (the redis engine's survives restarts), and the oldest
events are dropped beyond ``events.retention``, delivered or not.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import heapq
import itertools
import logging
import time
from dataclasses import dataclass

import orjson

from pushgate.engine.base import ClientInfo, EngineHandler
from pushgate.engine.tracking import (
    ACTIVE,
    CHANNEL_OCCUPIED,
    CHANNEL_VACATED,
    CODES,
    CONNECT,
    DISCONNECT,
    NAMES,
    NOTIFICATION_HANDOFF,
    OFFLINE,
    RANK,
    USER_OFFLINE,
    USER_ONLINE,
    USER_STATUS,
    Connection,
    Handoff,
    LoggedEvent,
    ReadLimitExceeded,
    ReadPosition,
    Tracking,
    UserStatus,
)
from pushgate.metrics import EVENTS_PRODUCED

log = logging.getLogger("pushgate.engine.memory")

#: acknowledged or handed-off notifications are remembered this long (a late hand-off
#: registration, e.g. a retried publish, must not hand off what was already settled)
SETTLED_KEEP = 86400.0
#: what a timer fires for: a user's name ("o": gone offline), a handoff's (channel,
#: offset) ("h": not acked in time)
TimerKey = str | tuple[str, int]


@dataclass(slots=True)
class _Member:
    info: ClientInfo
    presence: bool
    joined: bool = False


@dataclass(slots=True)
class _User:
    #: client id → attention code of each open connection
    conns: dict[str, str]
    #: status code now (rolled up) and as last announced
    now: str = "o"
    told: str = "o"
    seen: float | None = None
    active: float | None = None


class MemoryTracking:
    """Mixed into MemoryEngine: the tracking half of the engine interface."""

    _handler: EngineHandler | None
    _presence: dict[str, dict[str, ClientInfo]]
    tracking: Tracking

    def _init_tracking(self) -> None:
        self.tracking = Tracking()
        self._members: dict[tuple[str, str], _Member] = {}
        self._users: dict[str, _User] = {}
        self._handoffs: dict[tuple[str, int], Handoff] = {}
        self._settled: dict[tuple[str, int], float] = {}
        self._reads: dict[str, dict[str, ReadPosition]] = {}
        self._timers: list[tuple[float, int, str, TimerKey]] = []
        self._timer_seq = itertools.count()
        self._timer_wake = asyncio.Event()
        self._timer_task: asyncio.Task[None] | None = None
        self._log: list[LoggedEvent] = []
        self._log_keys: list[tuple[int, int]] = []
        self._log_last = (0, 0)
        self._log_added = asyncio.Event()
        self._locks: dict[str, tuple[str, float]] = {}
        self._cursors: dict[str, str] = {}

    def _start_tracking(self) -> None:
        self._timer_task = asyncio.create_task(self._run_timers(), name="pushgate-memory-timers")

    def _stop_tracking(self) -> None:
        if self._timer_task is not None:
            self._timer_task.cancel()
            self._timer_task = None

    # --- the event log ------------------------------------------------------------
    def _event(self, event_type: str, body: bytes) -> None:
        if event_type not in self.tracking.events:
            return
        ms = int(time.time() * 1000)
        last_ms, last_seq = self._log_last
        key = (ms, 0) if ms > last_ms else (last_ms, last_seq + 1)
        self._log_last = key
        self._log.append(LoggedEvent(f"{key[0]}-{key[1]}", body))
        self._log_keys.append(key)
        excess = len(self._log) - self.tracking.retention
        if excess > max(64, self.tracking.retention // 4):  # trimmed in steps, not per event
            del self._log[:excess]
            del self._log_keys[:excess]
        self._log_added.set()
        EVENTS_PRODUCED.inc()

    def _kept(self) -> int:
        """Index of the oldest event still within the retention."""
        return max(0, len(self._log) - self.tracking.retention)

    async def events_read(
        self, shard: int, after: str, count: int, wait: float = 0.0
    ) -> list[LoggedEvent]:
        key = _key(after)
        deadline = time.monotonic() + wait
        while True:
            start = max(self._kept(), bisect.bisect_right(self._log_keys, key))
            if start < len(self._log) or wait <= 0:
                return self._log[start : start + count]
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            self._log_added.clear()
            try:
                await asyncio.wait_for(self._log_added.wait(), left)
            except TimeoutError:
                return []

    async def events_bounds(self, shard: int) -> tuple[str | None, str | None]:
        kept = self._log[self._kept() :]
        if not kept:
            return None, None
        return kept[0].id, kept[-1].id

    async def events_lock(self, shard: int, sink: str, owner: str, lease: float) -> bool:
        now = time.monotonic()
        held = self._locks.get(sink)
        if held is not None and held[0] != owner and held[1] > now:
            return False
        self._locks[sink] = (owner, now + lease)
        return True

    async def events_unlock(self, shard: int, sink: str, owner: str) -> None:
        held = self._locks.get(sink)
        if held is not None and held[0] == owner:
            del self._locks[sink]

    async def events_cursor(self, shard: int, sink: str) -> str | None:
        return self._cursors.get(sink)

    async def events_commit(
        self, shard: int, sink: str, owner: str, old: str | None, new: str
    ) -> bool:
        held = self._locks.get(sink)
        if held is None or held[0] != owner or self._cursors.get(sink) != old:
            return False
        self._cursors[sink] = new
        return True

    async def events_rewind(self, shard: int, sink: str, cursor: str) -> None:
        self._cursors[sink] = cursor

    # --- memberships ----------------------------------------------------------------
    async def member_add(
        self, channel: str, info: ClientInfo, *, presence: bool, ttl: float
    ) -> None:
        key = (channel, info.client)
        member = self._members.get(key)
        if member is None:
            self._members[key] = _Member(info, presence)
        else:
            member.info, member.presence = info, presence
        if presence:
            clients = self._presence.setdefault(channel, {})
            first = not clients
            clients[info.client] = info
            if first:
                self._event(CHANNEL_OCCUPIED, _channel_event(CHANNEL_OCCUPIED, channel))

    async def member_joined(self, channel: str, info: ClientInfo) -> None:
        member = self._members.get((channel, info.client))
        if member is None:
            return
        member.joined = True
        member.info = info
        if self._handler is not None:
            self._handler.handle_join(channel, info)

    async def member_update(self, channel: str, info: ClientInfo, ttl: float) -> None:
        member = self._members.get((channel, info.client))
        if member is None:
            return
        member.info = info
        if member.presence:
            self._presence.setdefault(channel, {})[info.client] = info

    async def member_remove(self, channel: str, client_id: str, *, announce: bool) -> bool:
        member = self._members.pop((channel, client_id), None)
        if member is None:
            return False
        if member.presence:
            clients = self._presence.get(channel)
            if clients is not None:
                clients.pop(client_id, None)
                if not clients:
                    del self._presence[channel]
                    self._event(CHANNEL_VACATED, _channel_event(CHANNEL_VACATED, channel))
        if announce and member.joined and self._handler is not None:
            self._handler.handle_leave(channel, member.info)
        return True

    # --- connections and user status -------------------------------------------------
    async def connection_opened(self, conn: Connection, state: str) -> dict[str, ReadPosition]:
        user = self._users.get(conn.user)
        if user is None:
            user = self._users[conn.user] = _User({})
        user.conns[conn.client] = CODES[state]
        self._event(CONNECT, conn.event(CONNECT, self._node()))
        self._roll_up(conn.user, user)
        return dict(self._reads.get(conn.user, {}))

    async def connection_state(self, conn: Connection, state: str) -> None:
        user = self._users.get(conn.user)
        if user is None or conn.client not in user.conns:
            return
        user.conns[conn.client] = CODES[state]
        self._roll_up(conn.user, user)

    async def connection_closed(self, conn: Connection, reason: str) -> None:
        user = self._users.get(conn.user)
        if user is None or user.conns.pop(conn.client, None) is None:
            return
        self._event(DISCONNECT, conn.event(DISCONNECT, self._node(), reason=reason))
        self._roll_up(conn.user, user)

    def _node(self) -> str:
        return self.tracking.node_name

    def _roll_up(self, name: str, user: _User) -> None:
        """The user's status from their connections; an announcement when it changed
        (offline only after ``offline_delay``, if still offline then)."""
        now_code = max(user.conns.values(), key=RANK.__getitem__, default="o")
        wall = time.time()
        if now_code != user.now:
            if user.now == "a":
                user.active = wall
            if now_code == "o":
                user.seen = wall
                if self.tracking.offline_delay > 0:
                    self._timer(self.tracking.offline_delay, "o", name)
            user.now = now_code
        if now_code == user.told or (now_code == "o" and self.tracking.offline_delay > 0):
            return
        self._announce(name, user, now_code)

    def _announce(self, name: str, user: _User, code: str) -> None:
        before = user.told
        user.told = code
        status = self._status_of(user, time.time())
        if code == "o":
            body = {"type": USER_OFFLINE, "user": name, "last_seen": int(user.seen or 0)}
            self._event(USER_OFFLINE, orjson.dumps(body))
        elif before == "o":
            body = {"type": USER_ONLINE, "user": name, "status": NAMES[code]}
            self._event(USER_ONLINE, orjson.dumps(body))
        else:
            body = {"type": USER_STATUS, "user": name, "status": NAMES[code]}
            self._event(USER_STATUS, orjson.dumps(body))
        if self._handler is not None:
            self._handler.handle_status(name, status)

    @staticmethod
    def _status_of(user: _User, now: float) -> UserStatus:
        """As announced: a user gone for less than ``offline_delay`` is still online."""
        name = NAMES[user.told]
        return UserStatus(
            status=name,
            last_seen=now if name != OFFLINE else user.seen,
            last_active=now if name == ACTIVE else user.active,
        )

    async def user_statuses(self, users: list[str]) -> dict[str, UserStatus]:
        now = time.time()
        out = {}
        for name in users:
            user = self._users.get(name)
            out[name] = UserStatus() if user is None else self._status_of(user, now)
        return out

    def _forget_users(self, before: float) -> None:
        """Users offline since before ``before`` (wall clock) are forgotten."""
        gone = [
            name
            for name, user in self._users.items()
            if not user.conns and user.told == "o" and (user.seen or 0) <= before
        ]
        for name in gone:
            del self._users[name]
        now = time.monotonic()
        for key in [k for k, until in self._settled.items() if until <= now]:
            del self._settled[key]

    # --- hand-offs and read positions --------------------------------------------------
    async def handoff_add(self, handoff: Handoff) -> bool:
        key = (handoff.channel, handoff.offset)
        if key in self._settled or key in self._handoffs:
            return False
        self._handoffs[key] = handoff
        self._timer(handoff.ttl, "h", key)
        return True

    async def handoff_ack(self, channel: str, offset: int, epoch: str = "") -> bool:
        key = (channel, offset)
        waiting = self._handoffs.get(key)
        if waiting is not None and epoch and waiting.epoch != epoch:
            return False  # an older stream's publication at the same offset
        self._settled[key] = time.monotonic() + SETTLED_KEEP
        return self._handoffs.pop(key, None) is not None

    async def read_mark(self, user: str, channel: str, position: ReadPosition, limit: int) -> bool:
        reads = self._reads.setdefault(user, {})
        known = reads.get(channel)
        if known is None and len(reads) >= limit:
            raise ReadLimitExceeded(channel)
        if known is not None and known.epoch == position.epoch and known.offset >= position.offset:
            return False
        reads[channel] = position
        return True

    async def read_positions(self, user: str) -> dict[str, ReadPosition]:
        return dict(self._reads.get(user, {}))

    # --- timers -----------------------------------------------------------------------
    def _timer(self, delay: float, kind: str, key: TimerKey) -> None:
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._timer_seq), kind, key))
        self._timer_wake.set()

    async def _run_timers(self) -> None:
        while True:
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                _, _, kind, key = heapq.heappop(self._timers)
                try:
                    self._fire(kind, key)
                except Exception:
                    log.exception("timer %s %r failed", kind, key)
            self._timer_wake.clear()
            left = self._timers[0][0] - now if self._timers else 60.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._timer_wake.wait(), max(0.0, left))

    def _fire(self, kind: str, key: TimerKey) -> None:
        if kind == "o":
            name = str(key)
            user = self._users.get(name)
            if user is not None and user.now == "o" and user.told != "o":
                self._announce(name, user, "o")
        elif kind == "h" and isinstance(key, tuple):
            handoff = self._handoffs.pop(key, None)
            if handoff is not None:
                self._settled[key] = time.monotonic() + SETTLED_KEEP
                self._event(NOTIFICATION_HANDOFF, handoff.event())


def _channel_event(event_type: str, channel: str) -> bytes:
    return orjson.dumps({"type": event_type, "channel": channel})


def _key(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return (0, 0)
