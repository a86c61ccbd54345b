"""Configuration schema and loading: defaults < TOML file < PUSHGATE_* environment < overrides.

Owns the dataclasses every other module reads its settings from (``Config`` and its
sections), the loader that merges the sources and validates them (reporting *all*
problems at once, each naming the exact key and where it came from), ``config_to_dict``
for showing an effective configuration with secrets masked, and ``iter_options`` which
enumerates every option with its default and description (docs/configuration.md is
checked against it).
"""

import difflib
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from pushgate.durations import parse_duration

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "ENTRY_SECTIONS",
    "ENV_ALLOWLIST",
    "ENV_PREFIX",
    "RESERVED_CHANNEL_PREFIX",
    "SECTIONS",
    "AdminConfig",
    "AmqpConfig",
    "ApiConfig",
    "ChannelConfig",
    "ChannelOptions",
    "ClientConfig",
    "Config",
    "ConfigError",
    "EngineConfig",
    "EventsConfig",
    "NamespaceConfig",
    "NotificationsConfig",
    "PollingConfig",
    "PresenceConfig",
    "ProxyConfig",
    "RpcConfig",
    "RpcNamespaceConfig",
    "ServerConfig",
    "StompConfig",
    "TokenConfig",
    "XmppConfig",
    "config_to_dict",
    "env_var_name",
    "iter_options",
    "load_config",
]

ENV_PREFIX = "PUSHGATE_"
#: PUSHGATE_* variables that are not options but are still allowed in the environment.
ENV_ALLOWLIST = frozenset({"PUSHGATE_CONFIG"})
CONFIG_PATH_ENV = "PUSHGATE_CONFIG"
#: channels whose names begin with this are the server's own (the admin page's stats):
#: no client, API call or configured namespace may use them
RESERVED_CHANNEL_PREFIX = "__pushgate"

#: other names accepted for channel options in the file (the issue that asked for cache
#: recovery called it ``recovery_mode``; Centrifugo's name is ``force_recovery_mode``)
CHANNEL_OPTION_ALIASES = {"recovery_mode": "force_recovery_mode"}
_NAMESPACE_NAME = re.compile(r"[A-Za-z0-9_\-.]+")
_ORIGIN = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^/\s?#]+")
_HOST_PORT = re.compile(r"[^\s:]+:\d{1,5}")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_PEM_MARKER = "-----BEGIN"
_MASK = "***"


class ConfigError(Exception):
    """Invalid configuration; ``errors`` holds one message per problem (also the str)."""

    def __init__(self, errors: str | list[str]) -> None:
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        super().__init__("\n".join(self.errors))


# --------------------------------------------------------------------------- schema


def _meta(
    doc: str,
    *,
    lo: float | None = None,
    hi: float | None = None,
    choices: tuple[str, ...] | None = None,
    item_check: Callable[[str], str | None] | None = None,
    secret: bool = False,
) -> dict[str, Any]:
    """Field metadata: the option's description and its validation rules."""
    return {
        "doc": doc,
        "lo": lo,
        "hi": hi,
        "choices": choices,
        "item_check": item_check,
        "secret": secret,
    }


def _opt(default: object, doc: str, **rules: Any) -> Any:
    """A scalar dataclass field carrying its documentation and rules as metadata."""
    return field(default=default, metadata=_meta(doc, **rules))


def _check_origin(value: str) -> str | None:
    if value == "*" or _ORIGIN.fullmatch(value):
        return None
    return f"invalid origin {value!r} (expected '*' or e.g. 'https://app.example.com')"


def _check_delta_type(value: str) -> str | None:
    if value == "fossil":
        return None
    return f"unknown delta type {value!r} (the one there is: 'fossil')"


def _check_redis_url(value: str) -> str | None:
    if value.startswith(_REDIS_SCHEMES):
        return None
    return f"invalid Redis URL {value!r} (expected redis://, rediss:// or unix://)"


def _check_host_port(value: str) -> str | None:
    if _HOST_PORT.fullmatch(value) and 0 < int(value.rsplit(":", 1)[1]) < 65536:
        return None
    return f"invalid sentinel address {value!r} (expected 'host:port')"


def _check_cluster_seed(value: str) -> str | None:
    if value.startswith(("redis://", "rediss://")):
        return None
    if _HOST_PORT.fullmatch(value) and 0 < int(value.rsplit(":", 1)[1]) < 65536:
        return None
    return (
        f"invalid Redis Cluster node {value!r} (expected 'host:port' or a redis:// or "
        "rediss:// URL)"
    )


@dataclass(slots=True)
class ChannelOptions:
    """Per-namespace channel options; ``[channel]`` holds them for channels without one."""

    presence: bool = _opt(False, "Track who is subscribed (presence).")
    join_leave: bool = _opt(False, "Send join/leave pushes when clients subscribe/leave.")
    force_push_join_leave: bool = _opt(
        False, "Push join/leave to every subscriber without them asking for it."
    )
    history_size: int = _opt(
        0, "Publications kept in channel history (0 = no history; needs history_ttl).", lo=0
    )
    history_ttl: float = _opt(
        0.0,
        "How long history is kept after the last publication (duration; needs history_size).",
        lo=0,
    )
    force_recovery: bool = _opt(
        False, "Recover missed publications on resubscribe for every client (needs history)."
    )
    allow_recovery: bool = _opt(
        False,
        "Recover for a client that asks for it (subscribe 'recoverable'), besides clients "
        "allowed channel history (needs history).",
    )
    force_recovery_mode: str = _opt(
        "stream",
        "How subscriptions with recovery recover: stream (every missed publication) or "
        "cache (only the latest publication, also on a first subscribe with recover).",
        choices=("stream", "cache"),
    )
    auto_cache_recover: bool = _opt(
        False,
        "In cache mode, hand every (re)subscribe with recovery the latest publication "
        "without the client asking (server-side subscriptions too; needs "
        "force_recovery_mode = cache).",
    )
    force_positioning: bool = _opt(
        False, "Check stream position of every subscriber (needs history)."
    )
    allow_positioning: bool = _opt(
        False,
        "Check the stream position of a client that asks for it (subscribe 'positioned'), "
        "besides clients allowed channel history (needs history).",
    )
    allow_tags_filter: bool = _opt(
        False,
        "Clients may subscribe with a publication tags filter ('tf'): only publications "
        "whose tags match it are delivered to them.",
    )
    allowed_delta_types: list[str] = field(
        default_factory=list,
        metadata=_meta(
            "Delta compression a subscriber may ask for (subscribe 'delta'): 'fossil' "
            "(empty = none).",
            item_check=_check_delta_type,
        ),
    )
    delta_publish: bool = _opt(
        False,
        "Every publication may go as a fossil delta to subscribers that negotiated one, "
        "as if published with the API's delta: true.",
    )
    allow_subscribe_for_client: bool = _opt(
        False, "Any authenticated client may subscribe without a subscription token."
    )
    allow_subscribe_for_anonymous: bool = _opt(
        False, "Anonymous clients may subscribe without a subscription token."
    )
    allow_publish_for_subscriber: bool = _opt(False, "Subscribers may publish into the channel.")
    allow_publish_for_client: bool = _opt(
        False, "Any authenticated client may publish, even without subscribing."
    )
    allow_publish_for_anonymous: bool = _opt(
        False,
        "Anonymous clients get the allow_publish_for_subscriber / _for_client permissions "
        "too (off: they never publish).",
    )
    allow_presence_for_subscriber: bool = _opt(
        False, "Subscribers may ask for presence and presence stats."
    )
    allow_presence_for_client: bool = _opt(
        False, "Any authenticated client may ask for presence and presence stats."
    )
    allow_presence_for_anonymous: bool = _opt(
        False,
        "Anonymous clients get the allow_presence_for_subscriber / _for_client permissions "
        "too (off: they never read presence).",
    )
    allow_history_for_subscriber: bool = _opt(False, "Subscribers may ask for channel history.")
    allow_history_for_client: bool = _opt(
        False, "Any authenticated client may ask for channel history."
    )
    allow_history_for_anonymous: bool = _opt(
        False,
        "Anonymous clients get the allow_history_for_subscriber / _for_client permissions "
        "too (off: they never read history).",
    )
    allow_user_limited_channels: bool = _opt(
        False,
        "Channels with the user boundary ('#alice') may be joined, without a subscription "
        "token, by the users they list (off: such a channel is like any other of the "
        "namespace).",
    )
    subscribe_proxy_enabled: bool = _opt(
        False,
        "Ask the backend (the subscribe proxy) whether a client may subscribe without a "
        "subscription token; its answer replaces allow_subscribe_for_* (docs/proxy.md).",
    )
    subscribe_proxy_name: str = _opt(
        "subscribe", "The [[proxies]] entry subscribe_proxy_enabled calls."
    )
    publish_proxy_enabled: bool = _opt(
        False,
        "Ask the backend (the publish proxy) about every client publication: it may refuse "
        "or rewrite it; its answer replaces allow_publish_for_* (docs/proxy.md).",
    )
    publish_proxy_name: str = _opt("publish", "The [[proxies]] entry publish_proxy_enabled calls.")
    sub_refresh_proxy_enabled: bool = _opt(
        False,
        "When a subscription expires, ask the backend (the sub_refresh proxy) to prolong it "
        "instead of the client (docs/proxy.md).",
    )
    sub_refresh_proxy_name: str = _opt(
        "sub_refresh", "The [[proxies]] entry sub_refresh_proxy_enabled calls."
    )


