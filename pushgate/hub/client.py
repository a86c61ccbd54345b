"""Client: one connection's session with the hub, whatever its dialect or transport.

It authenticates the connection, owns its subscriptions and applies the channel rules
to every command: who may subscribe, publish, read presence and history. Results are
plain values; the dialect that called encodes them. Pushes go out through the sink.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Coroutine, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pushgate import metrics
from pushgate.auth import ConnectionClaims, TokenError, TokenExpired
from pushgate.capabilities import HISTORY, PRESENCE, PUBLISH, SUBSCRIBE, Capability, grants
from pushgate.engine.base import (
    ClientInfo,
    HistoryResult,
    Publication,
    StreamPosition,
    UnrecoverablePosition,
)
from pushgate.engine.tracking import ACTIVE, ReadPosition
from pushgate.hub import access, recovery, status
from pushgate.hub import internal as internal_tokens
from pushgate.hub.errors import (
    DISCONNECT_BAD_REQUEST,
    DISCONNECT_CONNECTION_CLOSED,
    DISCONNECT_CONNECTION_LIMIT,
    DISCONNECT_EXPIRED,
    DISCONNECT_INVALID_TOKEN,
    DISCONNECT_TOO_MANY_REQUESTS,
    UNSUBSCRIBE_EXPIRED,
    UNSUBSCRIBE_SERVER,
    Disconnect,
    DisconnectError,
    ErrorAlreadySubscribed,
    ErrorBadRequest,
    ErrorInternal,
    ErrorLimitExceeded,
    ErrorMethodNotFound,
    ErrorNotAvailable,
    ErrorPermissionDenied,
    ErrorTokenExpired,
    ErrorTooManyRequests,
    ErrorUnauthorized,
    ErrorUnrecoverablePosition,
    HubError,
)
from pushgate.hub.recovery import FLAG_REJECT_UNRECOVERED, has_history
from pushgate.hub.results import ConnectResult, RefreshResult, SubscribeResult
from pushgate.hub.sink import CLOSED_SINK, ClientSink
from pushgate.hub.subscription import Subscription
from pushgate.hub.tags_filter import compile_filter
from pushgate.json_types import JsonObject
from pushgate.proxy import (
    DISABLED,
    UNKNOWN,
    Caller,
    ProxyDisconnect,
    ProxyError,
    ProxyUnavailable,
    events,
)
from pushgate.subscribe_options import SubscribeOptions
from pushgate.subscribe_options import apply as apply_override

if TYPE_CHECKING:
    from pushgate.auth import SubscriptionClaims, TokenVerifier
    from pushgate.config import ChannelOptions, Config
    from pushgate.engine.base import Engine, PublishResult
    from pushgate.hub.channels import ChannelRules
    from pushgate.proxy import Proxies
    from pushgate.proxy.caller import HttpProxy

T = TypeVar("T")


class ClientHub(Protocol):
    """What a Client — and the helpers acting for it (access.py, recovery.py,
    notifications.py, its dialect) — reaches in its node's hub (hub.py ``Hub``): the
    node's settings and services, its own registration, its subscriptions' bookkeeping
    and timers, and the few server-API calls a client command turns into."""

    # settings and services
    config: Config
    rules: ChannelRules
    proxies: Proxies
    tokens: TokenVerifier
    engine: Engine
    version: str
    node_id: str
    clients: dict[str, Client]

    @property
    def ping_seconds(self) -> int: ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]: ...

    # the connection (registry.py, timers.py)
    async def register(self, client: Client) -> None: ...

    async def unregister(self, client: Client) -> None: ...

    def forget_pending(self, client: Client) -> None: ...

    def user_connection_count(self, user: str) -> int: ...

    def schedule_expiry(self, client: Client) -> None: ...

    def schedule_sub_expiry(self, sub: Subscription) -> None: ...

    # its subscriptions (delivery.py)
    async def add_subscription(self, sub: Subscription) -> None: ...

    async def remove_subscription(self, sub: Subscription, *, announce: bool) -> None: ...

    def after_activate(self, sub: Subscription) -> None: ...

    def note_position(self, channel: str, position: StreamPosition) -> None: ...

    # counters
    def count_disconnect(self, code: int) -> None: ...

    def count_recovery(self, recovered: bool) -> None: ...

    # server API calls a command makes
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
    ) -> PublishResult: ...

    async def presence(self, channel: str) -> dict[str, ClientInfo]: ...

    async def disconnect_user(
        self,
        user: str,
        *,
        client: str | None = None,
        session: str | None = None,
        whitelist: list[str] | None = None,
        disconnect: Disconnect = ...,
    ) -> None: ...

    async def message_user(
        self, user: str, data: str, dialects: list[str] | None = None
    ) -> None: ...


log = logging.getLogger("pushgate.client")

#: commands refused in a row by the rate limit before the connection is closed (3013)
RATE_STRIKES = 10
#: connect commands one connection may send (each refused with an error reply, e.g. an
#: expired token) before it is closed: what a connection can cost before it is one
CONNECT_ATTEMPTS = 3
#: a refresh or sub_refresh proxy that gives no answer: the connection or subscription
#: lives this many seconds more, then the backend is asked again (as Centrifugo does)
PROXY_RETRY_AFTER = 60.0


def count_limit(limit: str) -> None:
    """A configured limit was hit: the ``pushgate_limit_hits_total{limit}`` metric."""
    metrics.LIMIT_HITS.labels(limit).inc()


class TokenBucket:
    """``rate`` tokens a second up to ``burst``; ``take`` spends one if there is one."""

    __slots__ = ("at", "burst", "rate", "tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@contextmanager
def token_errors(what: str, client_id: str, refused: Disconnect | type[HubError]) -> Iterator[None]:
    """Verifying a token inside: an expired token is error 109 (the client refreshes
    it); any other fault is logged and answered with ``refused``: a Disconnect (closes
    the connection) or an error."""
    try:
        yield
    except TokenExpired:
        raise ErrorTokenExpired from None
    except TokenError as exc:
        log.info("%s refused for %s: invalid token (%s)", what, client_id, exc)
        if isinstance(refused, Disconnect):
            raise DisconnectError(refused) from None
        raise refused from None


class Client:
    __slots__ = (
        "__weakref__",
        "_cmd_bucket",
        "_connect_attempts",
        "_pub_bucket",
        "_rate_strikes",
        "attention",
        "awaiting_pong",
        "caps",
        "close_reason",
        "closed",
        "closing",
        "conn_info",
        "connected",
        "emulated",
        "expires_at",
        "headers",
        "hub",
        "id",
        "internal",
        "meta",
        "name",
        "ping_slot",
        "protocol",
        "read_positions",
        "session",
        "sink",
        "subs",
        "transport",
        "user",
    )

    def __init__(self, hub: ClientHub, sink: ClientSink, transport: str) -> None:
        self.hub = hub
        self.sink: ClientSink = sink
        self.transport = transport
        self.id = str(uuid.uuid4())
        self.session = uuid.uuid4().hex
        self.user = ""
        #: authorized by the server itself (an internal token): may hold reserved channels
        self.internal = False
        self.name = ""
        self.conn_info: bytes | None = None
        self.connected = False
        self.closed = False
        #: disconnect has begun: the sink is closing and the hub forgets the client soon
        self.closing = False
        self.expires_at = 0.0
        self.awaiting_pong = False
        self.ping_slot = -1  # the hub's ping wheel bucket
        #: what the connection says of its user's attention (hub/status.py)
        self.attention = ACTIVE
        #: why it closed, for the disconnect event ("" while open: the peer went away)
        self.close_reason = ""
        #: the user's read positions, read when the connection registered (None: none)
        self.read_positions: dict[str, ReadPosition] | None = None
        self.subs: dict[str, Subscription] = {}
        #: the connection token's ``caps``: channel operations granted beyond the options
        self.caps: tuple[Capability, ...] = ()
        #: what proxy requests say the connection speaks (json, protobuf, stomp, xmpp)
        self.protocol = "json"
        #: the HTTP headers of the request that opened the connection that some proxy
        #: forwards (the transport sets them; ``Proxies.pick_headers``)
        self.headers: tuple[tuple[str, str], ...] = ()
        #: headers the client sent in its connect command, kept if a proxy forwards any
        self.emulated: dict[str, str] | None = None
        #: the connect proxy's ``meta``: sent with later proxy calls, never to clients
        self.meta: bytes | None = None
        limits = hub.config.client
        self._cmd_bucket = (
            TokenBucket(limits.commands_per_second, limits.commands_burst)
            if limits.commands_per_second
            else None
        )
        self._pub_bucket = (
            TokenBucket(limits.publications_per_second, limits.publications_per_second)
            if limits.publications_per_second
            else None
        )
        self._rate_strikes = 0
        self._connect_attempts = 0

    def __repr__(self) -> str:
        return f"<Client {self.id} user={self.user!r} transport={self.transport}>"

    @property
    def info(self) -> ClientInfo:
        return ClientInfo(self.id, self.user, self.conn_info)

    def chan_info_for(self, channel: str) -> ClientInfo:
        sub = self.subs.get(channel)
        return ClientInfo(self.id, self.user, self.conn_info, sub.chan_info if sub else None)

    # --- connect ------------------------------------------------------------------
    async def connect(
        self,
        *,
        token: str = "",
        name: str = "",
        version: str = "",
        subs: dict[str, JsonObject] | None = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        attention: str = ACTIVE,
    ) -> ConnectResult:
        """Authenticate and register; raises HubError or DisconnectError.

        With a token, the token decides; without one, the connect proxy when there is
        one (told ``name``, ``version``, ``data`` and the forwarded ``headers``), else
        ``client.anonymous`` / ``client.insecure``. ``attention``: what the connection
        says of its user's attention as it connects (hub/status)."""
        hub = self.hub
        if self.connected:
            raise DisconnectError(DISCONNECT_BAD_REQUEST)
        self._connect_attempts += 1
        if self._connect_attempts > CONNECT_ATTEMPTS:
            log.info("client=%s: too many connect attempts", self.id)
            count_limit("connect_attempts")
            raise DisconnectError(DISCONNECT_BAD_REQUEST)
        claims = None
        reply_data = None
        if token:
            with token_errors("connect", self.id, DISCONNECT_INVALID_TOKEN):
                claims = await internal_tokens.verify_connection(hub.tokens, hub.engine, token)
        elif hub.proxies.connect is not None:
            if headers and hub.proxies.wants_emulated:
                self.emulated = dict(headers)
            claims, reply_data = await self._connect_by_proxy(
                hub.proxies.connect, name, version, data
            )
        if claims is None and not (hub.config.client.anonymous or hub.config.client.insecure):
            log.info("connect refused: no token (nor user) and anonymous connections are off")
            raise ErrorUnauthorized
        now = time.time()
        if claims is not None:
            self.user = claims.user
            self.internal = claims.internal
            self.conn_info = claims.info
            self.caps = claims.caps
            expire_at = claims.expire_at if claims.expire_at is not None else claims.exp
            if expire_at and not hub.config.client.insecure:
                self.expires_at = float(expire_at)
        self.name = name[:64]
        limit = hub.config.client.max_connections
        if limit and len(hub.clients) >= limit:
            log.warning("connect refused: node connection limit %d reached", limit)
            count_limit("connections")
            raise DisconnectError(DISCONNECT_CONNECTION_LIMIT)
        limit = hub.config.client.max_connections_per_user
        if (
            limit
            and self.user
            and not self.internal
            and hub.user_connection_count(self.user) >= limit
        ):
            log.info("connect refused: user %r has %d connections", self.user, limit)
            count_limit("connections_per_user")
            raise DisconnectError(DISCONNECT_CONNECTION_LIMIT)
        personal = self._personal_channel()
        if personal and hub.config.client.personal_channel_single_connection:
            await self._close_other_connections(personal)
        self.connected = True
        self.attention = attention
        await hub.register(self)
        if self.closed:
            await hub.unregister(self)
            raise DisconnectError(DISCONNECT_CONNECTION_CLOSED)
        result = ConnectResult(
            client=self.id,
            version=hub.version,
            node=hub.node_id,
            ping=hub.ping_seconds if self.sink.wants_pong else 0,
            pong=self.sink.wants_pong,
            session=self.session,
        )
        if self.expires_at and hub.proxies.refresh is None:
            # with a refresh proxy the server prolongs the connection: the client is not
            # told it expires (as Centrifugo's server-side refresh)
            result.expires = True
            result.ttl = max(0, int(self.expires_at - now))
        result.data = reply_data
        server_channels: dict[str, SubscribeOptions] = {}
        if claims is not None:
            for channel in claims.channels:
                server_channels[channel] = NO_OPTIONS
            server_channels.update(claims.sub_options)
        if personal:
            server_channels[personal] = NO_OPTIONS
        requested = subs or {}
        for channel, opts in server_channels.items():
            recover = requested.get(channel) or {}
            try:
                result.subs[channel] = await self.subscribe_server_side(
                    channel,
                    chan_info=opts.info,
                    recover_since=_recover_position(recover),
                    internal=self.internal,
                    override=opts.override,
                    data=opts.data,
                )
            except HubError as exc:
                log.info("server-side subscription to %s refused: %s", channel, exc.message)
        return result

    async def _connect_by_proxy(
        self, proxy: HttpProxy, name: str, version: str, data: bytes | None
    ) -> tuple[ConnectionClaims | None, bytes | None]:
        """The backend's answer as claims (None: it named no user) and the connect data."""
        reply = await self._ask(
            "connect proxy",
            events.connect(proxy, self.caller(), name=name, version=version, data=data),
        )
        if self.closed:
            raise DisconnectError(DISCONNECT_CONNECTION_CLOSED)
        if reply is None:
            log.info("connect proxy %s gave client=%s no result", proxy.name, self.id)
            return None, None
        self.meta = reply.meta
        claims = ConnectionClaims(
            user=reply.user,
            info=reply.info,
            channels=reply.channels,
            expire_at=reply.expire_at or None,
            caps=reply.caps,
            sub_options=reply.subs,
        )
        return claims, reply.data

    def caller(self) -> Caller:
        """This connection as proxy requests describe it."""
        return Caller(
            self.id,
            self.transport,
            self.protocol,
            self.user,
            self.meta,
            self.headers,
            self.emulated,
        )

    async def _ask(self, what: str, call: Awaitable[T]) -> T:
        """A proxy call: the backend's error or disconnect becomes the client's; no usable
        answer becomes a temporary internal error (100), which clients retry."""
        try:
            return await call
        except ProxyDisconnect as exc:
            log.info(
                "%s: backend disconnects client=%s (%d %s)", what, self.id, exc.code, exc.reason
            )
            raise DisconnectError(Disconnect(exc.code, exc.reason)) from None
        except ProxyError as exc:
            log.info("%s: backend refuses client=%s: %d %s", what, self.id, exc.code, exc.message)
            raise HubError(exc.code, exc.message, exc.temporary) from None
        except ProxyUnavailable as exc:
            log.warning("%s for client=%s user=%r failed: %s", what, self.id, self.user, exc.reason)
            raise ErrorInternal from None

    def _personal_channel(self) -> str:
        """The user's personal channel when ``client.subscribe_to_user_personal_channel``
        is on (never for anonymous or internal connections), else ""."""
        config = self.hub.config.client
        if not config.subscribe_to_user_personal_channel or not self.user or self.internal:
            return ""
        return self.hub.rules.personal_channel(self.user, config.personal_channel_namespace)

    async def _close_other_connections(self, personal: str) -> None:
        """``personal_channel_single_connection``: the user's connections anywhere in the
        cluster (present in their personal channel) are closed with 3504, as Centrifugo."""
        clients, _ = await self.hub.engine.presence_stats(personal)
        if clients:
            log.info("user %r connects again: closing their other connections", self.user)
            await self.hub.disconnect_user(
                self.user, whitelist=[self.id], disconnect=DISCONNECT_CONNECTION_LIMIT
            )

    def activate_all(self) -> None:
        """The connect reply is written: server-side subscriptions go live."""
        for sub in self.subs.values():
            if not sub.active and sub.pending is not None:
                sub.activate()
                self.hub.after_activate(sub)

    async def refresh(self, token: str) -> RefreshResult:
        hub = self.hub
        with token_errors("refresh", self.id, DISCONNECT_INVALID_TOKEN):
            claims = await internal_tokens.verify_connection(hub.tokens, hub.engine, token)
        if claims.user != self.user or claims.internal != self.internal:
            log.info("refresh refused for %s: token for another user", self.id)
            raise DisconnectError(DISCONNECT_INVALID_TOKEN)
        expire_at = claims.expire_at if claims.expire_at is not None else claims.exp
        self.expires_at = 0.0 if hub.config.client.insecure else float(expire_at or 0)
        if claims.info is not None:
            self.conn_info = claims.info
        if claims.caps != self.caps:
            self.caps = claims.caps
            await self._drop_revoked()
        hub.schedule_expiry(self)
        result = RefreshResult(client=self.id, version=hub.version)
        if self.expires_at:
            result.expires = True
            result.ttl = max(0, int(self.expires_at - time.time()))
        return result

    # --- subscriptions ------------------------------------------------------------
    async def subscribe(
        self,
        channel: str,
        *,
        token: str = "",
        recover: bool = False,
        offset: int = 0,
        epoch: str = "",
        join_leave: bool = False,
        data: bytes | None = None,
        positioned: bool = False,
        recoverable: bool = False,
        flag: int = 0,
        tags_filter: object = None,
        delta: str = "",
        client_data: bytes | None = None,
    ) -> tuple[Subscription, SubscribeResult]:
        """A client-side subscription; call ``activate`` on it after the reply is written.

        ``positioned`` / ``recoverable``: the client asks for them (granted by
        ``allow_positioning`` / ``allow_recovery`` or history access); ``flag``: the
        subscribe flags (``FLAG_REJECT_UNRECOVERED``); ``tags_filter``: a ``tf`` tree;
        ``delta``: the delta compression asked for ("fossil"), granted where the namespace
        allows it (``allowed_delta_types``); ``client_data``: what the client sent with it
        (for the subscribe proxy)."""
        hub = self.hub
        options = self._options(channel)
        if channel in self.subs:
            raise ErrorAlreadySubscribed
        limit = hub.config.client.max_subscriptions
        if limit and len(self.subs) >= limit:
            count_limit("subscriptions")
            raise ErrorLimitExceeded("limit exceeded: too many subscriptions")
        chan_info: bytes | None = None
        expires_at = 0.0
        allow: frozenset[str] = frozenset()
        if token:
            claims = self._verify_subscription_token(token, channel)
            chan_info = claims.info
            data = claims.data if claims.data is not None else data
            expire_at = claims.expire_at if claims.expire_at is not None else claims.exp
            expires_at = 0.0 if hub.config.client.insecure else float(expire_at or 0)
            options = apply_override(options, claims.override)
            allow = claims.allow
            source = access.BY_TOKEN
        else:
            proxy = hub.proxies.channel(options, "subscribe")
            found = access.subscribe_source(self, channel, options, ask_backend=proxy is not None)
            if found is None:
                log.info(
                    "subscribe to %s refused for client=%s user=%r", channel, self.id, self.user
                )
                raise ErrorPermissionDenied
            if found == access.BY_PROXY and proxy is not None:
                reply = await self._ask(
                    f"subscribe proxy ({channel})",
                    events.subscribe(proxy, self.caller(), channel, data=client_data),
                )
                chan_info = reply.info
                data = reply.data
                expires_at = 0.0 if hub.config.client.insecure else float(reply.expire_at)
                options = apply_override(options, reply.override)
                allow = reply.allow
            source = found
        use_delta = self._delta_granted(channel, options, delta, tags_filter)
        accepts = None
        if tags_filter is not None:
            if not options.allow_tags_filter:
                log.info(
                    "subscribe to %s refused for %s: tags filter not allowed", channel, self.id
                )
                raise ErrorBadRequest(f"bad request: tags filter not allowed in {channel}")
            try:
                accepts = compile_filter(tags_filter, hub.config.client.tags_filter_max_nodes)
            except HubError as error:
                if error.code == ErrorLimitExceeded.CODE:
                    count_limit("tags_filter_nodes")
                log.info("subscribe to %s refused for %s: %s", channel, self.id, error.message)
                raise
        history_ok = (positioned or recoverable) and access.allowed(
            self, channel, options, HISTORY, subscribing=allow
        )
        push_join_leave = options.join_leave and (
            options.force_push_join_leave
            or (join_leave and access.allowed(self, channel, options, PRESENCE, subscribing=allow))
        )
        sub = Subscription(
            self,
            channel,
            options,
            server_side=False,
            join_leave=push_join_leave,
            chan_info=chan_info,
            expires_at=expires_at,
            recoverable=options.force_recovery
            or (recoverable and (options.allow_recovery or history_ok)),
            positioned=options.force_positioning
            or (positioned and (options.allow_positioning or history_ok)),
            tags_filter=accepts,
            allow=allow,
            source=source,
            delta=use_delta,
        )
        since = StreamPosition(offset, epoch) if recover else None
        result = await self._start(
            sub, since, reject_unrecovered=bool(flag & FLAG_REJECT_UNRECOVERED)
        )
        result.data = data if data is not None else await status.subscribe_data(hub, channel)
        result.delta = use_delta
        return sub, result

    def _delta_granted(
        self, channel: str, options: ChannelOptions, delta: str, tags_filter: object
    ) -> bool:
        """Whether the delta compression asked for is on: an unknown type, or one with a
        tags filter (whose skipped publications would break the chain), is a bad request;
        one the namespace does not allow is simply not negotiated, as in Centrifugo."""
        if not delta:
            return False
        if delta != "fossil":
            log.info("subscribe to %s refused for %s: delta type %r", channel, self.id, delta)
            raise ErrorBadRequest(
                f"bad request: unknown delta type {delta[:32]!r} (pushgate has 'fossil')"
            )
        if tags_filter is not None:
            raise ErrorBadRequest(
                "bad request: delta compression and a tags filter cannot be combined"
            )
        return delta in options.allowed_delta_types

    def _verify_subscription_token(self, token: str, channel: str) -> SubscriptionClaims:
        with token_errors(f"subscribe to {channel}", self.id, ErrorPermissionDenied):
            claims = self.hub.tokens.verify_subscription(token, channel)
        if claims.user != self.user:
            log.info("subscribe to %s refused: token for user %r", channel, claims.user)
            raise ErrorPermissionDenied
        if claims.client and claims.client != self.id:
            log.info("subscribe to %s refused: token for another connection", channel)
            raise ErrorPermissionDenied
        return claims

    async def subscribe_server_side(
        self,
        channel: str,
        *,
        chan_info: bytes | None = None,
        recover_since: StreamPosition | None = None,
        internal: bool = False,
        override: dict[str, bool] | None = None,
        data: bytes | None = None,
        expires_at: float = 0.0,
    ) -> SubscribeResult:
        """A subscription made by the server (token claims, the API); a reserved channel
        only for an ``internal`` one (the connection's own internal token). ``override``
        replaces namespace options for this subscription; ``expires_at`` ends it then."""
        options = apply_override(self.hub.rules.options(channel, internal=internal), override or {})
        if channel in self.subs:
            raise ErrorAlreadySubscribed
        sub = Subscription(
            self,
            channel,
            options,
            server_side=True,
            join_leave=options.join_leave,
            chan_info=chan_info,
            expires_at=expires_at,
            recoverable=options.force_recovery,
            positioned=options.force_positioning,
        )
        result = await self._start(sub, recover_since)
        result.data = data if data is not None else await status.subscribe_data(self.hub, channel)
        return result

    async def _start(
        self,
        sub: Subscription,
        since: StreamPosition | None,
        *,
        reject_unrecovered: bool = False,
    ) -> SubscribeResult:
        """Join the channel (buffering) and read the stream position / missed history."""
        hub = self.hub
        channel = sub.channel
        self.subs[channel] = sub
        await hub.add_subscription(sub)
        if self.closed:  # the connection went away while joining
            await self._drop(sub, announce=False)
            raise DisconnectError(DISCONNECT_CONNECTION_CLOSED)
        result = SubscribeResult()
        if (
            sub.expires_at
            and not sub.server_side
            and hub.proxies.channel(sub.options, "sub_refresh") is None
        ):
            # with a sub_refresh proxy the server prolongs it: the client is not told
            result.expires = True
            result.ttl = max(0, int(sub.expires_at - time.time()))
        try:
            await recovery.fill(hub, sub, result, since, reject_unrecovered=reject_unrecovered)
        except Exception:
            await self._drop(sub, announce=False)
            raise
        hub.schedule_sub_expiry(sub)
        return result

    def activate(self, sub: Subscription) -> None:
        if self.subs.get(sub.channel) is sub and not sub.active and sub.pending is not None:
            sub.activate()
            self.hub.after_activate(sub)

    async def _drop_revoked(self) -> None:
        """New ``caps`` (refresh): subscriptions that only caps allowed and the new ones do
        not end, with the unsubscribe push 2000."""
        for channel, sub in list(self.subs.items()):
            if sub.source == access.BY_CAPS and not grants(self.caps, SUBSCRIBE, channel):
                code, reason = UNSUBSCRIBE_SERVER
                log.info("client=%s: caps no longer allow %s", self.id, channel)
                self.sink.push_unsubscribe(channel, code, reason)
                await self._drop(sub, announce=True)

    async def unsubscribe(self, channel: str) -> None:
        sub = self.subs.get(channel)
        if sub is not None:
            await self._drop(sub, announce=True)

    async def _drop(self, sub: Subscription, *, announce: bool) -> None:
        if self.subs.get(sub.channel) is sub:
            del self.subs[sub.channel]
        await self.hub.remove_subscription(sub, announce=announce)

    async def sub_refresh(self, channel: str, token: str) -> tuple[bool, int]:
        sub = self.subs.get(channel)
        if sub is None:
            raise ErrorPermissionDenied("permission denied: not subscribed")
        with token_errors(f"sub_refresh of {channel}", self.id, ErrorPermissionDenied):
            claims = self.hub.tokens.verify_subscription(token, channel)
        if claims.user != self.user:
            raise ErrorPermissionDenied
        expire_at = claims.expire_at if claims.expire_at is not None else claims.exp
        sub.expires_at = float(expire_at or 0)
        self.hub.schedule_sub_expiry(sub)
        if not sub.expires_at:
            return False, 0
        return True, max(0, int(sub.expires_at - time.time()))

    async def refresh_by_proxy(self, proxy: HttpProxy) -> None:
        """The connection expired and the refresh proxy decides: prolonged (a new
        ``expire_at``, maybe new info), or closed with 3005. No answer: it lives
        PROXY_RETRY_AFTER seconds more, then the backend is asked again."""
        hub = self.hub
        try:
            reply = await events.refresh(proxy, self.caller())
        except ProxyDisconnect as exc:
            self.disconnect(Disconnect(exc.code, exc.reason))
            return
        except ProxyError as exc:  # an error is no result: the connection expires
            log.info("refresh proxy: error %d for client=%s: expired", exc.code, self.id)
            self.disconnect(DISCONNECT_EXPIRED)
            return
        except ProxyUnavailable as exc:
            log.warning("refresh proxy for client=%s failed: %s; retried later", self.id, exc)
            self.expires_at = time.time() + PROXY_RETRY_AFTER
            hub.schedule_expiry(self)
            return
        if self.closed or self.closing:
            return
        if reply.expired:
            self.disconnect(DISCONNECT_EXPIRED)
            return
        self.expires_at = float(reply.expire_at)
        if reply.info is not None:
            self.conn_info = reply.info
        if reply.meta is not None:
            self.meta = reply.meta
        if reply.caps is not None and reply.caps != self.caps:
            self.caps = reply.caps
            await self._drop_revoked()
        hub.schedule_expiry(self)

    async def sub_refresh_by_proxy(self, sub: Subscription, proxy: HttpProxy) -> None:
        """A subscription expired and the sub_refresh proxy decides: prolonged, or ended
        with the unsubscribe push 2501 (the client subscribes again, through the
        subscribe proxy). No answer: PROXY_RETRY_AFTER seconds more."""
        channel = sub.channel
        try:
            reply = await events.sub_refresh(proxy, self.caller(), channel)
        except ProxyDisconnect as exc:
            self.disconnect(Disconnect(exc.code, exc.reason))
            return
        except ProxyError as exc:
            log.info("sub_refresh proxy: error %d for %s of client=%s", exc.code, channel, self.id)
            reply = None
        except ProxyUnavailable as exc:
            log.warning("sub_refresh proxy for %s of client=%s failed: %s", channel, self.id, exc)
            sub.expires_at = time.time() + PROXY_RETRY_AFTER
            self.hub.schedule_sub_expiry(sub)
            return
        if self.closed or self.subs.get(channel) is not sub:
            return
        if reply is None or reply.expired:
            code, reason = UNSUBSCRIBE_EXPIRED
            self.sink.push_unsubscribe(channel, code, reason)
            await self._drop(sub, announce=True)
            return
        sub.expires_at = float(reply.expire_at)
        if reply.info is not None:
            sub.chan_info = reply.info
        self.hub.schedule_sub_expiry(sub)

    # --- limits -------------------------------------------------------------------
    def check_command_rate(self) -> None:
        """Spend a token of the command bucket: error 111 when there is none, and
        disconnect 3013 after ``RATE_STRIKES`` refusals in a row."""
        bucket = self._cmd_bucket
        if bucket is None:
            return
        if bucket.take():
            self._rate_strikes = 0
            return
        self._rate_strikes += 1
        count_limit("commands_per_second")
        if self._rate_strikes >= RATE_STRIKES:
            log.info("client=%s user=%s keeps exceeding the command rate", self.id, self.user)
            raise DisconnectError(DISCONNECT_TOO_MANY_REQUESTS)
        raise ErrorTooManyRequests

    def _options(self, channel: str) -> ChannelOptions:
        """The channel's options; a too-long name is counted as a limit hit."""
        try:
            return self.hub.rules.options(channel)
        except HubError as error:
            if error.code == ErrorLimitExceeded.CODE:
                count_limit("channel_length")
            raise

    # --- other commands -----------------------------------------------------------
    def _check_allowed(self, channel: str, options: ChannelOptions, operation: str) -> None:
        if not access.allowed(self, channel, options, operation):
            log.info(
                "%s in %s refused for client=%s user=%r", operation, channel, self.id, self.user
            )
            raise ErrorPermissionDenied

    def check_publish(self, channel: str) -> HttpProxy | None:
        """Raise the error ``publish`` would for the channel's rules (not for the rate);
        the channel's publish proxy, which decides instead of the rules, if it has one."""
        options = self._options(channel)
        proxy = self.hub.proxies.channel(options, "publish")
        if proxy is None:
            self._check_allowed(channel, options, PUBLISH)
        return proxy

    async def publish(self, channel: str, data: bytes) -> StreamPosition:
        proxy = self.check_publish(channel)
        if self._pub_bucket is not None and not self._pub_bucket.take():
            count_limit("publications_per_second")
            raise ErrorTooManyRequests
        info = self.chan_info_for(channel)
        if proxy is None:
            return await self.hub.publish(channel, data, info=info)
        # the backend may refuse it, or publish other data (and tags) in its place
        reply = await self._ask(
            f"publish proxy ({channel})", events.publish(proxy, self.caller(), channel, data)
        )
        return await self.hub.publish(
            channel,
            data if reply.data is None else reply.data,
            info=info,
            tags=reply.tags,
            skip_history=reply.skip_history,
            idempotency_key=reply.idempotency_key or None,
        )

    async def rpc(self, method: str, data: bytes | None) -> bytes | None:
        """A client RPC, answered by the rpc proxy of the method's namespace: the
        result's data (None when it has none)."""
        found = self.hub.proxies.rpc(method)
        if found == UNKNOWN:
            log.info("rpc %r from client=%s: no such RPC namespace", method[:64], self.id)
            raise ErrorMethodNotFound
        if found == DISABLED or isinstance(found, str):
            raise ErrorNotAvailable("not available: no RPC handler configured")
        return await self._ask(
            f"rpc proxy ({found.name})", events.rpc(found, self.caller(), method, data)
        )

    async def send(self, data: bytes | None) -> None:
        """A client's asynchronous message (no reply): to the send proxy, or dropped."""
        proxy = self.hub.proxies.send
        if proxy is None:
            log.debug("send from client=%s dropped: no send proxy", self.id)
            return
        try:
            await self._ask("send proxy", events.send(proxy, self.caller(), data))
        except HubError as error:  # nothing to reply to: the log says it
            log.info("send from client=%s not taken: %s", self.id, error.message)

    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        options = self._options(channel)
        if not options.presence:
            raise ErrorNotAvailable
        self._check_allowed(channel, options, PRESENCE)
        try:
            return await self.hub.presence(channel)
        except HubError as error:
            if error.code == ErrorLimitExceeded.CODE:
                count_limit("presence_size")
            raise

    async def presence_stats(self, channel: str) -> tuple[int, int]:
        options = self._options(channel)
        if not options.presence:
            raise ErrorNotAvailable
        self._check_allowed(channel, options, PRESENCE)
        return await self.hub.engine.presence_stats(channel)

    async def history(
        self,
        channel: str,
        *,
        limit: int | None = None,
        since: StreamPosition | None = None,
        reverse: bool = False,
    ) -> HistoryResult:
        options = self._options(channel)
        if not has_history(options):
            raise ErrorNotAvailable
        self._check_allowed(channel, options, HISTORY)
        max_limit = self.hub.config.client.history_max_publications
        # Centrifugo's meaning: no limit (0) gives only the position, -1 all there is
        limit = max_limit if limit is not None and limit < 0 else min(limit or 0, max_limit)
        try:
            return await self.hub.engine.history(channel, since=since, limit=limit, reverse=reverse)
        except UnrecoverablePosition:
            raise ErrorUnrecoverablePosition from None

    async def set_attention(self, state: str) -> None:
        """The connection says its user is active, idle or hidden (hub/status.py)."""
        if state == self.attention:
            return
        self.attention = state
        if self.connected and not self.closed and status.tracked(self):
            await self.hub.engine.connection_state(status.connection_of(self), state)

    # --- liveness -----------------------------------------------------------------
    def pong(self) -> None:
        self.awaiting_pong = False

    def disconnect(self, disconnect: Disconnect) -> None:
        """Close this connection and leave its channels and user session, once.

        Closing writes a last message (a disconnect push or an ERROR frame) through
        the same writer whose full queue may be what called this: a second call while
        the first is under way does nothing, so a slow client is dropped exactly once.
        """
        if self.closed or self.closing:
            return
        self.closing = True
        self.close_reason = disconnect.reason
        log.info(
            "disconnect: %s",
            disconnect.reason,
            extra={
                "client": self.id,
                "user": self.user,
                "code": disconnect.code,
                "transport": self.transport,
            },
        )
        self.hub.count_disconnect(disconnect.code)
        self.sink.close(disconnect)
        # The socket may take a while to drain (or never, for a peer that stopped
        # reading): the hub forgets the connection now rather than when it is gone.
        self.hub.spawn(self.closed_by_transport())

    async def closed_by_transport(self) -> None:
        """The transport is gone: leave every channel and the user session, once."""
        if self.closed:
            return
        self.closed = True
        try:
            self.hub.forget_pending(self)
            for sub in list(self.subs.values()):
                await self._drop(sub, announce=True)
            if self.connected:
                await self.hub.unregister(self)
        finally:
            # The dialect session holds this client and the client its session: letting
            # go of the session here frees the pair by reference count, not by the
            # cyclic GC (whose full collections walk every connection of the node).
            self.sink = CLOSED_SINK


NO_OPTIONS = SubscribeOptions()


def _recover_position(opts: JsonObject) -> StreamPosition | None:
    if not opts or not opts.get("recover"):
        return None
    try:
        return StreamPosition(int(opts.get("offset") or 0), str(opts.get("epoch") or ""))
    except (TypeError, ValueError):
        raise ErrorBadRequest from None


__all__ = ["Client", "Publication", "has_history"]
