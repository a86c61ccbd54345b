"""Redis Cluster: the redis engine's shards as buckets of one hash slot each, routed to
the masters that serve them.

On a cluster, channels and users are spread over ``engine.redis_cluster_shards``
buckets by the crc32 that spreads them over URLs otherwise. A bucket is one hash slot:
every key of its channels and users carries its hash tag
(``<prefix>:{<tag>}:stream:<channel>``), so each Lua script touches one slot, and its
PUB/SUB channels are sharded channels of that slot (``SPUBLISH``/``SSUBSCRIBE``, Redis
>= 7; plain PUB/SUB on older servers). The tags are chosen so that the buckets spread
evenly over the slot range, hence over the masters.

Per master, a node keeps one command connection and one PUB/SUB connection (a
redis_engine ``Shard`` with that master's address), and nothing else: what the engine
asks of a shard's redis-py client goes through the bucket's commands too (BucketClient;
only a survey's BLPOP uses redis-py's cluster client). A bucket's commands go to the
master that owns its slot now; nothing is shared between masters, so a dead one holds
up only its own buckets. The slot map (``CLUSTER SLOTS``, asked first of the node that
answered last) is read at start, every REFRESH_EVERY seconds (every RETRY_DELAY while a
master is unreachable: its PUB/SUB connection is down, or its commands have had no
reply for STALLED seconds), and at once when a command is redirected or a master's
connection is lost. A subscribe while its bucket's master is unreachable waits for it or
for the slot map to name a successor (at most SUBSCRIBE_FOR). A command redirected
(``MOVED``/``ASK``), refused (``TRYAGAIN``, ``CLUSTERDOWN``) or never written (no
connection) is sent again until RETRY_FOR seconds have passed; one lost in flight is
not (it may have run): its caller sees the error. When a bucket moves to another master
(a failover, resharding), its PUB/SUB channels are subscribed there and the hub is told
to resync; the scripts' cluster variants make a moved channel start a new epoch
(redis_scripts.py): a publication lost with a dead master is reported, never skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pushgate.engine import resp
from pushgate.engine.resp import Address, NotSent

if TYPE_CHECKING:
    from pushgate.engine.redis_engine import RedisEngine, Shard

log = logging.getLogger("pushgate.engine.redis")

SLOTS = 16384
#: the slot map is read again this often when all is well (seconds)
REFRESH_EVERY = 5.0
#: … and this often while a master of ours is unreachable (a failover under way)
RETRY_DELAY = 0.25
#: a command is sent again (redirected, refused or not written) for at most this long
RETRY_FOR = 5.0
#: answer timeout when asking a node for the slot map
ASK_TIMEOUT = 1.0
#: a master whose command connection has had no reply for this long counts as
#: unreachable (the slot map is then read every RETRY_DELAY): a host that died without
#: closing its connections, or a stopped process
STALLED = 1.0
#: a subscribe waits this long for its bucket's master (or its successor)
SUBSCRIBE_FOR = 10.0

Node = tuple[str, int]


def bucket_tags(count: int) -> list[str]:
    """One hash tag per bucket, bucket ``i``'s in the ``i``-th ``1/count`` of the slots."""
    tags = []
    for i in range(count):
        low, high = i * SLOTS // count, (i + 1) * SLOTS // count
        k = 0
        while not low <= key_slot(f"{i}.{k}".encode()) < high:
            k += 1
        tags.append(f"{i}.{k}")
    return tags


def seed_address(seed: str) -> Address:
    """``host:port`` or a ``redis://``/``rediss://`` URL (credentials and TLS for all)."""
    if "://" in seed:
        return Address.from_url(seed)
    host, _, port = seed.rpartition(":")
    return Address(host=host.strip("[]"), port=int(port))


