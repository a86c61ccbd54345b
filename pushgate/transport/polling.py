"""Long polling and short polling: ``/connection/longpoll`` and ``/connection/poll``.

pushgate's own framing of the Centrifugo protocol for networks that pass neither
WebSocket nor streaming responses, built like BOSH (XEP-0124): a session whose every
outgoing message gets a sequence number and stays in an outbox until a request
acknowledges it, so a lost response is sent again; request ids make a repeated request
safe (its commands do not run twice). A long-poll request waits up to ``polling.hold``
for messages; a short-poll request answers at once. A session no request has touched
for ``polling.session_timeout`` is closed like a dropped connection, and so is one whose
held request lost its connection with no other request following within a moment (a
closed tab: connection_loss.py). See docs/transports.md for the wire format.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from functools import partial

import orjson
from aiohttp import web

from pushgate.hub.backlog import Backlog
from pushgate.hub.errors import DISCONNECT_SLOW
from pushgate.protocol.centrifugo.session import CentrifugoSession
from pushgate.transport.app_keys import HUB
from pushgate.transport.connection_loss import LOST_GRACE, held_until
from pushgate.transport.limits import too_large
from pushgate.transport.negotiation import Unsupported, json_only, refuse

log = logging.getLogger("pushgate.polling")


class Outbox:
    """FrameWriter of a polling session: numbered messages waiting to be acknowledged."""

    __slots__ = (
        "_backlog",
        "_on_slow",
        "_size",
        "_waiter",
        "closed",
        "closing_seq",
        "max_bytes",
        "messages",
        "seq",
    )

    framing = "poll"
    bidirectional = False
    close_carries_code = False
    pings = False  # the requests themselves show the client is there
    event_ids = False

    def __init__(self, max_bytes: int, backlog: Backlog) -> None:
        self._backlog = backlog
        self.messages: deque[tuple[int, bytes]] = deque()
        self.seq = 0
        self.max_bytes = max_bytes
        self._size = 0
        self._waiter: asyncio.Future | None = None
        self.closed = False
        #: seq of the last message before close (the disconnect push)
        self.closing_seq = 0
        self._on_slow = None

    def on_slow(self, callback) -> None:
        self._on_slow = callback

    @staticmethod
    def frame(payload: bytes) -> bytes:
        return payload

    def queued_bytes(self) -> int:
        return self._size

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        self.seq += 1
        self.messages.append((self.seq, data))
        self._size += len(data)
        self._backlog.add(self)
        self.wake()
        if self._size > self.max_bytes and self._on_slow is not None:
            # reported once: closing writes the disconnect push through here again
            on_slow, self._on_slow = self._on_slow, None
            log.warning("slow polling client: outbox over %d bytes", self.max_bytes)
            on_slow()

    def close(self, code: int, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.closing_seq = self.seq
            self.wake()

    def ack(self, seq: int) -> None:
        messages = self.messages
        while messages and messages[0][0] <= seq:
            self._size -= len(messages.popleft()[1])

    def after(self, seq: int) -> list[tuple[int, bytes]]:
        return [m for m in self.messages if m[0] > seq]

    def wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self, request: web.Request, timeout: float) -> bool:
        """Until a message arrives, the session closes, another request comes, the
        client goes away (then True), or timeout."""
        self.wake()  # an older waiting request answers now
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            return await held_until(request, waiter, timeout)
        finally:
            if self._waiter is waiter:
                self._waiter = None


class PollingSession:
    __slots__ = ("centrifugo", "last_request", "last_rid", "lock", "outbox")

    def __init__(self, centrifugo: CentrifugoSession, outbox: Outbox) -> None:
        self.centrifugo = centrifugo
        self.outbox = outbox
        self.lock = asyncio.Lock()
        self.last_rid = 0
        self.last_request = time.monotonic()


class PollingSessions:
    """This node's polling sessions, and the sweeper that expires idle ones."""

    def __init__(self, session_timeout: float) -> None:
        self.by_id: dict[str, PollingSession] = {}
        self.session_timeout = session_timeout
        self._sweeper: asyncio.Task | None = None
        self._ending: set[asyncio.Task] = set()

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for session in list(self.by_id.values()):
            await self.end(session)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            deadline = time.monotonic() - self.session_timeout
            for session in [s for s in self.by_id.values() if s.last_request < deadline]:
                if session.outbox._waiter is None:  # not while a request is held
                    log.info("polling session %s expired", session.centrifugo.client.session)
                    await self.end(session)

    def lost(self, session: PollingSession) -> None:
        """A held request's client went away: unless another request of the session
        comes within LOST_GRACE, the page is gone and the session ends now rather than
        at its timeout (its user leaves presence at once, as on WebSocket)."""
        seen = session.last_request
        asyncio.get_running_loop().call_later(LOST_GRACE, self._end_if_quiet, session, seen)

    def _end_if_quiet(self, session: PollingSession, seen: float) -> None:
        quiet = session.last_request == seen and session.outbox._waiter is None
        if quiet and self.by_id.get(session.centrifugo.client.session) is session:
            log.info("polling session %s: its client went away", session.centrifugo.client.session)
            task = asyncio.ensure_future(self.end(session))
            self._ending.add(task)
            task.add_done_callback(self._ending.discard)

    async def end(self, session: PollingSession) -> None:
        self.by_id.pop(session.centrifugo.client.session, None)
        session.outbox.close(0, "")
        await session.centrifugo.closed()


