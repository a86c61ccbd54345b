"""XMPP over BOSH (XEP-0124, XEP-0206): ``/http-bind`` and ``/bosh``.

Every request is one ``POST`` of a ``<body/>``. The rid window, held requests, response
cache and inactivity rules are ``protocol.xmpp.bosh.BoshState``'s; this module reads
and bounds the HTTP bodies, parses them with the hardened XML codec, runs the payloads
through the session's ``XmppSession`` in rid order (one at a time per session), parks
each HTTP request on a future until the state machine answers its rid, and sweeps
sessions whose client went away for longer than ``inactivity``; a held request whose
connection is lost with no other request following at once ends its session then.

``XmppEndpoint`` is what every XMPP transport shares: settings, the resume store and
the BOSH sessions with their sweeper.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import TYPE_CHECKING

from aiohttp import web

from pushgate.hub.backlog import Backlog
from pushgate.hub.errors import DISCONNECT_SLOW
from pushgate.protocol.xmpp import bosh
from pushgate.protocol.xmpp.bosh import (
    BAD_REQUEST,
    HOST_UNKNOWN,
    ITEM_NOT_FOUND,
    NS_HTTPBIND,
    NS_XBOSH,
    POLICY_VIOLATION,
    REMOTE_STREAM_ERROR,
    SYSTEM_SHUTDOWN,
    BoshError,
    BoshState,
    Duplicate,
    Replay,
    body_bytes,
    terminate_body,
)
from pushgate.protocol.xmpp.session import (
    Mark,
    ResumeStore,
    StreamError,
    XmppSession,
    XmppSettings,
)
from pushgate.protocol.xmpp.stanzas import stream_error
from pushgate.protocol.xmpp.xml import Element, XmlError, parse
from pushgate.transport.app_keys import HUB
from pushgate.transport.connection_loss import LOST_GRACE, held_until
from pushgate.transport.origin import cors_headers, origin_allowed

if TYPE_CHECKING:
    from pushgate.hub.hub import Hub

log = logging.getLogger("pushgate.bosh")

CONTENT_TYPE = "text/xml; charset=utf-8"
RESTART = f"{NS_XBOSH} restart"
SWEEP_EVERY = 1.0


class XmppEndpoint:
    """Shared by every XMPP connection of one server."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.config = hub.config.xmpp
        self.settings = XmppSettings.from_config(hub.config)
        self.resume = ResumeStore(self.config.resume_ttl)
        self.sessions: dict[str, BoshConnection] = {}
        self._sweeper: asyncio.Task | None = None

    def parse(self, data: bytes | str) -> Element:
        return parse(data, max_bytes=self.config.max_stanza_bytes, max_depth=self.config.max_depth)

    def start(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="pushgate-bosh")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for conn in list(self.sessions.values()):
            conn.writer.end("system-shutdown")
            await conn.finish()

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            try:
                await self.sweep(time.monotonic())
            except Exception:
                log.exception("BOSH sweep failed")

    async def sweep(self, now: float) -> None:
        for conn in [c for c in self.sessions.values() if c.state.inactive(now)]:
            if conn.state.terminated is None:
                log.info("BOSH session %s inactive: ended", conn.state.sid)
            await conn.finish()


XMPP = web.AppKey("xmpp", XmppEndpoint)


class BoshWriter:
    """StanzaWriter of a BOSH session: stanzas wait in the state machine's outbox."""

    __slots__ = ("_backlog", "_conn", "_flush_soon", "_size", "marks", "max_bytes", "positions")

    framing = "bosh"

    def __init__(self, conn: BoshConnection, max_bytes: int, backlog: Backlog) -> None:
        self._conn = conn
        self._backlog = backlog
        self.max_bytes = max_bytes
        self.positions: dict[str, tuple[int, str]] = {}
        #: positions of queued publications, handed over with the next answer
        self.marks: list[Mark] = []
        self._size = 0
        self._flush_soon = False

    @property
    def closed(self) -> bool:
        return self._conn.state.terminated is not None

    @staticmethod
    def frame(stanza: bytes) -> bytes:
        return stanza

    def queued_bytes(self) -> int:
        """Stanzas waiting in the outbox for the client's next request."""
        return self._size

    def write(self, data: bytes, mark: Mark | None = None) -> None:
        conn = self._conn
        if conn.state.terminated is not None:
            return
        conn.state.queue(data)
        self._size += len(data)
        self._backlog.add(self)
        if mark is not None:
            self.marks.append(mark)
        if self._size > self.max_bytes:
            log.warning("slow BOSH client: outbox over %d bytes", self.max_bytes)
            conn.session.client.disconnect(DISCONNECT_SLOW)
            return
        if not self._flush_soon and not conn.busy:
            # pushes of one loop iteration go out in one answer
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_soon = False
        self._conn.deliver(self._conn.state.flush())

    def handed_over(self) -> None:
        """Every queued stanza has gone into an answer."""
        self._size = 0
        for channel, offset, epoch in self.marks:
            self.positions[channel] = (offset, epoch)
        self.marks.clear()

    def end(self, condition: str, text: str = "") -> None:
        conn = self._conn
        state = conn.state
        if state.terminated is not None:
            return
        if condition == "system-shutdown":
            state.terminate(SYSTEM_SHUTDOWN)
        elif condition:
            state.queue(stream_error(condition, text))
            state.terminate(REMOTE_STREAM_ERROR)
        else:
            state.terminate("")
        conn.deliver(state.flush())