@dataclass(slots=True)
class NamespaceConfig(ChannelOptions):
    """A ``[[namespace]]`` entry: channel options for channels named ``<name>:...``."""

    name: str = field(
        kw_only=True,
        metadata=_meta(
            "Namespace name, the channel prefix before the namespace boundary "
            "(letters, digits, '_', '-', '.'; unique)."
        ),
    )


@dataclass(slots=True)
class ChannelConfig(ChannelOptions):
    """``[channel]``: options for channels without a namespace, plus channel naming rules."""

    namespace_boundary: str = _opt(":", "Separates the namespace from the rest of a channel.")
    user_boundary: str = _opt("#", "Starts the user part of a user-limited channel.")
    user_separator: str = _opt(",", "Separates users in a user-limited channel ('#a,b').")
    max_length: int = _opt(255, "Longest allowed channel name, in characters.", lo=1)


@dataclass(slots=True)
class ServerConfig:
    """``[server]``: listening address, identity, origins, logging, shutdown."""

    host: str = _opt("127.0.0.1", "Address to listen on.")
    port: int = _opt(8000, "TCP port to listen on (0 = pick a free port).", lo=0, hi=65535)
    name: str = _opt("", "Node name shown in info and logs (empty = host name).")
    allowed_origins: list[str] = field(
        default_factory=list,
        metadata=_meta(
            "Browser origins allowed to connect besides the server's own, exact like "
            "'https://app.example.com', or '*' for any (empty = same-origin pages only).",
            item_check=_check_origin,
        ),
    )
    log_level: str = _opt(
        "info",
        "Log level: debug, info, warning or error.",
        choices=("debug", "info", "warning", "error"),
    )
    log_format: str = _opt(
        "text", "Log format: text, json or logfmt.", choices=("text", "json", "logfmt")
    )
    shutdown_timeout: float = _opt(
        5.0, "How long a graceful shutdown waits for connections to close (duration).", lo=0
    )
    tls_cert: str = _opt(
        "", "PEM certificate (chain) file: serve HTTPS and WSS (empty = plain HTTP; needs tls_key)."
    )
    tls_key: str = _opt("", "PEM private key file of tls_cert.")
    gc_freeze: bool = _opt(
        False,
        "Freeze connections' long-lived objects out of full garbage collections as "
        "connections open; thaw and collect once when they halve (see docs/performance.md).",
    )
    internal_port: int = _opt(
        0,
        "Port of a second listener, on internal_host, that alone serves /api, /admin, "
        "/metrics and /ready (they answer 404 on port); 0 = off: everything on port.",
        lo=0,
        hi=65535,
    )
    internal_host: str = _opt("127.0.0.1", "Address of the internal listener (internal_port).")


@dataclass(slots=True)
class TokenConfig:
    """``[token]``: keys and claims used to verify connection and subscription JWTs."""

    hmac_secret: str = _opt("", "Shared secret for HS256/HS384/HS512 tokens.", secret=True)
    rsa_public_key: str = _opt(
        "", "RSA public key for RS*/PS* tokens: PEM text or a path to a PEM file.", secret=True
    )
    ecdsa_public_key: str = _opt(
        "", "ECDSA public key for ES* tokens: PEM text or a path to a PEM file.", secret=True
    )
    audience: str = _opt("", "Required 'aud' claim (empty = not checked).")
    issuer: str = _opt("", "Required 'iss' claim (empty = not checked).")


@dataclass(slots=True)
class ApiConfig:
    """``[api]``: the server HTTP API's authentication."""

    key: str = _opt(
        "", "API key expected in 'Authorization: apikey <key>' or X-API-Key.", secret=True
    )
    insecure: bool = _opt(False, "Serve the API without any key (development only).")
    max_body_bytes: int = _opt(
        4194304, "Largest accepted API request body (bytes); a larger one gets 413.", lo=1
    )


@dataclass(slots=True)
class EngineConfig:
    """``[engine]``: broker, history and presence storage (memory or Redis)."""

    type: str = _opt(
        "memory", "Engine: memory (one process) or redis (scale-out).", choices=("memory", "redis")
    )
    redis_url: list[str] = field(
        default_factory=lambda: ["redis://127.0.0.1:6379/0"],
        metadata=_meta(
            "Redis URL(s); several shard channels (a single string is accepted).",
            item_check=_check_redis_url,
        ),
    )
    redis_prefix: str = _opt("pushgate", "Prefix of every Redis key and channel.")
    redis_sentinel_master: str = _opt("", "Sentinel master name (used with redis_sentinels).")
    redis_sentinels: list[str] = field(
        default_factory=list,
        metadata=_meta(
            "Sentinel addresses as 'host:port' (empty = no Sentinel).",
            item_check=_check_host_port,
        ),
    )
    redis_cluster: list[str] = field(
        default_factory=list,
        metadata=_meta(
            "Redis Cluster seed nodes as 'host:port' or redis:// / rediss:// URLs (the "
            "first one's password and TLS settings apply to every node); empty = no "
            "cluster. Replaces redis_url.",
            item_check=_check_cluster_seed,
        ),
    )
    redis_cluster_shards: int = _opt(
        16,
        "On a Redis Cluster, channels and users are spread over this many hash slots "
        "(each with its own hash tag, spread evenly over the slot range); every node must "
        "use the same number.",
        lo=1,
        hi=1024,
    )
    node_heartbeat: float = _opt(3.0, "How often a node announces itself (duration).", lo=0)
    node_ttl: float = _opt(
        10.0,
        "A node unseen for this long is gone: another node removes its connections, "
        "announcing each leave and disconnect once (duration).",
        lo=0,
    )
    presence_ttl: float = _opt(
        60.0,
        "Presence entries expire unless refreshed; a backstop, as a dead node's entries are "
        "removed within node_ttl (duration).",
        lo=0,
    )
    history_meta_ttl: float = _opt(
        86400.0,
        "How long a channel's stream position (offset, epoch) outlives its history; after "
        "it, recovery from that stream reports recovered=false (duration).",
        lo=0,
    )