def _fixed(address: Address) -> Callable[[], Awaitable[Address]]:
    async def where() -> Address:
        return address

    return where


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SlotBatch:
    """A bucket's ``batch``: commands go to the AutoPipeline of the master owning its
    slot; redirected, refused or unsent ones are sent again (see the module docstring)."""

    def __init__(self, router: ClusterRouter, bucket: Bucket) -> None:
        self.router = router
        self.bucket = bucket

    def run(self, *commands: resp.Command) -> asyncio.Future[resp.Reply]:
        outer = asyncio.get_running_loop().create_future()
        self._send(outer, commands, time.monotonic() + RETRY_FOR, None)
        return outer

    def _send(
        self,
        outer: asyncio.Future[resp.Reply],
        commands: tuple[resp.Command, ...],
        deadline: float,
        ask: Node | None,
    ) -> None:
        if ask is not None:
            asked = [part for command in commands for part in (("ASKING",), command)]
            inner = self.router.link(ask).batch.run(*asked)
        else:
            inner = self.router.link_of(self.bucket).batch.run(*commands)
        inner.add_done_callback(
            lambda done: self._done(outer, commands, deadline, ask is not None, done)
        )

    def _done(
        self,
        outer: asyncio.Future[resp.Reply],
        commands: tuple[resp.Command, ...],
        deadline: float,
        asked: bool,
        inner: asyncio.Future[resp.Reply],
    ) -> None:
        if outer.done():
            return
        if inner.cancelled():
            outer.cancel()
            return
        error = inner.exception()
        if error is None:
            result = inner.result()
            if asked:
                result = result[1::2]
                if len(commands) == 1:
                    result = result[0]
            outer.set_result(result)
            return
        retry = self.router.retry(error)
        if retry is None or time.monotonic() >= deadline:
            outer.set_exception(error)
            return
        task = asyncio.ensure_future(self._again(outer, commands, deadline, *retry))
        self.router.pending.add(task)
        task.add_done_callback(self.router.pending.discard)

    async def _again(
        self,
        outer: asyncio.Future[resp.Reply],
        commands: tuple[resp.Command, ...],
        deadline: float,
        delay: float,
        ask: Node | None,
    ) -> None:
        try:
            if delay:
                await asyncio.sleep(delay)
            if ask is None:
                with contextlib.suppress(RedisError, OSError, TimeoutError):
                    await asyncio.wait_for(self.router.refresh_now(), ASK_TIMEOUT * 2)
            self._send(outer, commands, deadline, ask)
        except Exception as exc:  # the link could not even be made
            if not outer.done():
                outer.set_exception(exc)


class BucketClient:
    """The few redis-py client calls the engine makes off the hot path (the node
    registry, shared values, presence and user expiries, surveys), on a bucket: sent
    through its SlotBatch, so they follow the slot map and fail in time like the rest,
    instead of through redis-py's cluster client and its own view of the cluster. Only
    BLPOP (it would hold up the master's command connection) goes to redis-py."""

    def __init__(self, bucket: Bucket) -> None:
        self.bucket = bucket

    def _run(self, *commands: resp.Command) -> asyncio.Future[Any]:
        return self.bucket.batch.run(*commands)

    async def get(self, key: str) -> Any:
        return await self._run(("GET", key))

    async def set(self, key: str, value: Any, px: int | None = None, nx: bool = False) -> Any:
        command: list[Any] = ["SET", key, value]
        if px is not None:
            command += ["PX", px]
        if nx:
            command.append("NX")
        return await self._run(tuple(command))

    async def delete(self, *keys: str) -> int:
        return int(await self._run(("DEL", *keys)))

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        flat = await self._run(("HGETALL", key))
        return dict(zip(flat[::2], flat[1::2], strict=True))

    async def hdel(self, key: str, *fields: str) -> int:
        return int(await self._run(("HDEL", key, *fields)))

    async def zadd(self, key: str, mapping: dict[str, float], xx: bool = False) -> int:
        return int(await self._run(_zadd(key, mapping, xx)))

    async def xrange(self, key: str, count: int) -> list[Any]:
        return list(await self._run(("XRANGE", key, "-", "+", "COUNT", count)))

    async def xrevrange(self, key: str, count: int) -> list[Any]:
        return list(await self._run(("XREVRANGE", key, "+", "-", "COUNT", count)))

    async def blpop(self, keys: list[str], timeout: float) -> Any:
        return await self.bucket.router.client.blpop(keys, timeout=timeout)

    def pipeline(self, transaction: bool = False) -> BucketPipeline:
        return BucketPipeline(self.bucket)


def _zadd(key: str, mapping: dict[str, float], xx: bool) -> resp.Command:
    pairs = [part for member, score in mapping.items() for part in (score, member)]
    return ("ZADD", key, *(("XX",) if xx else ()), *pairs)


class BucketPipeline:
    """``pipeline(transaction=False)`` of BucketClient: commands of one bucket, sent
    together."""

    def __init__(self, bucket: Bucket) -> None:
        self.bucket = bucket
        self.commands: list[resp.Command] = []

    def zadd(self, key: str, mapping: dict[str, float], xx: bool = False) -> None:
        self.commands.append(_zadd(key, mapping, xx))

    def expire(self, key: str, seconds: int) -> None:
        self.commands.append(("EXPIRE", key, seconds))

    def rpush(self, key: str, *values: Any) -> None:
        self.commands.append(("RPUSH", key, *values))

    async def execute(self) -> list[Any]:
        if not self.commands:
            return []
        replies = await self.bucket.batch.run(*self.commands)
        return [replies] if len(self.commands) == 1 else replies


