"""The node's one shared timer: pings, pong deadlines, token expiry, stale connects.

There is no task, timer or future per connection. A ticker runs ``tick`` every TICK:
it advances the ping wheel by one slot (pinging that slot's connections and dropping
those whose pong did not come), pops the expiry heap up to now, and closes
connections that never sent connect. The cost of a tick is one slot of the wheel,
not every connection. Ticks keep to the clock: after the loop was held up, the wheel
goes on from where it was rather than running the missed ticks in a burst (which would
check pong deadlines moments after their pings and close clients that answered in time).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from pushgate.hub.errors import (
    DISCONNECT_EXPIRED,
    DISCONNECT_NO_PONG,
    DISCONNECT_STALE,
    UNSUBSCRIBE_EXPIRED,
)

if TYPE_CHECKING:
    from pushgate.config import ClientConfig
    from pushgate.hub.client import Client
    from pushgate.hub.registry import Registry
    from pushgate.hub.subscription import Subscription
    from pushgate.proxy import Proxies

log = logging.getLogger("pushgate.hub")

#: the ping wheel's step: each connection is pinged on one slot of ping_interval / TICK,
#: so a node's pings (and the pongs they bring back) come in small groups ten times a
#: second rather than one large burst per second
TICK = 0.1
#: the expiry heap is compacted (entries of closed connections, left subscriptions and
#: superseded tokens dropped) when it reaches twice its size after the last compaction,
#: and never below this many entries
EXPIRY_COMPACT_MIN = 1024


class Timers:
    """The ping wheel, the expiry heap and the ticker that drives them."""

    def __init__(
        self,
        config: ClientConfig,
        registry: Registry,
        proxies: Proxies,
        spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]],
    ) -> None:
        self.config = config
        self.registry = registry
        self.proxies = proxies
        self.spawn = spawn
        self.wheel: list[set[Client]] = [set() for _ in range(self.wheel_size)]
        self.ticks = 0
        #: (when, seq, client id, channel): ``channel == ""`` is the connection itself
        self.expiry: list[tuple[float, int, str, str]] = []
        self._expiry_compact_at = EXPIRY_COMPACT_MIN
        self._seq = itertools.count()
        self._ticker: asyncio.Task[None] | None = None

    @property
    def wheel_size(self) -> int:
        return max(1, math.ceil(self.config.ping_interval / TICK))

    @property
    def ping_seconds(self) -> int:
        """The ping interval as the timer keeps it (whole ticks), told to clients."""
        return math.ceil(round(self.wheel_size * TICK, 6))

    def start(self) -> None:
        self._ticker = asyncio.create_task(self._run(), name="pushgate-hub-ticker")

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    # --- connections --------------------------------------------------------------
    def add(self, client: Client) -> None:
        """A registered connection: pinged from the current slot on; its token's expiry."""
        client.ping_slot = self.ticks % len(self.wheel)
        self.wheel[client.ping_slot].add(client)
        self.schedule_expiry(client)

    def remove(self, client: Client) -> None:
        if client.ping_slot >= 0:
            self.wheel[client.ping_slot].discard(client)

    # --- the expiry heap ----------------------------------------------------------
    def schedule_expiry(self, client: Client) -> None:
        if client.expires_at:
            when = client.expires_at + self.config.expired_grace
            self._push_expiry((when, next(self._seq), client.id, ""))

    def schedule_sub_expiry(self, sub: Subscription) -> None:
        if sub.expires_at:
            when = sub.expires_at + self.config.expired_grace
            self._push_expiry((when, next(self._seq), sub.client.id, sub.channel))

    def _push_expiry(self, entry: tuple[float, int, str, str]) -> None:
        # An entry stays until its time comes, and tokens often live a day: without
        # compaction, every connection closed before its token expired would be kept
        # that long (~240 bytes each: the entry and the client's id).
        if len(self.expiry) >= self._expiry_compact_at:
            self._compact_expiry()
        heapq.heappush(self.expiry, entry)

    def _compact_expiry(self) -> None:
        """Keep only the entries ``_expire`` would act on: one per registered connection
        and subscription whose token expires (at the time it now expires). Amortised
        O(1) per entry: the heap has doubled since the last compaction."""
        grace = self.config.expired_grace
        clients = self.registry.clients
        kept = []
        for entry in self.expiry:
            when, _, client_id, channel = entry
            client = clients.get(client_id)
            if client is None or client.closed:
                continue
            if not channel:
                if client.expires_at and client.expires_at + grace == when:
                    kept.append(entry)
                continue
            sub = client.subs.get(channel)
            if sub is not None and sub.expires_at and sub.expires_at + grace == when:
                kept.append(entry)
        heapq.heapify(kept)
        self.expiry[:] = kept  # in place: the same list as any loop popping from it
        self._expiry_compact_at = max(EXPIRY_COMPACT_MIN, 2 * len(kept))

    # --- the ticker ---------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time() + TICK
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            now = loop.time()
            if now - next_at > TICK:
                # the loop was held up (a stall: a burst of work, a machine short of
                # cores). No burst of ticks to catch up: it would check pong deadlines
                # moments after its own pings; and this tick waits one more, so the
                # pongs that came meanwhile are read before any deadline is checked
                next_at = now + TICK
                continue
            next_at += TICK
            try:
                self.tick()
            except Exception:
                log.exception("hub tick failed")

    def tick(self) -> None:
        """Every TICK: pings, pong deadlines, token expiry."""
        self.ticks += 1
        size = len(self.wheel)
        pong_ticks = math.ceil(self.config.pong_timeout / TICK)
        for client in list(self.wheel[(self.ticks - pong_ticks) % size]):
            if client.awaiting_pong and not client.closed:
                client.disconnect(DISCONNECT_NO_PONG)
        for client in self.wheel[self.ticks % size]:
            if not client.closed:
                client.sink.send_ping()
                client.awaiting_pong = client.sink.wants_pong
        self._expire(time.time())
        self._close_stale(time.monotonic())

    def _close_stale(self, now: float) -> None:
        deadline = now - self.config.connect_timeout
        pending = self.registry.pending
        stale = [c for c, opened in pending.items() if opened <= deadline]
        for client in stale:
            del pending[client]
            if not client.connected:
                client.disconnect(DISCONNECT_STALE)

    def _expire(self, now: float) -> None:
        grace = self.config.expired_grace
        heap = self.expiry
        clients = self.registry.clients
        while heap and heap[0][0] <= now:
            _, _, client_id, channel = heapq.heappop(heap)
            client = clients.get(client_id)
            if client is None or client.closed:
                continue
            if not channel:
                if client.expires_at and client.expires_at + grace <= now:
                    if self.proxies.refresh is not None:
                        # the backend decides, from a task: the timer never waits for it
                        self.spawn(client.refresh_by_proxy(self.proxies.refresh))
                    else:
                        client.disconnect(DISCONNECT_EXPIRED)
                continue
            sub = client.subs.get(channel)
            if sub is not None and sub.expires_at and sub.expires_at + grace <= now:
                proxy = self.proxies.channel(sub.options, "sub_refresh")
                if proxy is not None and not sub.server_side:
                    self.spawn(client.sub_refresh_by_proxy(sub, proxy))
                    continue
                code, reason = UNSUBSCRIBE_EXPIRED
                client.sink.push_unsubscribe(channel, code, reason)
                self.spawn(client.unsubscribe(channel))
