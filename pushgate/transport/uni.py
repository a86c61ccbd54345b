"""Unidirectional transports: pages that only listen.

``/connection/uni_websocket``, ``/connection/uni_sse`` and ``/connection/uni_http_stream``:
the client sends one connect request (``{"token": …}``, in the query parameter
``cf_connect``, the first WebSocket message or the POST body) and then only receives the
pushes of its server-side subscriptions, unwrapped, as Centrifugo sends them.

uni_websocket and uni_http_stream also speak Protobuf (negotiation.py: the
``centrifuge-protobuf`` subprotocol, ``cf_protocol=protobuf``, or a body of Content-Type
``application/octet-stream``): the connect request is then a ``ConnectRequest`` message
(the first binary WebSocket message, or the POST body; a ``cf_connect`` query parameter
is JSON whatever the encoding), and each push is a length-delimited ``Push`` message.
uni_sse carries text: JSON only.
"""

from __future__ import annotations

import logging
from functools import partial

import orjson
from aiohttp import web

from pushgate.hub.errors import DISCONNECT_BAD_REQUEST, DISCONNECT_SLOW
from pushgate.protocol.centrifugo.codecs import JSON, Codec
from pushgate.protocol.centrifugo.commands import ProtocolError
from pushgate.protocol.centrifugo.session import CentrifugoSession, parse_position_event_id
from pushgate.transport.app_keys import HUB
from pushgate.transport.connection_loss import watch_loss
from pushgate.transport.negotiation import (
    OCTET_STREAM,
    Unsupported,
    http_codec,
    json_only,
    refuse,
)
from pushgate.transport.streaming import StreamWriter, open_stream
from pushgate.transport.websocket import CentrifugoWebSocket
from pushgate.transport.ws_accept import Opened, accept
from pushgate.transport.ws_connection import WebSocketConnection

log = logging.getLogger("pushgate.uni")

CONTENT_TYPES = {"sse": "text/event-stream", "stream": "application/json"}
CONTENT_TYPES["stream-binary"] = OCTET_STREAM


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


async def _connect_request(request: web.Request, codec: Codec) -> object:
    """The connect request from ``cf_connect`` (JSON) or the body (in the codec's
    encoding); ValueError if there is none or it is not JSON."""
    raw = request.query.get("cf_connect")
    if raw is None and request.method == "POST":
        max_size = request.app[HUB].config.client.max_frame_bytes
        body = await request.content.read(max_size + 1)
        if len(body) > max_size:
            raise ValueError("connect request too large")
        if codec.binary:
            return body  # a ConnectRequest message (empty: one with no field set)
        raw = body.decode(errors="replace")
    if not raw:
        raise ValueError('connect request missing: send {"token": …} as cf_connect or body')
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"connect request is not JSON: {exc}") from None


async def _uni_stream(request: web.Request, framing: str, transport_name: str, codec: Codec):
    hub = request.app[HUB]
    try:
        connect = await _connect_request(request, codec)
    except ValueError as exc:
        log.info("%s refused: %s", transport_name, exc)
        return _bad_request(str(exc))
    if isinstance(connect, str | dict) and codec.binary:
        # cf_connect is JSON whatever the pushes are encoded in
        try:
            connect = JSON.decode_connect_request(connect)
        except ProtocolError as exc:
            return _bad_request(str(exc))
    last_event = request.headers.get("Last-Event-ID") or request.query.get("lastEventId")
    if framing == "sse" and last_event and isinstance(connect, dict):
        # a browser EventSource reconnecting: recover the channel of the last event
        recovery = parse_position_event_id(last_event)
        if recovery is not None:
            channel, position = recovery
            subs = connect.setdefault("subs", {})
            if isinstance(subs, dict):
                subs.setdefault(channel, position)
    transport = request.transport
    if transport is None:
        return web.Response(status=499)
    writer = StreamWriter(
        transport,
        framing,
        hub.config.client.queue_max_bytes,
        bidirectional=False,
        backlog=hub.backlog,
    )
    session = CentrifugoSession(hub, writer, transport_name, uni=True, codec=codec)
    session.client.headers = hub.proxies.pick_headers(request.headers.items())
    writer.on_slow(partial(session.client.disconnect, DISCONNECT_SLOW))
    unwatch = None
    try:
        await session.connect_unidirectional(connect)
        if writer.closed:
            # refused before anything was streamed: say so with a status, which also
            # stops a browser EventSource from reconnecting with the same bad token
            return web.json_response({"error": "connection refused", "code": 3500}, status=401)
        response = await open_stream(request, CONTENT_TYPES[framing])
        unwatch = watch_loss(request, writer.lost)
        writer.start()
        await writer.wait_closed()
    finally:
        if unwatch is not None:
            unwatch()
        await session.closed()
    return response


async def uni_sse_handler(request: web.Request) -> web.StreamResponse:
    try:
        json_only(request, "uni_sse", "SSE carries text; use uni_websocket or uni_http_stream")
    except Unsupported as exc:
        log.info("uni_sse refused: %s", exc)
        return refuse(exc)
    return await _uni_stream(request, "sse", "uni_sse", JSON)


async def uni_http_stream_handler(request: web.Request) -> web.StreamResponse:
    try:
        codec = http_codec(request)
    except Unsupported as exc:
        log.info("uni_http_stream refused: %s", exc)
        return refuse(exc)
    framing = "stream-binary" if codec.binary else "stream"
    return await _uni_stream(request, framing, "uni_http_stream", codec)


class UniWebSocket(CentrifugoWebSocket):
    """``/connection/uni_websocket``: the connect request comes as ``cf_connect`` or the
    first message; anything after it is ignored (the client only listens)."""

    label = "uni_websocket"
    log = log
    bidirectional = False

    def open(
        self,
        request: web.Request,
        connection: WebSocketConnection,
        codec: Codec,
        subprotocol: str | None,
    ) -> Opened:
        hub = request.app[HUB]
        session = CentrifugoSession(hub, connection, "uni_websocket", uni=True, codec=codec)
        client = session.client

        async def on_message(data: bytes) -> None:
            if client.connected:
                return  # anything after the connect request is ignored: the client only listens
            if codec.binary:
                await session.connect_unidirectional(data)  # a ConnectRequest message
                return
            try:
                connect = orjson.loads(data)
            except orjson.JSONDecodeError:
                client.disconnect(DISCONNECT_BAD_REQUEST)
                return
            await session.connect_unidirectional(connect)

        query = request.query.get("cf_connect")

        async def connect_from_query() -> None:
            try:
                connect = JSON.decode_connect_request(query)
            except ProtocolError:
                client.disconnect(DISCONNECT_BAD_REQUEST)
            else:
                await session.connect_unidirectional(connect)

        first = connect_from_query if query is not None else None
        return Opened(client, on_message, session.closed, first)


UNI_WEBSOCKET = UniWebSocket()


async def uni_websocket_handler(request: web.Request) -> web.StreamResponse:
    return await accept(request, UNI_WEBSOCKET)
