"""The redis engine on a real Redis Cluster: 3 masters and 3 replicas started by the test.

(Not to be confused with test_redis_cluster.py: two pushgate nodes on one Redis.) The
cluster is ``redis-server --cluster-enabled yes`` on free loopback ports, made with
``redis-cli --cluster create``; node timeout 1 s, so a killed master's replica takes over
within a few seconds. Nodes run in the test's process (``make_server``); clients are
centrifuge-python. With CI set, a missing redis-server fails instead of skipping.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

from pushgate.config import ConfigError, EngineConfig
from pushgate.engine import redis_scripts, redis_tracking_scripts
from pushgate.engine.redis_cluster import bucket_tags
from pushgate.engine.redis_engine import RedisEngine
from tests.centrifuge_helpers import (  # noqa: F401
    REDIS_SERVER,
    Recorder,
    clients_fixture,
    free_port,
    subscribed,
    wait_until,
)
from tests.conftest import make_config
from tests.engines.test_redis_engine import Recording, publish

REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
NODE_TIMEOUT_MS = 1000
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


class LocalCluster:
    """``masters`` masters with ``replicas`` replicas each, on loopback, in ``directory``."""

    def __init__(self, directory: Path, masters: int = 3, replicas: int = 1) -> None:
        self.directory = directory
        self.count = masters * (1 + replicas)
        self.replicas = replicas
        self.ports = [free_port() for _ in range(self.count)]
        self.processes: dict[int, subprocess.Popen] = {}

    @property
    def seeds(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.ports]

    def start(self) -> None:
        for port in self.ports:
            path = self.directory / str(port)
            path.mkdir()
            args = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1"]
            args += ["--cluster-enabled", "yes", "--cluster-port", str(free_port())]
            args += ["--cluster-node-timeout", str(NODE_TIMEOUT_MS)]
            args += ["--cluster-config-file", "nodes.conf", "--dir", str(path)]
            args += ["--appendonly", "no", "--save", ""]
            self.processes[port] = subprocess.Popen(
                args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=path
            )
        self._until(lambda: all(self._answers(port) for port in self.ports), "nodes answer")
        subprocess.run(
            [
                *(REDIS_CLI, "--cluster", "create", *self.seeds),
                *("--cluster-replicas", str(self.replicas), "--cluster-yes"),
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        self._until(self.healthy, "cluster_state:ok on every node, replicas in sync")

    def _until(self, predicate, what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"redis cluster: {what} within {timeout} s"
            time.sleep(0.05)  # a process coming up: polled, as wait_until does

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=1)

    def _answers(self, port: int) -> bool:
        try:
            with self.client(port) as client:
                return bool(client.ping())
        except (redis.RedisError, OSError):
            return False

    def healthy(self) -> bool:
        try:
            for port in self.processes:
                with self.client(port) as client:
                    if b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
                        return False
                    info = client.info("replication")
                    if info["role"] == "slave" and info["master_link_status"] != "up":
                        return False
            return True
        except (redis.RedisError, OSError):
            return False

    def master_of(self, slot: int) -> int:
        """The port of the master serving ``slot``, as a live node sees it."""
        port = next(iter(self.processes))
        with self.client(port) as client:
            for low, high, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if low <= slot <= high:
                    return int(master[1])
        raise AssertionError(f"no master for slot {slot}")

    def kill(self, port: int) -> None:
        process = self.processes.pop(port)
        process.kill()
        process.wait(5)

    def close(self) -> None:
        for process in self.processes.values():
            process.kill()
        for process in self.processes.values():
            process.wait(5)
        self.processes.clear()


def _start_cluster(directory: Path) -> LocalCluster:
    if not (os.path.exists(REDIS_SERVER) and os.path.exists(REDIS_CLI)):
        if IN_CI:
            pytest.fail("redis-server and redis-cli are needed for the Redis Cluster tests")
        pytest.skip("no redis-server/redis-cli: Redis Cluster tests skipped")
    cluster = LocalCluster(directory)
    try:
        cluster.start()
    except BaseException:
        cluster.close()
        raise
    return cluster


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory) -> Iterator[LocalCluster]:
    """One cluster for the module's tests that kill nothing."""
    cluster = _start_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.close()


