"""Automatic pipelining: Redis commands issued in one loop tick travel in one write.

Every API publication, subscribe position read, presence change and user online or
offline mark is one or two Redis commands. Sent one by one through a connection pool,
each waits for its own round trip; a burst of thousands — an ``/api/batch``, a
reconnect storm, every client of a node leaving at once — then queues for the pool.
Here callers hand over their commands and await a future; once per loop tick the
commands queued so far are written on the shard's one command connection
(``resp.RespConnection``), whose replies come back in the same order.

Order: commands run in the order they were handed over, across ticks too (one
connection). A lost connection fails the commands in flight (their callers see a
``redis.exceptions.ConnectionError``); the next tick connects again. Commands that could
not be written at all fail with ``resp.NotSent`` (a ConnectionError), safe to resend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from pushgate.engine import resp
from pushgate.engine.resp import Command, NotSent, RespConnection

log = logging.getLogger("pushgate.engine.redis")


class AutoPipeline:
    """One per shard: ``await batch.run(command, …)`` → the reply (one command) or the
    list of replies (several). An error reply fails the future."""

    def __init__(self, connect: Callable[[], Awaitable[RespConnection]]) -> None:
        self._connect = connect
        self._connection: RespConnection | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._waiting: list[tuple[asyncio.Future[resp.Reply], list[Command]]] = []
        self._scheduled = False
        self._closed = False

    def run(self, *commands: Command) -> asyncio.Future[resp.Reply]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiting.append((future, list(commands)))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def stalled_for(self, now: float) -> float:
        """Seconds the connection's commands have waited for a reply (0: none waits)."""
        connection = self._connection
        return connection.stalled_for(now) if connection is not None else 0.0

    def abort(self) -> None:
        """Drop the connection now: commands in flight fail (the server stopped
        answering)."""
        if self._connection is not None:
            self._connection.abort()

    def _flush(self) -> None:
        self._scheduled = False
        connection = self._connection
        if connection is not None and connection.is_open:
            waiting, self._waiting = self._waiting, []
            connection.send(waiting)
        elif self._connecting is None:
            self._connecting = asyncio.ensure_future(self._reconnect())

    async def _reconnect(self) -> None:
        try:
            if self._closed:
                raise ConnectionError("redis engine closed")
            self._connection = await self._connect()
        except Exception as exc:
            log.warning("redis: command connection failed: %s", exc)
            # none of them was written: a caller may send them again (cluster failover)
            self._fail_waiting(NotSent(str(exc)))
        finally:
            self._connecting = None
        if self._waiting:
            self._flush()

    def _fail_waiting(self, error: Exception) -> None:
        waiting, self._waiting = self._waiting, []
        for future, _ in waiting:
            if not future.done():
                future.set_exception(error)

    async def close(self) -> None:
        """Let commands on their way finish (a moment; they fail if Redis is gone)."""
        self._closed = True
        if self._waiting and self._connection is not None:
            self._flush()
        if self._connecting is not None:
            await asyncio.wait([self._connecting], timeout=2.0)
        connection = self._connection
        if connection is not None:
            if connection.is_open:
                # replies come in order: once this one is in, so are all before it
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(connection.call("PING"), 2.0)
            connection.close()
