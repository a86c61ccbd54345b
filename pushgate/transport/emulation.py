"""Bidirectional emulation, as centrifuge-js 5.x does it, for networks without WebSocket.

``POST /connection/http_stream`` (connect command in the body, newline-delimited replies
and pushes streamed back) and ``GET /connection/sse?cf_connect=…`` (the same as
Server-Sent Events). Later commands arrive as ``POST /emulation`` requests naming the
session; their replies go out on the stream. The commands of one session run one at a
time in arrival order.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from functools import partial

import orjson
from aiohttp import web

from pushgate.hub.errors import DISCONNECT_SLOW
from pushgate.protocol.centrifugo.session import CentrifugoSession
from pushgate.transport.app_keys import HUB
from pushgate.transport.connection_loss import watch_loss
from pushgate.transport.limits import too_large
from pushgate.transport.streaming import StreamWriter, open_stream

log = logging.getLogger("pushgate.emulation")


@dataclass
class EmulatedConnection:
    session: CentrifugoSession
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class EmulationSessions:
    """The emulated connections this node holds, by session id.

    A command may reach another node than the one holding its session (several workers
    or machines behind a balancer): that node forwards it through the engine, addressed
    to the ``node`` the connect reply named, as Centrifugo does.
    """

    def __init__(self) -> None:
        self.by_id: dict[str, EmulatedConnection] = {}
        self._tasks: set[asyncio.Task] = set()

    def __len__(self) -> int:
        return len(self.by_id)

    async def run(self, session_id: str, data: str) -> bool:
        """Run commands for a session held here; False if it is not."""
        connection = self.by_id.get(session_id)
        if connection is None:
            return False
        async with connection.lock:
            await connection.session.handle_frame(data)
        return True

    def forwarded(self, message: dict) -> None:
        """A command another node received for a session of ours."""
        task = asyncio.ensure_future(self.run(message["session"], message["data"]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


SESSIONS = web.AppKey("emulation_sessions", EmulationSessions)


async def _stream(request: web.Request, framing: str, connect_frame: bytes) -> web.StreamResponse:
    hub = request.app[HUB]
    transport = request.transport
    if transport is None:
        return web.Response(status=499)
    writer = StreamWriter(transport, framing, hub.config.client.queue_max_bytes, bidirectional=True)
    name = "sse" if framing == "sse" else "http_stream"
    session = CentrifugoSession(hub, writer, name)
    writer.on_slow(partial(session.client.disconnect, DISCONNECT_SLOW))
    sessions = request.app[SESSIONS]
    connection = EmulatedConnection(session)
    sessions.by_id[session.client.session] = connection
    unwatch = None
    try:
        response = await open_stream(
            request, "text/event-stream" if framing == "sse" else "application/json"
        )
        unwatch = watch_loss(request, writer.lost)
        writer.start()
        async with connection.lock:
            await session.handle_frame(connect_frame)
        await writer.wait_closed()
    finally:
        if unwatch is not None:
            unwatch()
        sessions.by_id.pop(session.client.session, None)
        await session.closed()
    return response


def _too_large(request: web.Request, body: bytes | str) -> bool:
    return len(body) > request.app[HUB].config.client.max_frame_bytes


async def http_stream_handler(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    if not body.strip():
        return web.json_response({"error": "the body must be the connect command"}, status=400)
    if _too_large(request, body):
        return too_large("connect command")
    return await _stream(request, "stream", body)


async def sse_handler(request: web.Request) -> web.StreamResponse:
    connect = request.query.get("cf_connect", "")
    if not connect:
        return web.json_response({"error": "cf_connect query parameter required"}, status=400)
    if _too_large(request, connect):
        return too_large("connect command")
    return await _stream(request, "sse", connect.encode())


async def emulation_handler(request: web.Request) -> web.Response:
    """A command for an emulated connection: ``{"session", "node", "data"}``."""
    hub = request.app[HUB]
    body = await request.read()
    if _too_large(request, body):
        return too_large("request")
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        return web.json_response({"error": "body is not JSON"}, status=400)
    if not isinstance(message, dict) or not isinstance(message.get("session"), str):
        return web.json_response({"error": "expected {session, node, data}"}, status=400)
    data = message.get("data")
    if not isinstance(data, str):
        return web.json_response({"error": "data must be the commands as JSON text"}, status=400)
    if await request.app[SESSIONS].run(message["session"], data):
        return web.Response(status=204)
    node = message.get("node")
    if node == hub.node_id:
        # the session was ours and has ended (its stream ended too)
        return web.Response(status=204)
    if hub.engine.multi_node and isinstance(node, str) and node:
        # held by another node of the cluster: forward it there
        forward = {"op": "emulation", "node": node, "session": message["session"], "data": data}
        await hub.control(forward)
        return web.Response(status=204)
    # a node we cannot reach (or restarted): the client reconnects
    return web.Response(status=404)