class BoshConnection:
    __slots__ = ("busy", "endpoint", "finished", "lock", "session", "state", "waiters", "writer")

    def __init__(self, endpoint: XmppEndpoint, state: BoshState[Element]) -> None:
        self.endpoint = endpoint
        self.state = state
        hub = endpoint.hub
        self.writer = BoshWriter(self, hub.config.client.queue_max_bytes, hub.backlog)
        self.session = XmppSession(hub, self.writer, "bosh", endpoint.settings, endpoint.resume)
        self.lock = asyncio.Lock()
        self.waiters: dict[int, asyncio.Future] = {}
        self.busy = False
        self.finished = False

    def deliver(self, answers: list[tuple[int, bytes]]) -> None:
        if not answers:
            return
        self.writer.handed_over()
        for rid, body in answers:
            waiter = self.waiters.get(rid)
            if waiter is not None and not waiter.done():
                waiter.set_result(body)

    async def finish(self) -> None:
        """The session is over: forget it, answer what waits, leave the hub."""
        self.endpoint.sessions.pop(self.state.sid, None)
        if self.finished:
            return
        self.finished = True
        if self.state.terminated is None:
            self.state.terminate("")
        self.deliver(self.state.flush())
        await self.session.closed()

    def lost(self) -> None:
        """A held request's client went away: unless another request comes within
        LOST_GRACE (a client retrying it), the page is gone and the session ends now
        rather than after ``inactivity`` (its presence with it)."""
        idle_since = self.state.idle_since
        asyncio.get_running_loop().call_later(LOST_GRACE, self._end_if_quiet, idle_since)

    def _end_if_quiet(self, idle_since: float) -> None:
        state = self.state
        quiet = not state.in_flight and not state.parked and state.idle_since == idle_since
        if quiet and not self.finished:
            log.info("BOSH session %s: its client went away", state.sid)
            self.endpoint.hub.spawn(self.finish())

    async def request(self, rid: int, body: Element, http: web.Request) -> bytes:
        state = self.state
        empty = not body.children and RESTART not in body.attrs and body.get("type") != "terminate"
        ack_text = body.get("ack")
        ack = int(ack_text) if ack_text.isdigit() else None
        try:
            verdict = state.receive(rid, body, time.monotonic(), ack=ack, empty=empty)
        except BoshError as exc:
            log.info("BOSH session %s: %s", state.sid, exc)
            state.terminate(exc.condition)
            await self.finish()
            return terminate_body(exc.condition)
        if isinstance(verdict, Replay):
            return verdict.body
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        if isinstance(verdict, Duplicate):
            old = self.waiters.get(rid)
            if old is not None and not old.done():
                old.set_result(None)  # the older copy of this request is dead anyway
        self.waiters[rid] = waiter
        gone = False
        try:
            async with self.lock:
                self.busy = True
                try:
                    for ready_rid, payload in state.ready():
                        await self._process(ready_rid, payload)
                finally:
                    self.busy = False
                self.deliver(state.flush())
            if not waiter.done():
                gone = await held_until(http, waiter, state.wait)
            if not waiter.done():
                self.deliver(state.expire(rid))
            answer = waiter.result() if waiter.done() else None
            return answer if answer is not None else body_bytes([])
        finally:
            if self.waiters.get(rid) is waiter:
                del self.waiters[rid]
            state.finished(time.monotonic())
            if state.terminated is not None and not state.parked:
                await self.finish()
            elif gone:
                self.lost()

    async def _process(self, rid: int, payload: Element) -> None:
        state = self.state
        session = self.session
        if state.terminated is not None:
            return
        try:
            if payload.get("type") == "terminate":
                for child in payload.children:
                    await session.handle(child)
                state.terminate("")
                return
            if payload.attrs.get(RESTART) == "true":
                session.check_domain(payload.get("to"))
                session.open_stream()
            for child in payload.children:
                await session.handle(child)
                if state.terminated is not None:
                    return
        except StreamError as exc:
            log.info("BOSH session %s: stream error %s", state.sid, exc)
            self.writer.end(exc.condition, exc.text)
        except Exception:
            log.exception("BOSH session %s: request %d failed", state.sid, rid)
            self.writer.end("internal-server-error")


