"""Hub: the node-local core that every connection, dialect and API call meets.

It keeps the registry of clients, online users (one UserSession each) and channel
subscribers; turns engine deliveries into pushes (one encode per dialect, then a
non-blocking write per subscriber); runs the one shared timer that sends pings,
drops connections whose pongs stop and expires tokens; and carries out the server
API's orders, routing those addressed to users through the engine so that every
node acts on its own connections.
"""

from __future__ import annotations

import asyncio
import fnmatch
import heapq
import itertools
import logging
import math
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from pushgate import __version__, metrics
from pushgate.engine.base import (
    ClientInfo,
    Engine,
    Publication,
    PublishOptions,
    PublishResult,
    StreamPosition,
)
from pushgate.engine.tracking import UserStatus
from pushgate.hub import control, status
from pushgate.hub.channels import ChannelRules
from pushgate.hub.client import Client, has_history
from pushgate.hub.errors import (
    DISCONNECT_EXPIRED,
    DISCONNECT_FORCE_NO_RECONNECT,
    DISCONNECT_INSUFFICIENT_STATE,
    DISCONNECT_NO_PONG,
    DISCONNECT_NODE_LOST,
    DISCONNECT_SERVER_ERROR,
    DISCONNECT_SHUTDOWN,
    DISCONNECT_SLOW,
    DISCONNECT_STALE,
    UNSUBSCRIBE_EXPIRED,
    UNSUBSCRIBE_INSUFFICIENT_STATE,
    UNSUBSCRIBE_SERVER,
    Disconnect,
    ErrorLimitExceeded,
    ErrorNotAvailable,
    HubError,
)
from pushgate.hub.user_session import UserSession
from pushgate.proxy import Proxies

if TYPE_CHECKING:
    from pushgate.auth import TokenVerifier
    from pushgate.config import Config
    from pushgate.hub.sink import ClientSink
    from pushgate.hub.subscription import Subscription

log = logging.getLogger("pushgate.hub")

#: the ping wheel's step: each connection is pinged on one slot of ping_interval / TICK,
#: so a node's pings (and the pongs they bring back) come in small groups ten times a
#: second rather than one large burst per second
TICK = 0.1
#: the expiry heap is compacted (entries of closed connections, left subscriptions and
#: superseded tokens dropped) when it reaches twice its size after the last compaction,
#: and never below this many entries
EXPIRY_COMPACT_MIN = 1024


