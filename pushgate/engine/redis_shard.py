"""What the Redis engine calls a shard: where a channel's or a user's keys live.

Two classes are one: ``redis_engine.Shard`` (one Redis server, or a Sentinel master,
with its own connections) and, on a Redis Cluster, ``redis_cluster.Bucket`` (one hash
slot, whose commands the router sends to the master holding it). The engine, its
tracking half and the reaper use only what this protocol lists.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from redis.asyncio import Redis, RedisCluster

from pushgate.engine.resp import Command, Reply


class Batcher(Protocol):
    """Commands sent together in the next write (redis_batch.AutoPipeline, SlotBatch)."""

    def run(self, *commands: Command) -> asyncio.Future[Reply]: ...


class RedisShard(Protocol):
    # read-only here (each class sets them once): a Shard's AutoPipeline and a Bucket's
    # SlotBatch are both a Batcher
    @property
    def name(self) -> str: ...

    @property
    def prefix(self) -> str: ...

    @property
    def client(self) -> Redis | RedisCluster:
        """redis-py's client for the commands outside the batch (pipelines, scans)."""

    @property
    def channels(self) -> set[str]:
        """The PUB/SUB channels wanted."""

    @property
    def batch(self) -> Batcher: ...

    @property
    def publish_sha(self) -> str: ...

    @property
    def history_sha(self) -> str: ...

    def key(self, kind: str, name: str = "") -> str: ...

    def script(self, sha: str, keys: list[str], args: list[Any]) -> asyncio.Future[Reply]: ...

    def heartbeat_script(self, sha: str, keys: list[str], args: list[Any]) -> asyncio.Future[Reply]:
        """``script``, for the node's heartbeat: not queued behind the bulk commands."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def subscribe(self, channel: str) -> None: ...

    async def unsubscribe(self, channel: str) -> None: ...