POLLING = web.AppKey("polling_sessions", PollingSessions)


class BadPoll(ValueError):
    pass


def _parse(body: bytes) -> tuple[str, int, int, list, bool]:
    try:
        request = orjson.loads(body) if body.strip() else None
    except orjson.JSONDecodeError as exc:
        raise BadPoll(f"body is not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise BadPoll("body must be a JSON object with session, rid, ack, commands")
    session = request.get("session") or ""
    rid = request.get("rid", 0)
    ack = request.get("ack", 0)
    commands = request.get("commands") or []
    if not isinstance(session, str):
        raise BadPoll("session must be a string")
    if type(rid) is not int or type(ack) is not int or rid < 0 or ack < 0:
        raise BadPoll("rid and ack must be non-negative integers")
    if not isinstance(commands, list) or not all(isinstance(c, dict) for c in commands):
        raise BadPoll("commands must be a list of command objects")
    close = request.get("close", False)
    if not isinstance(close, bool):
        raise BadPoll("close must be a boolean")
    return session, rid, ack, commands, close


def _answer(session_id: str, messages: list[tuple[int, bytes]]) -> web.Response:
    body = b'{"session":%b,"messages":[%b]}' % (
        orjson.dumps(session_id),
        b",".join(b"[%d,%b]" % message for message in messages),
    )
    return web.Response(body=body, content_type="application/json")


async def _poll(request: web.Request, hold: bool) -> web.Response:
    hub = request.app[HUB]
    sessions = request.app[POLLING]
    try:
        json_only(request, "polling", "its envelope is JSON; use websocket or http_stream")
    except Unsupported as exc:
        log.info("polling refused: %s", exc)
        return refuse(exc)
    body = await request.read()
    if len(body) > hub.config.client.max_frame_bytes:
        return too_large("request")
    try:
        session_id, rid, ack, commands, close = _parse(body)
    except BadPoll as exc:
        log.info("bad polling request: %s", exc)
        return web.json_response({"error": str(exc)}, status=400)
    frame = b"\n".join(orjson.dumps(c) for c in commands)
    session: PollingSession | None
    if not session_id:
        if not commands or "connect" not in commands[0]:
            return web.json_response({"error": "a new session starts with connect"}, status=400)
        outbox = Outbox(hub.config.client.queue_max_bytes, hub.backlog)
        transport = "longpoll" if hold else "poll"
        centrifugo = CentrifugoSession(hub, outbox, transport)
        centrifugo.client.headers = hub.proxies.pick_headers(request.headers.items())
        outbox.on_slow(partial(centrifugo.client.disconnect, DISCONNECT_SLOW))
        session = PollingSession(centrifugo, outbox)
        session.last_rid = rid
        session_id = centrifugo.client.session
        sessions.by_id[session_id] = session
        async with session.lock:
            await centrifugo.handle_frame(frame)
        if outbox.closed:
            await sessions.end(session)
        return _answer(session_id, outbox.after(0))
    session = sessions.by_id.get(session_id)
    if session is None:
        return web.json_response({"error": "unknown session"}, status=404)
    session.last_request = time.monotonic()
    if close:
        await sessions.end(session)  # the client is leaving: no need to wait for expiry
        return _answer(session_id, [])
    outbox = session.outbox
    outbox.ack(ack)
    if outbox.closed and ack >= outbox.closing_seq:
        await sessions.end(session)  # the disconnect was received: the session is over
        return _answer(session_id, [])
    if commands and rid > session.last_rid:
        session.last_rid = rid
        async with session.lock:
            await session.centrifugo.handle_frame(frame)
    elif rid > session.last_rid:
        session.last_rid = rid
    pending = outbox.after(ack)
    if not pending and hold and not outbox.closed:
        if await outbox.wait(request, hub.config.polling.hold):
            sessions.lost(session)
            return _answer(session_id, [])  # nobody is there to read it
        pending = outbox.after(ack)
    session.last_request = time.monotonic()
    return _answer(session_id, pending)


async def longpoll_handler(request: web.Request) -> web.Response:
    return await _poll(request, hold=True)


async def poll_handler(request: web.Request) -> web.Response:
    return await _poll(request, hold=False)
