"""The redis engine: one pushgate cluster over Redis, for many processes and machines.

Channels are spread over one or more Redis servers (shards) by a stable hash of their
name, or served by one master found through Sentinel. Per channel: a Stream with its
history and a meta hash with its top offset and epoch, written by one Lua script that
also publishes to the channel's PUB/SUB channel, so offsets are atomic and delivery
order is offset order. A node subscribes to the PUB/SUB channels of the channels it has
subscribers for, and nothing else. After a lost PUB/SUB connection the node resubscribes
with backoff and asks the hub to check every channel for publications it may have missed.

Memberships (presence, join/leave), connections, user status, hand-off timers, read
positions and the event log are redis_tracking.py's; the node registry and its heartbeat
are here, and redis_reaper.py removes what a dead node held — leaves and disconnects
announced once, cluster-wide, within ``node_ttl`` and a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import itertools
import logging
import secrets
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import hiredis
import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from pushgate.config import EngineConfig
from pushgate.engine import redis_scripts, redis_tracking_scripts, resp
from pushgate.engine.base import (
    BinaryData,
    ClientInfo,
    Engine,
    EngineHandler,
    HistoryResult,
    Publication,
    PublishOptions,
    StreamPosition,
    UnrecoverablePosition,
)
from pushgate.engine.redis_batch import AutoPipeline
from pushgate.engine.redis_cluster import ClusterRouter
from pushgate.engine.redis_reaper import Reaper
from pushgate.engine.redis_shard import RedisShard
from pushgate.engine.redis_tracking import USER_KEEP, NodeLost, RedisTracking
from pushgate.engine.resp import Address, RespConnection
from pushgate.json_types import JsonObject

log = logging.getLogger("pushgate.engine.redis")

IDEMPOTENCY_TTL = 300
#: a node's users' keys are made to live a day longer this often (see _beat)
USER_REFRESH_SECONDS = 3600.0
#: dead nodes stay in the registry this long after they expire, for users' last-seen
DEAD_NODE_KEEP_SECONDS = 3600.0
MAX_BACKOFF = 5.0
MAX_CONNECTIONS = 64  # per shard and process
POOL_TIMEOUT = 10.0  # seconds a command may wait for a free connection
SUBSCRIBE_TIMEOUT = 10.0
#: a PUB/SUB connection idle this long is pinged; three times this long, it is dropped
HEALTH_CHECK_INTERVAL = 5.0
#: channels per SUBSCRIBE command when (re)subscribing everything
SUBSCRIBE_CHUNK = 1000


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


def _fixed(address: Address) -> Callable[[], Awaitable[Address]]:
    async def where() -> Address:
        return address

    return where


def _info_dict(info: ClientInfo) -> JsonObject:
    out: dict[str, Any] = {"c": info.client, "u": info.user}
    if info.conn_info is not None:
        out["ci"] = orjson.Fragment(info.conn_info)
    if info.chan_info is not None:
        out["chi"] = orjson.Fragment(info.chan_info)
    return out


def _info_from(obj: JsonObject) -> ClientInfo:
    conn = obj.get("ci")
    chan = obj.get("chi")
    return ClientInfo(
        obj["c"],
        obj["u"],
        None if conn is None else orjson.dumps(conn),
        None if chan is None else orjson.dumps(chan),
    )


def encode_publication(pub: Publication) -> bytes:
    """Meta JSON, a newline, then the data bytes as they are (never parsed again)."""
    meta: dict[str, Any] = {"tm": pub.time}
    if pub.info is not None:
        meta["i"] = _info_dict(pub.info)
    if pub.tags:
        meta["t"] = pub.tags
    if type(pub.data) is BinaryData:
        meta["b"] = 1
    if pub.use_delta:
        meta["d"] = 1
    return orjson.dumps(meta) + b"\n" + pub.data


def decode_publication(body: bytes, offset: int, epoch: str) -> Publication:
    meta_raw, _, data = body.partition(b"\n")
    meta = orjson.loads(meta_raw)
    info = meta.get("i")
    return Publication(
        BinaryData(data) if meta.get("b") else data,
        offset=offset,
        epoch=epoch,
        info=None if info is None else _info_from(info),
        tags=meta.get("t"),
        time=meta.get("tm", 0),
        use_delta=bool(meta.get("d")),
    )


class Shard:
    """One Redis server (or Sentinel-managed master, or Redis Cluster master): this node's
    command connection and PUB/SUB connection to it (resp.py), and a redis-py client for
    the rest. Its keys start with ``prefix``; on a cluster, redis_cluster.py's buckets
    play the shards and these are their masters' connections (``sharded``: SSUBSCRIBE)."""

    def __init__(
        self,
        engine: RedisEngine,
        client: Any,
        name: str,
        address: Callable[[], Awaitable[Address]],
        *,
        prefix: str = "",
        sharded: bool = False,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.client = client
        self.name = name
        self.address = address
        self.prefix = prefix or engine.prefix
        self.sharded = sharded
        #: called when the PUB/SUB connection is lost or Redis dropped a subscription
        self.on_lost = on_lost
        #: tell the hub to resync once the first connection is subscribed, too
        self.resync_on_first = False
        self._sub, self._unsub = (
            ("SSUBSCRIBE", "SUNSUBSCRIBE") if sharded else ("SUBSCRIBE", "UNSUBSCRIBE")
        )
        self.channels: set[str] = set()  # PUB/SUB channel names wanted
        #: PUB/SUB channels left in this tick, unsubscribed from together at its end
        self.leaving: set[str] = set()
        self.pubsub: RespConnection | None = None
        #: set while ``pubsub`` is connected and subscribed to what was wanted
        self.connected = asyncio.Event()
        self.confirmations: dict[bytes, list[asyncio.Future[resp.Reply]]] = {}
        self.reader: asyncio.Task[None] | None = None
        self.publish_sha = engine.shas["PUBLISH"]
        self.history_sha = engine.shas["HISTORY"]
        self.scripts = engine.script_bodies
        #: this tick's commands, written together on the command connection
        self.batch: AutoPipeline = AutoPipeline(self._open_commands)
        #: the heartbeat's own connection: a node's proof of life must not queue behind
        #: its bulk commands (when every client of a node leaves at once, tens of
        #: thousands of them wait on ``batch``; a beat behind them came later than
        #: ``node_ttl`` and the other nodes declared this one dead)
        self.beats: AutoPipeline = AutoPipeline(self._open_commands)

    def key(self, kind: str, name: str = "") -> str:
        """``<prefix>:<kind>:<name>`` (``<prefix>:<kind>`` without a name)."""
        return f"{self.prefix}:{kind}:{name}" if name else f"{self.prefix}:{kind}"

    async def _open_commands(self) -> RespConnection:
        return await resp.connect(await self.address(), scripts=self.scripts)

    def script(self, sha: str, keys: list[str], args: list[Any]) -> asyncio.Future[resp.Reply]:
        """Run one of ``self.scripts`` with this tick's commands."""
        return self.batch.run(("EVALSHA", sha, len(keys), *keys, *args))

    def heartbeat_script(
        self, sha: str, keys: list[str], args: list[Any]
    ) -> asyncio.Future[resp.Reply]:
        """Run one of ``self.scripts`` on the heartbeat's own connection (``beats``)."""
        return self.beats.run(("EVALSHA", sha, len(keys), *keys, *args))

    async def start(self) -> None:
        self.reader = asyncio.create_task(self._read_forever(), name=f"redis-pubsub-{self.name}")

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.reader
        if self.pubsub is not None:
            self.pubsub.close()
        await self.batch.close()
        await self.beats.close()
        if self.client is not None:
            await self.client.aclose()

    async def subscribe(self, channel: str) -> None:
        self.channels.add(channel)
        if self.pubsub is None:
            # (re)connecting: the reader may already have taken its list of channels, so
            # wait for it and subscribe here; a subscription is only done once confirmed
            await asyncio.wait_for(self.connected.wait(), SUBSCRIBE_TIMEOUT)
        pubsub = self.pubsub
        if pubsub is None or not pubsub.is_open:
            raise ConnectionError("redis connection lost")
        key = channel.encode()
        confirmed = asyncio.get_running_loop().create_future()
        self.confirmations.setdefault(key, []).append(confirmed)
        pubsub.write(self._sub, channel)
        # publications are only received once Redis has confirmed the subscription;
        # history must not be read before that or one could fall in between
        await asyncio.wait_for(confirmed, SUBSCRIBE_TIMEOUT)

    async def unsubscribe(self, channel: str) -> None:
        """Unsubscribed with the others of this tick, in one write at its end: when
        every client of a node leaves at once, thousands of personal channels are left,
        and a write each was a sixth of the node's CPU for the goodbyes."""
        self.channels.discard(channel)
        if self.pubsub is None:
            return
        if not self.leaving:
            asyncio.get_running_loop().call_soon(self._leave)
        self.leaving.add(channel)

    def _leave(self) -> None:
        # a channel wanted again since it was left stays subscribed
        leaving = [channel for channel in self.leaving if channel not in self.channels]
        self.leaving = set()
        pubsub = self.pubsub
        if leaving and pubsub is not None and pubsub.is_open:
            pubsub.write_many(self.subscribe_commands(leaving, unsubscribe=True))

    def subscribe_commands(
        self, channels: list[str], unsubscribe: bool = False
    ) -> list[resp.Command]:
        """(UN)SUBSCRIBE commands for ``channels``, in chunks; SSUBSCRIBE takes the
        channels of one slot at a time."""
        verb = self._unsub if unsubscribe else self._sub
        groups: dict[int, list[str]] = {}
        for channel in channels:
            groups.setdefault(key_slot(channel.encode()) if self.sharded else 0, []).append(channel)
        return [
            (verb, *chunk[at : at + SUBSCRIBE_CHUNK])
            for chunk in groups.values()
            for at in range(0, len(chunk), SUBSCRIBE_CHUNK)
        ]

    async def subscribe_many(self, channels: list[str]) -> None:
        """Subscribe to ``channels`` on the current connection, confirmed (a cluster's
        slots moved here)."""
        self.channels.update(channels)
        await asyncio.wait_for(self.connected.wait(), SUBSCRIBE_TIMEOUT)
        pubsub = self.pubsub
        if pubsub is None or not pubsub.is_open:
            raise RedisConnectionError("redis connection lost")
        waiters = self._expect(channels)
        for command in self.subscribe_commands(channels):
            pubsub.write(*command)
        await self._confirmed(pubsub, waiters)

    def _expect(self, channels: list[str]) -> list[asyncio.Future[resp.Reply]]:
        loop = asyncio.get_running_loop()
        waiters = []
        for channel in channels:
            waiter = loop.create_future()
            self.confirmations.setdefault(channel.encode(), []).append(waiter)
            waiters.append(waiter)
        return waiters

    async def _read_forever(self) -> None:
        delay = 0.1
        first = not self.resync_on_first
        while True:
            connection: RespConnection | None = None
            try:
                connection = await resp.connect(await self.address())
                connection.listen(self._on_push)
                wanted = sorted(self.channels)
                # confirmed before anyone is told the feed is back: a publication made
                # after the hub's resync check must reach this node
                confirmed = self._expect(wanted)
                for command in self.subscribe_commands(wanted):
                    connection.write(*command)
                if confirmed:
                    await self._confirmed(connection, confirmed)
                self.pubsub = connection
                self.connected.set()
                if not first:
                    log.warning("redis %s: PUB/SUB connection is back", self.name)
                    self.engine.resynced()
                first = False
                delay = 0.1
                await self._watch(connection)
                raise RedisConnectionError("closed by the server or unanswered pings")
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("redis %s: PUB/SUB connection lost (%s); retrying", self.name, exc)
                if self.on_lost is not None:
                    self.on_lost()
            finally:
                if connection is not None:
                    connection.close()
                self.pubsub = None
                self.connected.clear()
                for waiters in self.confirmations.values():
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_exception(ConnectionError("redis connection lost"))
                self.confirmations.clear()
            await asyncio.sleep(delay)
            delay = min(MAX_BACKOFF, delay * 2)

    def _refused(self, error: str) -> None:
        """A cluster master refused an SSUBSCRIBE (``MOVED``/``ASK``: the slot is served
        elsewhere now): the subscriptions of that slot waiting for their confirmation
        fail at once (their callers go to the new master), and the slot map is read."""
        kind, _, rest = error.partition(" ")
        if not self.sharded or kind not in ("MOVED", "ASK"):
            return
        slot = int(rest.split(" ", 1)[0])
        for channel in [c for c in self.confirmations if key_slot(c) == slot]:
            for waiter in self.confirmations.pop(channel):
                if not waiter.done():
                    waiter.set_exception(ResponseError(error))
        if self.on_lost is not None:
            self.on_lost()

    async def _confirmed(
        self, connection: RespConnection, waiters: list[asyncio.Future[resp.Reply]]
    ) -> None:
        """Wait until Redis confirmed every subscription, or fail (connection lost, or
        no confirmation within SUBSCRIBE_TIMEOUT)."""
        every = asyncio.gather(*waiters)
        done, _ = await asyncio.wait(
            [every, connection.closed],
            timeout=SUBSCRIBE_TIMEOUT,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if every not in done:
            every.cancel()
            raise RedisConnectionError("subscriptions not confirmed")
        every.result()

    async def _watch(self, connection: RespConnection) -> None:
        """Return when the connection is lost, or when Redis stops answering pings."""
        while True:
            await asyncio.wait([connection.closed], timeout=HEALTH_CHECK_INTERVAL)
            if connection.closed.done():
                return
            idle = time.monotonic() - connection.last_received
            if idle > 3 * HEALTH_CHECK_INTERVAL:
                connection.abort()
                return
            if idle >= HEALTH_CHECK_INTERVAL:
                connection.write("PING")

    def _on_push(self, reply: Any) -> None:
        if type(reply) is not list or len(reply) < 2:
            if isinstance(reply, hiredis.ReplyError):
                log.warning("redis %s: PUB/SUB error: %s", self.name, reply)
                self._refused(str(reply))
            return
        kind = reply[0]
        if kind == b"message" or kind == b"smessage":
            try:
                self.engine.dispatch(reply[1], reply[2])
            except Exception:
                log.exception("redis %s: bad message on %r", self.name, reply[1])
        elif kind == b"sunsubscribe":
            # not asked for when still wanted: the channel's slot moved to another master
            if reply[1].decode() in self.channels and self.on_lost is not None:
                log.warning("redis %s: %r moved to another master", self.name, reply[1])
                self.on_lost()
        elif kind == b"subscribe" or kind == b"ssubscribe":
            waiters = self.confirmations.get(reply[1])
            if waiters:
                waiter = waiters.pop(0)
                if not waiters:
                    del self.confirmations[reply[1]]
                if not waiter.done():
                    waiter.set_result(None)


class RedisEngine(RedisTracking, Engine):
    name = "redis"
    multi_node = True

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.prefix = config.redis_prefix
        self._handler: EngineHandler | None = None
        self._node_id = ""
        #: this node's current life in the registry: "<node id>.<n>", n bumped when the
        #: cluster found it dead and it started again (redis_reaper.py)
        self.incarnation = ""
        self._lives = itertools.count()
        self._losing: asyncio.Task[None] | None = None
        self.shards: Sequence[RedisShard] = []
        self._heartbeat: asyncio.Task[None] | None = None
        #: the beat's slower chores (_keep_up), one run at a time, never awaited by a beat
        self._upkeep: asyncio.Task[None] | None = None
        #: Redis lost this incarnation's entry: everything is to be written again
        self._rewrite_due = False
        self.reaper = Reaper(self)
        self._next_user_refresh = 0.0
        self._next_presence_refresh = 0.0
        self._init_tracking()
        self._channel_prefix = f"{self.prefix}:ch:".encode()
        #: a Redis Cluster's buckets and masters (redis_cluster.py), or None
        self.router: ClusterRouter | None = None
        self._load_scripts(cluster=False)
        # epochs for streams a publish or history read creates: sent with every call
        # (the script uses it only if the stream is new), so made without a system call
        self._epoch_seed = secrets.token_urlsafe(6)
        self._epochs = itertools.count()

    def _load_scripts(self, cluster: bool, sharded: bool = True) -> None:
        """name → sha (``shas``) and sha → body (``script_bodies``) of every script."""
        bodies = {
            "PUBLISH": redis_scripts.PUBLISH,
            "HISTORY": redis_scripts.HISTORY,
            "PRESENCE": redis_scripts.PRESENCE,
            **redis_tracking_scripts.ALL,
        }
        if cluster:
            bodies = {
                name: redis_scripts.cluster_variant(body, sharded) for name, body in bodies.items()
            }
        self.shas = {name: _sha(body) for name, body in bodies.items()}
        self.script_bodies = {_sha(body): body.encode() for body in bodies.values()}

    @property
    def _control(self) -> str:
        return self.shards[0].key("control")

    def _new_epoch(self) -> str:
        return f"{self._epoch_seed}{next(self._epochs):x}"

    # --- keys ---------------------------------------------------------------------
    def shard(self, name: str) -> RedisShard:
        shards = self.shards
        if len(shards) == 1:
            return shards[0]
        return shards[zlib.crc32(name.encode()) % len(shards)]

    def _pubsub_channel(self, channel: str) -> str:
        return self.shard(channel).key("ch", channel)

    def _keys(self, channel: str) -> tuple[str, str]:
        shard = self.shard(channel)
        return shard.key("stream", channel), shard.key("meta", channel)

    def _channel_of(self, pubsub_channel: bytes) -> str | None:
        """The channel a PUB/SUB channel is of (None: the control channel)."""
        prefix = self._channel_prefix
        if self.router is None:
            if pubsub_channel.startswith(prefix):
                return pubsub_channel[len(prefix) :].decode()
            return None
        # <prefix>:{<bucket tag>}:ch:<channel>
        head = len(self.prefix) + 2
        end = pubsub_channel.find(b"}", head)
        if end == -1 or not pubsub_channel.startswith(b":ch:", end + 1):
            return None
        return pubsub_channel[end + 5 :].decode()

    # --- lifecycle ----------------------------------------------------------------
    def _clients(
        self,
    ) -> list[tuple[aioredis.Redis, str, Callable[[], Awaitable[Address]]]]:
        """Per shard: a redis-py client, a name, and where its server is (asked again
        on each reconnect: with Sentinel the master may have moved)."""
        # a pooled connection Redis closed (restart, timeout) is retried on a new one
        options: dict[str, Any] = {
            "health_check_interval": 10,
            "socket_keepalive": True,
            "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        }
        if self.config.redis_sentinels:
            hosts = []
            for item in self.config.redis_sentinels:
                host, _, port = item.rpartition(":")
                hosts.append((host, int(port)))
            sentinel = Sentinel(hosts, socket_timeout=5)
            name = self.config.redis_sentinel_master
            master = sentinel.master_for(name, **options)

            async def master_address() -> Address:
                host, port = await sentinel.discover_master(name)
                return Address(host=host, port=int(port))

            return [(master, f"sentinel:{name}", master_address)]
        # a burst of commands waits for a free connection instead of failing with
        # "Too many connections" (the default pool refuses beyond its size)
        shards = []
        for url in self.config.redis_url:
            client = aioredis.Redis.from_pool(
                aioredis.BlockingConnectionPool.from_url(
                    url, max_connections=MAX_CONNECTIONS, timeout=POOL_TIMEOUT, **options
                )
            )
            shards.append((client, url, _fixed(Address.from_url(url))))
        return shards

    async def start(self, handler: EngineHandler, node_id: str) -> None:
        self._handler = handler
        self._node_id = node_id
        self.incarnation = f"{node_id}.{next(self._lives)}"
        if self.config.redis_cluster:
            self.router = ClusterRouter(self, self.config.redis_cluster, Shard)
            await self.router.prepare()
            self.shards = self.router.buckets
            self.shards[0].channels.add(self._control)
            await self.router.start()
        else:
            self.shards = [Shard(self, *shard) for shard in self._clients()]
            await self.shards[0].client.ping()  # fail at start, not at the first publish
            self.shards[0].channels.add(self._control)
            for shard in self.shards:
                await shard.start()
        await self._beat()
        self._heartbeat = asyncio.create_task(self._heartbeat_forever())
        self.reaper.start()

    async def close(self) -> None:
        for task in (self._heartbeat, self._upkeep):
            if task is not None:
                task.cancel()
        await self.reaper.close()
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            first = self.shards[0]
            # due at once: whatever Redis did not take of this node's goodbyes (an
            # outage, a master that hangs) is removed by the next node that looks (or
            # by this one restarted)
            await asyncio.wait_for(first.client.hdel(first.key("nodes"), self._node_id), 2.0)
            await asyncio.wait_for(
                first.client.zadd(first.key("alive"), {self.incarnation: 0}, xx=True), 2.0
            )
        for shard in self.shards:
            await shard.close()
        if self.router is not None:
            await self.router.close()
        self._handler = None

    def _node_lost_soon(self) -> None:
        if self._losing is None or self._losing.done():
            self._losing = asyncio.ensure_future(self._node_lost())

    async def _node_lost(self) -> None:
        """The cluster found this incarnation dead and removed what it held: drop every
        connection (their removals find nothing left: no second leave), then live on as
        a new incarnation."""
        handler = self._handler
        old = self.incarnation
        if handler is not None:
            await handler.handle_node_lost()
        self._unsaid.clear()
        self.incarnation = f"{self._node_id}.{next(self._lives)}"
        log.warning("incarnation %s was found dead; this node goes on as %s", old, self.incarnation)
        await self._beat(losing=False)

    def resynced(self) -> None:
        if self._handler is not None:
            self._handler.handle_resync()

    # --- incoming -----------------------------------------------------------------
    def dispatch(self, pubsub_channel: bytes, body: bytes) -> None:
        handler = self._handler
        if handler is None:
            return
        channel = self._channel_of(pubsub_channel)
        if channel is None:
            handler.handle_control(orjson.loads(body))
            return
        kind = body[:1]
        if kind == b"p":
            offset, epoch, rest = body[1:].split(b"\n", 2)
            handler.handle_publication(
                channel, decode_publication(rest, int(offset), epoch.decode()), epoch.decode()
            )
        elif kind == b"j":
            handler.handle_join(channel, _info_from(orjson.loads(body[1:])))
        elif kind == b"l":
            handler.handle_leave(channel, _info_from(orjson.loads(body[1:])))

    # --- broker -------------------------------------------------------------------
    def publish(
        self, channel: str, pub: Publication, opts: PublishOptions
    ) -> asyncio.Future[StreamPosition]:
        shard = self.shard(channel)
        stream, meta = shard.key("stream", channel), shard.key("meta", channel)
        keys = [stream, meta]
        if opts.idempotency_key:
            keys.append(shard.key("idem", f"{channel}:{opts.idempotency_key}"))
        keep = opts.history_size > 0 and opts.history_ttl > 0
        reply = shard.script(
            shard.publish_sha,
            keys,
            [
                encode_publication(pub),
                opts.history_size if keep else 0,
                max(1, int(opts.history_ttl + 0.999)),
                max(1, int(self.config.history_meta_ttl)),
                shard.key("ch", channel),
                self._new_epoch(),
                IDEMPOTENCY_TTL,
            ],
        )
        position: asyncio.Future[StreamPosition] = asyncio.get_running_loop().create_future()

        def published(reply: asyncio.Future[resp.Reply]) -> None:
            if position.done():
                return
            if reply.cancelled():
                position.cancel()
                return
            error = reply.exception()
            if error is not None:
                position.set_exception(error)
                return
            offset, epoch = reply.result()
            pub.offset = int(offset)
            pub.epoch = epoch.decode() if isinstance(epoch, bytes) else epoch
            position.set_result(StreamPosition(pub.offset, pub.epoch))

        reply.add_done_callback(published)
        return position

    async def publish_join(self, channel: str, info: ClientInfo) -> None:
        await self._publish_raw(channel, b"j" + orjson.dumps(_info_dict(info)))

    async def publish_leave(self, channel: str, info: ClientInfo) -> None:
        await self._publish_raw(channel, b"l" + orjson.dumps(_info_dict(info)))

    async def _publish_raw(self, channel: str, body: bytes) -> None:
        await self.shard(channel).batch.run((self._publish, self._pubsub_channel(channel), body))

    async def publish_control(self, message: JsonObject) -> None:
        if self.router is not None:
            await self.shards[0].batch.run((self._publish, self._control, orjson.dumps(message)))
            return
        await self.shards[0].client.publish(self._control, orjson.dumps(message))

    @property
    def _publish(self) -> str:
        """PUBLISH, or SPUBLISH on a cluster that has sharded PUB/SUB."""
        return "SPUBLISH" if self.router is not None and self.router.sharded else "PUBLISH"

    async def subscribe(self, channel: str) -> None:
        await self.shard(channel).subscribe(self._pubsub_channel(channel))

    async def unsubscribe(self, channel: str) -> None:
        await self.shard(channel).unsubscribe(self._pubsub_channel(channel))

    # --- history ------------------------------------------------------------------
    async def history(
        self,
        channel: str,
        *,
        since: StreamPosition | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> HistoryResult:
        stream, meta = self._keys(channel)
        shard = self.shard(channel)
        top, epoch, first_offset, entries = await shard.script(
            shard.history_sha,
            [stream, meta],
            [
                -1 if since is None else since.offset,
                -1 if limit is None or limit < 0 else limit,
                "1" if reverse else "0",
                self._new_epoch(),
                max(1, int(self.config.history_meta_ttl)),
            ],
        )
        epoch = epoch.decode() if isinstance(epoch, bytes) else epoch
        top = int(top)
        # an empty epoch stands for the current one (Centrifugo's rule)
        if since is not None and (
            (since.epoch and since.epoch != epoch)
            or since.offset > top
            or since.offset + 1 < int(first_offset)
        ):
            raise UnrecoverablePosition(channel)
        pubs = []
        for entry_id, fields in entries:
            offset = int(entry_id.split(b"-", 1)[0])
            body = fields[1] if isinstance(fields, list) else fields[b"d"]
            pubs.append(decode_publication(body, offset, epoch))
        return HistoryResult(pubs, StreamPosition(top, epoch))

    async def remove_history(self, channel: str) -> None:
        stream, _ = self._keys(channel)
        await self.shard(channel).client.delete(stream)

    # --- presence -----------------------------------------------------------------
    def _presence_keys(self, channel: str) -> tuple[str, str]:
        shard = self.shard(channel)
        return shard.key("presence", channel), shard.key("presence_exp", channel)

    async def add_presence(self, channel: str, info: ClientInfo, ttl: float) -> None:
        hash_key, zset_key = self._presence_keys(channel)
        body = orjson.dumps(_info_dict(info))
        expires = time.time() + ttl
        await self.shard(channel).batch.run(
            ("HSET", hash_key, info.client, body),
            ("ZADD", zset_key, expires, info.client),
            ("EXPIRE", hash_key, int(ttl) + 1),
            ("EXPIRE", zset_key, int(ttl) + 1),
        )

    async def remove_presence(self, channel: str, client_id: str) -> None:
        hash_key, zset_key = self._presence_keys(channel)
        await self.shard(channel).batch.run(
            ("HDEL", hash_key, client_id), ("ZREM", zset_key, client_id)
        )

    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        flat = await self.shard(channel).script(
            self.shas["PRESENCE"], list(self._presence_keys(channel)), [time.time()]
        )
        return {
            flat[i].decode(): _info_from(orjson.loads(flat[i + 1])) for i in range(0, len(flat), 2)
        }

    async def presence_stats(self, channel: str) -> tuple[int, int]:
        clients = await self.presence(channel)
        return len(clients), len({info.user for info in clients.values()})

    # --- cluster ------------------------------------------------------------------
    async def _heartbeat_forever(self) -> None:
        acked = time.monotonic()  # when Redis last took this node's beat
        while True:
            await asyncio.sleep(self.config.node_heartbeat)
            sent = time.monotonic()
            try:
                await self._beat()
            except (RedisError, OSError) as exc:
                log.warning("heartbeat failed: %s", exc)
                continue
            except Exception:
                log.exception("heartbeat failed")
                continue
            now = time.monotonic()
            if now - acked > self.config.node_ttl / 2:
                # on its way to being declared dead by the others (node_ttl)
                log.warning(
                    "heartbeat late: %.1f s since the last one Redis took (node_ttl %g s); "
                    "this one's round trip %.1f s",
                    now - acked,
                    self.config.node_ttl,
                    now - sent,
                )
            acked = now

    async def _beat(self, losing: bool | None = None) -> None:
        """Announce this node: one script on the heartbeat's own connection, whatever
        else is going on. The slower chores a beat finds due run beside it (_keep_up),
        so a beat is never late behind them: tens of thousands of removals said again
        after an outage took longer than ``node_ttl``, and the node was declared dead."""
        handler = self._handler
        if losing is None:
            losing = self._losing is not None and not self._losing.done()
        if handler is None or losing:
            return  # starting again: _node_lost beats when it is done
        now = time.time()
        info = dict(handler.node_snapshot(presence=False, users=False)["info"])
        info["expires"] = now + self.config.node_ttl
        first = self.shards[0]
        added = await first.heartbeat_script(
            self.shas["BEAT"],
            [first.key("nodes"), first.key("alive"), first.key("tomb", self.incarnation)],
            [self._node_id, orjson.dumps(info), self.incarnation, self.config.node_ttl],
        )
        if added == -1:
            self._node_lost_soon()
            return
        if added:
            self._rewrite_due = True
        due = (
            self._rewrite_due
            or self._unsaid
            or now >= self._next_presence_refresh
            or now >= self._next_user_refresh
        )
        if due and (self._upkeep is None or self._upkeep.done()):
            self._upkeep = asyncio.create_task(self._keep_up(handler), name="pushgate-upkeep")

    async def _keep_up(self, handler: EngineHandler) -> None:
        """A beat's chores: removals Redis did not take said again; when this
        incarnation's registry entry was missing (first beat, or Redis lost its data),
        everything this node holds written again; presence expiries pushed forward every
        third of ``presence_ttl`` and users' keys hourly."""
        try:
            if self._unsaid:
                await self._said_again()
            if self._rewrite_due:
                self._rewrite_due = False
                try:
                    await self._write_all(handler)
                except BaseException:
                    self._rewrite_due = True  # the next beat tries again
                    raise
            now = time.time()
            presence_due = now >= self._next_presence_refresh
            users_due = now >= self._next_user_refresh
            if not (presence_due or users_due):
                return
            snapshot = handler.node_snapshot(presence=presence_due, users=users_due)
            if users_due and snapshot["users"]:
                await self._keep_users(snapshot["users"])
                self._next_user_refresh = now + USER_REFRESH_SECONDS
            if presence_due:
                if snapshot["presence"]:
                    await self.refresh_presence(snapshot["presence"], self.config.presence_ttl)
                self._next_presence_refresh = now + self.config.presence_ttl / 3
        except (RedisError, OSError) as exc:
            log.warning("heartbeat upkeep failed (tried again at the next beat): %s", exc)
        except Exception:
            log.exception("heartbeat upkeep failed")

    async def _write_all(self, handler: EngineHandler) -> None:
        """Every membership and connection of this node, written again (the first beat
        writes nothing: the node has none yet)."""
        snapshot = handler.node_snapshot(presence=False, users=False, members=True)
        ttl = self.config.presence_ttl
        try:
            await self._in_chunks(
                functools.partial(
                    self.member_add,
                    channel,
                    info,
                    presence=presence,
                    ttl=ttl,
                    joined=joined,
                    quiet=True,
                )
                for channel, info, presence, joined in snapshot.get("members", [])
            )
            await self._in_chunks(
                functools.partial(self.connection_opened, conn, state, quiet=True)
                for conn, state in snapshot.get("connections", [])
            )
        except NodeLost:
            return
        self._next_user_refresh = self._next_presence_refresh = 0.0

    async def _keep_users(self, users: list[str]) -> None:
        """Users connected here keep their keys (which live a day after a connect)."""
        by_shard: dict[RedisShard, list[str]] = {}
        for user in users:
            by_shard.setdefault(self.shard(user), []).append(user)
        for shard, items in by_shard.items():
            pipe = shard.client.pipeline(transaction=False)
            for user in items:
                pipe.expire(shard.key("user", user), USER_KEEP)
            await pipe.execute()

    # --- small shared values (on the first shard, like the node registry) ----------
    def _kv_key(self, key: str) -> str:
        return self.shards[0].key("kv", key)

    async def kv_get(self, key: str) -> bytes | None:
        # decode_responses is off: bytes
        return cast(bytes | None, await self.shards[0].client.get(self._kv_key(key)))

    async def kv_set(self, key: str, value: bytes, ttl: float, *, only_new: bool = False) -> bool:
        expiry = max(1, int(ttl * 1000)) if ttl > 0 else None
        stored = await self.shards[0].client.set(self._kv_key(key), value, px=expiry, nx=only_new)
        return bool(stored)

    async def kv_delete(self, key: str) -> None:
        await self.shards[0].client.delete(self._kv_key(key))

    async def kv_incr(self, key: str, ttl: float, amount: int = 1) -> int:
        if self.router is not None:  # on the bucket's master, in one transaction
            name, expiry = self._kv_key(key), max(1, int(ttl * 1000))
            replies = await self.shards[0].batch.run(
                ("MULTI",), ("INCRBY", name, amount), ("PEXPIRE", name, expiry), ("EXEC",)
            )
            return int(replies[-1][0])
        pipe = self.shards[0].client.pipeline(transaction=True)
        pipe.incrby(self._kv_key(key), amount)
        pipe.pexpire(self._kv_key(key), max(1, int(ttl * 1000)))
        count, _ = await pipe.execute()
        return int(count)

    async def ping(self) -> None:
        if self.router is not None:
            await asyncio.wait_for(self.router.ping(), 2.0)
            return
        for shard in self.shards:
            await asyncio.wait_for(shard.client.ping(), 2.0)

    async def survey(
        self, ask: Callable[[str], JsonObject], local_answer: JsonObject, timeout: float = 2.0
    ) -> list[JsonObject]:
        others = [
            n
            for n in await self.nodes({"uid": self._node_id, "name": ""})
            if n["uid"] != self._node_id
        ]
        answers = [local_answer]
        if not others:
            return answers
        reply_to = self.shards[0].key("survey", secrets.token_hex(8))
        client = self.shards[0].client
        await self.publish_control(ask(reply_to))
        deadline = time.monotonic() + timeout
        try:
            for _ in others:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                got = await client.blpop([reply_to], timeout=max(0.01, left))
                if got is None:
                    break  # a node that died since its last heartbeat does not answer
                answers.append(orjson.loads(got[1]))
        finally:
            await client.delete(reply_to)
        return answers

    async def answer_survey(self, reply_to: str, answer: JsonObject) -> None:
        pipe = self.shards[0].client.pipeline(transaction=False)
        pipe.rpush(reply_to, orjson.dumps(answer))
        pipe.expire(reply_to, 30)
        await pipe.execute()

    async def nodes(self, this_node: JsonObject) -> list[JsonObject]:
        now = time.time()
        raw = await self.shards[0].client.hgetall(self.shards[0].key("nodes"))
        live, dead = [], []
        for node_id, body in raw.items():
            info = orjson.loads(body)
            expires = info.pop("expires", 0)
            if expires > now:
                live.append(info)
            elif expires < now - DEAD_NODE_KEEP_SECONDS:
                dead.append(node_id)  # kept until then for its users' last-seen time
        if dead:
            await self.shards[0].client.hdel(self.shards[0].key("nodes"), *dead)
        live = [n for n in live if n.get("uid") != this_node["uid"]]
        return sorted([this_node, *live], key=lambda n: n["name"])
