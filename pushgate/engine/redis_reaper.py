"""No ghosts: every node watches for dead ones and removes what they held, once.

A node's incarnation stays alive in ``P:alive`` (Redis' clock) while it beats; one that
has not beaten for ``engine.node_ttl`` is dead — unless most of the cluster went silent
at once, which is a stall rather than deaths (Redis stood still through a failover or a
slow command, and then every last beat is old; every node of a machine short of cores
for a while): then a node is dead after ``STALL_GRACE_TTLS`` times ``node_ttl`` more.
Declaring them dead would close every client of the cluster at once.

Every node checks twice a second; the first to claim a dead incarnation (``SET NX`` with
a lease) writes its tombstone on every shard — from then on no script adds anything for
it, so a node that comes back (a paused process, a network partition) cannot resurrect
its old connections — and removes its memberships and connections with the scripts the
living use: each leave, vacated, disconnect and offline is announced exactly once
however many nodes try, and a claimer that dies mid-way leaves the rest to the next one
after its lease.

The same loop claims due timers on every shard: users to announce offline after
``presence.offline_delay`` and notifications to hand off, each claimed and turned into
its event by one script, so one node does each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from pushgate.engine.tracking import OFFLINE, UserStatus

if TYPE_CHECKING:
    from pushgate.engine.redis_engine import RedisEngine
    from pushgate.engine.redis_shard import RedisShard

log = logging.getLogger("pushgate.engine.redis")

#: how often a node looks for dead ones and due timers (seconds)
CHECK_EVERY = 0.5
#: how long a claim on a dead incarnation lasts without being renewed (seconds)
REAP_LEASE = 30.0
#: how long a dead incarnation's tombstone is kept (seconds)
TOMB_KEEP = 7 * 86400
#: entries removed concurrently while reaping
REAP_CHUNK = 500
#: timers claimed per script run
TIMERS_CHUNK = 200
#: when most of the cluster's nodes are silent at once, a node is declared dead only
#: after this many node_ttl more (see the module docstring)
STALL_GRACE_TTLS = 2


class Reaper:
    def __init__(self, engine: RedisEngine) -> None:
        self.engine = engine
        self._task: asyncio.Task[None] | None = None
        #: incarnations this node removed (for tests and the log)
        self.reaped: list[str] = []
        #: checks completed
        self.checks = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._forever(), name="pushgate-redis-reaper")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait([self._task], timeout=2)
            self._task = None

    async def _forever(self) -> None:
        while True:
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("looking for dead nodes and due timers failed: %s", exc)
            except Exception:
                log.exception("looking for dead nodes and due timers failed")
            await asyncio.sleep(CHECK_EVERY)

    async def check(self) -> None:
        engine = self.engine
        first = engine.shards[0]
        claimed = await engine._run(
            first,
            "REAP_CLAIM",
            [first.key("alive")],
            [
                first.prefix,
                engine.incarnation,
                int(REAP_LEASE * 1000),
                16,
                STALL_GRACE_TTLS * engine.config.node_ttl,
            ],
        )
        for i in range(0, len(claimed), 2):
            inc = claimed[i].decode() if isinstance(claimed[i], bytes) else claimed[i]
            # its connections were last vouched for at its last beat
            await self.reap(inc, float(claimed[i + 1]) - engine.config.node_ttl)
        for shard in engine.shards:
            await self._timers(shard)
        self.checks += 1

    async def reap(self, inc: str, last_beat: float | None = None) -> None:
        """Remove a dead incarnation's memberships and connections, announcing them."""
        engine = self.engine
        started = time.monotonic()
        for shard in engine.shards:
            await shard.batch.run(("SET", shard.key("tomb", inc), 1, "EX", TOMB_KEEP))
        members = connections = 0
        for shard in engine.shards:
            members += await self._members(shard, inc)
            connections += await self._connections(shard, inc, last_beat)
            await shard.batch.run(("DEL", shard.key("members", inc), shard.key("conns", inc)))
        first = engine.shards[0]
        await first.batch.run(("ZREM", first.key("alive"), inc), ("DEL", first.key("reap", inc)))
        self.reaped.append(inc)
        log.warning(
            "node %s was found dead: %d memberships and %d connections removed (%.2f s)",
            inc,
            members,
            connections,
            time.monotonic() - started,
        )

    async def _members(self, shard: RedisShard, inc: str) -> int:
        engine = self.engine
        fields = await _scan(shard, shard.key("members", inc))
        removed = 0
        for at in range(0, len(fields), REAP_CHUNK):
            jobs = []
            for field, _ in fields[at : at + REAP_CHUNK]:
                text = field.decode() if isinstance(field, bytes) else field
                client, _, channel = text.partition(" ")
                jobs.append(engine._remove_member(inc, channel, client, True))
            removed += sum(await asyncio.gather(*jobs))
        return removed

    async def _connections(self, shard: RedisShard, inc: str, last_beat: float | None) -> int:
        engine = self.engine
        entries = await _scan(shard, shard.key("conns", inc))
        closed = 0
        for at in range(0, len(entries), REAP_CHUNK):
            jobs = []
            for client, value in entries[at : at + REAP_CHUNK]:
                user = value.split(b"\n", 1)[0].decode()
                client_id = client.decode() if isinstance(client, bytes) else client
                jobs.append(engine._close(inc, client_id, user, "node lost", last_beat))
            closed += sum(await asyncio.gather(*jobs))
        return closed

    async def _timers(self, shard: RedisShard) -> None:
        engine = self.engine
        offline, added, _ = await engine._run(
            shard,
            "CLAIM_TIMERS",
            [shard.key("timers"), shard.key("events", "log"), shard.key("handoffs")],
            [
                shard.prefix,
                engine.tracking.flags,
                engine.tracking.retention,
                TIMERS_CHUNK,
                86400,
            ],
        )
        engine._wrote(added)
        handler = engine._handler
        for i in range(0, len(offline), 2):
            user = offline[i].decode()
            seen = float(offline[i + 1]) if offline[i + 1] else None
            if handler is not None:
                handler.handle_status(user, UserStatus(OFFLINE, seen, None))


async def _scan(shard: RedisShard, key: str) -> list[tuple[bytes, bytes]]:
    """Every field and value of a hash, by HSCAN on the shard's command connection."""
    out: list[tuple[bytes, bytes]] = []
    cursor: bytes | int = 0
    while True:
        cursor, flat = await shard.batch.run(("HSCAN", key, cursor, "COUNT", 1000))
        out.extend(zip(flat[::2], flat[1::2], strict=True))
        if cursor in (b"0", 0, "0"):
            return out
