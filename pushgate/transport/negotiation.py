"""Which encoding of the Centrifugo protocol a connection speaks, read from its request.

As Centrifugo decides it:
- WebSocket (``/connection/websocket``, ``/connection/uni_websocket``): the subprotocol
  ``centrifuge-protobuf`` or ``centrifuge-json``, selected in the 101 answer, else the
  query parameter ``cf_protocol`` (or ``format``), else JSON;
- HTTP bodies (``http_stream``, ``/emulation``, ``uni_http_stream``): Content-Type
  ``application/octet-stream`` (what centrifuge-js's protobuf build sends) or
  ``cf_protocol=protobuf``, else JSON;
- SSE and pushgate's own polling carry JSON only (``cf_protocol=protobuf`` is refused).

What pushgate cannot speak is refused before any upgrade or stream, with HTTP 400 and a
JSON body saying why (``Unsupported``): a client is never left reconnecting to a
connection that silently speaks another encoding.
"""

from __future__ import annotations

from aiohttp import web

from pushgate.protocol.centrifugo.codecs import CODECS, JSON, PROTOBUF, Codec

SUBPROTOCOLS: dict[str, Codec] = {"centrifuge-json": JSON, "centrifuge-protobuf": PROTOBUF}
QUERY_PARAMS = ("cf_protocol", "format")
OCTET_STREAM = "application/octet-stream"


class Unsupported(Exception):
    """The request asks for an encoding (or a combination) pushgate does not speak."""


def _content_type(request: web.Request) -> str:
    # the header itself: aiohttp's ``content_type`` calls a missing one octet-stream
    return request.headers.get("Content-Type", "").partition(";")[0].strip().lower()


def refuse(exc: Unsupported) -> web.Response:
    return web.json_response({"error": str(exc)}, status=400)


def _query_codec(request: web.Request) -> Codec | None:
    chosen: Codec | None = None
    for param in QUERY_PARAMS:
        value = request.query.get(param)
        if value is None:
            continue
        codec = CODECS.get(value)
        if codec is None:
            raise Unsupported(
                f"{param}={value!r} is not a protocol pushgate speaks: use json or protobuf"
            )
        if chosen is not None and codec is not chosen:
            raise Unsupported("cf_protocol and format ask for different protocols")
        chosen = codec
    return chosen


def _agree(first: Codec, second: Codec | None, first_from: str) -> Codec:
    if second is not None and second is not first:
        raise Unsupported(
            f"{first_from} asks for {first.name} but cf_protocol asks for {second.name}"
        )
    return first


def websocket_codec(request: web.Request) -> tuple[Codec, str | None]:
    """The codec and the subprotocol to select in the 101 (None: select none)."""
    header = request.headers.get("Sec-WebSocket-Protocol", "")
    offered = [p.strip() for p in header.split(",") if p.strip()]
    known = [p for p in offered if p in SUBPROTOCOLS]
    if offered and not known:
        raise Unsupported(
            f"WebSocket subprotocol {', '.join(offered)} is not supported here: offer "
            "centrifuge-protobuf or centrifuge-json, or none for JSON"
        )
    query = _query_codec(request)
    if known:
        subprotocol = known[0]
        return _agree(SUBPROTOCOLS[subprotocol], query, f"subprotocol {subprotocol}"), subprotocol
    return query or JSON, None


def http_codec(request: web.Request) -> Codec:
    """The codec of a request whose body carries the protocol."""
    query = _query_codec(request)
    if _content_type(request) == OCTET_STREAM:
        return _agree(PROTOBUF, query, f"Content-Type {OCTET_STREAM}")
    return query or JSON


def json_only(request: web.Request, transport: str, why: str) -> None:
    """Refuse ``cf_protocol=protobuf`` on a transport that carries only JSON. (Its body's
    Content-Type says nothing here: no protobuf client sends one to these.)"""
    if _query_codec(request) is PROTOBUF:
        raise Unsupported(f"{transport} carries the JSON protocol only ({why})")


def is_byte_list(text: str) -> bool:
    """Whether ``text`` is bytes written as decimal numbers with commas (``8,1,34,…``):
    what centrifuge-js's protobuf build puts in ``cf_connect`` when it tries SSE."""
    if not text or len(text) > 4 * 65536:
        return False
    parts = text.split(",")
    return all(p.isdigit() and len(p) <= 3 and int(p) < 256 for p in parts)
