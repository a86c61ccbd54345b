"""A lean pipelining Redis connection for the redis engine's two hot paths.

Every publication crosses Redis twice: the publish script (sent by the publishing node)
and the PUB/SUB message (read by each subscribed node). redis-py spends ~60 µs of Python
per command on those paths (command packing, its connection pool, its pipeline object,
response callbacks, ``asyncio.timeout`` around each read; measured with py-spy in the
c100k benchmark, docs/performance.md). Here the same RESP travels through an
``asyncio.Protocol``: commands are packed by ``hiredis.pack_command`` and written in
order, replies are parsed by ``hiredis.Reader`` (both C) and matched to their commands
in order, so one connection carries any number of commands in flight (what rueidis and
ioredis call auto-pipelining). Everything else in the engine uses redis-py.

A connection is either a command connection (``RespConnection.call``) or, after
``listen``, a PUB/SUB connection whose every reply goes to a callback. Error replies
become ``redis.exceptions.ResponseError``; a lost connection fails every command in
flight with ``redis.exceptions.ConnectionError``; a command unanswered for
``command_timeout`` aborts the connection. ``EVALSHA`` of a script this connection
knows is sent again as ``EVAL`` if Redis answers ``NOSCRIPT`` (its script cache was
flushed), so callers never see that error.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast, final

import hiredis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

CONNECT_TIMEOUT = 5.0
COMMAND_TIMEOUT = 10.0

Command = tuple[Any, ...]
#: a decoded RESP reply (hiredis): bytes, an int, None, a ResponseError, or a list of
#: replies; each caller knows the shape its command gives back
Reply = Any


class NotSent(RedisConnectionError):
    """The commands were never written (no connection): sending them again is safe."""


@dataclass(frozen=True)
class Address:
    """Where a Redis server is and how to log in: from a ``redis://``, ``rediss://``
    or ``unix://`` URL."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str = ""
    tls: bool = False
    username: str | None = None
    password: str | None = None
    db: int = 0
    #: rediss:// only: ``?ssl_cert_reqs=none`` skips verification, ``?ssl_ca_certs=`` a CA file
    tls_verify: bool = True
    tls_ca_file: str | None = None

    @classmethod
    def from_url(cls, url: str) -> Address:
        options = parse_url(url)
        kind = options.get("connection_class")
        ca_file = options.get("ssl_ca_certs")
        return cls(
            host=options.get("host") or "127.0.0.1",
            port=int(options.get("port") or 6379),
            path=options.get("path", "") if kind is UnixDomainSocketConnection else "",
            tls=kind is SSLConnection,
            username=options.get("username"),
            password=options.get("password"),
            db=int(options.get("db") or 0),
            tls_verify=str(options.get("ssl_cert_reqs", "required")).lower() != "none",
            tls_ca_file=ca_file if isinstance(ca_file, str) else None,
        )

    def tls_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.tls_ca_file)
        if not self.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


@final  # `type(sink) is _Group` then tells the type checker what sink is otherwise
class _Group:
    """Replies of several commands sent together, for one future."""

    __slots__ = ("error", "future", "left", "replies")

    def __init__(self, future: asyncio.Future[Reply], count: int) -> None:
        self.future = future
        self.left = count
        self.replies: list[Any] = []
        self.error: BaseException | None = None

    def add(self, reply: Any) -> None:
        if isinstance(reply, BaseException):
            if self.error is None:
                self.error = reply
        else:
            self.replies.append(reply)
        self.left -= 1
        if self.left == 0 and not self.future.done():
            if self.error is not None:
                self.future.set_exception(self.error)
            else:
                self.future.set_result(self.replies)


def _error(reply: hiredis.ReplyError) -> ResponseError:
    return ResponseError(str(reply))


