"""Hub: the node-local core that every connection, dialect and API call meets.

It is a composition of three parts, each in its own module, and the glue between them:

- ``registry.py`` ``Registry``: the connections (pending, then registered) and the
  online users, one UserSession each;
- ``delivery.py`` ``Delivery``: channel subscribers, and the engine's deliveries
  turned into pushes (one encode per dialect, then a non-blocking write per
  subscriber);
- ``timers.py`` ``Timers``: the one shared timer — ping wheel, pong deadlines, token
  expiry heap, stale connects.

The hub itself is the engine's handler (``EngineHandler``), acts on the control
messages every node receives (``control.py``: orders addressed to users, emulation
commands, surveys), and is the server API's façade: ``publish``, ``presence``,
``disconnect_user``… A Client reaches back into it only through ``ClientHub``
(client.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from pushgate import __version__, metrics
from pushgate.engine.base import (
    ClientInfo,
    Engine,
    NodeSnapshot,
    Publication,
    PublishOptions,
    PublishResult,
    StreamPosition,
)
from pushgate.engine.tracking import UserStatus
from pushgate.hub import control, status
from pushgate.hub.backlog import Backlog
from pushgate.hub.channels import ChannelRules
from pushgate.hub.client import Client
from pushgate.hub.control import Survey
from pushgate.hub.delivery import Delivery
from pushgate.hub.departures import Departures
from pushgate.hub.errors import (
    DISCONNECT_EXPIRED,
    DISCONNECT_FORCE_NO_RECONNECT,
    DISCONNECT_NODE_LOST,
    DISCONNECT_SHUTDOWN,
    DISCONNECT_SLOW,
    UNSUBSCRIBE_SERVER,
    Disconnect,
    ErrorLimitExceeded,
    ErrorNotAvailable,
    HubError,
)
from pushgate.hub.recovery import has_history
from pushgate.hub.registry import Registry
from pushgate.hub.timers import Timers
from pushgate.json_types import JsonObject
from pushgate.proxy import Proxies

if TYPE_CHECKING:
    from pushgate.auth import TokenVerifier
    from pushgate.config import Config
    from pushgate.hub.sink import ClientSink

log = logging.getLogger("pushgate.hub")


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
        self._tasks: set[asyncio.Task[Any]] = set()
        self.registry = registry = Registry()
        #: writers with bytes waiting to go out (the write-queue gauge)
        self.backlog = Backlog()
        #: closed connections' goodbyes, started a few per loop iteration
        self.departures = Departures()
        self.delivery = delivery = Delivery(engine, config.engine.presence_ttl, self.spawn)
        self.timers = timers = Timers(config.client, registry, self.proxies, self.spawn)
        #: the parts' state, for the API, the admin page and the engine's heartbeat
        self.clients = registry.clients
        self.users = registry.users
        self.channels = delivery.channels
        # bound straight to the part that does the work, so that a call from the engine or
        # a Client costs no extra hop (handle_publication is the hot path); typed as the
        # parts' methods are
        self.handle_publication = delivery.handle_publication
        self.handle_join = delivery.handle_join
        self.handle_leave = delivery.handle_leave
        self.note_position = delivery.note_position
        self.add_subscription = delivery.add_subscription
        self.remove_subscription = delivery.remove_subscription
        self.after_activate = delivery.after_activate
        self.announce_presence = delivery.announce_presence
        self.refresh_presence = delivery.refresh_presence
        self.channel_counts = delivery.channel_counts
        self.forget_pending = registry.forget_pending
        self.user_connection_count = registry.user_connection_count
        self.product_users = registry.product_users
        self.schedule_expiry = timers.schedule_expiry
        self.schedule_sub_expiry = timers.schedule_sub_expiry
        self.tick = timers.tick
        #: publications accepted by this node (admin page rates)
        self.published = 0
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
    def ping_seconds(self) -> int:
        """The ping interval as the timer keeps it (whole ticks), told to clients."""
        return self.timers.ping_seconds

    @property
    def delivered(self) -> int:
        """Deliveries written by this node (admin page rates)."""
        return self.delivery.delivered

    @property
    def registered(self) -> int:
        """Connections registered since the node started (gc_freeze.py)."""
        return self.registry.registered

    # --- lifecycle ----------------------------------------------------------------
    async def start(self) -> None:
        self.engine.track(status.tracking_of(self.config, self.node_name))
        await self.engine.start(self, self.node_id)
        self.timers.start()

    async def shutdown(self, disconnect: Disconnect = DISCONNECT_SHUTDOWN) -> None:
        self.draining = True
        self.timers.stop()
        # connections that have not sent connect yet are told too, or their handlers
        # would keep the server's shutdown waiting
        for client in self.registry.everyone():
            client.disconnect(disconnect)
        # let the connections leave their channels (presence, leave, user status) while
        # the engine is still there, then stop what is left
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.config.server.shutdown_timeout)
        for task in list(self._tasks):
            task.cancel()
        await self.engine.close()
        await self.proxies.close()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run a background coroutine whose failure is logged, never lost."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    # --- connections --------------------------------------------------------------
    def new_client(self, sink: ClientSink, transport: str) -> Client:
        client = Client(self, sink, transport)
        self.registry.open(client)
        return client

    async def register(self, client: Client) -> None:
        """``client`` connected: listed, pinged, its expiry kept; a tracked user's
        connection told to the engine (which gives back the user's read positions)."""
        self.registry.add(client)
        self.timers.add(client)
        if client.user and status.tracked(client):
            positions = await self.engine.connection_opened(
                status.connection_of(client), client.attention
            )
            client.read_positions = positions or None

    async def unregister(self, client: Client) -> None:
        self.timers.remove(client)
        if not self.registry.remove(client) or not status.tracked(client):
            return
        try:
            await self.engine.connection_closed(
                status.connection_of(client), client.close_reason or "connection closed"
            )
        except Exception as exc:  # the engine retries it (or reaps it if this node dies)
            log.warning("cannot tell the engine %s closed: %s", client.id, exc)

    # --- engine handler (besides the deliveries, bound to Delivery) ----------------
    def handle_resync(self) -> None:
        self.spawn(self.delivery.check_positions())

    def handle_status(self, user: str, user_status: UserStatus) -> None:
        status.announce(self, user, user_status)

    async def handle_node_lost(self) -> None:
        """The cluster found this node dead and removed its connections (announcing
        their leaves and disconnects): every connection is closed, to come back fresh."""
        log.error("this node was declared dead by the cluster: closing every connection")
        for client in self.registry.everyone():
            client.disconnect(DISCONNECT_NODE_LOST)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.config.server.shutdown_timeout)

    def node_snapshot(
        self,
        presence: bool = True,
        users: bool = True,
        members: bool = False,
    ) -> NodeSnapshot:
        """What the engine's heartbeat needs of this node: its info; its users and
        present subscribers (``presence``, ``users``: only when asked, they can be
        many); with ``members``, every membership (channel, info, presence, joined) and
        tracked connection (Connection, attention) — to write them all again after
        Redis lost them."""
        snapshot: NodeSnapshot = {
            "info": self.local_info(),
            "users": list(self.users) if users else [],
            "presence": self.delivery.present() if presence else [],
        }
        if members:
            snapshot["members"] = self.delivery.members()
            snapshot["connections"] = [
                (status.connection_of(client), client.attention)
                for client in self.clients.values()
                if status.tracked(client)
            ]
        return snapshot

    # --- control messages (control.py) -------------------------------------------
    def handle_control(self, message: JsonObject) -> None:
        """A control message from any node (hub/control.py): decoded, then acted on
        by the ``on_*`` method of its kind."""
        control.dispatch(message, self)

    def on_disconnect(self, order: control.DisconnectUser) -> None:
        disconnect = Disconnect(order.code, order.reason)
        for client in self.registry.targets(
            order.user, order.client, order.session, order.whitelist
        ):
            client.disconnect(disconnect)

    def on_unsubscribe(self, order: control.UnsubscribeUser) -> None:
        for client in self.registry.targets(order.user, order.client, order.session):
            self.spawn(self._server_unsubscribe(client, order.channel))

    def on_subscribe(self, order: control.SubscribeUser) -> None:
        for client in self.registry.targets(order.user, order.client, order.session):
            self.spawn(self._server_subscribe(client, order))

    def on_refresh(self, order: control.RefreshUser) -> None:
        for client in self.registry.targets(order.user, order.client, order.session):
            self._server_refresh(client, order)

    def on_message(self, order: control.MessageUser) -> None:
        data = order.data.encode()
        # an XMPP chat names the dialects it may reach (xmpp.chat_to_other_dialects)
        dialects = order.dialects
        for client in self.registry.targets(order.user):
            if dialects is None or client.sink.dialect in dialects:
                client.sink.push_message(data)

    def on_emulation(self, command: control.EmulationCommand) -> None:
        if self.emulation is not None:
            self.emulation(command)

    def on_survey(self, survey: Survey) -> None:
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

    def local_info(self) -> JsonObject:
        return {
            "uid": self.node_id,
            "name": self.node_name,
            "version": self.version,
            "num_clients": len(self.clients),
            "num_users": len(self.users),
            "num_channels": len(self.channels),
            "num_subs": self.delivery.subscription_count,
            "uptime": int(time.time() - self.started_at),
        }

    async def info(self) -> list[JsonObject]:
        return await self.engine.nodes(self.local_info())

    async def _answer_survey(self, survey: Survey) -> None:
        if survey.question == "channels":
            answer: JsonObject = {"channels": self.channel_counts(survey.pattern)}
        elif survey.question == "connections":
            answer = {"connections": self.user_connections(survey.user or "")}
        elif survey.question == "users":
            answer = {"users": self.product_users()}
        else:
            answer = {"error": f"unknown question {survey.question!r}"}
        await self.engine.answer_survey(survey.reply_to, answer)

    async def _survey(self, question: Survey, local_answer: JsonObject) -> list[JsonObject]:
        """Every node's answer to ``question``, this node's ``local_answer`` first."""

        def ask(reply_to: str) -> JsonObject:
            return control.Survey(
                question.question, reply_to, self.node_id, question.pattern, question.user
            ).encode()

        return await self.engine.survey(ask, local_answer)

    def user_connections(self, user: str) -> list[JsonObject]:
        """This node's connections of ``user``: what the admin page lists."""
        return self.registry.user_connections(user, self.node_name)

    async def cluster_user_connections(self, user: str) -> list[JsonObject]:
        answers = await self._survey(
            control.Survey("connections", user=user), {"connections": self.user_connections(user)}
        )
        return [c for answer in answers for c in answer.get("connections", [])]

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

    async def user_status(self, users: list[str]) -> dict[str, tuple[bool, float | None]]:
        return await self.engine.user_status(users)
