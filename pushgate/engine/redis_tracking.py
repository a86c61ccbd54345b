"""The redis engine's memberships, connections, user status, notifications and event log.

Mixed into RedisEngine. Every change is one Lua script (redis_tracking_scripts.py) on the
shard of the channel or user it is about, so the change, the event it makes and the
leave it publishes happen together and once. Entries are indexed by this node's
*incarnation* (``<node id>.<n>``): the reaper (redis_reaper.py) finds a dead
incarnation's memberships and connections there and removes them with the same scripts.
A removal Redis could not take (an outage) is said again at every heartbeat until it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

import orjson
from redis.exceptions import RedisError

from pushgate.engine import resp
from pushgate.engine.base import ClientInfo
from pushgate.engine.tracking import (
    CODES,
    CONNECT,
    DISCONNECT,
    NAMES,
    OFFLINE,
    Connection,
    Handoff,
    LoggedEvent,
    ReadLimitExceeded,
    ReadPosition,
    Tracking,
    UserStatus,
)
from pushgate.metrics import EVENTS_PRODUCED

if TYPE_CHECKING:
    from pushgate.engine.redis_shard import RedisShard

log = logging.getLogger("pushgate.engine.redis")

_T = TypeVar("_T")

#: a user's key lives this long after their last connection opened (refreshed hourly
#: for users still connected: redis_engine._beat)
USER_KEEP = 86400
#: read positions are kept this long after the last change
READ_KEEP = 30 * 86400
#: acknowledged or handed-off notifications are remembered this long
SETTLED_KEEP = 86400
#: how often a waiting read of the event log looks again (events of other nodes)
POLL = 0.2
#: calls made together when many are said at once (after an outage, a rewrite)
CHUNK = 1000


class NodeLost(Exception):
    """This node's incarnation was found dead by the cluster: it must start again."""


