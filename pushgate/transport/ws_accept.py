"""One way in for every WebSocket endpoint: origin, negotiation, handshake, writer, take-over.

Every dialect's WebSocket (``/connection/websocket``, ``/connection/uni_websocket``,
``/stomp``, ``/xmpp-websocket``) is accepted by ``accept``, in one order:

1. the ``allowed_origins`` check (origin.py; 403 and a log line when refused): on
   ``/connection/`` paths the CORS middleware (cors.py) has made it already, the
   dialects' own paths (``/stomp``, ``/ws``, ``/xmpp-websocket``) have only this one;
2. the dialect's negotiation from the request — what it will speak, the subprotocols it
   offers (400 and a log line for ``Unsupported``);
3. the RFC 6455 handshake (ws_handshake.py; a bad upgrade gets aiohttp's own error);
4. the dialect's connection, the lean writer the socket is handed to (ws_connection.py);
5. the take-over: the 101 is written and aiohttp lets go of the socket;
6. the dialect's session, then what every session gets: the headers the proxies forward,
   the slow-reader close (3008), and the connection starting to feed it messages.

A dialect says only what is its own, in a ``WebSocketEndpoint``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Protocol, TypeVar

from aiohttp import web

from pushgate.hub.errors import DISCONNECT_SLOW
from pushgate.transport.app_keys import HUB, OPEN_SOCKETS
from pushgate.transport.negotiation import Unsupported, refuse
from pushgate.transport.origin import origin_allowed, refuse_origin
from pushgate.transport.ws_connection import (
    HandleNow,
    OnClosed,
    OnMessage,
    OpenSockets,
    WebSocketConnection,
)
from pushgate.transport.ws_handshake import Detached, handshake, take_over

if TYPE_CHECKING:
    from pushgate.config import Config
    from pushgate.hub.client import Client

#: what the dialect read from the request (the Centrifugo codec; None for the others)
Terms = TypeVar("Terms")
#: the dialect's WebSocketConnection subclass: the writer its session writes to
Conn = TypeVar("Conn", bound=WebSocketConnection)


@dataclass(slots=True)
class Opened:
    """A dialect's session on a taken-over socket, as ``accept`` wires it."""

    client: Client
    #: each WebSocket message, in order
    on_message: OnMessage
    #: once the socket is gone
    on_closed: OnClosed
    #: awaited once the client is wired, before the first message is read (a
    #: unidirectional connect from the query string)
    first: Callable[[], Awaitable[None]] | None = None
    #: takes a message at once when nothing waits before it (a pong), else False
    handle_now: HandleNow | None = None


class WebSocketEndpoint(Protocol[Terms, Conn]):
    """What one dialect's WebSocket endpoint adds to ``accept``."""

    #: names the endpoint in log lines ("STOMP websocket refused: origin …")
    label: str
    log: logging.Logger

    def negotiate(self, request: web.Request) -> tuple[Terms, tuple[str, ...]]:
        """What the request asks for, and the subprotocols the 101 may select from;
        raises ``Unsupported`` for what the dialect cannot speak."""

    def connection(self, terms: Terms, sockets: OpenSockets, config: Config) -> Conn:
        """The writer the socket is handed to."""

    def open(
        self, request: web.Request, connection: Conn, terms: Terms, subprotocol: str | None
    ) -> Opened:
        """The dialect's session on ``connection`` (``subprotocol``: the one selected)."""


async def accept(
    request: web.Request, endpoint: WebSocketEndpoint[Terms, Conn]
) -> web.StreamResponse:
    """Accept ``request`` as ``endpoint``'s WebSocket, or answer it with why not."""
    hub = request.app[HUB]
    config = hub.config
    log = endpoint.log
    if not origin_allowed(request, config.server.allowed_origins):
        log.info("%s refused: origin %s", endpoint.label, request.headers.get("Origin"))
        return refuse_origin(request)
    try:
        terms, subprotocols = endpoint.negotiate(request)
    except Unsupported as exc:
        log.info("%s refused: %s", endpoint.label, exc)
        return refuse(exc)
    response, subprotocol = handshake(request, subprotocols)
    connection = endpoint.connection(terms, request.app[OPEN_SOCKETS], config)
    received = take_over(request, response, connection)
    if received is None:
        return Detached()
    opened = endpoint.open(request, connection, terms, subprotocol)
    client = opened.client
    client.headers = hub.proxies.pick_headers(request.headers.items())
    connection.on_slow(partial(client.disconnect, DISCONNECT_SLOW))
    try:
        if opened.first is not None:
            await opened.first()
    finally:
        # also when that failed: the connection's loss is what closes the session
        connection.start(opened.on_message, opened.on_closed, received, opened.handle_now)
    return Detached()
