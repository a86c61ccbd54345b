"""One WebSocket connection after the handshake: a lean asyncio protocol, writer and reader.

Once the handshake is answered (ws_handshake.py), the socket belongs to a
``WebSocketConnection``: the FrameWriter a dialect session writes to, and the protocol
the event loop feeds bytes to. Nothing else is kept for the connection's life — no
aiohttp request, response or handler task — so an idle connection costs this object
(slots), its parser state and its session.

Writes: pushes are pre-built frames written straight to the transport; a delivery is
one synchronous ``transport.write``. The transport's write buffer is the bounded
queue; past ``client.queue_max_bytes`` the connection is closed with the "slow" code.

Reads: ws_parser.FrameParser turns bytes into messages; pings are answered at once,
a close frame is echoed, a protocol error closes with its code. Messages go to the
dialect's ``on_message`` coroutine one at a time, in order, from a task that exists
only while messages are waiting; reading pauses while too many wait.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import cast

from pushgate.hub.backlog import Backlog
from pushgate.hub.departures import Departures
from pushgate.hub.errors import DISCONNECT_SLOW
from pushgate.metrics import LIMIT_HITS
from pushgate.transport.cut_off import close_or_cut_off
from pushgate.transport.ws_frames import (
    build_binary_frame,
    build_frame,
    build_text_frame,
    close_frame,
)
from pushgate.transport.ws_parser import (
    CLOSE_TOO_BIG,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    FrameParser,
    WebSocketProtocolError,
    parse_close,
)

log = logging.getLogger("pushgate.websocket")

#: messages waiting for the session before reading from the socket pauses
MAX_WAITING = 16
#: pings answered one by one per read from the socket; more get one pong for the latest
PONGS_PER_READ = 16
CLOSE_NORMAL = 1000
CLOSE_INTERNAL_ERROR = 1011


class OpenSockets:
    """How many lean WebSocket sockets are open, so shutdown can wait for them to flush;
    the node's backlog (hub/backlog.py), where a socket with bytes queued lists itself;
    and its departures (hub/departures.py), where a closed socket's goodbye waits its turn."""

    def __init__(self, backlog: Backlog, departures: Departures) -> None:
        self.backlog = backlog
        self.departures = departures
        self.count = 0
        self._none_left: asyncio.Event | None = None

    def opened(self) -> None:
        self.count += 1

    def closed(self) -> None:
        self.count -= 1
        if self.count <= 0 and self._none_left is not None:
            self._none_left.set()

    async def wait_closed(self, timeout: float) -> None:
        """Until every socket is closed (their close frames written), or ``timeout``."""
        if self.count <= 0:
            return
        self._none_left = asyncio.Event()
        try:
            await asyncio.wait_for(self._none_left.wait(), timeout)
        except TimeoutError:
            log.warning("%d websocket(s) still open after %.1fs of shutdown", self.count, timeout)
        finally:
            self._none_left = None


OnMessage = Callable[[bytes], Awaitable[None]]
#: takes a message at once, without a task, if it can (True); else it waits its turn
HandleNow = Callable[[bytes], bool]
OnClosed = Callable[[], Awaitable[None]]


