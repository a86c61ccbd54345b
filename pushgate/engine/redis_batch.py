"""Automatic pipelining: Redis commands issued in one loop tick travel as one pipeline.

Every API publication, subscribe position read, presence change and user online or
offline mark is one or two Redis commands. Sent one by one, each borrows a pooled
connection and waits for its own round trip (with redis-py that is ~200 µs of Python
per command); a burst of thousands — an ``/api/batch``, a reconnect storm, every
client of a node leaving at once — then queues for the pool. Here callers queue their
commands and await a future; once per loop tick the queue is sent as non-transactional
pipelines of at most ``max_batch`` commands, each on one pooled connection.

Order: commands of one pipeline run in order; a caller that awaits a command before
issuing the next keeps its order, as without batching. Lua scripts are loaded by the
pipeline (``SCRIPT EXISTS``/``LOAD``) before it runs, so ``NOSCRIPT`` cannot happen.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

log = logging.getLogger("pushgate.engine.redis")

#: queues commands on a pipeline; returns how many it queued
Queue = Callable[[Pipeline], int]


class AutoPipeline:
    """One per Redis client: ``await batch.run(queue)`` → the queued commands' results."""

    def __init__(self, client: Redis, max_batch: int = 1000) -> None:
        self._client = client
        self._max_batch = max_batch
        self._waiting: list[tuple[Queue, asyncio.Future]] = []
        self._scheduled = False
        self._sending: set[asyncio.Task] = set()

    def run(self, queue: Queue) -> asyncio.Future:
        """Queue commands for this tick's pipeline; the future gets their results: one
        value for one command, a list for several. A Redis error fails the future."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiting.append((queue, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._scheduled = False
        waiting, self._waiting = self._waiting, []
        for start in range(0, len(waiting), self._max_batch):
            task = asyncio.ensure_future(self._send(waiting[start : start + self._max_batch]))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, items: list[tuple[Queue, asyncio.Future]]) -> None:
        pipe = self._client.pipeline(transaction=False)
        counts = [queue(pipe) for queue, _ in items]
        try:
            results: list[Any] = await pipe.execute(raise_on_error=False)
        except BaseException as exc:  # connection lost, pool timeout, cancelled
            for _, future in items:
                if not future.done():
                    future.set_exception(
                        exc if isinstance(exc, Exception) else ConnectionError("cancelled")
                    )
            if not isinstance(exc, Exception):
                raise
            return
        at = 0
        for (_, future), count in zip(items, counts, strict=True):
            mine = results[at : at + count]
            at += count
            if future.done():
                continue
            failed = next((r for r in mine if isinstance(r, Exception)), None)
            if failed is not None:
                future.set_exception(failed)
            else:
                future.set_result(mine[0] if count == 1 else mine)

    async def close(self) -> None:
        """Wait for pipelines on their way (a moment; they fail if Redis is gone)."""
        if self._waiting:
            self._flush()
        if self._sending:
            await asyncio.wait(list(self._sending), timeout=2.0)
