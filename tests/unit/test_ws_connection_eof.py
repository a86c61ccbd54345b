"""A peer's EOF: the socket is closed a pass at a time (plain TCP), then the session's
goodbye follows; a TLS transport closes itself."""

from __future__ import annotations

import asyncio

from pushgate.hub.backlog import Backlog
from pushgate.hub.departures import Departures
from pushgate.transport.ws_connection import OpenSockets, WebSocketConnection


class Transport:
    """The asyncio transport calls a WebSocketConnection makes, recorded."""

    def __init__(self, protocol: WebSocketConnection, tls: bool = False) -> None:
        self.protocol = protocol
        self.tls = tls
        self.closing = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return object() if name == "sslcontext" and self.tls else default

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def write(self, data: bytes) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


async def connection(departures: Departures, tls: bool = False):
    conn = WebSocketConnection(OpenSockets(Backlog(), departures), 1 << 20, 1 << 16)
    transport = Transport(conn, tls)
    conn.connection_made(transport)  # type: ignore[arg-type]
    goodbye = asyncio.Event()

    async def on_message(data: bytes) -> None:
        pass

    async def on_closed() -> None:
        goodbye.set()

    conn.start(on_message, on_closed)
    return conn, transport, goodbye


async def test_an_eof_closes_the_socket_in_turn_then_the_session_says_goodbye():
    departures = Departures(per_pass=2)
    peers = [await connection(departures) for _ in range(5)]
    for conn, _, _ in peers:
        assert conn.eof_received() is True  # kept open: closed in turn
    assert [t.closing for _, t, _ in peers] == [False] * 5
    await asyncio.sleep(0)  # one pass of the loop
    assert [t.closing for _, t, _ in peers] == [True, True, False, False, False]
    await asyncio.wait_for(asyncio.gather(*(g.wait() for _, _, g in peers)), 5)
    assert all(conn.closed for conn, _, _ in peers)


async def test_a_tls_transport_closes_itself_on_eof():
    departures = Departures()
    conn, transport, goodbye = await connection(departures, tls=True)
    assert conn.eof_received() is False
    assert len(departures) == 0
    transport.close()  # as the TLS transport does
    await asyncio.wait_for(goodbye.wait(), 5)