@pytest.fixture
def fresh_cluster(tmp_path) -> Iterator[LocalCluster]:
    """A cluster of the test's own (it kills a master)."""
    directory = tmp_path / "redis-cluster"
    directory.mkdir()
    cluster = _start_cluster(directory)
    yield cluster
    cluster.close()


_prefixes = iter(range(10**6))


def _prefix() -> str:
    return f"pgc{os.getpid()}x{next(_prefixes)}"


def _options(cluster: LocalCluster, **extra: object) -> dict:
    return {
        "type": "redis",
        "redis_cluster": cluster.seeds[:2],
        "redis_prefix": _prefix(),
        "node_heartbeat": 0.5,
        "node_ttl": 10.0,
        **extra,
    }


def channels_on_every_master(cluster: LocalCluster, shards: int = 16, each: int = 1) -> list[str]:
    """``each`` channel names per master (by the engine's crc32 → bucket → slot)."""
    tags = bucket_tags(shards)
    found: dict[int, list[str]] = {}
    n = 0
    while len(found) < 3 or any(len(names) < each for names in found.values()):
        name = f"board:c{n}"
        bucket = zlib.crc32(name.encode()) % shards
        names = found.setdefault(cluster.master_of(key_slot(tags[bucket].encode())), [])
        if len(names) < each:
            names.append(name)
        n += 1
    return [name for names in found.values() for name in names]


