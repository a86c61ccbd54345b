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
import hashlib
import itertools
import logging
import secrets
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import hiredis
import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

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
from pushgate.engine.redis_reaper import Reaper
from pushgate.engine.redis_tracking import USER_KEEP, NodeLost, RedisTracking
from pushgate.engine.resp import Address, RespConnection

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


def _info_dict(info: ClientInfo) -> dict:
    out: dict[str, Any] = {"c": info.client, "u": info.user}
    if info.conn_info is not None:
        out["ci"] = orjson.Fragment(info.conn_info)
    if info.chan_info is not None:
        out["chi"] = orjson.Fragment(info.chan_info)
    return out


def _info_from(obj: dict) -> ClientInfo:
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
    """One Redis server (or Sentinel-managed master): this node's command connection
    and PUB/SUB connection to it (resp.py), and a redis-py client for the rest."""

    def __init__(
        self,
        engine: RedisEngine,
        client: aioredis.Redis,
        name: str,
        address: Callable[[], Awaitable[Address]],
    ) -> None:
        self.engine = engine
        self.client = client
        self.name = name
        self.address = address
        self.channels: set[str] = set()  # PUB/SUB channel names wanted
        self.pubsub: RespConnection | None = None
        #: set while ``pubsub`` is connected and subscribed to what was wanted
        self.connected = asyncio.Event()
        self.confirmations: dict[bytes, list[asyncio.Future]] = {}
        self.reader: asyncio.Task | None = None
        self.publish_sha = _sha(redis_scripts.PUBLISH)
        self.history_sha = _sha(redis_scripts.HISTORY)
        self.scripts = {
            self.publish_sha: redis_scripts.PUBLISH.encode(),
            self.history_sha: redis_scripts.HISTORY.encode(),
            **{_sha(body): body.encode() for body in redis_tracking_scripts.ALL.values()},
        }
        self.presence_script = client.register_script(redis_scripts.PRESENCE)
        #: this tick's commands, written together on the command connection
        self.batch = AutoPipeline(self._open_commands)

    async def _open_commands(self) -> RespConnection:
        return await resp.connect(await self.address(), scripts=self.scripts)

    def script(self, sha: str, keys: list[str], args: list) -> asyncio.Future:
        """Run one of ``self.scripts`` with this tick's commands."""
        return self.batch.run(("EVALSHA", sha, len(keys), *keys, *args))

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
        pubsub.write("SUBSCRIBE", channel)
        # publications are only received once Redis has confirmed the subscription;
        # history must not be read before that or one could fall in between
        await asyncio.wait_for(confirmed, SUBSCRIBE_TIMEOUT)

    async def unsubscribe(self, channel: str) -> None:
        self.channels.discard(channel)
        if self.pubsub is not None:
            self.pubsub.write("UNSUBSCRIBE", channel)

    async def _read_forever(self) -> None:
        delay = 0.1
        first = True
        while True:
            connection: RespConnection | None = None
            try:
                connection = await resp.connect(await self.address())
                connection.listen(self._on_push)
                wanted = sorted(self.channels)
                # confirmed before anyone is told the feed is back: a publication made
                # after the hub's resync check must reach this node
                loop = asyncio.get_running_loop()
                confirmed = []
                for channel in wanted:
                    waiter = loop.create_future()
                    self.confirmations.setdefault(channel.encode(), []).append(waiter)
                    confirmed.append(waiter)
                for at in range(0, len(wanted), SUBSCRIBE_CHUNK):
                    connection.write("SUBSCRIBE", *wanted[at : at + SUBSCRIBE_CHUNK])
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

    async def _confirmed(self, connection: RespConnection, waiters: list) -> None:
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
            return
        kind = reply[0]
        if kind == b"message":
            try:
                self.engine.dispatch(reply[1], reply[2])
            except Exception:
                log.exception("redis %s: bad message on %r", self.name, reply[1])
        elif kind == b"subscribe":
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
        self._losing: asyncio.Task | None = None
        self.shards: list[Shard] = []
        self._heartbeat: asyncio.Task | None = None
        self.reaper = Reaper(self)
        self._next_user_refresh = 0.0
        self._next_presence_refresh = 0.0
        self._init_tracking()
        self._channel_prefix = f"{self.prefix}:ch:".encode()
        self._control = f"{self.prefix}:control"
        # epochs for streams a publish or history read creates: sent with every call
        # (the script uses it only if the stream is new), so made without a system call
        self._epoch_seed = secrets.token_urlsafe(6)
        self._epochs = itertools.count()

    def _new_epoch(self) -> str:
        return f"{self._epoch_seed}{next(self._epochs):x}"

    # --- keys ---------------------------------------------------------------------
    def shard(self, name: str) -> Shard:
        shards = self.shards
        if len(shards) == 1:
            return shards[0]
        return shards[zlib.crc32(name.encode()) % len(shards)]

    def _pubsub_channel(self, channel: str) -> str:
        return f"{self.prefix}:ch:{channel}"

    def _keys(self, channel: str) -> tuple[str, str]:
        return f"{self.prefix}:stream:{channel}", f"{self.prefix}:meta:{channel}"

    # --- lifecycle ----------------------------------------------------------------
    def _clients(
        self,
    ) -> list[tuple[aioredis.Redis, str, Callable[[], Awaitable[Address]]]]:
        """Per shard: a redis-py client, a name, and where its server is (asked again
        on each reconnect: with Sentinel the master may have moved)."""
        # a pooled connection Redis closed (restart, timeout) is retried on a new one
        options = {
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
        self.shards = [Shard(self, *shard) for shard in self._clients()]
        await self.shards[0].client.ping()  # fail at start, not at the first publish
        self.shards[0].channels.add(self._control)
        for shard in self.shards:
            await shard.start()
        await self._beat()
        self._heartbeat = asyncio.create_task(self._heartbeat_forever())
        self.reaper.start()

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        await self.reaper.close()
        with contextlib.suppress(RedisError, OSError):
            first = self.shards[0].client
            await first.hdel(f"{self.prefix}:nodes", self._node_id)
            # due at once: whatever Redis did not take of this node's goodbyes (an
            # outage) is removed by the next node that looks (or by this one restarted)
            await first.zadd(f"{self.prefix}:alive", {self.incarnation: 0}, xx=True)
        for shard in self.shards:
            await shard.close()
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
        if not pubsub_channel.startswith(self._channel_prefix):
            handler.handle_control(orjson.loads(body))
            return
        channel = pubsub_channel[len(self._channel_prefix) :].decode()
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
        stream, meta = self._keys(channel)
        key = opts.idempotency_key
        idem = f"{self.prefix}:idem:{channel}:{key}" if key else ""
        keep = opts.history_size > 0 and opts.history_ttl > 0
        shard = self.shard(channel)
        reply = shard.script(
            shard.publish_sha,
            [stream, meta, idem],
            [
                encode_publication(pub),
                opts.history_size if keep else 0,
                max(1, int(opts.history_ttl + 0.999)),
                max(1, int(self.config.history_meta_ttl)),
                self._pubsub_channel(channel),
                self._new_epoch(),
                IDEMPOTENCY_TTL,
            ],
        )
        position: asyncio.Future[StreamPosition] = asyncio.get_running_loop().create_future()

        def published(reply: asyncio.Future) -> None:
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
        await self.shard(channel).batch.run(("PUBLISH", self._pubsub_channel(channel), body))

    async def publish_control(self, message: dict) -> None:
        await self.shards[0].client.publish(self._control, orjson.dumps(message))

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
        return f"{self.prefix}:presence:{channel}", f"{self.prefix}:presence_exp:{channel}"

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
        flat = await self.shard(channel).presence_script(
            keys=list(self._presence_keys(channel)), args=[time.time()]
        )
        return {
            flat[i].decode(): _info_from(orjson.loads(flat[i + 1])) for i in range(0, len(flat), 2)
        }

    async def presence_stats(self, channel: str) -> tuple[int, int]:
        clients = await self.presence(channel)
        return len(clients), len({info.user for info in clients.values()})

    # --- cluster ------------------------------------------------------------------
    async def _heartbeat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.node_heartbeat)
            try:
                await self._beat()
            except (RedisError, OSError) as exc:
                log.warning("heartbeat failed: %s", exc)
            except Exception:
                log.exception("heartbeat failed")

    async def _beat(self, losing: bool | None = None) -> None:
        """Announce this node. Presence expiries are pushed forward every third of
        ``presence_ttl`` and users' keys hourly; when this incarnation's registry entry
        was missing (first beat, or Redis lost its data), everything this node holds is
        written again; when the cluster found it dead, it starts again (_node_lost)."""
        handler = self._handler
        if losing is None:
            losing = self._losing is not None and not self._losing.done()
        if handler is None or losing:
            return  # starting again: _node_lost beats when it is done
        now = time.time()
        info = dict(handler.node_snapshot(presence=False, users=False)["info"])
        info["expires"] = now + self.config.node_ttl
        first = self.shards[0]
        added = await self._run(
            first,
            "BEAT",
            [f"{self.prefix}:nodes", f"{self.prefix}:alive", self._key("tomb", self.incarnation)],
            [self._node_id, orjson.dumps(info), self.incarnation, self.config.node_ttl],
        )
        if added == -1:
            self._node_lost_soon()
            return
        if self._unsaid:
            await self._said_again()
        if added:
            await self._write_all(handler)
        presence_due = now >= self._next_presence_refresh
        users_due = now >= self._next_user_refresh
        if not (presence_due or users_due):
            return  # the usual beat: one script, nothing listed
        snapshot = handler.node_snapshot(presence=presence_due, users=users_due)
        if users_due and snapshot["users"]:
            await self._keep_users(snapshot["users"])
            self._next_user_refresh = now + USER_REFRESH_SECONDS
        if presence_due:
            if snapshot["presence"]:
                await self.refresh_presence(snapshot["presence"], self.config.presence_ttl)
            self._next_presence_refresh = now + self.config.presence_ttl / 3

    async def _write_all(self, handler: EngineHandler) -> None:
        """Every membership and connection of this node, written again (the first beat
        writes nothing: the node has none yet)."""
        snapshot = handler.node_snapshot(presence=False, users=False, members=True)
        ttl = self.config.presence_ttl
        try:
            for channel, info, presence, joined in snapshot.get("members", []):
                await self.member_add(
                    channel, info, presence=presence, ttl=ttl, joined=joined, quiet=True
                )
            for conn, state in snapshot.get("connections", []):
                await self.connection_opened(conn, state, quiet=True)
        except NodeLost:
            return
        self._next_user_refresh = self._next_presence_refresh = 0.0

    async def _keep_users(self, users: list[str]) -> None:
        """Users connected here keep their keys (which live a day after a connect)."""
        by_shard: dict[Shard, list[str]] = {}
        for user in users:
            by_shard.setdefault(self.shard(user), []).append(user)
        for shard, items in by_shard.items():
            pipe = shard.client.pipeline(transaction=False)
            for user in items:
                pipe.expire(self._key("user", user), USER_KEEP)
            await pipe.execute()

    # --- small shared values (on the first shard, like the node registry) ----------
    def _kv_key(self, key: str) -> str:
        return f"{self.prefix}:kv:{key}"

    async def kv_get(self, key: str) -> bytes | None:
        return await self.shards[0].client.get(self._kv_key(key))

    async def kv_set(self, key: str, value: bytes, ttl: float, *, only_new: bool = False) -> bool:
        expiry = max(1, int(ttl * 1000)) if ttl > 0 else None
        stored = await self.shards[0].client.set(self._kv_key(key), value, px=expiry, nx=only_new)
        return bool(stored)

    async def kv_delete(self, key: str) -> None:
        await self.shards[0].client.delete(self._kv_key(key))

    async def kv_incr(self, key: str, ttl: float, amount: int = 1) -> int:
        pipe = self.shards[0].client.pipeline(transaction=True)
        pipe.incrby(self._kv_key(key), amount)
        pipe.pexpire(self._kv_key(key), max(1, int(ttl * 1000)))
        count, _ = await pipe.execute()
        return int(count)

    async def ping(self) -> None:
        for shard in self.shards:
            await asyncio.wait_for(shard.client.ping(), 2.0)

    async def survey(
        self, ask: Callable[[str], dict], local_answer: dict, timeout: float = 2.0
    ) -> list[dict]:
        others = [
            n
            for n in await self.nodes({"uid": self._node_id, "name": ""})
            if n["uid"] != self._node_id
        ]
        answers = [local_answer]
        if not others:
            return answers
        reply_to = f"{self.prefix}:survey:{secrets.token_hex(8)}"
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

    async def answer_survey(self, reply_to: str, answer: dict) -> None:
        pipe = self.shards[0].client.pipeline(transaction=False)
        pipe.rpush(reply_to, orjson.dumps(answer))
        pipe.expire(reply_to, 30)
        await pipe.execute()

    async def nodes(self, this_node: dict) -> list[dict]:
        now = time.time()
        raw = await self.shards[0].client.hgetall(f"{self.prefix}:nodes")
        live, dead = [], []
        for node_id, body in raw.items():
            info = orjson.loads(body)
            expires = info.pop("expires", 0)
            if expires > now:
                live.append(info)
            elif expires < now - DEAD_NODE_KEEP_SECONDS:
                dead.append(node_id)  # kept until then for its users' last-seen time
        if dead:
            await self.shards[0].client.hdel(f"{self.prefix}:nodes", *dead)
        live = [n for n in live if n.get("uid") != this_node["uid"]]
        return sorted([this_node, *live], key=lambda n: n["name"])
