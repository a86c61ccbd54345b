"""The engine interface and the values that cross it.

An engine is what the hub needs from the world outside one process: a broker that
assigns each channel's next offset and fans publications out to every node with
subscribers, the history stream behind recovery, presence, the user → nodes map and
user status. The memory engine implements it for one process; the redis engine for many.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NotRequired, Protocol, TypedDict

from pushgate.json_types import JsonObject

if TYPE_CHECKING:
    from pushgate.engine.tracking import (
        Connection,
        Handoff,
        LoggedEvent,
        ReadPosition,
        Tracking,
        UserStatus,
    )


@dataclass(slots=True, frozen=True)
class StreamPosition:
    """Where a channel's stream stands: the last offset and the stream's epoch.

    A position is its own awaitable (``await position`` is the position): an engine
    that publishes synchronously returns it from ``publish`` as it is, with no future
    made, and callers await whatever ``publish`` returned alike."""

    offset: int
    epoch: str

    def __await__(self) -> Generator[Any, None, StreamPosition]:
        return self
        yield  # a generator that returns at once: no suspension


#: what ``publish`` returns: the position when known at once, else its future
PublishResult = StreamPosition | asyncio.Future[StreamPosition]


@dataclass(slots=True)
class PublishOptions:
    """How an engine keeps a publication: the channel's history size and TTL (a
    0 in either: no history, no offset) and the publisher's idempotency key."""

    history_size: int = 0
    history_ttl: float = 0.0
    idempotency_key: str | None = None


@dataclass(slots=True)
class ClientInfo:
    """Who a connection is, as shown in presence, join/leave and publications.

    ``conn_info`` and ``chan_info`` are raw JSON bytes (or None).
    """

    client: str
    user: str
    conn_info: bytes | None = None
    chan_info: bytes | None = None


class BinaryData(bytes):
    """Publication data that is not JSON: bytes a Protobuf client published. Only
    encodings that carry bytes deliver it (a JSON connection cannot embed it); engines
    keep the mark across nodes and history."""

    __slots__ = ()


@dataclass(slots=True)
class Publication:
    """One message in a channel stream.

    ``data`` is raw JSON bytes, serialized once when published, or ``BinaryData``.
    ``offset`` is 0 for a channel without history. The engine sets ``offset`` and
    ``epoch``, the hub ``prev``; dialects fill ``cache`` with the wire bytes built for
    it, per dialect and framing, so a broadcast encodes it once whatever the number
    of subscribers, and ``message_id``.
    """

    data: bytes
    offset: int = 0
    #: the epoch of the stream the offset belongs to ("" without history)
    epoch: str = ""
    info: ClientInfo | None = None
    tags: dict[str, str] | None = None
    time: int = 0
    #: the publisher asked for delta compression (API ``delta``, namespace ``delta_publish``)
    use_delta: bool = False
    #: on a subscriber's copy only: ``data`` is a fossil delta against the publication
    #: before it (the wire flag ``delta``)
    delta: bool = False
    #: set by the hub: the channel's publication before this one on this node, the base
    #: of its delta; cleared once a later one arrives (no chain is kept)
    prev: Publication | None = field(default=None, compare=False, repr=False)
    cache: dict[object, bytes] = field(default_factory=dict, compare=False, repr=False)
    #: the id a dialect names it by, the same for every recipient (STOMP's message-id
    #: of a publication without offset); "" until one is given
    message_id: str = field(default="", compare=False, repr=False)


@dataclass(slots=True)
class HistoryResult:
    """Publications read from a stream and the stream's current position."""

    publications: list[Publication]
    position: StreamPosition


class UnrecoverablePosition(Exception):
    """The requested position is not in the stream (wrong epoch or trimmed away)."""


class NodeSnapshot(TypedDict):
    """What the engine's heartbeat reads of its node (``EngineHandler.node_snapshot``)."""

    #: the node's info (name, version, counts...) as the server API's ``info`` lists it
    info: JsonObject
    #: its connected users (empty unless asked)
    users: list[str]
    #: (channel, info) of its present subscribers (empty unless asked)
    presence: list[tuple[str, ClientInfo]]
    #: with ``members``: every membership (channel, info, presence, joined announced)
    members: NotRequired[list[tuple[str, ClientInfo, bool, bool]]]
    #: with ``members``: every tracked connection and its attention
    connections: NotRequired[list[tuple[Connection, str]]]