@dataclass(slots=True)
class ClientConfig:
    """``[client]``: per-connection timing and limits."""

    ping_interval: float = _opt(25.0, "Server ping interval (duration, > 0).", lo=0)
    pong_timeout: float = _opt(
        8.0,
        "Disconnect when no pong arrives within this time (duration, < ping_interval).",
        lo=0,
    )
    expired_grace: float = _opt(
        0.0, "Extra time after token expiry before disconnecting (duration).", lo=0
    )
    queue_max_bytes: int = _opt(
        1048576, "Write queue size at which a slow client is disconnected (bytes).", lo=1
    )
    max_frame_bytes: int = _opt(65536, "Largest accepted incoming frame (bytes).", lo=1)
    max_subscriptions: int = _opt(
        128, "Most channels one connection may subscribe to (0 = unlimited).", lo=0
    )
    max_connections_per_user: int = _opt(
        0, "Most concurrent connections per user (0 = unlimited).", lo=0
    )
    history_max_publications: int = _opt(
        1000, "Most publications one history call or recovery returns.", lo=1
    )
    presence_max_size: int = _opt(
        0, "Most clients returned by one presence call (0 = unlimited).", lo=0
    )
    max_connections: int = _opt(
        0,
        "Most concurrent connections on this node (0 = unlimited); past it connect is "
        "refused with disconnect 3504.",
        lo=0,
    )
    commands_per_second: int = _opt(
        100,
        "Commands (and pongs) one connection may send per second on average, a token "
        "bucket (0 = off); past it a command gets error 111.",
        lo=0,
    )
    commands_burst: int = _opt(
        200,
        "Commands a connection may send at once before commands_per_second applies "
        "(the bucket size); 10 refusals in a row disconnect with 3013.",
        lo=1,
    )
    publications_per_second: int = _opt(
        0,
        "Publications one connection may make per second (0 = off); past it publish gets "
        "error 111.",
        lo=0,
    )
    anonymous: bool = _opt(
        False,
        "Allow connecting without a token (user ''); Centrifugo's "
        "allow_anonymous_connect_without_token.",
    )
    insecure: bool = _opt(
        False,
        "Development only, as Centrifugo's client.insecure: connect without a token "
        "(anonymous), tokens never expire, and every client may subscribe to, publish in "
        "and read presence and history of any channel but the server's own.",
    )
    subscribe_to_user_personal_channel: bool = _opt(
        False,
        "Subscribe every connection of a user server-side to the user's personal channel "
        "<personal_channel_namespace>:#<user> ('#<user>' without a namespace).",
    )
    personal_channel_namespace: str = _opt(
        "", "Namespace of personal channels (must exist; empty = channels without one)."
    )
    personal_channel_single_connection: bool = _opt(
        False,
        "One connection per user: a new connection closes the user's others (3504) "
        "cluster-wide; needs subscribe_to_user_personal_channel and presence in its "
        "namespace.",
    )
    tags_filter_max_nodes: int = _opt(
        64,
        "Most nodes (comparisons and and/or/not) one subscription's tags filter may have; "
        "a larger one is refused with error 106.",
        lo=1,
    )
    connect_timeout: float = _opt(
        10.0,
        "A connection that has not sent connect within this time is closed as stale (3502).",
        lo=0,
    )
    connect_proxy_enabled: bool = _opt(
        False,
        "A connect without a token goes to the backend (the connect proxy), which answers "
        "with the user, or refuses; Centrifugo's client.proxy.connect (docs/proxy.md).",
    )
    connect_proxy_name: str = _opt("connect", "The [[proxies]] entry connect_proxy_enabled calls.")
    refresh_proxy_enabled: bool = _opt(
        False,
        "When a connection expires, ask the backend (the refresh proxy) to prolong it "
        "instead of the client; Centrifugo's client.proxy.refresh (docs/proxy.md).",
    )
    refresh_proxy_name: str = _opt("refresh", "The [[proxies]] entry refresh_proxy_enabled calls.")
    send_proxy_enabled: bool = _opt(
        False,
        "Client send messages (fire-and-forget, no reply) go to the backend (the send proxy); "
        "off: they are dropped (docs/proxy.md).",
    )
    send_proxy_name: str = _opt("send", "The [[proxies]] entry send_proxy_enabled calls.")


@dataclass(slots=True)
class PollingConfig:
    """``[polling]``: long polling and short polling sessions (``/connection/longpoll``,
    ``/connection/poll``)."""

    hold: float = _opt(
        25.0, "How long a long-poll request waits for messages before answering empty.", lo=0
    )
    session_timeout: float = _opt(
        30.0,
        "A polling session with no request for this long is closed, like a dropped "
        "connection (duration).",
        lo=0,
    )


_EXCHANGE_MAPPING = re.compile(r"[^\s/=]+(/[^\s=]*)?\s*=\s*\S+")


def _check_exchange_mapping(value: str) -> str | None:
    if _EXCHANGE_MAPPING.fullmatch(value.strip()):
        return None
    return (
        f"invalid exchange mapping {value!r} (expected "
        "'<exchange>/<routing-key pattern> = <channel template>', e.g. "
        "'board.events/board.* = board:{1}')"
    )


def _check_amqp_url(value: str) -> str | None:
    if value.startswith(("amqp://", "amqps://")):
        return None
    return f"invalid AMQP URL {value!r} (expected amqp:// or amqps://)"


@dataclass(slots=True)
class StompConfig:
    """``[stomp]``: STOMP over WebSocket (``/stomp``, ``/ws``) and over plain TCP."""

    tcp_port: int = _opt(
        0, "Port of the plain TCP STOMP listener on server.host (0 = off).", lo=0, hi=65535
    )
    heartbeat_send: int = _opt(
        10000,
        "Heart-beat the server offers to send, in ms (CONNECTED heart-beat sx; 0 = none).",
        lo=0,
    )
    heartbeat_receive: int = _opt(
        10000,
        "Heart-beat the server asks the client for, in ms (CONNECTED heart-beat sy; 0 = "
        "none); a client silent for 1.5 times the agreed interval is disconnected.",
        lo=0,
    )
    max_frame_bytes: int = _opt(65536, "Largest accepted incoming STOMP frame (bytes).", lo=64)
    max_transactions: int = _opt(
        4,
        "Transactions one connection may hold open at once (BEGIN without COMMIT or ABORT; "
        "0 = unlimited).",
        lo=0,
    )
    max_transaction_frames: int = _opt(
        1000, "SEND, ACK and NACK frames one transaction may hold (0 = unlimited).", lo=0
    )
    max_transaction_bytes: int = _opt(
        1048576,
        "Publication data (and channel names) one transaction may hold until COMMIT, in "
        "bytes (0 = unlimited).",
        lo=0,
    )
    exchanges: list[str] = field(
        default_factory=list,
        metadata=_meta(
            "Exchange mappings '<exchange>/<routing-key pattern> = <channel template>' "
            "('*' one word, '#' any words; {1}.. the matched words, {0} the whole key), "
            "for /exchange/ destinations and AMQP ingress.",
            item_check=_check_exchange_mapping,
        ),
    )
    rpc_destination_prefix: str = _opt(
        "/rpc/",
        "A SEND to <prefix><method> is a client RPC answered by the rpc proxy: the result "
        "comes back as a MESSAGE to the SEND's reply-to (empty = off; docs/proxy.md).",
    )


@dataclass(slots=True)
class AmqpConfig:
    """``[amqp]``: ingress of publications from a RabbitMQ queue bound to an exchange."""

    enabled: bool = _opt(False, "Consume publications from RabbitMQ.")
    url: str = _opt(
        "amqp://guest:guest@127.0.0.1:5672/",
        "AMQP URL of the broker.",
        secret=True,
    )
    exchange: str = _opt(
        "amq.topic",
        "Exchange the queue is bound to; routing keys map to channels by stomp.exchanges "
        "(amq.topic: the routing key is the channel).",
    )
    exchange_type: str = _opt(
        "topic",
        "Type of the exchange when pushgate declares it (not for amq.* exchanges).",
        choices=("topic", "direct", "fanout", "headers"),
    )
    queue: str = _opt("pushgate", "Durable queue pushgate declares and consumes from.")
    bindings: list[str] = field(
        default_factory=lambda: ["#"],
        metadata=_meta("Routing-key patterns binding the queue to the exchange."),
    )
    prefetch: int = _opt(100, "Unacknowledged messages RabbitMQ may have in flight.", lo=1)
    reconnect_delay: float = _opt(
        1.0, "Pause before reconnecting after the broker went away (duration).", lo=0
    )