class Bucket:
    """What the engine calls a shard, on a cluster: one hash slot's keys and channels."""

    def __init__(self, router: ClusterRouter, index: int, tag: str) -> None:
        engine = router.engine
        self.router: ClusterRouter = router
        self.index = index
        self.tag = tag
        self.slot = key_slot(tag.encode())
        self.prefix = f"{engine.prefix}:{{{tag}}}"
        self.name = f"bucket {index} (slot {self.slot})"
        self.client = BucketClient(self)
        self.channels: set[str] = set()  # PUB/SUB channel names wanted
        self.batch: SlotBatch = SlotBatch(router, self)
        self.publish_sha = engine.shas["PUBLISH"]
        self.history_sha = engine.shas["HISTORY"]

    def key(self, kind: str, name: str = "") -> str:
        return f"{self.prefix}:{kind}:{name}" if name else f"{self.prefix}:{kind}"

    def script(self, sha: str, keys: list[str], args: list[Any]) -> asyncio.Future[resp.Reply]:
        return self.batch.run(("EVALSHA", sha, len(keys), *keys, *args))

    #: on a cluster the beat goes with the slot's other commands (its master's command
    #: connection); the node registry's slot holds no per-client keys, so a mass
    #: disconnect's commands mostly travel to other slots' masters
    heartbeat_script = script

    async def start(self) -> None:
        """Nothing: the router connects to the masters."""

    async def close(self) -> None:
        """Nothing: the router closes the masters' connections."""

    async def subscribe(self, channel: str) -> None:
        """Subscribed on the master that owns the slot: while that master is unreachable
        (a failover), wait for it to be back or for the slot map to name its successor,
        for at most SUBSCRIBE_FOR."""
        self.channels.add(channel)
        router = self.router
        deadline = time.monotonic() + SUBSCRIBE_FOR
        error: BaseException | None = None
        while True:
            link = router.link_of(self)
            if link.connected.is_set():
                try:
                    await link.subscribe(channel)
                    return
                except (RedisError, OSError, TimeoutError) as exc:
                    error = exc  # lost meanwhile: the master may be failing
            if channel not in self.channels:
                return  # unsubscribed meanwhile
            router.refresh_soon()
            left = deadline - time.monotonic()
            if left <= 0:
                raise error or TimeoutError(
                    f"redis cluster: {self.name}'s master unreachable for {SUBSCRIBE_FOR:g} s"
                )
            await router.link_or_move(self, link, min(left, SUBSCRIBE_FOR))
            if router.link_of(self) is not link:
                link.channels.discard(channel)  # (if refused there: not wanted there)

    async def unsubscribe(self, channel: str) -> None:
        self.channels.discard(channel)
        await self.router.link_of(self).unsubscribe(channel)