class WebSocketConnection(asyncio.Protocol):
    """FrameWriter and asyncio protocol of one established WebSocket."""

    __slots__ = (
        "_closed",
        "_handle_now",
        "_inbox",
        "_lost",
        "_max_queue",
        "_on_closed",
        "_on_message",
        "_on_slow",
        "_open",
        "_parser",
        "_paused",
        "_task",
        "_transport",
        "bidirectional",
    )

    framing = "ws"
    close_carries_code = True
    pings = True
    event_ids = False

    def __init__(
        self,
        open_sockets: OpenSockets,
        max_queue: int,
        max_message: int,
        bidirectional: bool = True,
    ) -> None:
        self._open = open_sockets
        self._transport: asyncio.Transport | None = None
        self._max_queue = max_queue
        self._parser: FrameParser | None = FrameParser(max_message)
        self._closed = False
        self._lost = False
        self._paused = False
        self._on_slow: Callable[[], None] | None = None
        self._on_message: OnMessage | None = None
        self._handle_now: HandleNow | None = None
        self._on_closed: OnClosed | None = None
        self._inbox: deque[bytes] | None = None
        self._task: asyncio.Task | None = None
        self.bidirectional = bidirectional

    # --- wiring ----------------------------------------------------------------------
    def on_slow(self, callback: Callable[[], None]) -> None:
        self._on_slow = callback

    def start(
        self,
        on_message: OnMessage,
        on_closed: OnClosed,
        received: bytes = b"",
        handle_now: HandleNow | None = None,
    ) -> None:
        """Begin feeding messages to the session; ``received`` came with the handshake.
        ``handle_now`` takes what needs no waiting (a pong) when nothing is queued before it."""
        self._on_message = on_message
        self._handle_now = handle_now
        self._on_closed = on_closed
        if received:
            self.data_received(received)
        if self._lost:
            self._schedule()

    # --- FrameWriter -----------------------------------------------------------------
    frame = staticmethod(build_text_frame)

    @property
    def closed(self) -> bool:
        transport = self._transport
        return self._closed or transport is None or transport.is_closing()

    def queued_bytes(self) -> int:
        transport = self._transport
        if transport is None or transport.is_closing():
            return 0
        return transport.get_write_buffer_size()

    def write(self, data: bytes) -> None:
        # the per-delivery path: kept inline (no helper call) on purpose
        transport = self._transport
        if self._closed or transport is None or transport.is_closing():
            return
        transport.write(data)
        queued = transport.get_write_buffer_size()
        if queued:
            self._behind(queued)

    def writelines(self, parts: tuple[bytes, ...]) -> None:
        """One frame given in parts (header, per-recipient head, shared tail)."""
        transport = self._transport
        if self._closed or transport is None or transport.is_closing():
            return
        transport.writelines(parts)
        queued = transport.get_write_buffer_size()
        if queued:
            self._behind(queued)

    def _behind(self, queued: int) -> None:
        """A write left bytes queued: listed for the write-queue gauge, or closed as slow."""
        if queued > self._max_queue:
            self._slow()
        else:
            self._open.backlog.add(self)

    def _slow(self) -> None:
        log.warning("slow client: write queue over %d bytes", self._max_queue)
        on_slow, self._on_slow = self._on_slow, None  # reported once
        if on_slow is not None:
            on_slow()
        else:
            self.close(DISCONNECT_SLOW.code, DISCONNECT_SLOW.reason)

    def close(self, code: int, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        # The close frame queues behind what is already buffered; a peer that never
        # reads would hold the socket open, so it is aborted after a grace period.
        transport.write(close_frame(code, reason))
        close_or_cut_off(transport)

    # --- asyncio.Protocol ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # a TCP socket stream
        self._open.opened()

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None or self._closed:
            return
        try:
            messages = parser.feed(data)
        except WebSocketProtocolError as exc:
            if exc.code == CLOSE_TOO_BIG:
                LIMIT_HITS.labels("frame_size").inc()
            log.info("websocket protocol error, closing %d: %s", exc.code, exc.reason)
            self._parser = None
            self.close(exc.code, exc.reason)
            return
        pings = 0
        latest = None
        for opcode, payload in messages:
            if self._closed:
                return
            if opcode == OP_PING:
                pings += 1
                if pings <= PONGS_PER_READ:
                    self._transport.write(build_frame(payload, OP_PONG))  # type: ignore[union-attr]  # reading: connected
                else:
                    latest = payload
            elif opcode == OP_CLOSE:
                self._peer_closed(payload)
            elif opcode != OP_PONG:
                # in order: only while no task holds earlier messages
                now = self._handle_now
                if self._task is None and now is not None and now(payload):
                    continue
                self._enqueue(payload)
        if latest is not None and not self._closed:
            # past a few, one pong answers the latest of the pings read at once (RFC 6455
            # 5.5.3 allows it): a ping flood costs its parsing, not a write each
            self._transport.write(build_frame(latest, OP_PONG))  # type: ignore[union-attr]  # reading: connected

    def eof_received(self) -> bool:
        """The peer sends nothing more. Over plain TCP the socket is closed in turn
        (hub/departures.py): closing sockets, and the connection_lost callbacks that
        follow in one pass, were most of what kept a node's loop from its timers when
        thousands of clients left at once. A TLS transport closes itself whatever this
        says (connection_lost follows)."""
        transport = self._transport
        if transport is None or transport.get_extra_info("sslcontext") is not None:
            return False
        self._open.departures.add(self._close_after_eof)
        return True

    def _close_after_eof(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        # what is queued goes first (a peer that half-closed and never reads it is cut
        # off); connection_lost follows
        close_or_cut_off(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._open.closed()
        self._parser = None
        # the transport let go of this protocol; letting go of it in turn leaves no
        # cycle for the GC (writes after this are dropped: ``closed`` is true)
        self._transport = None
        if self._on_closed is not None and self._task is None:
            # the session's goodbye in turn (a task still handling messages says it when
            # done): a node whose clients all leave at once keeps running its timers
            self._open.departures.add(self._schedule)

    # --- inside ----------------------------------------------------------------------
    def _peer_closed(self, payload: bytes) -> None:
        """Answer the peer's close frame with the same code, then close the socket."""
        try:
            code, _reason = parse_close(payload)
        except WebSocketProtocolError as exc:
            self.close(exc.code, exc.reason)
            return
        self.close(CLOSE_NORMAL if code is None else code, "")

    def _enqueue(self, payload: bytes) -> None:
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = deque()
        inbox.append(payload)
        if len(inbox) >= MAX_WAITING and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._schedule()

    def _schedule(self) -> None:
        if self._task is None and self._on_message is not None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        """Hand waiting messages to the session in order; on loss, close the session."""
        try:
            while True:
                inbox = self._inbox
                if not inbox or self.closed:
                    break
                payload = inbox.popleft()
                if self._paused and len(inbox) < MAX_WAITING // 2:
                    self._paused = False
                    if self._transport is not None:
                        self._transport.resume_reading()
                try:
                    await self._on_message(payload)  # type: ignore[misc]  # set by start(), before any read
                except Exception:
                    log.exception("websocket message handler failed")
                    self.close(CLOSE_INTERNAL_ERROR, "internal error")
                # let other connections' work run between two messages of this one: a
                # handler that never waits would otherwise keep the loop for the whole
                # inbox (a pipelined flood stalled everyone else for seconds)
                await asyncio.sleep(0)
            self._inbox = None
        finally:
            self._task = None
        if self._lost and self._on_closed is not None:
            # the session's callbacks hold the session, which holds this connection
            on_closed, self._on_closed = self._on_closed, None
            self._on_message = None
            self._handle_now = None
            self._on_slow = None
            try:
                await on_closed()
            except Exception:
                log.exception("websocket session close failed")


class BinaryWebSocketConnection(WebSocketConnection):
    """A WebSocketConnection whose messages go out as binary frames (Protobuf)."""

    __slots__ = ()

    framing = "ws-binary"
    frame = staticmethod(build_binary_frame)
