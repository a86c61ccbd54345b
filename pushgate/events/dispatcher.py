"""Delivers the event log to the sinks: in order, at least once, from a durable cursor.

For each sink and each log (one per Redis shard), one node of the cluster at a time holds
a lease (``events.lease``) and delivers: it reads the events after the sink's cursor,
hands them to the sink as one batch, retries a failed batch with exponential backoff
(``events.retry_min_delay`` doubling up to ``events.retry_max_delay``) for as long as it
takes, and only then moves the cursor — by compare-and-set, so a replay
(``events_replay``) made meanwhile wins. A node that dies mid-batch leaves the cursor
where it was: the next holder of the lease sends that batch again. Hence at least once,
in the log's order; an event id repeats only for such a resent batch, and receivers drop
ids they have seen. With the redis engine the log and cursor live in Redis and survive
restarts and backend outages; the memory engine's live and die with the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import TYPE_CHECKING

import orjson
from prometheus_client import Counter, Gauge

from pushgate.events.sinks import DeliveryFailed, OutEvent, Sink

if TYPE_CHECKING:
    from pushgate.config import EventsConfig
    from pushgate.engine.base import Engine

log = logging.getLogger("pushgate.events")

DELIVERED = Counter(
    "pushgate_events_delivered_total", "Events a sink took from this node, by sink.", ["sink"]
)
FAILED = Counter(
    "pushgate_events_delivery_failures_total",
    "Batches a sink did not take (sent again after a pause), by sink.",
    ["sink"],
)
GAPS = Counter(
    "pushgate_events_gaps_total",
    "Times a sink's cursor had fallen behind the oldest event kept (events.retention): "
    "events were dropped undelivered.",
    ["sink"],
)
LAG = Gauge(
    "pushgate_events_lag_seconds",
    "Age of the oldest event not yet delivered to a sink (0 when caught up; set by the "
    "node delivering), by sink.",
    ["sink"],
)
#: how long a read waits for new events before the lease is renewed
READ_WAIT = 1.0


class LeaseLost(Exception):
    """Another node delivers this log now."""


class Dispatcher:
    def __init__(self, engine: Engine, config: EventsConfig, owner: str, sinks: list[Sink]):
        self.engine = engine
        self.config = config
        self.owner = owner
        self.sinks = sinks
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        for sink in self.sinks:
            for shard in range(self.engine.event_shards):
                self._tasks.append(
                    asyncio.create_task(
                        self._run(sink, shard), name=f"pushgate-events-{sink.name}-{shard}"
                    )
                )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait(self._tasks, timeout=2)
        self._tasks.clear()
        for sink in self.sinks:
            for shard in range(self.engine.event_shards):
                with contextlib.suppress(Exception):
                    await self.engine.events_unlock(shard, sink.name, self.owner)
            with contextlib.suppress(Exception):
                await sink.close()

    async def _run(self, sink: Sink, shard: int) -> None:
        lease = self.config.lease
        while True:
            try:
                if await self.engine.events_lock(shard, sink.name, self.owner, lease):
                    log.info("delivering event log %d to %s from this node", shard, sink.name)
                    await self._lead(sink, shard)
                else:
                    await asyncio.sleep(lease / 3)
            except asyncio.CancelledError:
                raise
            except LeaseLost:
                log.info("event log %d to %s: another node delivers it now", shard, sink.name)
                LAG.labels(sink.name).set(0)
            except Exception as exc:
                log.warning("event log %d to %s: %s; trying again", shard, sink.name, exc)
                await asyncio.sleep(min(lease / 3, 1.0))

    async def _renew(self, sink: Sink, shard: int) -> None:
        if not await self.engine.events_lock(shard, sink.name, self.owner, self.config.lease):
            raise LeaseLost()

    async def _lead(self, sink: Sink, shard: int) -> None:
        engine = self.engine
        renew_every = self.config.lease / 3
        renewed = time.monotonic()
        while True:
            if time.monotonic() - renewed >= renew_every:
                await self._renew(sink, shard)
                renewed = time.monotonic()
            cursor = await engine.events_cursor(shard, sink.name)
            wait = max(0.0, min(READ_WAIT, renew_every - (time.monotonic() - renewed)))
            found = await engine.events_read(shard, cursor or "0-0", self.config.batch_size, wait)
            if not found:
                LAG.labels(sink.name).set(0)
                continue
            if cursor is not None:
                await self._check_gap(sink, shard, cursor)
            LAG.labels(sink.name).set(max(0.0, time.time() - found[0].time_ms / 1000))
            batch = [_out(event.to_json(shard), f"{shard}:{event.id}") for event in found]
            renewed = await self._deliver(sink, shard, batch, renewed)
            if await engine.events_commit(shard, sink.name, self.owner, cursor, found[-1].id):
                DELIVERED.labels(sink.name).inc(len(batch))
            else:
                log.info("event log %d to %s: cursor moved meanwhile (a replay)", shard, sink.name)

    async def _check_gap(self, sink: Sink, shard: int, cursor: str) -> None:
        first, _ = await self.engine.events_bounds(shard)
        if first is not None and _key(first) > _key(cursor) and _key(cursor) != (0, 0):
            # the first event kept is after the cursor: was what lay between delivered?
            # Only if the cursor is the event right before it, which cannot be known;
            # a sink this far behind has lost events to the retention limit
            log.error(
                "event log %d to %s: the cursor %s is older than the oldest event kept (%s): "
                "events were dropped undelivered (raise events.retention)",
                shard,
                sink.name,
                cursor,
                first,
            )
            GAPS.labels(sink.name).inc()

    async def _deliver(
        self, sink: Sink, shard: int, batch: list[OutEvent], renewed: float
    ) -> float:
        """Deliver ``batch``, retrying until the sink takes it; renew the lease meanwhile.
        Returns when the lease was last renewed."""
        config = self.config
        attempt = 0
        while True:
            try:
                await sink.deliver(batch)
                return renewed
            except DeliveryFailed as exc:
                FAILED.labels(sink.name).inc()
                delay = min(config.retry_max_delay, config.retry_min_delay * 2**attempt)
                delay *= random.uniform(0.5, 1.0)
                if attempt == 0 or attempt % 10 == 0:
                    log.warning(
                        "event log %d to %s: %s; %d events wait (next try in %.1f s)",
                        shard,
                        sink.name,
                        exc,
                        len(batch),
                        delay,
                    )
                attempt += 1
            deadline = time.monotonic() + delay
            while True:
                if time.monotonic() - renewed >= config.lease / 3:
                    await self._renew(sink, shard)
                    renewed = time.monotonic()
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                await asyncio.sleep(min(left, config.lease / 3))


def _out(body: bytes, event_id: str) -> OutEvent:
    event_type = orjson.loads(body).get("type", "")
    return OutEvent(event_id, event_type, body)


def _key(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms or 0), int(seq or 0)