class EngineHandler(Protocol):
    """What an engine calls back into: the node's hub."""

    def handle_publication(self, channel: str, pub: Publication, epoch: str) -> None: ...

    def handle_join(self, channel: str, info: ClientInfo) -> None: ...

    def handle_leave(self, channel: str, info: ClientInfo) -> None: ...

    def handle_control(self, message: JsonObject) -> None: ...

    def handle_resync(self) -> None:
        """The engine's feed was interrupted: publications may have been missed."""

    def handle_status(self, user: str, status: UserStatus) -> None:
        """A user's status changed, as announced (once, by the node that saw it)."""

    async def handle_node_lost(self) -> None:
        """The cluster declared this node dead (it stopped beating for longer than
        ``node_ttl``) and removed its connections: drop every connection, which the
        clients then make again."""

    def node_snapshot(
        self, presence: bool = True, users: bool = True, members: bool = False
    ) -> NodeSnapshot:
        """``{"info": node info, "users": [...], "presence": [(channel, ClientInfo)]}``
        of this node, for the engine's heartbeat (``presence`` and ``users`` empty
        unless asked: a node with many connections should not list them every beat);
        with ``members`` also ``"members"`` [(channel, info, presence, joined)] and
        ``"connections"`` [(Connection, attention)], to write again what Redis lost."""