class Hub:
    def __init__(self, config: Config, engine: Engine, tokens: TokenVerifier) -> None:
        self.config = config
        self.engine = engine
        self.tokens = tokens
        self.rules = ChannelRules.build(config.channel, config.namespaces)
        #: the backend's proxies (docs/proxy.md): who connects, subscribes, publishes…
        self.proxies = Proxies(config)
        self.node_id = str(uuid.uuid4())
        self.node_name = config.server.name or f"{socket.gethostname()}_{os.getpid()}"
        self.version = __version__
        self.started_at = time.time()
        self.clients: dict[str, Client] = {}
        self.users: dict[str, UserSession] = {}
        self.channels: dict[str, dict[Client, Subscription]] = {}
        self._engine_subs: dict[str, asyncio.Future] = {}
        self._positions: dict[str, StreamPosition] = {}
        #: channels with delta subscribers → how many; and their last publication here,
        #: the base the next one's delta is made against (protocol/centrifugo/fossil.py)
        self._delta_subscribers: Counter[str] = Counter()
        self._last_publications: dict[str, Publication] = {}
        self._wheel: list[set[Client]] = [set() for _ in range(self._wheel_size)]
        self._ticks = 0
        self._expiry: list[tuple[float, int, str, str]] = []
        self._expiry_compact_at = EXPIRY_COMPACT_MIN
        self._seq = itertools.count()
        self._tasks: set[asyncio.Task] = set()
        self._ticker: asyncio.Task | None = None
        # connections that have not sent connect yet → when they opened
        self._pending: dict[Client, float] = {}
        #: publications accepted and deliveries written by this node (admin page rates)
        self.published = 0
        self.delivered = 0
        #: connections registered since the node started (gc_freeze.py)
        self.registered = 0
        #: set when the node stops taking work (shutdown): /ready answers 503
        self.draining = False
        #: runs the commands other nodes forward for this node's emulation sessions
        #: (set by the transport: transport/emulation.py)
        self.emulation: Callable[[control.EmulationCommand], None] | None = None
        self.disconnects: Counter[int] = Counter()
        self.recoveries: Counter[str] = Counter()
        if config.client.insecure:
            log.warning(
                "client.insecure is on: clients connect without tokens and may subscribe, "
                "publish, read presence and history anywhere; never use it in production"
            )

    @property
    def _wheel_size(self) -> int:
        return max(1, math.ceil(self.config.client.ping_interval / TICK))

    @property
    def ping_seconds(self) -> int:
        """The ping interval as the timer keeps it (whole ticks), told to clients."""
        return math.ceil(round(self._wheel_size * TICK, 6))

    # --- lifecycle ----------------------------------------------------------------
    async def start(self) -> None:
        self.engine.track(status.tracking_of(self.config, self.node_name))
        await self.engine.start(self, self.node_id)
        self._ticker = asyncio.create_task(self._run_ticker(), name="pushgate-hub-ticker")

    async def shutdown(self, disconnect: Disconnect = DISCONNECT_SHUTDOWN) -> None:
        self.draining = True
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        # connections that have not sent connect yet are told too, or their handlers
        # would keep the server's shutdown waiting
        for client in [*self.clients.values(), *self._pending]:
            client.disconnect(disconnect)
        # let the connections leave their channels (presence, leave, user status) while
        # the engine is still there, then stop what is left
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.config.server.shutdown_timeout)
        for task in list(self._tasks):
            task.cancel()
        await self.engine.close()
        await self.proxies.close()

    def spawn(self, coro) -> asyncio.Task:
        """Run a background coroutine whose failure is logged, never lost."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    # --- registry -----------------------------------------------------------------
    def new_client(self, sink: ClientSink, transport: str) -> Client:
        client = Client(self, sink, transport)
        self._pending[client] = time.monotonic()
        return client

    def forget_pending(self, client: Client) -> None:
        self._pending.pop(client, None)

    async def register(self, client: Client) -> None:
        self._pending.pop(client, None)
        self.clients[client.id] = client
        self.registered += 1
        client.ping_slot = self._ticks % len(self._wheel)
        self._wheel[client.ping_slot].add(client)
        self.schedule_expiry(client)
        if not client.user:
            return
        session = self.users.get(client.user)
        if session is None:
            session = self.users[client.user] = UserSession(client.user)
        session.add(client)
        if status.tracked(client):
            positions = await self.engine.connection_opened(
                status.connection_of(client), client.attention
            )
            client.read_positions = positions or None

    async def unregister(self, client: Client) -> None:
        self.clients.pop(client.id, None)
        if client.ping_slot >= 0:
            self._wheel[client.ping_slot].discard(client)
        session = self.users.get(client.user)
        if session is None:
            return
        session.remove(client)
        if not session:
            del self.users[client.user]
        if status.tracked(client):
            try:
                await self.engine.connection_closed(
                    status.connection_of(client), client.close_reason or "connection closed"
                )
            except Exception as exc:  # the engine retries it (or reaps it if this node dies)
                log.warning("cannot tell the engine %s closed: %s", client.id, exc)

    def user_connection_count(self, user: str) -> int:
        session = self.users.get(user)
        return len(session) if session else 0

    # --- subscriptions ------------------------------------------------------------
    async def add_subscription(self, sub: Subscription) -> None:
        channel = sub.channel
        subs = self.channels.get(channel)
        if subs is None:
            subs = self.channels[channel] = {}
            ready = self._engine_subs[channel] = asyncio.get_running_loop().create_future()
            subs[sub.client] = sub
            try:
                await self.engine.subscribe(channel)
            except BaseException as exc:
                ready.set_exception(exc)
                ready.exception()  # mark retrieved
                del self._engine_subs[channel]
                raise
            ready.set_result(None)
        else:
            subs[sub.client] = sub
            ready = self._engine_subs.get(channel)
            if ready is not None and not ready.done():
                await asyncio.shield(ready)
        if sub.delta:
            self._delta_subscribers[channel] += 1
        if sub.options.presence or sub.options.join_leave:
            await self.engine.member_add(
                channel,
                sub.client.chan_info_for(channel),
                presence=sub.options.presence,
                ttl=self.config.engine.presence_ttl,
            )

    def after_activate(self, sub: Subscription) -> None:
        """The subscriber is live: announce it to the channel."""
        if sub.options.join_leave:
            self.spawn(
                self.engine.member_joined(sub.channel, sub.client.chan_info_for(sub.channel))
            )

    async def announce_presence(self, sub: Subscription, present: bool) -> None:
        """Re-announce a live subscriber whose ``chan_info`` changed, or say it left while
        staying subscribed (XMPP presence: a change of show, or unavailable)."""
        channel = sub.channel
        info = sub.client.chan_info_for(channel)
        sub.present = present  # the heartbeat's presence refresh follows it
        options = sub.options
        if not (options.presence or options.join_leave):
            return
        if not present:
            await self.engine.member_remove(channel, sub.client.id, announce=sub.active)
            return
        ttl = self.config.engine.presence_ttl
        await self.engine.member_add(channel, info, presence=options.presence, ttl=ttl)
        if sub.active and options.join_leave:
            await self.engine.member_joined(channel, info)

    async def refresh_presence(self, sub: Subscription) -> None:
        """Rewrite a present subscriber's presence entry after its ``chan_info`` changed,
        without a join (XMPP learns the resource after login subscribed the channels)."""
        if sub.options.presence and sub.present and sub.client.subs.get(sub.channel) is sub:
            info = sub.client.chan_info_for(sub.channel)
            await self.engine.member_update(sub.channel, info, self.config.engine.presence_ttl)

    async def remove_subscription(self, sub: Subscription, *, announce: bool) -> None:
        channel = sub.channel
        subs = self.channels.get(channel)
        if subs is not None and subs.get(sub.client) is sub:
            del subs[sub.client]
            if sub.delta:
                self._delta_subscribers[channel] -= 1
                if self._delta_subscribers[channel] <= 0:
                    del self._delta_subscribers[channel]
                    self._last_publications.pop(channel, None)
            if not subs:
                del self.channels[channel]
                self._engine_subs.pop(channel, None)
                self._positions.pop(channel, None)
                await self.engine.unsubscribe(channel)
        # The local state is already gone; what follows tells the cluster, and an engine
        # outage must not abort the caller's cleanup (a closing connection would stay
        # registered forever). The engine says it again later (redis: at its heartbeats).
        if not (sub.options.presence or sub.options.join_leave):
            return
        try:
            await self.engine.member_remove(
                channel, sub.client.id, announce=announce and sub.active
            )
        except Exception as exc:
            log.warning("cannot tell the engine %s left %s: %s", sub.client.id, channel, exc)

    # --- engine handler: deliveries -----------------------------------------------
    def handle_publication(self, channel: str, pub: Publication, epoch: str) -> None:
        subs = self.channels.get(channel)
        if not subs:
            return
        if pub.offset:
            last = self._positions.get(channel)
            if last is None or last.epoch != epoch or pub.offset > last.offset:
                self._positions[channel] = StreamPosition(pub.offset, epoch)
            if last is not None and (last.epoch != epoch or pub.offset > last.offset + 1):
                log.warning(
                    "gap in %s: %d/%s after %d/%s; positioned subscribers resubscribe",
                    channel,
                    pub.offset,
                    epoch,
                    last.offset,
                    last.epoch,
                )
                # positioned subscribers start again from their position (recovering
                # where they may); the others take publications as they come
                self._resubscribe_all(channel)
                subs = self.channels.get(channel)
                if not subs:
                    return
        if channel in self._delta_subscribers:
            self._chain(channel, pub, epoch)
        for sub in subs.values():
            try:
                sub.deliver(pub)
            except Exception:
                # one broken connection must not cost the channel's other subscribers
                # their copy: it is dropped, and the loop goes on
                self._delivery_failed(sub.client, channel)
        self.delivered += len(subs)

    def _chain(self, channel: str, pub: Publication, epoch: str) -> None:
        """Give ``pub`` the channel's publication before it as its delta base, when its
        publisher asked for delta and it directly follows that one; keep no chain."""
        last = self._last_publications.get(channel)
        if last is not None:
            follows = not pub.offset or (pub.offset == last.offset + 1 and last.epoch == epoch)
            if pub.use_delta and follows:
                pub.prev = last
            last.prev = None
        self._last_publications[channel] = pub

    def _delivery_failed(self, client: Client, channel: str) -> None:
        log.exception("delivery to client=%s in %s failed; disconnecting it", client.id, channel)
        try:
            client.disconnect(DISCONNECT_SERVER_ERROR)
        except Exception:
            log.exception("cannot disconnect client=%s", client.id)

    def _resubscribe_all(self, channel: str) -> None:
        """Positioned subscribers may have missed publications: make them recover.

        As in Centrifugo, only subscriptions that track their position (positioned or
        recoverable) are concerned; the others take publications at most once. A
        client-side subscription gets the "insufficient state" unsubscribe (the client
        resubscribes with its position); a server-side one cannot be resubscribed by the
        client, so that connection reconnects instead (and recovers on connect).
        """
        code, reason = UNSUBSCRIBE_INSUFFICIENT_STATE
        self._positions.pop(channel, None)
        for sub in list(self.channels.get(channel, {}).values()):
            if not sub.positioned:
                continue
            client = sub.client
            sub.retire()
            if sub.server_side or not client.sink.wants_pong:
                client.disconnect(DISCONNECT_INSUFFICIENT_STATE)
            else:
                client.sink.push_unsubscribe(channel, code, reason)
                self.spawn(client.unsubscribe(channel))

    def handle_resync(self) -> None:
        self.spawn(self._check_positions())

    async def _check_positions(self) -> None:
        """After an engine outage: any channel whose stream moved on without us (or was
        lost) has its subscribers recover; the others carry on untouched."""
        for channel in list(self.channels):
            known = self._positions.get(channel)
            if known is None:
                continue  # no position was handed out: nobody can recover anyway
            try:
                current = (await self.engine.history(channel, limit=0)).position
            except Exception as exc:
                log.warning("cannot check %s after an engine outage: %s", channel, exc)
                self._resubscribe_all(channel)
                continue
            if current != known:
                log.warning(
                    "%s moved from %s to %s unseen: subscribers recover", channel, known, current
                )
                self._resubscribe_all(channel)

    def note_position(self, channel: str, position: StreamPosition) -> None:
        """A subscriber was told ``position``: what later publications must follow."""
        if channel in self.channels:
            known = self._positions.get(channel)
            if known is None or known.epoch != position.epoch or position.offset > known.offset:
                self._positions[channel] = position

    def handle_status(self, user: str, user_status: UserStatus) -> None:
        status.announce(self, user, user_status)

    async def handle_node_lost(self) -> None:
        """The cluster found this node dead and removed its connections (announcing
        their leaves and disconnects): every connection is closed, to come back fresh."""
        log.error("this node was declared dead by the cluster: closing every connection")
        for client in [*self.clients.values(), *self._pending]:
            client.disconnect(DISCONNECT_NODE_LOST)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.config.server.shutdown_timeout)

    def node_snapshot(
        self,
        presence: bool = True,
        users: bool = True,
        members: bool = False,
    ) -> dict:
        """What the engine's heartbeat needs of this node: its info; its users and
        present subscribers (``presence``, ``users``: only when asked, they can be
        many); with ``members``, every membership (channel, info, presence, joined) and
        tracked connection (Connection, attention) — to write them all again after
        Redis lost them."""
        snapshot = self._snapshot(presence, users)
        if members:
            snapshot["members"] = [
                (
                    channel,
                    sub.client.chan_info_for(channel),
                    sub.options.presence,
                    sub.active and sub.options.join_leave,
                )
                for channel, subs in self.channels.items()
                for sub in subs.values()
                if (sub.options.presence or sub.options.join_leave) and sub.present
            ]
            snapshot["connections"] = [
                (status.connection_of(client), client.attention)
                for client in self.clients.values()
                if status.tracked(client)
            ]
        return snapshot

    def _snapshot(self, presence: bool, users: bool) -> dict:
        presence_entries = (
            [
                (channel, sub.client.chan_info_for(channel))
                for channel, subs in self.channels.items()
                for sub in subs.values()
                if sub.options.presence and sub.present
            ]
            if presence
            else []
        )
        return {
            "info": self.local_info(),
            "users": list(self.users) if users else [],
            "presence": presence_entries,
        }

    def handle_join(self, channel: str, info: ClientInfo) -> None:
        subs = self.channels.get(channel)
        if not subs:
            return
        cache: dict = {}
        for sub in subs.values():
            if sub.active and sub.join_leave:
                try:
                    sub.client.sink.push_join(channel, info, cache)
                except Exception:
                    self._delivery_failed(sub.client, channel)

    def handle_leave(self, channel: str, info: ClientInfo) -> None:
        subs = self.channels.get(channel)
        if not subs:
            return
        cache: dict = {}
        for sub in subs.values():
            if sub.active and sub.join_leave:
                try:
                    sub.client.sink.push_leave(channel, info, cache)
                except Exception:
                    self._delivery_failed(sub.client, channel)

    def handle_control(self, message: dict) -> None:
        """A control message from any node (hub/control.py): decoded, then acted on
        by the ``on_*`` method of its kind."""
        control.dispatch(message, self)

    def _targets(
        self,
        user: str,
        client: str | None = None,
        session: str | None = None,
        whitelist: list[str] | None = None,
    ) -> list[Client]:
        """This node's connections an order addressed to ``user`` applies to."""
        user_session = self.users.get(user)
        if user_session is None:
            return []
        return user_session.select(client, session, whitelist)

    def on_disconnect(self, order: control.DisconnectUser) -> None:
        disconnect = Disconnect(order.code, order.reason)
        for client in self._targets(order.user, order.client, order.session, order.whitelist):
            client.disconnect(disconnect)

    def on_unsubscribe(self, order: control.UnsubscribeUser) -> None:
        for client in self._targets(order.user, order.client, order.session):
            self.spawn(self._server_unsubscribe(client, order.channel))

    def on_subscribe(self, order: control.SubscribeUser) -> None:
        for client in self._targets(order.user, order.client, order.session):
            self.spawn(self._server_subscribe(client, order))

    def on_refresh(self, order: control.RefreshUser) -> None:
        for client in self._targets(order.user, order.client, order.session):
            self._server_refresh(client, order)

    def on_message(self, order: control.MessageUser) -> None:
        data = order.data.encode()
        # an XMPP chat names the dialects it may reach (xmpp.chat_to_other_dialects)
        dialects = order.dialects
        for client in self._targets(order.user):
            if dialects is None or client.sink.dialect in dialects:
                client.sink.push_message(data)

    def on_emulation(self, command: control.EmulationCommand) -> None:
        if self.emulation is not None:
            self.emulation(command)

    def on_survey(self, survey: control.Survey) -> None:
        if survey.sender != self.node_id:
            self.spawn(self._answer_survey(survey))

    async def _server_unsubscribe(self, client: Client, channel: str) -> None:
        if channel in client.subs:
            code, reason = UNSUBSCRIBE_SERVER
            client.sink.push_unsubscribe(channel, code, reason)
            await client.unsubscribe(channel)

    async def _server_subscribe(self, client: Client, order: control.SubscribeUser) -> None:
        channel = order.channel
        try:
            result = await client.subscribe_server_side(
                channel,
                chan_info=order.info.encode() if order.info else None,
                recover_since=order.recover_since,
                override=order.override,
                data=order.data.encode() if order.data else None,
                expires_at=float(order.expire_at or 0),
            )
        except HubError as exc:
            log.info("API subscribe of %s to %s failed: %s", client.id, channel, exc.message)
            return
        if client.closed:
            return
        client.sink.push_subscribe(channel, result)
        for pub in result.publications:
            client.sink.push_publication(channel, pub)
        client.activate(client.subs[channel])

    def _server_refresh(self, client: Client, order: control.RefreshUser) -> None:
        if order.expired:
            client.disconnect(DISCONNECT_EXPIRED)
            return
        if order.info:
            client.conn_info = order.info.encode()
        if order.expire_at:
            client.expires_at = float(order.expire_at)
            self.schedule_expiry(client)
            client.sink.push_refresh(True, max(0, int(client.expires_at - time.time())))

    # --- the shared timer ---------------------------------------------------------
    def schedule_expiry(self, client: Client) -> None:
        if client.expires_at:
            when = client.expires_at + self.config.client.expired_grace
            self._push_expiry((when, next(self._seq), client.id, ""))

    def schedule_sub_expiry(self, sub: Subscription) -> None:
        if sub.expires_at:
            when = sub.expires_at + self.config.client.expired_grace
            self._push_expiry((when, next(self._seq), sub.client.id, sub.channel))

    def _push_expiry(self, entry: tuple[float, int, str, str]) -> None:
        # An entry stays until its time comes, and tokens often live a day: without
        # compaction, every connection closed before its token expired would be kept
        # that long (~240 bytes each: the entry and the client's id).
        if len(self._expiry) >= self._expiry_compact_at:
            self._compact_expiry()
        heapq.heappush(self._expiry, entry)

    def _compact_expiry(self) -> None:
        """Keep only the entries ``_expire`` would act on: one per registered connection
        and subscription whose token expires (at the time it now expires). Amortised
        O(1) per entry: the heap has doubled since the last compaction."""
        grace = self.config.client.expired_grace
        clients = self.clients
        kept = []
        for entry in self._expiry:
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
        self._expiry[:] = kept  # in place: the same list as any loop popping from it
        self._expiry_compact_at = max(EXPIRY_COMPACT_MIN, 2 * len(kept))

    async def _run_ticker(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time() + TICK
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at += TICK
            try:
                self.tick()
            except Exception:
                log.exception("hub tick failed")

    def tick(self) -> None:
        """Every TICK: pings, pong deadlines, token expiry."""
        self._ticks += 1
        size = len(self._wheel)
        pong_ticks = math.ceil(self.config.client.pong_timeout / TICK)
        for client in list(self._wheel[(self._ticks - pong_ticks) % size]):
            if client.awaiting_pong and not client.closed:
                client.disconnect(DISCONNECT_NO_PONG)
        for client in self._wheel[self._ticks % size]:
            if not client.closed:
                client.sink.send_ping()
                client.awaiting_pong = client.sink.wants_pong
        self._expire(time.time())
        self._close_stale(time.monotonic())

    def _close_stale(self, now: float) -> None:
        deadline = now - self.config.client.connect_timeout
        stale = [c for c, opened in self._pending.items() if opened <= deadline]
        for client in stale:
            del self._pending[client]
            if not client.connected:
                client.disconnect(DISCONNECT_STALE)

    def _expire(self, now: float) -> None:
        grace = self.config.client.expired_grace
        heap = self._expiry
        while heap and heap[0][0] <= now:
            _, _, client_id, channel = heapq.heappop(heap)
            client = self.clients.get(client_id)
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

    # --- counters -----------------------------------------------------------------
    def count_disconnect(self, code: int) -> None:
        self.disconnects[code] += 1
        # Centrifugo's range (the server API refuses others): a bounded label set
        metrics.DISCONNECTS.labels(str(code) if 3000 <= code <= 4999 else "other").inc()
        if code == DISCONNECT_SLOW.code:
            metrics.SLOW_DROPS.inc()

    def count_recovery(self, recovered: bool) -> None:
        outcome = "recovered" if recovered else "not_recovered"
        self.recoveries[outcome] += 1
        metrics.RECOVERIES.labels(outcome).inc()

    # --- server API ---------------------------------------------------------------
    def publish(
        self,
        channel: str,
        data: bytes,
        *,
        info: ClientInfo | None = None,
        tags: dict[str, str] | None = None,
        skip_history: bool = False,
        idempotency_key: str | None = None,
        internal: bool = False,
        delta: bool = False,
    ) -> PublishResult:
        """Publish ``data`` (JSON bytes, or BinaryData) to ``channel``, started now
        (HubError at once for a channel no rule allows); the new position, awaitable
        (engine.publish). ``internal``: the server's own publication, the only kind a
        reserved channel takes. ``delta``: it may go to subscribers that negotiated
        delta compression as a delta against the one before (also when the namespace
        sets ``delta_publish``)."""
        options = self.rules.options(channel, internal=internal)
        pub = Publication(
            data,
            info=info,
            tags=tags or None,
            time=int(time.time() * 1000),
            use_delta=delta or options.delta_publish,
        )
        self.published += 1
        if not (has_history(options) and not skip_history):
            opts = PublishOptions(idempotency_key=idempotency_key)
        else:
            opts = PublishOptions(options.history_size, options.history_ttl, idempotency_key)
        return self.engine.publish(channel, pub, opts)

    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        if not self.rules.options(channel).presence:
            raise ErrorNotAvailable
        clients = await self.engine.presence(channel)
        limit = self.config.client.presence_max_size
        if limit and len(clients) > limit:
            raise ErrorLimitExceeded(f"limit exceeded: presence larger than {limit}")
        return clients

    async def user_presence(self, channel: str, user: str) -> list[ClientInfo]:
        """``user``'s connections present in ``channel``, cluster-wide; none where the
        channel keeps no presence. For the node's own checks (XMPP contacts): no size
        limit, as nothing of it goes to a client."""
        if not user or not self.rules.options(channel).presence:
            return []
        clients = await self.engine.presence(channel)
        return [info for info in clients.values() if info.user == user]

    async def presence_stats(self, channel: str) -> tuple[int, int]:
        if not self.rules.options(channel).presence:
            raise ErrorNotAvailable
        return await self.engine.presence_stats(channel)

    async def control(self, message: control.ControlMessage) -> None:
        """Send ``message`` to every node (this one included)."""
        await self.engine.publish_control(message.encode())

    async def disconnect_user(
        self,
        user: str,
        *,
        client: str | None = None,
        session: str | None = None,
        whitelist: list[str] | None = None,
        disconnect: Disconnect = DISCONNECT_FORCE_NO_RECONNECT,
    ) -> None:
        await self.control(
            control.DisconnectUser(
                user, disconnect.code, disconnect.reason, client, session, whitelist
            )
        )

    async def subscribe_user(
        self,
        user: str,
        channel: str,
        *,
        client: str | None = None,
        session: str | None = None,
        info: str | None = None,
        data: str | None = None,
        recover_since: StreamPosition | None = None,
        expire_at: int | None = None,
        override: dict[str, bool] | None = None,
    ) -> None:
        """Subscribe ``user``'s connections (or one client or session of theirs), on
        every node, to ``channel``; ``info`` and ``data`` are JSON text."""
        await self.control(
            control.SubscribeUser(
                user, channel, client, session, info, data, recover_since, expire_at, override
            )
        )

    async def unsubscribe_user(
        self, user: str, channel: str, *, client: str | None = None, session: str | None = None
    ) -> None:
        await self.control(control.UnsubscribeUser(user, channel, client, session))

    async def refresh_user(
        self,
        user: str,
        *,
        client: str | None = None,
        session: str | None = None,
        expired: bool = False,
        expire_at: int | None = None,
        info: str | None = None,
    ) -> None:
        """End (``expired``), extend (``expire_at``) or re-describe (``info``, JSON
        text) ``user``'s connections on every node."""
        await self.control(control.RefreshUser(user, client, session, expired, expire_at, info))

    async def message_user(self, user: str, data: str, dialects: list[str] | None = None) -> None:
        """A ``message`` push (``data``: JSON text) to every connection of ``user``, or
        only those of ``dialects``."""
        await self.control(control.MessageUser(user, data, dialects))

    async def forward_emulation(self, node: str, session: str, data: str | bytes) -> None:
        """Commands for an emulation session another node holds (its ``emulation``)."""
        await self.control(control.EmulationCommand(node, session, data))

    def local_info(self) -> dict:
        return {
            "uid": self.node_id,
            "name": self.node_name,
            "version": self.version,
            "num_clients": len(self.clients),
            "num_users": len(self.users),
            "num_channels": len(self.channels),
            "num_subs": sum(len(s) for s in self.channels.values()),
            "uptime": int(time.time() - self.started_at),
        }

    async def info(self) -> list[dict]:
        return await self.engine.nodes(self.local_info())

    async def _answer_survey(self, survey: control.Survey) -> None:
        if survey.question == "channels":
            answer: dict = {"channels": self.channel_counts(survey.pattern)}
        elif survey.question == "connections":
            answer = {"connections": self.user_connections(survey.user or "")}
        elif survey.question == "users":
            answer = {"users": self.product_users()}
        else:
            answer = {"error": f"unknown question {survey.question!r}"}
        await self.engine.answer_survey(survey.reply_to, answer)

    async def _survey(self, question: control.Survey, local_answer: dict) -> list[dict]:
        """Every node's answer to ``question``, this node's ``local_answer`` first."""

        def ask(reply_to: str) -> dict:
            return control.Survey(
                question.question, reply_to, self.node_id, question.pattern, question.user
            ).encode()

        return await self.engine.survey(ask, local_answer)

    def user_connections(self, user: str) -> list[dict]:
        """This node's connections of ``user``: what the admin page lists."""
        session = self.users.get(user)
        if session is None:
            return []
        return [
            {
                "client": client.id,
                "transport": client.transport,
                "node": self.node_name,
                "channels": sorted(client.subs),
            }
            for client in session.clients.values()
        ]

    async def cluster_user_connections(self, user: str) -> list[dict]:
        answers = await self._survey(
            control.Survey("connections", user=user), {"connections": self.user_connections(user)}
        )
        return [c for answer in answers for c in answer.get("connections", [])]

    def product_users(self) -> list[str]:
        """This node's online users, less the server's own identities (the admin page)."""
        return [
            user
            for user, session in self.users.items()
            if not all(client.internal for client in session.clients.values())
        ]

    async def cluster_user_count(self) -> int:
        """Distinct users online on any node: a user on several nodes counts once."""
        answers = await self._survey(control.Survey("users"), {"users": self.product_users()})
        return len({user for answer in answers for user in answer.get("users", [])})

    async def cluster_channel_counts(self, pattern: str | None = None) -> dict[str, int]:
        """Channels with subscribers on any node → subscribers, summed over the cluster."""
        answers = await self._survey(
            control.Survey("channels", pattern=pattern), {"channels": self.channel_counts(pattern)}
        )
        total: Counter[str] = Counter()
        for answer in answers:
            total.update(answer.get("channels", {}))
        return dict(total)

    def channel_counts(self, pattern: str | None = None) -> dict[str, int]:
        return {
            channel: len(subs)
            for channel, subs in self.channels.items()
            if not pattern or fnmatch.fnmatchcase(channel, pattern)
        }

    async def user_status(self, users: list[str]) -> dict[str, tuple[bool, float | None]]:
        return await self.engine.user_status(users)