@dataclass(slots=True)
class XmppConfig:
    """``[xmpp]``: XMPP over BOSH (``/http-bind``, ``/bosh``) and over WebSocket
    (``/xmpp-websocket``), for strophe.js and other XMPP clients."""

    domain: str = _opt(
        "localhost",
        "XMPP domain: JIDs are <user>@<domain>/<resource>; a stream to another domain is "
        "refused (host-unknown).",
    )
    muc_domain: str = _opt(
        "", "Domain of room JIDs, room@<muc_domain> (empty = 'conference.' + domain)."
    )
    contacts_namespace: str = _opt(
        "team",
        "Users sharing a channel of this namespace (from the JWT channels claim) are "
        "contacts: they see each other's presence, and chat goes only to contacts; it "
        "needs presence and join_leave (empty = no contacts).",
    )
    rooms_namespace: str = _opt(
        "room",
        "Namespace of the channel a room JID maps to: room@<muc_domain> is "
        "<rooms_namespace>:room (empty = no rooms).",
    )
    bosh_wait: float = _opt(
        60.0,
        "Longest a BOSH request is held before an empty answer (duration; a client "
        "asking for less gets less).",
        lo=1,
    )
    bosh_hold: int = _opt(
        1, "Most BOSH requests held at once (a client asking for fewer gets fewer).", lo=0
    )
    bosh_requests: int = _opt(
        2, "Most simultaneous BOSH requests: the rid window (at least bosh_hold + 1).", lo=1
    )
    bosh_inactivity: float = _opt(
        30.0,
        "A BOSH session with no request open for this long ends, and its presence with "
        "it (duration).",
        lo=1,
    )
    bosh_polling: float = _opt(
        2.0,
        "Shortest time between two empty BOSH requests of a client holding none "
        "(duration); faster polling is a policy-violation.",
        lo=0,
    )
    max_stanza_bytes: int = _opt(
        65536,
        "Largest BOSH body or XMPP WebSocket frame accepted (bytes); a larger one ends the "
        "stream (policy-violation).",
        lo=256,
    )
    max_depth: int = _opt(
        32, "Deepest element nesting accepted in client XML (policy-violation beyond).", lo=4
    )
    resume_ttl: float = _opt(
        3600.0,
        "How long the last positions an XMPP user was handed are kept, so a login after "
        "the session is gone resumes from channel history (duration; 0 = off).",
        lo=0,
    )
    chat_per_second: int = _opt(
        5,
        "Chat and groupchat messages one XMPP connection may send per second on average, "
        "a token bucket (0 = off); past it a message gets the stanza error "
        "resource-constraint.",
        lo=0,
    )
    chat_burst: int = _opt(
        20,
        "Chat and groupchat messages an XMPP connection may send at once before "
        "chat_per_second applies (the bucket size); 10 refusals in a row end the stream "
        "(policy-violation).",
        lo=1,
    )
    chat_to_other_dialects: bool = _opt(
        False,
        "Also deliver an XMPP chat to the recipient's connections of other protocols, as a "
        "message push carrying the authenticated sender (off = XMPP connections only).",
    )


def _check_static_header(value: str) -> str | None:
    name, colon, _ = value.partition(":")
    if colon and _HEADER_NAME.fullmatch(name.strip()):
        return None
    return f"invalid header {value!r} (expected 'Name: value')"


def _check_header_name(value: str) -> str | None:
    if _HEADER_NAME.fullmatch(value):
        return None
    return f"invalid header name {value!r}"


@dataclass(slots=True)
class ProxyConfig:
    """A ``[[proxies]]`` entry: a backend endpoint pushgate asks, over HTTP with
    Centrifugo's proxy JSON, what to do (Centrifugo's named ``proxies``)."""

    name: str = field(
        kw_only=True,
        metadata=_meta(
            "Proxy name, what client.*_proxy_name, namespaces' *_proxy_name and "
            "[rpc] proxy_name refer to (letters, digits, '_', '-', '.'; unique)."
        ),
    )
    endpoint: str = field(
        kw_only=True,
        metadata=_meta(
            "The backend's URL, http:// or https:// (one endpoint per proxy; gRPC "
            "endpoints are not supported, docs/proxy.md)."
        ),
    )
    timeout: float = _opt(
        1.0,
        "A call not answered within this time fails (duration); the client gets a "
        "temporary error (connect: error 100, and it retries).",
        lo=0.001,
    )
    http_headers: list[str] = field(
        default_factory=list,
        metadata=_meta(
            "Headers of the client's HTTP request (WebSocket handshake, SSE, HTTP-stream or "
            "polling request, BOSH) forwarded to the backend, e.g. ['Cookie', "
            "'Authorization'] (case-insensitive; none by default).",
            item_check=_check_header_name,
        ),
    )
    emulated_headers: list[str] = field(
        default_factory=list,
        metadata=_meta(
            "Headers a client sent in its connect command ('headers', chosen by the client: "
            "treat as untrusted) forwarded to the backend; a real HTTP header of the same "
            "name wins.",
            item_check=_check_header_name,
        ),
    )
    static_headers: list[str] = field(
        default_factory=list,
        metadata=_meta(
            "Headers added to every call, 'Name: value', e.g. a shared secret the backend "
            "checks (['X-Proxy-Key: …']); masked when the configuration is shown.",
            item_check=_check_static_header,
            secret=True,
        ),
    )
    binary_encoding: bool = _opt(
        False,
        "Send payloads as base64 'b64data' (encoding 'binary') instead of JSON 'data' "
        "(payloads that are not JSON always go as b64data).",
    )
    include_connection_meta: bool = _opt(
        False, "Send the connection's 'meta' (from the connect proxy's answer) with every call."
    )
    max_concurrency: int = _opt(
        64,
        "Calls in flight at once; past it a call fails at once with a temporary error "
        "(counted as result 'overloaded').",
        lo=1,
    )
    circuit_failures: int = _opt(
        5,
        "Failures in a row (timeouts, errors reaching the backend, bad answers) that open "
        "the circuit: calls then fail at once for circuit_open (0 = never).",
        lo=0,
    )
    circuit_open: float = _opt(
        5.0,
        "How long an open circuit fails calls at once before one call tries the backend "
        "again (duration).",
        lo=0,
    )


@dataclass(slots=True)
class RpcOptions:
    """What an RPC method's namespace says: whether the rpc proxy answers it."""

    proxy_enabled: bool = _opt(
        False,
        "Client RPCs are answered by the backend (the rpc proxy); off: error 108 "
        "(Centrifugo's rpc proxy_enabled).",
    )
    proxy_name: str = _opt("rpc", "The [[proxies]] entry that answers these RPCs.")


@dataclass(slots=True)
class RpcConfig(RpcOptions):
    """``[rpc]``: client RPCs whose method has no namespace (Centrifugo's
    ``rpc.without_namespace``), and how a method names its namespace."""

    namespace_boundary: str = _opt(
        ":",
        "Separates an RPC method's namespace from the rest: 'board:move' is in "
        "[[rpc_namespace]] 'board'.",
    )


@dataclass(slots=True)
class RpcNamespaceConfig(RpcOptions):
    """A ``[[rpc_namespace]]`` entry: options of RPC methods named ``<name>:...``
    (Centrifugo's ``rpc.namespaces``)."""

    name: str = field(
        kw_only=True,
        metadata=_meta(
            "RPC namespace name, the method's prefix before rpc.namespace_boundary "
            "(letters, digits, '_', '-', '.'; unique)."
        ),
    )


_EVENT_TYPES = (
    "connect",
    "disconnect",
    "user_online",
    "user_offline",
    "user_status",
    "channel_occupied",
    "channel_vacated",
    "notification_handoff",
)


