"""The server side of the RFC 6455 opening handshake, and taking the socket from aiohttp.

aiohttp parses the HTTP request and routes it; the handshake checks here answer a bad
upgrade with the HTTP error aiohttp itself would give. A good one is answered with the
101 response written straight to the socket, and the socket is then handed to a lean
``asyncio.Protocol`` (ws_connection.py): aiohttp's request handler, request, response
and handler task are all let go, so a connection costs only what pushgate keeps for it.

That hand-over touches aiohttp's connection handler (``RequestHandler``) through a
few attributes: ``transport`` (public on asyncio protocols), ``_message_tail`` (bytes
the client sent after its request, normally none) and ``connection_lost`` (which
deregisters the connection from aiohttp's server). The aiohttp versions this works with
are pinned in pyproject.toml; tests/conformance exercises every endpoint through it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from collections.abc import Iterable

from aiohttp import web

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def handshake(request: web.Request, protocols: Iterable[str] = ()) -> tuple[bytes, str | None]:
    """The 101 response for a valid upgrade request and the subprotocol chosen.

    Raises the ``web.HTTPException`` to answer with otherwise.
    """
    if request.method != "GET":
        raise web.HTTPMethodNotAllowed(request.method, ["GET"])
    headers = request.headers
    if headers.get("Upgrade", "").lower().strip() != "websocket":
        raise web.HTTPBadRequest(
            text=f"No WebSocket UPGRADE hdr: {headers.get('Upgrade')}\n"
            "Can 'Upgrade' only to 'WebSocket'"
        )
    if "upgrade" not in headers.get("Connection", "").lower():
        raise web.HTTPBadRequest(text=f"No CONNECTION upgrade hdr: {headers.get('Connection')}")
    version = headers.get("Sec-WebSocket-Version", "")
    if version != "13":
        raise web.HTTPBadRequest(
            text=f"Unsupported version: {version}",
            headers={"Sec-WebSocket-Version": "13"},
        )
    key = headers.get("Sec-WebSocket-Key", "")
    try:
        valid_key = len(base64.b64decode(key, validate=True)) == 16 if key else False
    except binascii.Error:
        valid_key = False
    if not valid_key:
        raise web.HTTPBadRequest(text=f"Handshake error: {key!r}")
    chosen = None
    offered = [p.strip() for p in headers.get("Sec-WebSocket-Protocol", "").split(",")]
    for name in offered:
        if name and name in protocols:
            chosen = name
            break
    lines = [
        b"HTTP/1.1 101 Switching Protocols",
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Accept: " + accept_key(key).encode(),
    ]
    if chosen is not None:
        lines.append(b"Sec-WebSocket-Protocol: " + chosen.encode())
    return b"\r\n".join(lines) + b"\r\n\r\n", chosen


def take_over(request: web.Request, response: bytes, protocol: asyncio.Protocol) -> bytes | None:
    """Write the 101 response and give the socket to ``protocol``; aiohttp forgets it.

    Returns the bytes the client already sent after its request (normally empty), or
    None when the connection is already gone.
    """
    handler = request.protocol
    transport = request.transport
    if transport is None or transport.is_closing():
        return None
    # by name with a default: a private attribute of aiohttp's, absent in some versions
    tail = getattr(handler, "_message_tail", b"") or b""
    transport.write(response)
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    transport.resume_reading()  # aiohttp pauses a socket whose tail it buffers
    # aiohttp's handler must neither read nor close this socket any more: with its
    # transport gone it skips both, and connection_lost drops it from the server's
    # connection table (its keep-alive timer and request end with it).
    handler.transport = None
    handler.connection_lost(None)
    return tail


class Detached(web.StreamResponse):
    """What a handler returns once the socket is taken: aiohttp has nothing to send."""

    def __init__(self) -> None:
        super().__init__(status=101)

    async def prepare(self, request):
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None