class RespConnection(asyncio.Protocol):
    """One connection to Redis; see the module docstring."""

    def __init__(
        self, scripts: dict[str, bytes] | None = None, command_timeout: float = COMMAND_TIMEOUT
    ) -> None:
        self.transport: asyncio.Transport | None = None
        self._reader = hiredis.Reader()
        #: what each reply in flight belongs to: (future or group, command)
        self._waiting: deque[tuple[asyncio.Future[Reply] | _Group, Command]] = deque()
        self._on_push: Callable[[Any], None] | None = None
        self._scripts = scripts or {}
        self._command_timeout = command_timeout
        self._watchdog: asyncio.TimerHandle | None = None
        self.last_received = time.monotonic()
        #: when a reply last arrived, or the first command after a quiet spell was sent
        self._progress = self.last_received
        self.closed: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()

    # --- asyncio.Protocol ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a TCP or Unix socket stream

    def data_received(self, data: bytes) -> None:
        self.last_received = self._progress = time.monotonic()
        reader = self._reader
        reader.feed(data)
        try:
            reply = reader.gets()
            while reply is not False:
                self._deliver(reply)
                reply = reader.gets()
        except hiredis.ProtocolError as exc:
            self._fail(RedisConnectionError(f"redis protocol error: {exc}"))
            if self.transport is not None:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._fail(RedisConnectionError(f"redis connection lost{f': {exc}' if exc else ''}"))
        if not self.closed.done():
            self.closed.set_result(None)

    # --- commands ----------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def send(self, commands: list[tuple[asyncio.Future[Reply], list[Command]]]) -> None:
        """Write these commands in one write; each future gets its reply (one command)
        or the list of its replies (several; the first error reply fails it)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            error = NotSent("redis connection lost")
            for future, _ in commands:
                if not future.done():
                    future.set_exception(error)
            return
        pack = hiredis.pack_command
        waiting = self._waiting
        if not waiting:
            self._progress = time.monotonic()
        chunks = []
        for future, group in commands:
            if len(group) == 1:
                command = group[0]
                waiting.append((future, command))
                chunks.append(pack(command))
            else:
                sink = _Group(future, len(group))
                for command in group:
                    waiting.append((sink, command))
                    chunks.append(pack(command))
        transport.write(b"".join(chunks))
        if self._watchdog is None:
            self._arm_watchdog()

    def stalled_for(self, now: float) -> float:
        """Seconds commands have been waiting without any reply arriving (0: none waits)."""
        return now - self._progress if self._waiting else 0.0

    def call(self, *command: Any) -> asyncio.Future[Reply]:
        """Send one command now; the future gets its reply."""
        future = asyncio.get_running_loop().create_future()
        self.send([(future, [command])])
        return future

    def listen(self, on_push: Callable[[Any], None]) -> None:
        """From now on every reply (PUB/SUB messages, subscribe confirmations, pongs)
        goes to ``on_push``; commands sent are not matched to replies."""
        self._on_push = on_push

    def write(self, *command: Any) -> None:
        """Send a command whose reply goes to the ``listen`` callback."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(hiredis.pack_command(command))

    def write_many(self, commands: list[Command]) -> None:
        """Send commands whose replies go to the ``listen`` callback, in one write."""
        if self.transport is not None and not self.transport.is_closing():
            pack = hiredis.pack_command
            self.transport.write(b"".join(pack(command) for command in commands))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection without flushing (the server stopped answering)."""
        if self.transport is not None:
            self.transport.abort()

    # --- replies -------------------------------------------------------------------------
    def _deliver(self, reply: Any) -> None:
        if self._on_push is not None and not self._waiting:
            self._on_push(reply)
            return
        if not self._waiting:
            return  # nothing asked for it (cannot happen with a well-behaved server)
        sink, command = self._waiting.popleft()
        if isinstance(reply, hiredis.ReplyError):
            text = str(reply)
            if text.startswith("NOSCRIPT") and self._resend_as_eval(sink, command):
                return
            reply = _error(reply)
        if type(sink) is _Group:
            sink.add(reply)
        elif not sink.done():
            if isinstance(reply, BaseException):
                sink.set_exception(reply)
            else:
                sink.set_result(reply)

    def _resend_as_eval(self, sink: asyncio.Future[Reply] | _Group, command: Command) -> bool:
        name = command[0]
        if not (isinstance(name, str) and name.upper() == "EVALSHA"):
            return False
        body = self._scripts.get(command[1])
        if body is None or self.transport is None:
            return False
        eval_command = ("EVAL", body, *command[2:])
        self._waiting.append((sink, eval_command))
        self.transport.write(hiredis.pack_command(eval_command))
        return True

    def _fail(self, error: Exception) -> None:
        waiting, self._waiting = self._waiting, deque()
        for sink, _ in waiting:
            if type(sink) is _Group:
                sink.add(error)
            elif not sink.done():
                sink.set_exception(error)

    # --- a command unanswered for too long aborts the connection ---------------------
    def _arm_watchdog(self) -> None:
        loop = asyncio.get_running_loop()
        self._watchdog = loop.call_later(self._command_timeout / 2, self._check)

    def _check(self) -> None:
        self._watchdog = None
        if not self._waiting:
            return
        if time.monotonic() - self._progress > self._command_timeout:
            self._fail(RedisTimeoutError(f"redis did not answer for {self._command_timeout:g} s"))
            if self.transport is not None:
                self.transport.abort()
            return
        self._arm_watchdog()


async def connect(
    address: Address,
    *,
    scripts: dict[str, bytes] | None = None,
    command_timeout: float = COMMAND_TIMEOUT,
    connect_timeout: float = CONNECT_TIMEOUT,
) -> RespConnection:
    """Open, log in (``AUTH``, ``SELECT``) and load ``scripts`` (sha → body)."""
    loop = asyncio.get_running_loop()

    def factory() -> RespConnection:
        return RespConnection(scripts, command_timeout)

    try:
        if address.path:
            opening = loop.create_unix_connection(factory, address.path)
        else:
            context = address.tls_context()
            opening = loop.create_connection(factory, address.host, address.port, ssl=context)
        _, connection = await asyncio.wait_for(opening, connect_timeout)
    except TimeoutError:
        raise RedisTimeoutError(f"redis connect timed out after {connect_timeout:g} s") from None
    except OSError as exc:
        raise RedisConnectionError(f"redis connect failed: {exc}") from None
    try:
        setup: list[Command] = []
        if address.password is not None:
            if address.username:
                setup.append(("AUTH", address.username, address.password))
            else:
                setup.append(("AUTH", address.password))
        if address.db:
            setup.append(("SELECT", address.db))
        setup.extend(("SCRIPT", "LOAD", body) for body in (scripts or {}).values())
        if setup:
            future = loop.create_future()
            connection.send([(future, setup)])
            await asyncio.wait_for(future, connect_timeout)
    except BaseException:
        connection.close()
        raise
    return connection