# --- without a cluster ----------------------------------------------------------------
def test_bucket_tags_spread_over_the_slot_range():
    tags = bucket_tags(16)
    slots = [key_slot(tag.encode()) for tag in tags]
    assert [slot * 16 // 16384 for slot in slots] == list(range(16))
    assert bucket_tags(16) == tags  # the same on every node


def test_cluster_scripts_publish_sharded_and_end_other_masters_epochs():
    bodies = {"PUBLISH": redis_scripts.PUBLISH, **redis_tracking_scripts.ALL}
    for name, body in bodies.items():
        variant = redis_scripts.cluster_variant(body)
        assert 'redis.call("publish"' not in variant, name
        if 'redis.call("publish"' in body:
            assert 'redis.call("spublish"' in variant, name
    for body in (redis_scripts.PUBLISH, redis_scripts.HISTORY):
        assert "owned_epoch(KEYS[2])" in redis_scripts.cluster_variant(body)
    # Redis 6: plain PUB/SUB, epochs still end on another master
    old = redis_scripts.cluster_variant(redis_scripts.PUBLISH, sharded=False)
    assert 'redis.call("publish"' in old and "owned_epoch" in old


def test_config_rejects_cluster_with_sentinels_and_braces_in_the_prefix(tmp_path):
    with pytest.raises(ConfigError, match=r"engine\.redis_cluster"):
        make_config(
            tmp_path,
            engine__type="redis",
            engine__redis_cluster=["127.0.0.1:7000"],
            engine__redis_sentinels=["127.0.0.1:26379"],
            engine__redis_sentinel_master="m",
        )
    with pytest.raises(ConfigError, match=r"engine\.redis_prefix"):
        make_config(
            tmp_path,
            engine__type="redis",
            engine__redis_cluster=["127.0.0.1:7000"],
            engine__redis_prefix="a{b}",
        )
    with pytest.raises(ConfigError, match="invalid Redis Cluster node"):
        make_config(tmp_path, engine__type="redis", engine__redis_cluster=["nowhere"])
    config = make_config(
        tmp_path,
        engine__type="redis",
        engine__redis_cluster=["127.0.0.1:7000", "redis://:pw@127.0.0.1:7001"],
    )
    assert config.engine.redis_cluster[1] == "redis://:pw@127.0.0.1:7001"


# --- the engine alone -------------------------------------------------------------------
async def test_engine_spreads_channels_over_every_master_one_slot_each(redis_cluster):
    a = RedisEngine(EngineConfig(**_options(redis_cluster)))
    b = RedisEngine(EngineConfig(**{**_options(redis_cluster), "redis_prefix": a.prefix}))
    rec_a, rec_b = Recording("node-a"), Recording("node-b")
    await a.start(rec_a, "node-a")
    await b.start(rec_b, "node-b")
    try:
        assert a.router is not None
        assert len({owner for owner in a.router.owners}) == 3
        channels = channels_on_every_master(redis_cluster, each=2)
        for channel in channels:
            await b.subscribe(channel)
        for n in range(1, 6):
            for channel in channels:
                position = await publish(a, channel, n)
                assert position.offset == n
        await rec_b.wait(lambda: all(len(rec_b.of(ch)) == 5 for ch in channels))
        for channel in channels:
            assert [p.offset for p in rec_b.of(channel)] == [1, 2, 3, 4, 5]
            history = await b.history(channel)
            assert [p.offset for p in history.publications] == [1, 2, 3, 4, 5]
            # stream, meta and PUB/SUB channel share the bucket's slot on its master
            bucket = b.shard(channel)
            stream, meta = b._keys(channel)
            slots = {key_slot(k.encode()) for k in (stream, meta, b._pubsub_channel(channel))}
            assert slots == {bucket.slot}
            with redis_cluster.client(redis_cluster.master_of(bucket.slot)) as master:
                assert master.xlen(stream) == 5
                assert master.hget(meta, "n") == master.execute_command("CLUSTER", "MYID")
        # PUB/SUB is sharded: a node's subscriptions are shard channels on the masters
        for port in {redis_cluster.master_of(b.shard(ch).slot) for ch in channels}:
            with redis_cluster.client(port) as master:
                assert master.execute_command(
                    "PUBSUB",
                    "SHARDNUMSUB",
                    *[
                        b._pubsub_channel(ch)
                        for ch in channels
                        if redis_cluster.master_of(b.shard(ch).slot) == port
                    ],
                )[1::2] == [1] * sum(
                    redis_cluster.master_of(b.shard(ch).slot) == port for ch in channels
                )
        # control messages and node-level keys work too (hash-tagged to bucket 0)
        await a.publish_control({"op": "x"})
        await rec_b.wait(lambda: rec_b.controls == [{"op": "x"}])
        nodes = await a.nodes({"uid": "node-a", "name": "node-a"})
        assert [n["uid"] for n in nodes] == ["node-a", "node-b"]
        assert await a.kv_incr("k", 10) == 1 and await b.kv_incr("k", 10) == 2
    finally:
        await a.close()
        await b.close()


# --- pushgate nodes and real clients ----------------------------------------------------
def cluster_config(tmp_path: Path, cluster: LocalCluster):
    return make_config(
        tmp_path,
        engine__type="redis",
        engine__redis_cluster=cluster.seeds[:2],
        engine__redis_prefix=_prefix(),
        engine__node_heartbeat="0.5s",
        engine__node_ttl="10s",
    )


async def test_two_nodes_publish_recover_and_share_presence(
    redis_cluster, tmp_path, make_server, clients
):
    config = cluster_config(tmp_path, redis_cluster)
    node_a = await make_server(config)
    node_b = await make_server(config)
    channels = channels_on_every_master(redis_cluster)
    alice, _ = clients(node_b, "alice")
    bob, _ = clients(node_a, "bob")
    await alice.connect()
    await bob.connect()
    events = {channel: (await subscribed(alice, channel))[1] for channel in channels}
    await subscribed(bob, channels[0])
    for n in range(1, 6):
        for channel in channels:
            await node_a.publish(channel, n)
    for channel, recorder in events.items():
        await recorder.wait_for("publication", lambda c: c.pub.data == 5)
        assert [c.pub.offset for c in recorder.of("publication")] == [1, 2, 3, 4, 5], channel
    # presence and join across the nodes, on the bucket's master
    await events[channels[0]].wait_for("join", lambda c: c.info.user == "bob")
    for node in (node_a, node_b):
        presence = (await node.api("presence", {"channel": channels[0]}))["result"]["presence"]
        assert sorted(c["user"] for c in presence.values()) == ["alice", "bob"]
    status = await node_a.api("user_status", {"users": ["alice"]})
    assert status["result"]["statuses"][0]["online"] is True
    # alice goes away, misses three publications per channel and comes back: recovered
    await alice.disconnect()
    for n in range(6, 9):
        for channel in channels:
            await node_a.publish(channel, n)
    await alice.connect()
    for channel, recorder in events.items():
        told = await recorder.wait_for("subscribed", lambda c: c.was_recovering)
        assert told.recovered is True, channel
        await recorder.wait_for("publication", lambda c: c.pub.data == 8)
        assert [c.pub.offset for c in recorder.of("publication")] == list(range(1, 9)), channel
    await bob.disconnect()
    await events[channels[0]].wait_for("leave", lambda c: c.info.user == "bob")


def _no_silent_gap(recorder: Recorder) -> tuple[int, int]:
    """Walk a subscription's events in order: every publication directly follows the one
    before it, unless the client was told in between that its position was lost
    (subscribed with recovered=false). → (publications seen, times told lost)."""
    last: int | None = None
    seen = told = 0
    for kind, ctx in recorder.events:
        if kind == "subscribed" and ctx.was_recovering and not ctx.recovered:
            told += 1
            last = None
        elif kind == "publication":
            seen += 1
            assert last is None or ctx.pub.offset == last + 1, (last, ctx.pub.offset)
            last = ctx.pub.offset
    return seen, told


async def test_master_killed_while_publishing_no_silent_gap(
    fresh_cluster, tmp_path, make_server, clients
):
    cluster = fresh_cluster
    config = cluster_config(tmp_path, cluster)
    node_a = await make_server(config)  # publishes
    node_b = await make_server(config)  # has the subscriber
    channels = channels_on_every_master(cluster)
    # the node registry's master is spared (the heartbeats go on); another one dies
    registry = cluster.master_of(key_slot(bucket_tags(16)[0].encode()))
    victim = next(
        ch for ch in channels if cluster.master_of(node_b.hub.engine.shard(ch).slot) != registry
    )
    victim_port = cluster.master_of(node_b.hub.engine.shard(victim).slot)
    alice, _ = clients(node_b, "alice")
    await alice.connect()
    events = {channel: (await subscribed(alice, channel))[1] for channel in channels}
    published: dict[str, list[tuple[int, str]]] = {channel: [] for channel in channels}
    failed = 0
    stop = asyncio.Event()

    async def publisher() -> None:
        nonlocal failed
        n = 0
        while not stop.is_set():
            n += 1
            for channel in channels:
                reply = await node_a.api("publish", {"channel": channel, "data": n})
                if "result" in reply:
                    published[channel].append((reply["result"]["offset"], reply["result"]["epoch"]))
                else:
                    failed += 1  # a backend would retry it
            await asyncio.sleep(0.01)  # the publishing rate, not a wait

    task = asyncio.create_task(publisher())
    try:
        await wait_until(
            lambda: _true(all(len(p) >= 10 for p in published.values())), 10, "publishing"
        )
        first_epoch = published[victim][-1][1]
        before = len(published[victim])
        cluster.kill(victim_port)
        killed = time.monotonic()

        async def continues() -> bool:
            later = published[victim][before:]
            return sum(epoch != first_epoch for _, epoch in later) >= 10

        await wait_until(continues, 20, "publishing to the killed master's channel resumes")
        took = time.monotonic() - killed
        stop.set()
        await task
    finally:
        stop.set()
        if not task.done():
            task.cancel()
    assert cluster.master_of(node_b.hub.engine.shard(victim).slot) != victim_port
    for channel in channels:
        final = (await node_a.api("history", {"channel": channel, "limit": 0}))["result"]
        recorder = events[channel]
        # every subscriber ends where the stream ends…
        await recorder.wait_for(
            "publication", lambda c, top=final["offset"]: c.pub.offset == top, timeout=10
        )
        # …having received everything, or having been told its position was lost
        seen, told = _no_silent_gap(recorder)
        assert seen >= 10, channel
        if channel == victim:
            # its stream may have lost what the dead master did not replicate: a new
            # epoch, and the subscriber was told (recovered=false), never a silent gap
            assert final["epoch"] != first_epoch
            assert told >= 1
    print(f"failover: publishing resumed {took:.1f} s after SIGKILL; {failed} API errors")


async def _true(value: bool) -> bool:
    return value
