"""Bidirectional emulation, as centrifuge-js 5.x does it, for networks without WebSocket.

``POST /connection/http_stream`` (connect command in the body, newline-delimited replies
and pushes streamed back) and ``GET /connection/sse?cf_connect=…`` (the same as
Server-Sent Events). Later commands arrive as ``POST /emulation`` requests naming the
session; their replies go out on the stream. The commands of one session run one at a
time in arrival order.

The Protobuf encoding runs on http_stream as Centrifugo does it: a body of Content-Type
``application/octet-stream`` holds length-delimited commands, the stream carries
length-delimited replies, and ``/emulation`` takes an ``EmulationRequest`` message.
SSE carries text, so it is JSON only: a protobuf client trying it is refused with 400,
which sends centrifuge-js on to its next transport.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from functools import partial

import orjson
from aiohttp import web

from pushgate.hub.control import EmulationCommand
from pushgate.hub.errors import DISCONNECT_SLOW
from pushgate.protocol.centrifugo.codecs import JSON, Codec
from pushgate.protocol.centrifugo.commands import ProtocolError
from pushgate.protocol.centrifugo.protobuf_codec import decode_emulation_request
from pushgate.protocol.centrifugo.session import CentrifugoSession
from pushgate.transport.app_keys import HUB
from pushgate.transport.connection_loss import watch_loss
from pushgate.transport.limits import too_large
from pushgate.transport.negotiation import (
    OCTET_STREAM,
    Unsupported,
    http_codec,
    is_byte_list,
    json_only,
    refuse,
)
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

    async def run(self, session_id: str, data: str | bytes) -> bool:
        """Run commands (JSON text, or Protobuf bytes) for a session held here; False if
        it is not."""
        connection = self.by_id.get(session_id)
        if connection is None:
            return False
        async with connection.lock:
            await connection.session.handle_frame(data)
        return True

    def forwarded(self, command: EmulationCommand) -> None:
        """Commands another node received for a session of ours."""
        task = asyncio.ensure_future(self.run(command.session, command.data))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


SESSIONS = web.AppKey("emulation_sessions", EmulationSessions)


CONTENT_TYPES = {"sse": "text/event-stream", "stream": "application/json"}
CONTENT_TYPES["stream-binary"] = OCTET_STREAM


async def _stream(
    request: web.Request, framing: str, connect_frame: bytes, codec: Codec = JSON
) -> web.StreamResponse:
    hub = request.app[HUB]
    transport = request.transport
    if transport is None:
        return web.Response(status=499)
    writer = StreamWriter(
        transport,
        framing,
        hub.config.client.queue_max_bytes,
        bidirectional=True,
        backlog=hub.backlog,
    )
    name = "sse" if framing == "sse" else "http_stream"
    session = CentrifugoSession(hub, writer, name, codec=codec)
    session.client.headers = hub.proxies.pick_headers(request.headers.items())
    writer.on_slow(partial(session.client.disconnect, DISCONNECT_SLOW))
    sessions = request.app[SESSIONS]
    connection = EmulatedConnection(session)
    sessions.by_id[session.client.session] = connection
    unwatch = None
    try:
        response = await open_stream(request, CONTENT_TYPES[framing])
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
    try:
        codec = http_codec(request)
    except Unsupported as exc:
        log.info("http_stream refused: %s", exc)
        return refuse(exc)
    body = await request.read()
    if not (body if codec.binary else body.strip()):
        return web.json_response({"error": "the body must be the connect command"}, status=400)
    if _too_large(request, body):
        return too_large("connect command")
    return await _stream(request, "stream-binary" if codec.binary else "stream", body, codec)


SSE_IS_TEXT = "SSE carries text: a protobuf client must use websocket or http_stream"


async def sse_handler(request: web.Request) -> web.StreamResponse:
    connect = request.query.get("cf_connect", "")
    try:
        json_only(request, "sse", SSE_IS_TEXT)
        if is_byte_list(connect):
            # centrifuge-js's protobuf build writes its connect command's bytes this way
            # when it tries SSE; refused, it goes on to its next transport
            raise Unsupported(f"sse carries the JSON protocol only ({SSE_IS_TEXT})")
    except Unsupported as exc:
        log.info("sse refused: %s", exc)
        return refuse(exc)
    if not connect:
        return web.json_response({"error": "cf_connect query parameter required"}, status=400)
    if _too_large(request, connect):
        return too_large("connect command")
    return await _stream(request, "sse", connect.encode())


def _emulation_message(request: web.Request, body: bytes) -> tuple[str, str, str | bytes]:
    """``(session, node, data)`` of an emulation request; ValueError says what is wrong."""
    if http_codec(request).binary:
        try:
            return decode_emulation_request(body)
        except ProtocolError as exc:
            raise ValueError(str(exc)) from None
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ValueError("body is not JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("session"), str):
        raise ValueError("expected {session, node, data}")
    data = message.get("data")
    if not isinstance(data, str):
        raise ValueError("data must be the commands as JSON text")
    node = message.get("node")
    return message["session"], node if isinstance(node, str) else "", data


async def emulation_handler(request: web.Request) -> web.Response:
    """A command for an emulated connection: ``{"session", "node", "data"}`` in JSON, or
    an ``EmulationRequest`` message (``application/octet-stream``) from a protobuf client."""
    hub = request.app[HUB]
    body = await request.read()
    if _too_large(request, body):
        return too_large("request")
    try:
        session_id, node, data = _emulation_message(request, body)
    except (ValueError, Unsupported) as exc:
        log.info("bad emulation request: %s", exc)
        return web.json_response({"error": str(exc)}, status=400)
    sessions = request.app[SESSIONS]
    held = sessions.by_id.get(session_id)
    if held is not None and held.session.codec.binary != isinstance(data, bytes):
        codec = held.session.codec.name
        message = f"session {session_id} speaks {codec}: send its commands in {codec}"
        log.info("bad emulation request: %s", message)
        return web.json_response({"error": message}, status=400)
    if await sessions.run(session_id, data):
        return web.Response(status=204)
    if node == hub.node_id:
        # the session was ours and has ended (its stream ended too)
        return web.Response(status=204)
    if hub.engine.multi_node and node:
        # held by another node of the cluster: forward it there
        await hub.forward_emulation(node, session_id, data)
        return web.Response(status=204)
    # a node we cannot reach (or restarted): the client reconnects
    return web.Response(status=404)