class ClusterRouter:
    """The slot map, one Shard (connections) per master, and the buckets."""

    def __init__(
        self, engine: RedisEngine, seeds: list[str], link_factory: Callable[..., Shard]
    ) -> None:
        self.engine = engine
        self.seeds = [seed_address(seed) for seed in seeds]
        self.template = dataclasses.replace(self.seeds[0], db=0, path="")
        self.link_factory = link_factory
        first = self.seeds[0]
        options: dict[str, Any] = {}
        if first.tls:
            options = {"ssl": True, "ssl_ca_certs": first.tls_ca_file}
            if not first.tls_verify:
                options["ssl_cert_reqs"] = "none"
        #: redis-py's cluster client, for BLPOP (surveys)
        self.client = RedisCluster(
            startup_nodes=[ClusterNode(seed.host, seed.port) for seed in self.seeds],
            username=first.username,
            password=first.password,
            socket_keepalive=True,
            # a master that stopped answering (a dead host) fails its commands in time
            socket_timeout=resp.COMMAND_TIMEOUT,
            socket_connect_timeout=resp.CONNECT_TIMEOUT,
            **options,
        )
        self.sharded = True
        self.buckets: list[Bucket] = []
        self.owners: list[Node | None] = []
        self.links: dict[Node, Shard] = {}
        #: every node seen in a slot map: asked when the seeds do not answer
        self.known: list[Node] = [(seed.host, seed.port) for seed in self.seeds]
        #: buckets moved to another master since start (failovers seen)
        self.moves = 0
        self._started = False
        self._refreshing: asyncio.Future[resp.Reply] | None = None
        self._wake = asyncio.Event()
        #: set (and replaced) whenever a bucket changed masters
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Future[Any]] = set()
        self._moving: set[asyncio.Future[Any]] = set()
        #: commands waiting to be sent again
        self.pending: set[asyncio.Future[resp.Reply]] = set()

    # --- start and stop -----------------------------------------------------------
    async def prepare(self) -> None:
        """Which scripts the servers take (sharded PUB/SUB from Redis 7); the buckets."""
        info = _text(await self._ask(("INFO", "server")))
        version = next(
            (
                line.split(":", 1)[1]
                for line in info.splitlines()
                if line.startswith("redis_version:")
            ),
            "0",
        )
        major = int(version.split(".", 1)[0] or 0)
        self.sharded = major >= 7
        if not self.sharded:
            log.warning(
                "redis cluster %s: no sharded PUB/SUB before Redis 7 (plain PUB/SUB: "
                "every message crosses every node)",
                version,
            )
        self.engine._load_scripts(cluster=True, sharded=self.sharded)
        count = self.engine.config.redis_cluster_shards
        self.buckets = [Bucket(self, i, tag) for i, tag in enumerate(bucket_tags(count))]
        self.owners = [None] * count

    async def start(self) -> None:
        await self.refresh_now()
        missing = [b.name for b, owner in zip(self.buckets, self.owners, strict=True) if not owner]
        if missing:
            raise ConnectionError(f"redis cluster: no master serves {', '.join(missing)}")
        self._started = True
        self._task = asyncio.create_task(self._forever(), name="pushgate-redis-cluster")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for task in list(self._moving):
            task.cancel()
        for link in self.links.values():
            await link.close()
        self.links.clear()
        if self._closing:
            await asyncio.wait(self._closing, timeout=3)
        await self.client.aclose()

    # --- routing --------------------------------------------------------------------
    def link(self, node: Node) -> Shard:
        """The connections to ``node`` (made when first needed)."""
        link = self.links.get(node)
        if link is None:
            address = dataclasses.replace(self.template, host=node[0], port=node[1])
            link = self.link_factory(
                self.engine,
                None,
                f"{node[0]}:{node[1]}",
                _fixed(address),
                sharded=self.sharded,
                on_lost=self.refresh_soon,
            )
            # a master that takes over buckets after start tells the hub to resync
            # once its subscriptions are in place, whenever that is
            link.resync_on_first = self._started
            link.reader = asyncio.create_task(link._read_forever(), name=f"redis-pubsub-{node}")
            self.links[node] = link
        return link

    def link_of(self, bucket: Bucket) -> Shard:
        owner = self.owners[bucket.index]
        if owner is None:
            raise NotSent(f"redis cluster: no master known for {bucket.name}")
        return self.link(owner)

    def retry(self, error: BaseException) -> tuple[float, Node | None] | None:
        """(delay, ASK target) when a failed command may be sent again; None otherwise."""
        if isinstance(error, ResponseError):
            text = str(error)
            kind = text.split(" ", 1)[0]
            if kind == "ASK":
                host, _, port = text.split(" ")[2].rpartition(":")
                return 0.0, (host, int(port))
            if kind == "MOVED":
                self.refresh_soon()
                return 0.0, None
            if kind in ("TRYAGAIN", "CLUSTERDOWN", "READONLY", "LOADING", "MASTERDOWN"):
                return RETRY_DELAY, None
            return None
        if isinstance(error, NotSent):
            return RETRY_DELAY, None
        if isinstance(error, (RedisError, OSError)) and not isinstance(error, RedisTimeoutError):
            self.refresh_soon()  # lost in flight: may have run, so not sent again
        return None

    async def link_or_move(self, bucket: Bucket, link: Shard, timeout: float) -> None:
        """Return when ``link`` (``bucket``'s master) is connected again, when ``bucket``
        moved to another master, or after ``timeout``."""
        if self.links.get(self.owners[bucket.index] or ("", 0)) is not link:
            return
        waits = [asyncio.ensure_future(self._changed.wait())]
        if not link.connected.is_set():
            waits.append(asyncio.ensure_future(link.connected.wait()))
        try:
            await asyncio.wait(
                waits,
                timeout=timeout if len(waits) > 1 else RETRY_DELAY,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for wait in waits:
                wait.cancel()

    async def ping(self) -> None:
        owners = {owner: bucket for bucket, owner in zip(self.buckets, self.owners, strict=True)}
        await asyncio.gather(*(bucket.batch.run(("PING",)) for bucket in owners.values()))

    # --- the slot map -------------------------------------------------------------
    def refresh_soon(self) -> None:
        self._wake.set()

    async def refresh_now(self) -> None:
        """Read the slot map and move buckets whose master changed (one at a time:
        callers meanwhile wait for the refresh under way)."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._refresh())
        await asyncio.shield(self._refreshing)

    def _healthy(self, now: float) -> bool:
        """Every master of ours has its PUB/SUB connection and answers commands."""
        for owner in set(self.owners):
            link = self.links.get(owner) if owner else None
            if link is None or not link.connected.is_set():
                return False
            if link.batch.stalled_for(now) > STALLED:
                return False
        return True

    async def _forever(self) -> None:
        last = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), RETRY_DELAY)
            now = time.monotonic()
            every = REFRESH_EVERY if self._healthy(now) else RETRY_DELAY
            if not self._wake.is_set() and now - last < every:
                continue
            self._wake.clear()
            last = now
            try:
                await self.refresh_now()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("redis cluster: reading the slot map failed: %s", exc)
            except Exception:
                log.exception("redis cluster: reading the slot map failed")

    async def _ask(self, command: resp.Command) -> Any:
        """``command``'s answer from the first node that gives one."""
        error: Exception | None = None
        for node in list(self.known):
            address = dataclasses.replace(self.template, host=node[0], port=node[1])
            connection = None
            try:
                connection = await resp.connect(address, connect_timeout=ASK_TIMEOUT)
                answer = await asyncio.wait_for(connection.call(*command), ASK_TIMEOUT)
                if self.known[0] != node:  # asked first next time: a dead node is not
                    self.known.remove(node)
                    self.known.insert(0, node)
                return answer
            except (RedisError, OSError, TimeoutError) as exc:
                error = exc
            finally:
                if connection is not None:
                    connection.close()
        raise ConnectionError(f"redis cluster: no node answers ({error})")

    async def _slot_ranges(self) -> list[tuple[int, int, Node]]:
        reply = await self._ask(("CLUSTER", "SLOTS"))
        ranges = []
        for entry in reply:
            master = entry[2]
            host = _text(master[0]) or self.template.host
            node = (host, int(master[1]))
            ranges.append((int(entry[0]), int(entry[1]), node))
            for nodes in entry[2:]:
                seen = (_text(nodes[0]) or self.template.host, int(nodes[1]))
                if seen not in self.known:
                    self.known.append(seen)
        return ranges

    async def _refresh(self) -> None:
        ranges = await self._slot_ranges()
        moved: dict[Node, list[str]] = {}
        changed = False
        for bucket in self.buckets:
            owner = next((node for low, high, node in ranges if low <= bucket.slot <= high), None)
            old = self.owners[bucket.index]
            if owner is None or owner == old:
                continue
            self.owners[bucket.index] = owner
            changed = True
            link = self.link(owner)
            wanted = sorted(bucket.channels)
            if old is None:
                link.channels.update(wanted)  # its reader subscribes them when connected
                continue
            self.moves += 1
            log.warning("redis cluster: %s moved from %s:%d to %s:%d", bucket.name, *old, *owner)
            old_link = self.links.get(old)
            if old_link is not None and wanted:
                old_link.channels.difference_update(wanted)
                if old_link.pubsub is not None:
                    for command in old_link.subscribe_commands(wanted, unsubscribe=True):
                        old_link.pubsub.write(*command)
            if wanted:
                moved.setdefault(owner, []).extend(wanted)
        in_use = set(self.owners)
        now = time.monotonic()
        for node in [node for node in self.links if node not in in_use]:
            link = self.links.pop(node)
            if link.batch.stalled_for(now) > STALLED:
                link.batch.abort()  # failed over while hung: its commands fail now
            task = asyncio.ensure_future(link.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        if changed:  # subscribes waiting for an unreachable master go to the new one
            self._changed.set()
            self._changed = asyncio.Event()
        if moved:
            # not awaited: commands go to the new masters at once, whatever this takes
            task = asyncio.ensure_future(self._subscribe_moved(moved))
            self._moving.add(task)
            task.add_done_callback(self._moving.discard)

    async def _subscribe_moved(self, moved: dict[Node, list[str]]) -> None:
        """The moved buckets' channels subscribed on their new masters, then the hub
        told to check every channel's position."""
        for node, channels in moved.items():
            link = self.links.get(node)
            if link is None:
                continue  # moved on again meanwhile
            try:
                await link.subscribe_many(channels)
            except (RedisError, OSError, TimeoutError) as exc:
                # its reader subscribes them (and resyncs) once it is connected
                log.warning("redis cluster: subscribing on %s:%d failed: %s", *node, exc)
        self.engine.resynced()
