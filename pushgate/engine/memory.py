"""The memory engine: broker, history, presence and user status inside one process.

The default engine, needing no other service. Everything lives in dicts of this
process, so it serves exactly one process: several workers need the redis engine.
A stream keeps its epoch and top offset for the process's lifetime even when its
publications expire, so a client behind the retained window is told it cannot
recover rather than handed a silent gap.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from dataclasses import dataclass, field

from pushgate.engine.base import (
    ClientInfo,
    Engine,
    EngineHandler,
    HistoryResult,
    Publication,
    PublishOptions,
    StreamPosition,
    UnrecoverablePosition,
)
from pushgate.engine.memory_tracking import MemoryTracking
from pushgate.json_types import JsonObject

IDEMPOTENCY_WINDOW = 300.0
SWEEP_EVERY = 60.0
#: a user's last-seen time is kept at least this long (the redis engine's user key too)
LAST_SEEN_KEEP = 86400.0


#: the position of a publication kept in no history
NO_POSITION = StreamPosition(0, "")


def new_epoch() -> str:
    return secrets.token_urlsafe(6)


@dataclass(slots=True)
class _Stream:
    epoch: str = field(default_factory=new_epoch)
    top: int = 0
    items: deque[Publication] = field(default_factory=deque)
    #: history is kept for history_ttl after the channel's last publication
    expires_at: float = 0.0

    def trim(self, now: float) -> None:
        if self.items and now >= self.expires_at:
            self.items.clear()


class MemoryEngine(MemoryTracking, Engine):
    """All engine state in this process's memory."""

    name = "memory"
    multi_node = False

    def __init__(self, history_meta_ttl: float = 86400.0) -> None:
        self._meta_ttl = history_meta_ttl
        self._sweeper: asyncio.Task[None] | None = None
        self._handler: EngineHandler | None = None
        self._node_id = ""
        self._streams: dict[str, _Stream] = {}
        self._idempotency: dict[tuple[str, str], tuple[StreamPosition, float]] = {}
        self._presence: dict[str, dict[str, ClientInfo]] = {}
        #: small shared values: key → (value, monotonic expiry or 0 = none)
        self._kv: dict[str, tuple[bytes, float]] = {}
        self._init_tracking()

    async def start(self, handler: EngineHandler, node_id: str) -> None:
        self._handler = handler
        self._node_id = node_id
        self._sweeper = asyncio.create_task(self._sweep_forever())
        self._start_tracking()

    async def close(self) -> None:
        self._handler = None
        self._stop_tracking()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            self.sweep(time.monotonic())

    def sweep(self, now: float, wall: float | None = None) -> None:
        """Forget streams idle past their history and meta TTL, and users last seen
        longer ago than the meta TTL (a day at least): memory stays bounded."""
        for channel in [
            ch for ch, st in self._streams.items() if st.expires_at + self._meta_ttl <= now
        ]:
            del self._streams[channel]
        self._forget_users(
            (time.time() if wall is None else wall) - max(self._meta_ttl, LAST_SEEN_KEEP)
        )
        for key in [k for k, (_, expires) in self._kv.items() if 0 < expires <= now]:
            del self._kv[key]

    def _stream(self, channel: str, now: float) -> _Stream:
        stream = self._streams.get(channel)
        if stream is None:
            # a new stream's position lives history_meta_ttl from now even if unused
            stream = self._streams[channel] = _Stream(expires_at=now)
        return stream

    # --- broker -------------------------------------------------------------------
    def publish(self, channel: str, pub: Publication, opts: PublishOptions) -> StreamPosition:
        now = time.monotonic()
        key = opts.idempotency_key
        if key:
            self._forget_old_keys(now)
            seen = self._idempotency.get((channel, key))
            if seen is not None:
                return seen[0]
        position = NO_POSITION
        if opts.history_size > 0 and opts.history_ttl > 0:
            stream = self._stream(channel, now)
            stream.trim(now)
            stream.top += 1
            pub.offset = stream.top
            pub.epoch = stream.epoch
            stream.items.append(pub)
            while len(stream.items) > opts.history_size:
                stream.items.popleft()
            stream.expires_at = now + opts.history_ttl
            position = StreamPosition(stream.top, stream.epoch)
        if key:
            self._idempotency[(channel, key)] = (position, now + IDEMPOTENCY_WINDOW)
        if self._handler is not None:
            self._handler.handle_publication(channel, pub, position.epoch)
        return position

    def _forget_old_keys(self, now: float) -> None:
        if len(self._idempotency) < 1024:
            return
        for key in [k for k, (_, exp) in self._idempotency.items() if exp <= now]:
            del self._idempotency[key]

    async def publish_join(self, channel: str, info: ClientInfo) -> None:
        if self._handler is not None:
            self._handler.handle_join(channel, info)

    async def publish_leave(self, channel: str, info: ClientInfo) -> None:
        if self._handler is not None:
            self._handler.handle_leave(channel, info)

    async def publish_control(self, message: JsonObject) -> None:
        if self._handler is not None:
            self._handler.handle_control(message)

    async def subscribe(self, channel: str) -> None:
        return None

    async def unsubscribe(self, channel: str) -> None:
        return None

    # --- history ------------------------------------------------------------------
    def position(self, channel: str) -> StreamPosition:
        stream = self._stream(channel, time.monotonic())
        return StreamPosition(stream.top, stream.epoch)

    async def history(
        self,
        channel: str,
        *,
        since: StreamPosition | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> HistoryResult:
        now = time.monotonic()
        stream = self._stream(channel, now)
        stream.trim(now)
        position = StreamPosition(stream.top, stream.epoch)
        pubs = list(stream.items)
        if since is not None:
            # an empty epoch stands for the current one (Centrifugo's rule)
            if (since.epoch and since.epoch != stream.epoch) or since.offset > stream.top:
                raise UnrecoverablePosition(channel)
            first = pubs[0].offset if pubs else stream.top + 1
            if since.offset + 1 < first:
                raise UnrecoverablePosition(channel)
            pubs = [p for p in pubs if p.offset > since.offset]
        if reverse:
            pubs.reverse()
        if limit is not None and limit >= 0:
            pubs = pubs[:limit]
        return HistoryResult(pubs, position)

    async def remove_history(self, channel: str) -> None:
        stream = self._streams.get(channel)
        if stream is not None:
            stream.items.clear()

    # --- presence -----------------------------------------------------------------
    async def add_presence(self, channel: str, info: ClientInfo, ttl: float) -> None:
        self._presence.setdefault(channel, {})[info.client] = info

    async def remove_presence(self, channel: str, client_id: str) -> None:
        clients = self._presence.get(channel)
        if clients is not None:
            clients.pop(client_id, None)
            if not clients:
                del self._presence[channel]

    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        return dict(self._presence.get(channel, {}))

    async def presence_stats(self, channel: str) -> tuple[int, int]:
        clients = self._presence.get(channel, {})
        return len(clients), len({info.user for info in clients.values()})

    # --- small shared values ------------------------------------------------------
    def _kv_live(self, key: str) -> tuple[bytes, float] | None:
        entry = self._kv.get(key)
        if entry is not None and 0 < entry[1] <= time.monotonic():
            del self._kv[key]
            return None
        return entry

    async def kv_get(self, key: str) -> bytes | None:
        entry = self._kv_live(key)
        return None if entry is None else entry[0]

    async def kv_set(self, key: str, value: bytes, ttl: float, *, only_new: bool = False) -> bool:
        if only_new and self._kv_live(key) is not None:
            return False
        self._kv[key] = (value, time.monotonic() + ttl if ttl > 0 else 0.0)
        return True

    async def kv_delete(self, key: str) -> None:
        self._kv.pop(key, None)

    async def kv_incr(self, key: str, ttl: float, amount: int = 1) -> int:
        entry = self._kv_live(key)
        count = (int(entry[0]) if entry is not None else 0) + amount
        self._kv[key] = (str(count).encode(), time.monotonic() + ttl)
        return count

    # --- cluster ------------------------------------------------------------------
    async def nodes(self, this_node: JsonObject) -> list[JsonObject]:
        return [this_node]