class Engine(ABC):
    """Broker + history + presence + user status. Every method may await I/O."""

    name: str = "engine"
    #: whether several processes can share this engine
    multi_node: bool = False

    @abstractmethod
    async def start(self, handler: EngineHandler, node_id: str) -> None:
        """Begin delivering to ``handler``; ``node_id`` names this process."""

    @abstractmethod
    async def close(self) -> None:
        """Stop and release connections."""

    # --- broker -------------------------------------------------------------------
    @abstractmethod
    def publish(self, channel: str, pub: Publication, opts: PublishOptions) -> PublishResult:
        """Assign the channel's next offset (when history is kept), append, fan out.

        Returns the new stream position, ``StreamPosition(0, "")`` when no history is
        kept: the position itself when the engine knows it at once, else a future of it
        (either is awaited alike). Started before it returns (no coroutine or task per
        publication), so a batch of publications costs one call each. The publication
        reaches ``handle_publication`` on every node subscribed.
        """

    @abstractmethod
    async def publish_join(self, channel: str, info: ClientInfo) -> None: ...

    @abstractmethod
    async def publish_leave(self, channel: str, info: ClientInfo) -> None: ...

    @abstractmethod
    async def publish_control(self, message: JsonObject) -> None:
        """Send a node-to-node message to every node (this one included)."""

    @abstractmethod
    async def subscribe(self, channel: str) -> None:
        """This node has its first subscriber to ``channel``: start receiving it."""

    @abstractmethod
    async def unsubscribe(self, channel: str) -> None:
        """This node has no subscriber left on ``channel``."""

    # --- history ------------------------------------------------------------------
    @abstractmethod
    async def history(
        self,
        channel: str,
        *,
        since: StreamPosition | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> HistoryResult:
        """Publications after ``since`` (or from the start), at most ``limit``.

        ``limit=0`` returns only the current position. Raises UnrecoverablePosition
        when ``since`` has another epoch or lies before what the stream still holds; an
        empty epoch in ``since`` stands for the current one.
        """

    @abstractmethod
    async def remove_history(self, channel: str) -> None: ...

    # --- presence -----------------------------------------------------------------
    @abstractmethod
    async def add_presence(self, channel: str, info: ClientInfo, ttl: float) -> None:
        """A raw presence entry, outside any membership (the hub uses ``member_add``)."""

    @abstractmethod
    async def remove_presence(self, channel: str, client_id: str) -> None: ...

    @abstractmethod
    async def presence(self, channel: str) -> dict[str, ClientInfo]: ...

    @abstractmethod
    async def presence_stats(self, channel: str) -> tuple[int, int]:
        """(number of clients, number of unique users) present in ``channel``."""

    # --- memberships: presence and join/leave, each announced once -----------------
    @abstractmethod
    async def member_add(
        self, channel: str, info: ClientInfo, *, presence: bool, ttl: float
    ) -> None:
        """``info`` became a member of ``channel`` (with a presence entry when
        ``presence``; the first presence entry of a channel is a channel_occupied
        event). Its join is announced later, by ``member_joined``."""

    @abstractmethod
    async def member_joined(self, channel: str, info: ClientInfo) -> None:
        """Announce the member's join to the channel (again after a change of info)."""

    @abstractmethod
    async def member_update(self, channel: str, info: ClientInfo, ttl: float) -> None:
        """The member's info changed: its presence entry shows the new one."""

    @abstractmethod
    async def member_remove(self, channel: str, client_id: str, *, announce: bool) -> bool:
        """The membership ends: its presence entry goes (the last one: channel_vacated)
        and, with ``announce``, its leave is published if its join was. Exactly once
        cluster-wide, whoever removes it (this node, or the one that found this node
        dead): False when it was already gone."""

    # --- connections and user status -----------------------------------------------
    def track(self, tracking: Tracking) -> None:
        """What to track and tell; set before ``start``."""
        self.tracking = tracking

    @abstractmethod
    async def connection_opened(self, conn: Connection, state: str) -> dict[str, ReadPosition]:
        """A connection of ``conn.user`` opened with attention ``state``; returns the
        user's read positions (for the connect)."""

    @abstractmethod
    async def connection_state(self, conn: Connection, state: str) -> None:
        """The connection reports another attention state."""

    @abstractmethod
    async def connection_closed(self, conn: Connection, reason: str) -> None:
        """The connection closed; exactly once, like ``member_remove``."""

    @abstractmethod
    async def user_statuses(self, users: list[str]) -> dict[str, UserStatus]:
        """Each user's status, rolled up over their connections on every node."""

    async def user_status(self, users: list[str]) -> dict[str, tuple[bool, float | None]]:
        """user → (online anywhere, last seen time or None if never seen)."""
        statuses = await self.user_statuses(users)
        return {user: (s.online, s.last_seen) for user, s in statuses.items()}

    # --- notifications: hand-off timers and read positions --------------------------
    @abstractmethod
    async def handoff_add(self, handoff: Handoff) -> bool:
        """Hand ``handoff`` to the product (a notification_handoff event) unless it is
        acknowledged within its TTL; False if it was acknowledged or handled already."""

    @abstractmethod
    async def handoff_ack(self, channel: str, offset: int, epoch: str = "") -> bool:
        """A connection displayed the publication: no hand-off for it, on any node.
        True when a waiting hand-off was cancelled; with ``epoch``, only one of that
        stream (after a stream is lost, offsets start again)."""

    @abstractmethod
    async def read_mark(self, user: str, channel: str, position: ReadPosition, limit: int) -> bool:
        """``user`` has read ``channel`` up to ``position`` (a newer offset, or another
        epoch); False when it says nothing new. ReadLimitExceeded beyond ``limit`` channels."""

    @abstractmethod
    async def read_positions(self, user: str) -> dict[str, ReadPosition]: ...

    # --- the event log ------------------------------------------------------------
    @property
    def event_shards(self) -> int:
        """Number of separate event logs (one per Redis shard): each is ordered."""
        return 1

    @abstractmethod
    async def events_read(
        self, shard: int, after: str, count: int, wait: float = 0.0
    ) -> list[LoggedEvent]:
        """Events after id ``after`` ("0-0": from the oldest kept), at most ``count``;
        waits up to ``wait`` seconds for one when there is none."""

    @abstractmethod
    async def events_bounds(self, shard: int) -> tuple[str | None, str | None]:
        """Ids of the oldest and newest events kept (None, None when empty)."""

    @abstractmethod
    async def events_lock(self, shard: int, sink: str, owner: str, lease: float) -> bool:
        """Take or renew the right to deliver ``shard``'s events to ``sink``."""

    @abstractmethod
    async def events_unlock(self, shard: int, sink: str, owner: str) -> None: ...

    @abstractmethod
    async def events_cursor(self, shard: int, sink: str) -> str | None:
        """Id of the last event ``sink`` took, None if it never took one."""

    @abstractmethod
    async def events_commit(
        self, shard: int, sink: str, owner: str, old: str | None, new: str
    ) -> bool:
        """Move the cursor from ``old`` to ``new``, if ``owner`` still holds the lock and
        nobody moved it meanwhile (a replay); else False."""

    @abstractmethod
    async def events_rewind(self, shard: int, sink: str, cursor: str) -> None:
        """Set the cursor (replay from there)."""

    # --- small shared values ------------------------------------------------------
    # What every node of the cluster must agree on beyond channels: admin sessions,
    # login throttling, the internal token key. Few keys, small values, rare calls.
    @abstractmethod
    async def kv_get(self, key: str) -> bytes | None:
        """The value stored at ``key``, or None (never set, expired or deleted)."""

    @abstractmethod
    async def kv_set(self, key: str, value: bytes, ttl: float, *, only_new: bool = False) -> bool:
        """Store ``value`` for ``ttl`` seconds (0 = no expiry); with ``only_new``, only if
        ``key`` holds nothing. True when stored."""

    @abstractmethod
    async def kv_delete(self, key: str) -> None: ...

    @abstractmethod
    async def kv_incr(self, key: str, ttl: float, amount: int = 1) -> int:
        """Add ``amount`` to the counter at ``key`` (a missing one is 0), make it expire
        ``ttl`` seconds from now, and return the new count; atomic across nodes."""

    # --- cluster ------------------------------------------------------------------
    async def ping(self) -> None:  # noqa: B027 - nothing to reach for an in-process engine
        """Raise if the engine's backing service cannot be reached."""

    async def survey(
        self, ask: Callable[[str], JsonObject], local_answer: JsonObject, timeout: float = 2.0
    ) -> list[JsonObject]:
        """Ask every other live node a question and gather their answers, this node's
        ``local_answer`` first. ``ask(reply_to)`` is the control message to send (the
        hub's, hub/control.py), naming where the answers go. An engine of one node has
        nothing to ask."""
        return [local_answer]

    async def answer_survey(self, reply_to: str, answer: JsonObject) -> None:  # noqa: B027
        """Send this node's answer to a survey another node asked (none on one node)."""

    @abstractmethod
    async def nodes(self, this_node: JsonObject) -> list[JsonObject]:
        """Info of every live node; ``this_node`` is this process's own entry."""
