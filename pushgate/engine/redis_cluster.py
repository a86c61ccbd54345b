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
redis_engine ``Shard`` with that master's address); a bucket's commands go to the
master that owns its slot now. The slot map (``CLUSTER SLOTS``) is read at start, every
REFRESH_EVERY seconds (every RETRY_DELAY while a master is unreachable), and at once
when a command is redirected or a master's connection is lost. A command redirected
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


class Bucket:
    """What the engine calls a shard, on a cluster: one hash slot's keys and channels."""

    def __init__(self, router: ClusterRouter, index: int, tag: str) -> None:
        engine = router.engine
        self.router = router
        self.index = index
        self.tag = tag
        self.slot = key_slot(tag.encode())
        self.prefix = f"{engine.prefix}:{{{tag}}}"
        self.name = f"bucket {index} (slot {self.slot})"
        self.client = router.client
        self.channels: set[str] = set()  # PUB/SUB channel names wanted
        self.batch: SlotBatch = SlotBatch(router, self)
        self.publish_sha = engine.shas["PUBLISH"]
        self.history_sha = engine.shas["HISTORY"]

    def key(self, kind: str, name: str = "") -> str:
        return f"{self.prefix}:{kind}:{name}" if name else f"{self.prefix}:{kind}"

    def script(self, sha: str, keys: list[str], args: list[Any]) -> asyncio.Future[resp.Reply]:
        return self.batch.run(("EVALSHA", sha, len(keys), *keys, *args))

    async def start(self) -> None:
        """Nothing: the router connects to the masters."""

    async def close(self) -> None:
        """Nothing: the router closes the masters' connections."""

    async def subscribe(self, channel: str) -> None:
        self.channels.add(channel)
        await self.router.link_of(self).subscribe(channel)

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
        #: redis-py's cluster client, for what is not on the hot path
        self.client = RedisCluster(
            startup_nodes=[ClusterNode(seed.host, seed.port) for seed in self.seeds],
            username=first.username,
            password=first.password,
            socket_keepalive=True,
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
        self._task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[Any]] = set()
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

    async def _forever(self) -> None:
        while True:
            healthy = all(self.links[o].connected.is_set() for o in set(self.owners) if o)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), REFRESH_EVERY if healthy else RETRY_DELAY)
            self._wake.clear()
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
        for host, port in list(self.known):
            address = dataclasses.replace(self.template, host=host, port=port)
            connection = None
            try:
                connection = await resp.connect(address, connect_timeout=ASK_TIMEOUT)
                return await asyncio.wait_for(connection.call(*command), ASK_TIMEOUT)
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
        for bucket in self.buckets:
            owner = next((node for low, high, node in ranges if low <= bucket.slot <= high), None)
            old = self.owners[bucket.index]
            if owner is None or owner == old:
                continue
            self.owners[bucket.index] = owner
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
        for node in [node for node in self.links if node not in in_use]:
            link = self.links.pop(node)
            task = asyncio.ensure_future(link.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        for node, channels in moved.items():
            try:
                await self.link(node).subscribe_many(channels)
            except (RedisError, OSError, TimeoutError) as exc:
                # its reader subscribes them (and resyncs) once it is connected
                log.warning("redis cluster: subscribing on %s:%d failed: %s", *node, exc)
        if moved:
            self.engine.resynced()