async def _read_body(request: web.Request, limit: int) -> bytes | None:
    """The request body, or None when it is larger than ``limit``."""
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks = []
    size = 0
    async for chunk in request.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def bosh_preflight(request: web.Request) -> web.Response:
    allowed = request.app[HUB].config.server.allowed_origins
    if not origin_allowed(request, allowed):
        return web.Response(status=403, text="origin not allowed")
    headers = cors_headers(request, allowed)
    headers.update(
        {
            "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
            "Access-Control-Allow-Headers": request.headers.get(
                "Access-Control-Request-Headers", "Content-Type"
            ),
            "Access-Control-Max-Age": "600",
        }
    )
    return web.Response(status=204, headers=headers)


async def bosh_handler(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    endpoint = request.app[XMPP]
    allowed = hub.config.server.allowed_origins
    if not origin_allowed(request, allowed):
        log.info("BOSH refused: origin %s", request.headers.get("Origin"))
        return web.Response(status=403, text="origin not allowed")
    headers = cors_headers(request, allowed)
    headers["Cache-Control"] = "no-store"

    def answer(data: bytes) -> web.Response:
        return web.Response(body=data, headers={**headers, "Content-Type": CONTENT_TYPE})

    if request.method == "GET":
        return web.Response(
            text="pushgate: XMPP over BOSH; POST <body/> elements here.\n", headers=headers
        )
    raw = await _read_body(request, endpoint.config.max_stanza_bytes)
    if raw is None:
        log.info("BOSH body over %d bytes refused", endpoint.config.max_stanza_bytes)
        return answer(terminate_body(POLICY_VIOLATION))
    try:
        body = endpoint.parse(raw)
    except XmlError as exc:
        log.info("bad BOSH body: %s", exc)
        condition = POLICY_VIOLATION if exc.condition == "policy-violation" else BAD_REQUEST
        return answer(terminate_body(condition))
    if body.name != "body" or body.ns != NS_HTTPBIND:
        return answer(terminate_body(BAD_REQUEST))
    rid_text = body.get("rid")
    if not rid_text.isdigit() or int(rid_text) > bosh.MAX_RID:
        return answer(terminate_body(BAD_REQUEST))
    rid = int(rid_text)
    sid = body.get("sid")
    if not sid:
        return answer(await _create(endpoint, body, rid, request))
    conn = endpoint.sessions.get(sid)
    if conn is None:
        return answer(terminate_body(ITEM_NOT_FOUND))
    return answer(await conn.request(rid, body, request))


def _number(text: str, default: float) -> float:
    try:
        value = float(text)
    except ValueError:
        return default
    return value if value >= 0 else default


async def _create(endpoint: XmppEndpoint, body: Element, rid: int, request: web.Request) -> bytes:
    config = endpoint.config
    to = body.get("to")
    if to and to.lower() != endpoint.settings.domain:
        log.info("BOSH session for unknown host %r refused", to)
        return terminate_body(HOST_UNKNOWN)
    wait = min(_number(body.get("wait"), config.bosh_wait), config.bosh_wait)
    hold = int(min(_number(body.get("hold"), config.bosh_hold), config.bosh_hold))
    requests = max(config.bosh_requests, hold + 1)
    client_ver = bosh.parse_version(body.get("ver") or "1.11")
    ver = min(client_ver, bosh.BOSH_VERSION)
    ack = body.get("ack") == "1"
    sid = secrets.token_hex(20)
    state: BoshState[Element] = BoshState(
        sid,
        rid,
        wait=wait,
        hold=hold,
        requests=requests,
        inactivity=config.bosh_inactivity,
        polling=config.bosh_polling,
        ack=ack,
        now=time.monotonic(),
    )
    conn = BoshConnection(endpoint, state)
    # the session's first request: its headers are those the proxies see (BOSH has one
    # HTTP request per exchange, all from the same page)
    conn.session.client.headers = endpoint.hub.proxies.pick_headers(request.headers.items())
    endpoint.sessions[sid] = conn
    conn.session.open_stream()
    stanzas, state.pending = state.pending, []
    conn.writer.handed_over()
    attrs: dict[str, str | int | None] = {
        "sid": sid,
        "wait": int(wait),
        "hold": hold,
        "requests": requests,
        "inactivity": int(config.bosh_inactivity),
        "polling": int(config.bosh_polling),
        "ver": f"{ver[0]}.{ver[1]}",
        "from": endpoint.settings.domain,
        "authid": conn.session.stream_id,
        "ack": rid if ack else None,
        "xmpp__version": "1.0",
        "xmpp__restartlogic": "true",
    }
    response = body_bytes(stanzas, **attrs)
    state.remember(rid, response)
    return response