async def _all(calls: list[Awaitable[Any]]) -> None:
    """Await every one (none left running), then raise the first error if any."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


def _info_json(info: ClientInfo) -> bytes:
    out: dict[str, Any] = {"c": info.client, "u": info.user}
    if info.conn_info is not None:
        out["ci"] = orjson.Fragment(info.conn_info)
    if info.chan_info is not None:
        out["chi"] = orjson.Fragment(info.chan_info)
    return orjson.dumps(out)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisTracking:
    """The tracking half of the engine interface, over Redis."""

    prefix: str
    tracking: Tracking
    incarnation: str
    shas: dict[str, str]
    shards: Sequence[RedisShard]
    _handler: Any

    def shard(self, name: str) -> RedisShard:
        raise NotImplementedError

    def _pubsub_channel(self, channel: str) -> str:
        raise NotImplementedError

    def _node_lost_soon(self) -> None:
        raise NotImplementedError

    def _init_tracking(self) -> None:
        self.tracking = Tracking()
        #: removals Redis did not take yet: key → the call that makes it
        self._unsaid: dict[tuple[str, ...], Callable[[], Awaitable[Any]]] = {}
        #: set when a script of this node wrote an event (wakes a waiting events_read)
        self._events_added = asyncio.Event()

    def _run(
        self, shard: RedisShard, name: str, keys: list[str], args: list[Any]
    ) -> asyncio.Future[resp.Reply]:
        return shard.script(self.shas[name], keys, args)

    def _flags(self) -> str:
        return self.tracking.flags

    def _wrote(self, events: int) -> None:
        """A script wrote ``events`` events: count them, wake a waiting reader."""
        if events:
            EVENTS_PRODUCED.inc(events)
            self._events_added.set()

    def _announced(self, user: str, code: bytes | str, when: float | None = None) -> None:
        """A script announced ``user``'s status ``code``: tell the hub (status channels)."""
        code = _text(code)
        if not code or self._handler is None:
            return
        name = NAMES[code]
        now = time.time() if when is None else when
        status = UserStatus(name, now, now if name == "active" else None)
        self._handler.handle_status(user, status)

    async def _said_again(self) -> None:
        """Retry the removals Redis could not take (at each heartbeat), a chunk at a
        time in one round trip each (not one round trip per removal: a node that lost
        Redis while its clients left has tens of thousands)."""
        unsaid = list(self._unsaid.items())
        for at in range(0, len(unsaid), CHUNK):
            chunk = unsaid[at : at + CHUNK]
            results = await asyncio.gather(*(call() for _, call in chunk), return_exceptions=True)
            unreachable = False
            for (key, call), result in zip(chunk, results, strict=True):
                if isinstance(result, (RedisError, OSError)):
                    unreachable = True
                    continue
                if isinstance(result, BaseException):
                    log.error("cannot say %s again", key, exc_info=result)
                if self._unsaid.get(key) is call:
                    del self._unsaid[key]
            if unreachable:
                return  # still unreachable: the next beat tries again

    async def _in_chunks(self, calls: Iterable[Callable[[], Awaitable[Any]]]) -> None:
        """Make every call, CHUNK at a time together (their commands share round
        trips); the first error stops it."""
        chunk: list[Awaitable[Any]] = []
        for call in calls:
            chunk.append(call())
            if len(chunk) == CHUNK:
                await _all(chunk)
                chunk = []
        if chunk:
            await _all(chunk)

    async def _say(self, key: tuple[str, ...], call: Callable[[], Awaitable[_T]]) -> _T:
        try:
            return await call()
        except (RedisError, OSError):
            self._unsaid[key] = call
            raise

    # --- memberships ----------------------------------------------------------------
    def _member_keys(self, channel: str, inc: str | None = None) -> list[str]:
        shard = self.shard(channel)
        return [
            shard.key("members", inc or self.incarnation),
            shard.key("presence", channel),
            shard.key("presence_exp", channel),
        ]

    async def member_add(
        self,
        channel: str,
        info: ClientInfo,
        *,
        presence: bool,
        ttl: float,
        joined: bool = False,
        quiet: bool = False,
    ) -> None:
        """``joined``, ``quiet``: a membership written again after Redis lost it — its join
        was announced already, and it makes no event."""
        shard = self.shard(channel)
        keys = self._member_keys(channel)
        keys += [shard.key("tomb", self.incarnation), shard.key("events", "log")]
        result = await self._run(
            shard,
            "MEMBER_ADD",
            keys,
            [
                f"{info.client} {channel}",
                info.client,
                _info_json(info),
                "1" if presence else "0",
                ttl,
                channel,
                "" if quiet else self._flags(),
                self.tracking.retention,
                "1" if joined else "0",
            ],
        )
        if result == -1:
            self._node_lost_soon()
            raise NodeLost("this node was found dead by the cluster")
        self._wrote(result)

    async def member_joined(self, channel: str, info: ClientInfo) -> None:
        await self._run(
            self.shard(channel),
            "MEMBER_JOINED",
            [self.shard(channel).key("members", self.incarnation)],
            [f"{info.client} {channel}", self._pubsub_channel(channel)],
        )

    async def member_update(self, channel: str, info: ClientInfo, ttl: float) -> None:
        await self._run(
            self.shard(channel),
            "MEMBER_UPDATE",
            self._member_keys(channel),
            [f"{info.client} {channel}", info.client, _info_json(info), ttl],
        )

    async def member_remove(self, channel: str, client_id: str, *, announce: bool) -> bool:
        inc = self.incarnation
        return await self._say(
            ("member", channel, client_id),
            lambda: self._remove_member(inc, channel, client_id, announce),
        )

    async def _remove_member(self, inc: str, channel: str, client_id: str, announce: bool) -> bool:
        keys = [*self._member_keys(channel, inc), self.shard(channel).key("events", "log")]
        removed, added = await self._run(
            self.shard(channel),
            "MEMBER_REMOVE",
            keys,
            [
                f"{client_id} {channel}",
                client_id,
                self._pubsub_channel(channel),
                "1" if announce else "0",
                channel,
                self._flags(),
                self.tracking.retention,
            ],
        )
        self._wrote(added)
        return bool(removed)

    async def refresh_presence(self, entries: list[tuple[str, ClientInfo]], ttl: float) -> None:
        """Push the expiry of this node's presence entries forward — only of entries that
        exist (``ZADD XX``): a refresh never brings back one the cluster removed."""
        expires = time.time() + ttl
        by_channel: dict[str, list[str]] = {}
        for channel, info in entries:
            by_channel.setdefault(channel, []).append(info.client)
        by_shard: dict[RedisShard, list[str]] = {}
        for channel in by_channel:
            by_shard.setdefault(self.shard(channel), []).append(channel)
        for shard, channels in by_shard.items():
            pipe = shard.client.pipeline(transaction=False)
            for channel in channels:
                hash_key, zset_key = (
                    shard.key("presence", channel),
                    shard.key("presence_exp", channel),
                )
                pipe.zadd(zset_key, dict.fromkeys(by_channel[channel], expires), xx=True)
                pipe.expire(hash_key, int(ttl) + 1)
                pipe.expire(zset_key, int(ttl) + 1)
            await pipe.execute()

    # --- connections and user status ----------------------------------------------------
    async def connection_opened(
        self, conn: Connection, state: str, quiet: bool = False
    ) -> dict[str, ReadPosition]:
        """``quiet``: a connection written again after Redis lost it (no connect event)."""
        template = conn.event(DISCONNECT, self.tracking.node_name)
        shard = self.shard(conn.user)
        result = await self._run(
            shard,
            "CONN_OPEN",
            [
                shard.key("user", conn.user),
                shard.key("conns", self.incarnation),
                shard.key("tomb", self.incarnation),
                shard.key("events", "log"),
                shard.key("timers"),
                shard.key("reads", conn.user),
            ],
            [
                conn.client,
                CODES[state],
                conn.user,
                "" if quiet else self._flags(),
                self.tracking.offline_delay,
                self.tracking.retention,
                conn.event(CONNECT, self.tracking.node_name),
                conn.user.encode() + b"\n" + template,
                USER_KEEP,
            ],
        )
        if result[0] == -1:
            self._node_lost_soon()
            raise NodeLost("this node was found dead by the cluster")
        _, told, added, reads = result
        self._wrote(added)
        self._announced(conn.user, told)
        return _positions(reads)

    async def connection_state(self, conn: Connection, state: str) -> None:
        shard = self.shard(conn.user)
        _, told, added = await self._run(
            shard,
            "CONN_STATE",
            [shard.key("user", conn.user), shard.key("events", "log"), shard.key("timers")],
            [
                conn.client,
                CODES[state],
                conn.user,
                self._flags(),
                self.tracking.offline_delay,
                self.tracking.retention,
            ],
        )
        self._wrote(added)
        self._announced(conn.user, told)

    async def connection_closed(self, conn: Connection, reason: str) -> None:
        inc = self.incarnation
        await self._say(
            ("conn", conn.client), lambda: self._close(inc, conn.client, conn.user, reason)
        )

    async def _close(
        self, inc: str, client: str, user: str, reason: str, when: float | None = None
    ) -> bool:
        shard = self.shard(user)
        closed, told, added = await self._run(
            shard,
            "CONN_CLOSE",
            [
                shard.key("user", user),
                shard.key("conns", inc),
                shard.key("events", "log"),
                shard.key("timers"),
            ],
            [
                client,
                user,
                self._flags(),
                self.tracking.offline_delay,
                self.tracking.retention,
                reason or "connection closed",
                "" if when is None else when,
            ],
        )
        self._wrote(added)
        self._announced(user, told, when)
        return bool(closed)

    async def user_statuses(self, users: list[str]) -> dict[str, UserStatus]:
        now = time.time()
        replies = await asyncio.gather(
            *(
                self.shard(user).batch.run(
                    ("HMGET", self.shard(user).key("user", user), "_pub", "_seen", "_act")
                )
                for user in users
            )
        )
        out = {}
        for user, (told, seen, active) in zip(users, replies, strict=True):
            name = NAMES[_text(told)] if told else OFFLINE
            out[user] = UserStatus(
                status=name,
                last_seen=now if name != OFFLINE else (float(seen) if seen else None),
                last_active=now if name == "active" else (float(active) if active else None),
            )
        return out

    # --- notifications --------------------------------------------------------------
    def _handoff_keys(self, channel: str) -> list[str]:
        shard = self.shard(channel)
        return [shard.key("timers"), shard.key("handoffs"), shard.key("settled", channel)]

    async def handoff_add(self, handoff: Handoff) -> bool:
        added = await self._run(
            self.shard(handoff.channel),
            "HANDOFF_ADD",
            self._handoff_keys(handoff.channel),
            [
                f"{handoff.channel}\n{handoff.offset}",
                handoff.offset,
                handoff.ttl,
                handoff.event(),
            ],
        )
        return bool(added)

    async def handoff_ack(self, channel: str, offset: int, epoch: str = "") -> bool:
        cancelled = await self._run(
            self.shard(channel),
            "HANDOFF_ACK",
            self._handoff_keys(channel),
            [f"{channel}\n{offset}", offset, SETTLED_KEEP, epoch],
        )
        return bool(cancelled == 1)

    async def read_mark(self, user: str, channel: str, position: ReadPosition, limit: int) -> bool:
        stored = await self._run(
            self.shard(user),
            "READ_MARK",
            [self.shard(user).key("reads", user)],
            [channel, position.offset, position.epoch, limit, READ_KEEP],
        )
        if stored == -1:
            raise ReadLimitExceeded(channel)
        return bool(stored)

    async def read_positions(self, user: str) -> dict[str, ReadPosition]:
        shard = self.shard(user)
        return _positions(await shard.batch.run(("HGETALL", shard.key("reads", user))))

    # --- the event log ---------------------------------------------------------------
    @property
    def event_shards(self) -> int:
        return len(self.shards)

    def _log_shard(self, shard: int) -> RedisShard:
        return self.shards[shard]

    async def events_read(
        self, shard: int, after: str, count: int, wait: float = 0.0
    ) -> list[LoggedEvent]:
        """XRANGE after ``after``; while there is nothing, polled every POLL seconds (or
        woken at once by an event this node wrote) until ``wait`` is over."""
        batch = self._log_shard(shard).batch
        key = self._log_shard(shard).key("events", "log")
        deadline = time.monotonic() + wait
        while True:
            self._events_added.clear()
            entries = await batch.run(("XRANGE", key, f"({after}", "+", "COUNT", count))
            left = deadline - time.monotonic()
            if entries or left <= 0:
                return [
                    LoggedEvent(_text(entry_id), _field(fields)) for entry_id, fields in entries
                ]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._events_added.wait(), min(POLL, left))

    async def events_bounds(self, shard: int) -> tuple[str | None, str | None]:
        client = self._log_shard(shard).client
        key = self._log_shard(shard).key("events", "log")
        # decode_responses is off: entry ids are bytes
        first = cast(list[tuple[bytes, Any]], await client.xrange(key, count=1))
        last = cast(list[tuple[bytes, Any]], await client.xrevrange(key, count=1))
        return (
            _text(first[0][0]) if first else None,
            _text(last[0][0]) if last else None,
        )

    async def events_lock(self, shard: int, sink: str, owner: str, lease: float) -> bool:
        held = await self._run(
            self._log_shard(shard),
            "EVENTS_LOCK",
            [self._log_shard(shard).key("events:lock", sink)],
            [owner, max(1, int(lease * 1000))],
        )
        return bool(held)

    async def events_unlock(self, shard: int, sink: str, owner: str) -> None:
        log_shard = self._log_shard(shard)
        await self._run(log_shard, "EVENTS_UNLOCK", [log_shard.key("events:lock", sink)], [owner])

    async def events_cursor(self, shard: int, sink: str) -> str | None:
        log_shard = self._log_shard(shard)
        value = await log_shard.batch.run(("GET", log_shard.key("events:cursor", sink)))
        return _text(value) if value else None

    async def events_commit(
        self, shard: int, sink: str, owner: str, old: str | None, new: str
    ) -> bool:
        log_shard = self._log_shard(shard)
        moved = await self._run(
            log_shard,
            "EVENTS_COMMIT",
            [log_shard.key("events:lock", sink), log_shard.key("events:cursor", sink)],
            [owner, old or "", new],
        )
        return bool(moved)

    async def events_rewind(self, shard: int, sink: str, cursor: str) -> None:
        log_shard = self._log_shard(shard)
        await log_shard.batch.run(("SET", log_shard.key("events:cursor", sink), cursor))


def _field(fields: list[bytes] | dict[bytes, bytes]) -> bytes:
    """The ``e`` field of a stream entry (RESP2: a flat list; a dict otherwise)."""
    if isinstance(fields, dict):
        return fields[b"e"]
    return fields[fields.index(b"e") + 1]


def _positions(flat: list[bytes]) -> dict[str, ReadPosition]:
    out = {}
    for i in range(0, len(flat), 2):
        offset, _, epoch = _text(flat[i + 1]).partition(":")
        out[_text(flat[i])] = ReadPosition(int(offset), epoch)
    return out