def _check_event_type(value: str) -> str | None:
    if value in _EVENT_TYPES:
        return None
    return f"unknown event type {value!r} (expected one of {', '.join(_EVENT_TYPES)})"


def _check_http_url(value: str) -> str | None:
    if not value or value.startswith(("http://", "https://")):
        return None
    return f"invalid URL {value!r} (expected http:// or https://)"


@dataclass(slots=True)
class PresenceConfig:
    """``[presence]``: user status (attention rolled up over a user's connections)."""

    status_namespace: str = _opt(
        "",
        "Namespace of user status channels: pushgate publishes each change of a user's "
        "status to <namespace>:<user> and answers a subscribe with the current one "
        "(empty = no status channels; the namespace must exist).",
    )
    offline_delay: float = _opt(
        5.0,
        "A user without a connection anywhere is announced offline (status channel, "
        "user_offline event) only after this long: a reload is not an offline (duration).",
        lo=0,
    )


@dataclass(slots=True)
class EventsConfig:
    """``[events]``: events for the product's backend, from an ordered, durable log."""

    enabled: bool = _opt(False, "Write events to the event log and deliver them.")
    types: list[str] = field(
        default_factory=lambda: list(_EVENT_TYPES),
        metadata=_meta(
            "Event types written to the log (connect, disconnect, user_online, "
            "user_offline, user_status, channel_occupied, channel_vacated, "
            "notification_handoff).",
            item_check=_check_event_type,
        ),
    )
    webhook_url: str = _opt(
        "",
        "Deliver events by HTTP POST to this URL, signed (X-Pushgate-Signature) with "
        "events.webhook_secret (empty = no webhook).",
    )
    webhook_secret: str = _opt(
        "", "HMAC-SHA256 key of the webhook's signature (required with a webhook).", secret=True
    )
    webhook_timeout: float = _opt(
        5.0, "A webhook request not answered 2xx within this time failed (duration).", lo=0.1
    )
    amqp_url: str = _opt(
        "",
        "Deliver events to this RabbitMQ broker (persistent messages, publisher confirms; "
        "empty = no AMQP).",
        secret=True,
    )
    amqp_exchange: str = _opt(
        "pushgate.events",
        "Durable topic exchange events are published to, routing key = the event type.",
    )
    batch_size: int = _opt(
        100, "Events per webhook request (and per read of the log).", lo=1, hi=10000
    )
    retry_min_delay: float = _opt(
        0.5, "First pause before delivering again after a failure (duration).", lo=0.01
    )
    retry_max_delay: float = _opt(
        30.0,
        "Longest pause between delivery attempts; the pause doubles up to it (duration).",
        lo=0.01,
    )
    retention: int = _opt(
        100000,
        "Events kept in the log, delivered or not (replay reaches back this far; a backlog "
        "beyond it loses its oldest events, counted in pushgate_events_gaps_total).",
        lo=100,
    )
    lease: float = _opt(
        10.0,
        "One node delivers each log to each sink; another takes over when it has not "
        "renewed its lease for this long (duration).",
        lo=1,
    )


@dataclass(slots=True)
class NotificationsConfig:
    """``[notifications]``: hand-off of unseen notifications and read positions."""

    handoff_max_ttl: float = _opt(
        86400.0, "Longest hand-off TTL a publish may ask for (duration).", lo=1
    )
    read_channels_max: int = _opt(
        100, "Channels a user may keep a read position for (pushgate.mark_read).", lo=1
    )


@dataclass(slots=True)
class AdminConfig:
    """``[admin]``: the admin web page at ``/admin``."""

    password: str = _opt("", "Password of the admin page (empty = the page is off).", secret=True)
    session_ttl: float = _opt(
        43200.0,
        "How long an admin login lasts (duration); logging out ends it at once.",
        lo=60,
    )
    login_attempts: int = _opt(
        5,
        "Failed logins one address may make before each further attempt has to wait "
        "(1 s, then doubling up to login_max_backoff); refused attempts get 429.",
        lo=1,
    )
    login_attempts_global: int = _opt(
        20,
        "Failed logins from all addresses together before the same back-off applies to "
        "every login (an attacker rotating addresses).",
        lo=1,
    )
    login_max_backoff: float = _opt(
        300.0, "Longest wait between two login attempts once backing off (duration).", lo=1
    )
    login_window: float = _opt(
        900.0,
        "Failed logins are forgotten after this long without a login attempt (duration).",
        lo=1,
    )
    stats_interval: float = _opt(
        2.0, "How often each node publishes its live numbers to the admin page (duration).", lo=0.2
    )


