"""cut_off on both event loops the server runs on: a connection whose peer does not read
is reset (the server's socket is gone at once); one that already closed is left alone,
silently (most closes are done long before their grace period ends)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Coroutine

import pytest
import uvloop

from pushgate.transport.cut_off import cut_off

Loop = Callable[[], asyncio.AbstractEventLoop]
LOOPS: dict[str, Loop] = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def run(make_loop: Loop, main: Callable[[], Coroutine[None, None, None]]) -> list[dict]:
    """Run ``main`` on a fresh loop; return what the loop's exception handler was given."""
    loop = make_loop()
    errors: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    return errors


class Peer(asyncio.Protocol):
    def __init__(self) -> None:
        self.made: asyncio.Future[asyncio.Transport] = asyncio.Future()
        self.lost = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made.set_result(transport)  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()


async def accepted(rcvbuf: int = 0) -> tuple[asyncio.Transport, Peer, socket.socket]:
    """A server-side transport and the plain client socket at its other end."""
    peer = Peer()
    server = await asyncio.get_running_loop().create_server(lambda: peer, "127.0.0.1", 0)
    client = socket.socket()
    if rcvbuf:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    client.setblocking(False)
    await asyncio.get_running_loop().sock_connect(client, server.sockets[0].getsockname())
    server.close()
    transport = await peer.made
    # as aiohttp does on every connection (uvloop keeps the socket object it hands out)
    transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return transport, peer, client


@pytest.mark.parametrize("loop", list(LOOPS))
def test_a_peer_that_does_not_read_is_reset(loop: str) -> None:
    async def main() -> None:
        transport, peer, client = await accepted(rcvbuf=4096)
        transport.write(b"x" * 8_000_000)  # more than both kernels' buffers hold
        transport.close()  # waits for the peer to read it all: it never does
        await asyncio.sleep(0.1)
        assert not peer.lost.is_set()
        cut_off(transport)
        await asyncio.wait_for(peer.lost.wait(), 5)
        # an RST, not a FIN behind 8 MB: the client's socket errors out, unread data dropped
        with pytest.raises(ConnectionResetError):
            while client.recv(1 << 20):
                pass
        client.close()

    assert run(LOOPS[loop], main) == []


@pytest.mark.parametrize("loop", list(LOOPS))
def test_a_connection_already_closed_is_left_alone(loop: str) -> None:
    async def main() -> None:
        transport, peer, client = await accepted()
        transport.close()
        await asyncio.wait_for(peer.lost.wait(), 5)
        cut_off(transport)  # its grace period ended after the close was done
        await asyncio.sleep(0)
        client.close()

    assert run(LOOPS[loop], main) == []


@pytest.mark.parametrize("loop", list(LOOPS))
def test_a_connection_not_being_closed_is_aborted_without_a_reset(loop: str) -> None:
    """An HTTP connection kept alive after its stream ended: ended as before (a FIN the
    client reads as the end), not reset."""

    async def main() -> None:
        transport, peer, client = await accepted()
        cut_off(transport)
        await asyncio.wait_for(peer.lost.wait(), 5)
        async with asyncio.timeout(5):
            assert await asyncio.get_running_loop().sock_recv(client, 1024) == b""
        client.close()

    assert run(LOOPS[loop], main) == []