@dataclass(slots=True)
class Config:
    """The whole configuration. ``namespace(name)`` looks up a ``[[namespace]]`` entry."""

    server: ServerConfig = field(default_factory=ServerConfig)
    token: TokenConfig = field(default_factory=TokenConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    client: ClientConfig = field(default_factory=ClientConfig)
    polling: PollingConfig = field(default_factory=PollingConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    stomp: StompConfig = field(default_factory=StompConfig)
    amqp: AmqpConfig = field(default_factory=AmqpConfig)
    xmpp: XmppConfig = field(default_factory=XmppConfig)
    rpc: RpcConfig = field(default_factory=RpcConfig)
    presence: PresenceConfig = field(default_factory=PresenceConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    notifications: NotificationsConfig = field(default_factory=NotificationsConfig)
    channel: ChannelConfig = field(default_factory=ChannelConfig)
    namespaces: list[NamespaceConfig] = field(default_factory=list)
    proxies: list[ProxyConfig] = field(default_factory=list)
    rpc_namespaces: list[RpcNamespaceConfig] = field(default_factory=list)
    _by_name: dict[str, NamespaceConfig] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self._by_name = {ns.name: ns for ns in self.namespaces}

    def namespace(self, name: str) -> NamespaceConfig | None:
        """The namespace called ``name``, or None."""
        if len(self._by_name) != len(self.namespaces):
            self._by_name = {ns.name: ns for ns in self.namespaces}
        return self._by_name.get(name)

    def options_for(self, channel: str) -> ChannelOptions | None:
        """Options governing ``channel``: its namespace's, ``[channel]``'s, or None if the
        channel names a namespace that does not exist."""
        boundary = self.channel.namespace_boundary
        if boundary and boundary in channel:
            return self.namespace(channel.split(boundary, 1)[0])
        return self.channel


#: TOML section name -> dataclass. ``[[namespace]]`` is handled separately.
SECTIONS: dict[str, type] = {
    "server": ServerConfig,
    "token": TokenConfig,
    "api": ApiConfig,
    "polling": PollingConfig,
    "admin": AdminConfig,
    "engine": EngineConfig,
    "client": ClientConfig,
    "stomp": StompConfig,
    "amqp": AmqpConfig,
    "xmpp": XmppConfig,
    "rpc": RpcConfig,
    "presence": PresenceConfig,
    "events": EventsConfig,
    "notifications": NotificationsConfig,
    "channel": ChannelConfig,
}
_NAMESPACE_SECTION = "namespace"
#: arrays of tables (``[[name]]``) → the dataclass of an entry and the Config field
ENTRY_SECTIONS: dict[str, tuple[type, str]] = {
    _NAMESPACE_SECTION: (NamespaceConfig, "namespaces"),
    "proxies": (ProxyConfig, "proxies"),
    "rpc_namespace": (RpcNamespaceConfig, "rpc_namespaces"),
}
_FIELDS: dict[type, dict[str, Field[Any]]] = {
    cls: {f.name: f for f in fields(cls)}
    for cls in (*SECTIONS.values(), *(cls for cls, _ in ENTRY_SECTIONS.values()))
}


def env_var_name(section: str, key: str) -> str:
    """The environment variable for ``section.key`` (e.g. PUSHGATE_SERVER_PORT)."""
    return f"{ENV_PREFIX}{section.upper()}_{key.upper()}"


def iter_options() -> Iterator[tuple[str, object, str]]:
    """Yield ("section.key", default, description) for every option, sections in file
    order, then the entries of ``[[namespace]]``, ``[[proxies]]`` and ``[[rpc_namespace]]``
    (``name`` first; default None = required)."""
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            yield f"{section}.{f.name}", _default_of(f), f.metadata["doc"]
    for section, (cls, _) in ENTRY_SECTIONS.items():
        for f in sorted(fields(cls), key=lambda f: f.name != "name"):
            yield f"{section}.{f.name}", _default_of(f), f.metadata["doc"]


def _default_of(f: Field[Any]) -> object:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None


# --------------------------------------------------------------------------- conversion


@dataclass(slots=True, frozen=True)
class _Origin:
    """Where a value came from: its label (key path or env var) and source (file name)."""

    label: str
    source: str = ""

    def error(self, message: str) -> str:
        suffix = f" (in {self.source})" if self.source else ""
        return f"{self.label}: {message}{suffix}"


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def _to_bool(value: object, text_ok: bool) -> bool:
    if isinstance(value, bool):
        return value
    if text_ok and isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE or lowered in _FALSE:
            return lowered in _TRUE
    raise ValueError(f"expected a boolean (true/false), got {value!r}")


def _to_int(value: object, text_ok: bool) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if text_ok and isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError(f"expected an integer, got {value!r}")


def _to_duration(value: object, text_ok: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"invalid duration {value!r}: expected a string like '10s' or seconds")
    return parse_duration(value)


def _to_str(value: object, text_ok: bool) -> str:
    if isinstance(value, str):
        return value
    raise ValueError(f"expected a string, got {value!r}")


def _to_str_list(value: object, text_ok: bool) -> list[str]:
    if isinstance(value, str):
        if text_ok:
            return [item.strip() for item in value.split(",") if item.strip()]
        return [value]
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return list(value)
    raise ValueError(f"expected a string or a list of strings, got {value!r}")


_CONVERTERS: dict[object, Callable[[object, bool], object]] = {
    bool: _to_bool,
    int: _to_int,
    float: _to_duration,
    str: _to_str,
    list[str]: _to_str_list,
}


def _convert(f: Field[Any], value: object, text_ok: bool) -> object:
    """Convert ``value`` to ``f``'s type and apply its rules; ValueError names the problem."""
    converted = _CONVERTERS[f.type](value, text_ok)
    _check_rules(f, converted)
    return converted


def _check_rules(f: Field[Any], value: object) -> None:
    meta = f.metadata
    lo, hi, choices = meta.get("lo"), meta.get("hi"), meta.get("choices")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if lo is not None and hi is not None and not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}, got {value!r}")
        if lo is not None and value < lo:
            raise ValueError(f"must be >= {lo}, got {value!r}")
    if choices and value not in choices:
        raise ValueError(f"expected one of {', '.join(choices)}; got {value!r}")
    item_check = meta.get("item_check")
    if item_check and isinstance(value, list):
        problems = [p for p in map(item_check, value) if p]
        if problems:
            raise ValueError("; ".join(problems))


def _suggest(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --------------------------------------------------------------------------- sources


class _Builder:
    """Accumulates values (section -> key -> value) with origins, and every error seen."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, object]] = {name: {} for name in SECTIONS}
        self.origins: dict[str, _Origin] = {}
        self.entries: dict[str, list[Any]] = {section: [] for section in ENTRY_SECTIONS}
        self.failed: set[str] = set()
        self.errors: list[str] = []

    def set(self, section: str, key: str, value: object, origin: _Origin, text_ok: bool) -> None:
        """Convert and store one value, or record why it is invalid."""
        f = _FIELDS[SECTIONS[section]][key]
        path = f"{section}.{key}"
        try:
            self.values[section][key] = _convert(f, value, text_ok)
        except ValueError as exc:
            self.errors.append(origin.error(str(exc)))
            self.failed.add(path)
            return
        self.failed.discard(path)
        self.origins[path] = origin

    def unknown_key(self, section: str, key: str, origin: _Origin) -> None:
        hint = _suggest(key, _FIELDS[SECTIONS[section]])
        self.errors.append(origin.error(f"unknown key in [{section}]{hint}"))


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: not UTF-8 text ({exc.reason})") from None


def _apply_toml(builder: _Builder, data: Mapping[str, Any], source: str) -> None:
    for section, table in data.items():
        if section in ENTRY_SECTIONS:
            _apply_entries(builder, section, table, source)
        elif section not in SECTIONS:
            hint = _suggest(section, [*SECTIONS, *ENTRY_SECTIONS])
            builder.errors.append(_Origin(section, source).error(f"unknown section{hint}"))
        elif not isinstance(table, dict):
            msg = f"expected a table [{section}], got {table!r}"
            builder.errors.append(_Origin(section, source).error(msg))
        else:
            _apply_table(builder, section, table, source)


def _apply_table(builder: _Builder, section: str, table: Mapping[str, Any], source: str) -> None:
    known = _FIELDS[SECTIONS[section]]
    for key, value in table.items():
        origin = _Origin(f"{section}.{key}", source)
        if section == "channel":
            key = CHANNEL_OPTION_ALIASES.get(key, key)
        if key in known:
            builder.set(section, key, value, origin, text_ok=False)
        else:
            builder.unknown_key(section, key, origin)


def _apply_entries(builder: _Builder, section: str, entries: object, source: str) -> None:
    """An array of tables (``[[namespace]]``, ``[[proxies]]``, ``[[rpc_namespace]]``)."""
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        msg = f"expected an array of tables ([[{section}]] entries)"
        builder.errors.append(_Origin(section, source).error(msg))
        return
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        built = _build_entry(builder, section, index, entry, source)
        if built is None:
            continue
        if built.name in seen:
            first = _nth_entry(seen[built.name], section)
            msg = f"duplicate {_ENTRY_NOUN[section]} {built.name!r} (also {first})"
            origin = _Origin(f"{_nth_entry(index, section)} name", source)
            builder.errors.append(origin.error(msg))
            continue
        seen[built.name] = index
        builder.entries[section].append(built)


#: what an entry of each array of tables is called in messages
_ENTRY_NOUN = {_NAMESPACE_SECTION: "namespace", "proxies": "proxy", "rpc_namespace": "namespace"}


def _build_entry(
    builder: _Builder, section: str, index: int, entry: Mapping[str, Any], source: str
) -> Any:
    cls, _ = ENTRY_SECTIONS[section]
    known = _FIELDS[cls]
    kwargs: dict[str, object] = {}
    ok = True
    label = _entry_label(index, entry.get("name"), section)
    for key, value in entry.items():
        origin = _Origin(f"{label} {key}", source)
        if section == _NAMESPACE_SECTION:
            key = CHANNEL_OPTION_ALIASES.get(key, key)
        if key not in known:
            msg = f"unknown key in [[{section}]]{_suggest(key, known)}"
            builder.errors.append(origin.error(msg))
            continue
        try:
            kwargs[key] = _convert(known[key], value, text_ok=False)
        except ValueError as exc:
            builder.errors.append(origin.error(str(exc)))
            ok = False
            continue
        builder.origins[origin.label] = origin
    required = [
        f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
    ]
    missing = [key for key in required if key not in entry]
    for key in missing:
        where = f"{_nth_entry(index, section)} name" if key == "name" else f"{label} {key}"
        builder.errors.append(_Origin(where, source).error("required"))
    if missing or not all(isinstance(kwargs.get(key), str) for key in required):
        return None  # a conversion error, if any, is already recorded
    name = kwargs["name"]
    assert isinstance(name, str)
    name_origin = _Origin(f"{_nth_entry(index, section)} name", source)
    if not _NAMESPACE_NAME.fullmatch(name):
        msg = f"invalid {_ENTRY_NOUN[section]} name {name!r} (only letters, digits, '_', '-', '.')"
        builder.errors.append(name_origin.error(msg))
        return None
    if section == _NAMESPACE_SECTION and name.startswith(RESERVED_CHANNEL_PREFIX):
        msg = f"namespace names beginning with {RESERVED_CHANNEL_PREFIX!r} are reserved"
        builder.errors.append(name_origin.error(msg))
        return None
    built = cls(**kwargs)
    if not ok:
        builder.failed.add(label)
    return built


def _nth_entry(index: int, section: str = _NAMESPACE_SECTION) -> str:
    """An entry of ``[[section]]`` by its place in the file (the first is #1)."""
    return f"[[{section}]] #{index + 1}"


def _entry_label(index: int, name: object, section: str = _NAMESPACE_SECTION) -> str:
    """How errors name an entry: by its name when it has a usable one."""
    if isinstance(name, str) and _NAMESPACE_NAME.fullmatch(name):
        return f'[[{section}]] "{name}"'
    return _nth_entry(index, section)


def _apply_env(builder: _Builder, env: Mapping[str, str]) -> None:
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX) or var in ENV_ALLOWLIST:
            continue
        section, key = _split_env_name(var)
        origin = _Origin(var)
        if section is None or key not in _FIELDS[SECTIONS[section]]:
            hint = _suggest(var, _all_env_names())
            builder.errors.append(origin.error(f"unknown setting{hint}"))
        else:
            builder.set(section, key, env[var], origin, text_ok=True)


def _split_env_name(var: str) -> tuple[str | None, str]:
    rest = var[len(ENV_PREFIX) :]
    for section in SECTIONS:
        prefix = section.upper() + "_"
        if rest.startswith(prefix):
            return section, rest[len(prefix) :].lower()
    return None, rest.lower()


def _all_env_names() -> list[str]:
    names = [env_var_name(s, k) for s, cls in SECTIONS.items() for k in _FIELDS[cls]]
    return [*names, *ENV_ALLOWLIST]


def _apply_overrides(builder: _Builder, overrides: Mapping[str, object]) -> None:
    for path, value in overrides.items():
        if value is None:
            continue
        section, _, key = path.partition(".")
        origin = _Origin(path, "overrides")
        if section not in SECTIONS or key not in _FIELDS[SECTIONS[section]]:
            known = [f"{s}.{k}" for s, cls in SECTIONS.items() for k in _FIELDS[cls]]
            builder.errors.append(origin.error(f"unknown option{_suggest(path, known)}"))
            continue
        builder.set(section, key, value, origin, text_ok=True)


# --------------------------------------------------------------------------- validation


def _validate(cfg: Config, builder: _Builder) -> None:
    """Checks that span several keys; skipped where a key involved was already invalid."""
    _check_client(cfg.client, builder)
    _check_tls(cfg.server, builder)
    _check_internal_listener(cfg.server, builder)
    _check_engine(cfg.engine, builder)
    _check_token(cfg.token, builder)
    _check_naming(cfg.channel, builder)
    _check_amqp(cfg.amqp, builder)
    _check_xmpp(cfg.xmpp, builder)
    _check_history(cfg.channel, "channel.", builder)
    for index, namespace in enumerate(cfg.namespaces):
        label = _entry_label(index, namespace.name)
        if label not in builder.failed:
            _check_history(namespace, f"{label} ", builder)
    _check_personal_channel(cfg, builder)
    _check_proxies(cfg, builder)
    _check_events(cfg, builder)


def _complain(builder: _Builder, path: str, message: str, *involved: str) -> None:
    """Report a cross-key problem at ``path``, naming the source of whichever key involved
    was set explicitly (``path`` itself first)."""
    keys = (path, *involved)
    if any(key in builder.failed for key in keys):
        return
    sources = [builder.origins[key] for key in keys if key in builder.origins]
    origin = builder.origins.get(path) or _Origin(path, sources[0].source if sources else "")
    builder.errors.append(origin.error(message))


def _check_tls(server: ServerConfig, builder: _Builder) -> None:
    if bool(server.tls_cert) != bool(server.tls_key):
        missing = "server.tls_key" if server.tls_cert else "server.tls_cert"
        other = "server.tls_cert" if server.tls_cert else "server.tls_key"
        _complain(builder, missing, f"required when {other} is set", other)
        return
    for key, path in (("server.tls_cert", server.tls_cert), ("server.tls_key", server.tls_key)):
        if path and not os.path.isfile(path):
            _complain(builder, key, f"no such file {path!r}")


def _check_internal_listener(server: ServerConfig, builder: _Builder) -> None:
    if server.internal_port and server.internal_port == server.port:
        _complain(
            builder,
            "server.internal_port",
            "must differ from server.port (the public listener)",
            "server.port",
        )


def _check_client(client: ClientConfig, builder: _Builder) -> None:
    if client.ping_interval <= 0:
        _complain(builder, "client.ping_interval", "must be > 0")
    elif client.pong_timeout >= client.ping_interval:
        msg = (
            f"must be less than client.ping_interval "
            f"({client.pong_timeout:g}s >= {client.ping_interval:g}s)"
        )
        _complain(builder, "client.pong_timeout", msg, "client.ping_interval")


def _check_engine(engine: EngineConfig, builder: _Builder) -> None:
    if engine.redis_sentinels and not engine.redis_sentinel_master:
        _complain(
            builder,
            "engine.redis_sentinel_master",
            "required when engine.redis_sentinels is set",
            "engine.redis_sentinels",
        )
    if engine.redis_cluster and engine.redis_sentinels:
        _complain(
            builder,
            "engine.redis_cluster",
            "cannot be combined with engine.redis_sentinels",
            "engine.redis_sentinels",
        )
    if engine.redis_cluster and ("{" in engine.redis_prefix or "}" in engine.redis_prefix):
        _complain(
            builder,
            "engine.redis_prefix",
            "must not contain '{' or '}' with engine.redis_cluster (hash tags)",
            "engine.redis_cluster",
        )
    if engine.type == "redis" and not engine.redis_url and not engine.redis_sentinels:
        _complain(
            builder,
            "engine.redis_url",
            "at least one URL is needed for the redis engine",
            "engine.type",
        )
    if engine.node_heartbeat >= engine.node_ttl:
        _complain(
            builder,
            "engine.node_ttl",
            "must be greater than engine.node_heartbeat",
            "engine.node_heartbeat",
        )


def _check_token(token: TokenConfig, builder: _Builder) -> None:
    for key in ("rsa_public_key", "ecdsa_public_key"):
        value = getattr(token, key).strip()
        if value and _PEM_MARKER not in value and not os.path.isfile(value):
            _complain(builder, f"token.{key}", f"neither PEM text nor an existing file: {value!r}")


def _check_amqp(amqp: AmqpConfig, builder: _Builder) -> None:
    problem = _check_amqp_url(amqp.url)
    if problem:
        _complain(builder, "amqp.url", problem)
    if amqp.enabled and not amqp.queue:
        _complain(builder, "amqp.queue", "required when amqp.enabled is on", "amqp.enabled")


def _check_xmpp(xmpp: XmppConfig, builder: _Builder) -> None:
    if xmpp.bosh_requests <= xmpp.bosh_hold:
        _complain(
            builder,
            "xmpp.bosh_requests",
            "must be greater than xmpp.bosh_hold",
            "xmpp.bosh_hold",
        )
    if not xmpp.domain or any(c in xmpp.domain for c in "@/ "):
        _complain(builder, "xmpp.domain", f"not a domain: {xmpp.domain!r}")


def _check_naming(channel: ChannelConfig, builder: _Builder) -> None:
    for key in ("namespace_boundary", "user_boundary", "user_separator"):
        if not getattr(channel, key):
            _complain(builder, f"channel.{key}", "must not be empty")


def _check_history(opts: ChannelOptions, prefix: str, builder: _Builder) -> None:
    """``prefix`` names the table the keys are in, with its separator (``channel.``)."""
    size, ttl = f"{prefix}history_size", f"{prefix}history_ttl"
    if opts.history_size > 0 and opts.history_ttl <= 0:
        _complain(builder, ttl, "required (> 0) when history_size is set", size)
    elif opts.history_ttl > 0 and opts.history_size <= 0:
        _complain(builder, size, "required (> 0) when history_ttl is set", ttl)
    has_history = opts.history_size > 0 and opts.history_ttl > 0
    for key in (
        "force_recovery",
        "force_positioning",
        "allow_recovery",
        "allow_positioning",
        "auto_cache_recover",
    ):
        if getattr(opts, key) and not has_history:
            _complain(
                builder,
                f"{prefix}{key}",
                "needs history (history_size and history_ttl)",
                size,
                ttl,
            )
    if opts.auto_cache_recover and opts.force_recovery_mode != "cache":
        _complain(
            builder,
            f"{prefix}auto_cache_recover",
            'needs force_recovery_mode = "cache"',
            f"{prefix}force_recovery_mode",
        )


def _check_personal_channel(cfg: Config, builder: _Builder) -> None:
    client = cfg.client
    key = "client.personal_channel_single_connection"
    if client.personal_channel_single_connection and not client.subscribe_to_user_personal_channel:
        _complain(
            builder,
            key,
            "needs client.subscribe_to_user_personal_channel",
            "client.subscribe_to_user_personal_channel",
        )
    if not client.subscribe_to_user_personal_channel:
        return
    name = client.personal_channel_namespace
    options: ChannelOptions | None = cfg.namespace(name) if name else cfg.channel
    if options is None:
        _complain(
            builder,
            "client.personal_channel_namespace",
            f"no [[namespace]] named {name!r}",
            "client.subscribe_to_user_personal_channel",
        )
    elif client.personal_channel_single_connection and not options.presence:
        where = f"namespace {name!r}" if name else "[channel]"
        _complain(builder, key, f"needs presence = true in {where} (the personal channels')")


#: (what enables it, what names the proxy) for the proxies of [client] and of channels
_CLIENT_PROXIES = (
    ("connect_proxy_enabled", "connect_proxy_name"),
    ("refresh_proxy_enabled", "refresh_proxy_name"),
    ("send_proxy_enabled", "send_proxy_name"),
)
_CHANNEL_PROXIES = (
    ("subscribe_proxy_enabled", "subscribe_proxy_name"),
    ("publish_proxy_enabled", "publish_proxy_name"),
    ("sub_refresh_proxy_enabled", "sub_refresh_proxy_name"),
)


def _check_proxies(cfg: Config, builder: _Builder) -> None:
    """Endpoints are HTTP URLs; every enabled proxy names a ``[[proxies]]`` entry."""
    names = {proxy.name for proxy in cfg.proxies}
    for index, proxy in enumerate(cfg.proxies):
        label = _entry_label(index, proxy.name, "proxies")
        scheme = urlsplit(proxy.endpoint).scheme
        if scheme not in ("http", "https") or not urlsplit(proxy.endpoint).netloc:
            hint = (
                " (gRPC proxies are not supported, see docs/proxy.md)"
                if scheme in ("grpc", "grpcs") or "://" not in proxy.endpoint
                else ""
            )
            _complain(builder, f"{label} endpoint", f"not an http(s) URL: {proxy.endpoint!r}{hint}")

    def check(path: str, options: object, pairs: tuple[tuple[str, str], ...]) -> None:
        for enabled, name_key in pairs:
            name = getattr(options, name_key)
            if getattr(options, enabled) and name not in names:
                known = f" (proxies: {', '.join(sorted(names))})" if names else ""
                _complain(
                    builder,
                    f"{path}{name_key}",
                    f"no [[proxies]] entry named {name!r}{known}",
                    f"{path}{enabled}",
                )

    check("client.", cfg.client, _CLIENT_PROXIES)
    check("channel.", cfg.channel, _CHANNEL_PROXIES)
    for index, namespace in enumerate(cfg.namespaces):
        check(f"{_entry_label(index, namespace.name)} ", namespace, _CHANNEL_PROXIES)
    rpc_pair = (("proxy_enabled", "proxy_name"),)
    check("rpc.", cfg.rpc, rpc_pair)
    for index, rpc_ns in enumerate(cfg.rpc_namespaces):
        check(f"{_entry_label(index, rpc_ns.name, 'rpc_namespace')} ", rpc_ns, rpc_pair)
    if not cfg.rpc.namespace_boundary:
        _complain(builder, "rpc.namespace_boundary", "must not be empty")


# --------------------------------------------------------------------------- entry points


def _check_events(cfg: Config, builder: _Builder) -> None:
    namespace = cfg.presence.status_namespace
    if namespace and cfg.namespace(namespace) is None:
        _complain(builder, "presence.status_namespace", f"no [[namespace]] named {namespace!r}")
    events = cfg.events
    problem = _check_http_url(events.webhook_url)
    if problem:
        _complain(builder, "events.webhook_url", problem)
    elif events.webhook_url and not events.webhook_secret:
        _complain(
            builder,
            "events.webhook_secret",
            "required when events.webhook_url is set (every request is signed)",
            "events.webhook_url",
        )
    if events.amqp_url:
        problem = _check_amqp_url(events.amqp_url)
        if problem:
            _complain(builder, "events.amqp_url", problem)
    if events.retry_max_delay < events.retry_min_delay:
        _complain(
            builder,
            "events.retry_max_delay",
            "must be at least events.retry_min_delay",
            "events.retry_min_delay",
        )


def load_config(
    path: str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Config:
    """Load and validate the configuration.

    Precedence (lowest first): defaults, the TOML file at ``path`` (or $PUSHGATE_CONFIG
    when ``path`` is None), ``PUSHGATE_<SECTION>_<KEY>`` variables from ``env``
    (``os.environ`` when None), then ``overrides`` ("section.key" -> value; None values
    are ignored). Raises ``ConfigError`` listing every problem found, one per line.
    """
    env = os.environ if env is None else env
    path = path if path is not None else (env.get(CONFIG_PATH_ENV) or None)
    builder = _Builder()
    if path is not None:
        _apply_toml(builder, _read_toml(path), source=path)
    _apply_env(builder, env)
    if overrides:
        _apply_overrides(builder, overrides)
    # each section's dataclass and each entry list, by Config's field name
    sections: dict[str, Any] = {name: cls(**builder.values[name]) for name, cls in SECTIONS.items()}
    entries: dict[str, Any] = {
        attr: builder.entries[section] for section, (_, attr) in ENTRY_SECTIONS.items()
    }
    cfg = Config(**entries, **sections)
    _validate(cfg, builder)
    if builder.errors:
        raise ConfigError(builder.errors)
    return cfg


def config_to_dict(cfg: Config, mask_secrets: bool = True) -> dict[str, Any]:
    """The configuration as plain data in TOML shape (namespaces under "namespace").

    With ``mask_secrets``, non-empty secrets become "***" (public keys only when given
    as PEM text, not as a file path) and passwords in Redis URLs are masked.
    """
    out: dict[str, Any] = {}
    for section in SECTIONS:
        out[section] = _section_dict(getattr(cfg, section), mask_secrets)
    for section, (_, attr) in ENTRY_SECTIONS.items():
        out[section] = [_section_dict(entry, mask_secrets) for entry in getattr(cfg, attr)]
    return out


def _section_dict(obj: "DataclassInstance", mask: bool) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, list):
            value = list(value)
        if mask and f.name == "static_headers":
            value = [f"{header.partition(':')[0]}: {_MASK}" for header in value]
        elif mask and f.metadata.get("secret") and _is_secret_text(f.name, value):
            value = _MASK
        elif mask and f.name in ("redis_url", "redis_cluster"):
            value = [_mask_url_password(url) for url in value]
        result[f.name] = value
    return result


def _is_secret_text(name: str, value: str) -> bool:
    if not value:
        return False
    return not name.endswith("_public_key") or _PEM_MARKER in value


def _mask_url_password(url: str) -> str:
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:{_MASK}@{hostport}"))
