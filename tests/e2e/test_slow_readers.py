"""One client that stops reading costs nobody else anything, on every transport.

A subscriber that stops reading (a raw socket with a small receive buffer that pauses,
or a polling / BOSH session that stops asking) fills its write queue past
``client.queue_max_bytes`` while the channel keeps publishing. It must be dropped once
(disconnect 3008, counted once), every publish must succeed, and a healthy subscriber of
the same channel (centrifuge-python) must get every publication, in order.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import orjson
import pytest
from centrifuge import Client

from pushgate.hub.errors import DISCONNECT_SLOW
from tests import raw_clients
from tests.centrifuge_helpers import Recorder, subscribed
from tests.conftest import Server, free_port
from tests.e2e.test_transports import connect_command
from tests.xmpp_helpers import Bosh

CHANNEL = "board:slow"
QUEUE = 65536
COUNT = 120
PAYLOAD = "x" * 60000  # COUNT * PAYLOAD: 7 MB, past any kernel buffer
RCVBUF = 4096
DOMAIN = "pushgate.test"
EXTRA = f"""
[xmpp]
domain = "{DOMAIN}"
"""

Stall = Callable[[Server], Awaitable[object]]


def port_of(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def server_side(server: Server) -> str:
    """The stalled user's token, subscribing it to the channel server-side."""
    return server.token("slow", channels=[CHANNEL])


async def stalled_socket(raw: raw_clients.RawSocket) -> raw_clients.RawSocket:
    raw.stop_reading()
    return raw


async def websocket(server: Server) -> object:
    token = server.token("slow")
    raw = await raw_clients.centrifugo_websocket(port_of(server), token, (CHANNEL,), RCVBUF)
    return await stalled_socket(raw)


async def sse(server: Server) -> object:
    return await stalled_socket(await raw_clients.sse(port_of(server), server_side(server), RCVBUF))


async def http_stream(server: Server) -> object:
    raw = await raw_clients.http_stream(port_of(server), server_side(server), RCVBUF)
    return await stalled_socket(raw)


async def uni_websocket(server: Server) -> object:
    raw = await raw_clients.uni_websocket(port_of(server), server_side(server), RCVBUF)
    return await stalled_socket(raw)


async def uni_sse(server: Server) -> object:
    raw = await raw_clients.uni_sse(port_of(server), server_side(server), RCVBUF)
    return await stalled_socket(raw)


async def uni_http_stream(server: Server) -> object:
    raw = await raw_clients.uni_http_stream(port_of(server), server_side(server), RCVBUF)
    return await stalled_socket(raw)


async def stomp_websocket(server: Server) -> object:
    token = server.token("slow")
    raw = await raw_clients.stomp_websocket(port_of(server), token, (CHANNEL,), RCVBUF)
    return await stalled_socket(raw)


async def stomp_tcp(server: Server) -> object:
    token = server.token("slow")
    port = server.config.stomp.tcp_port
    return await stalled_socket(await raw_clients.stomp_tcp(port, token, (CHANNEL,), RCVBUF))


async def xmpp_websocket(server: Server) -> object:
    raw = await raw_clients.xmpp_websocket(
        port_of(server), "slow", server_side(server), DOMAIN, rcvbuf=RCVBUF
    )
    return await stalled_socket(raw)


async def longpoll(server: Server) -> object:
    """A long-polling session that never polls again after connecting."""
    body = b'{"rid": 1, "commands": [%b]}' % connect_command(server_side(server))
    async with server.session.post(server.url + "/connection/longpoll", data=body) as response:
        answer = await response.json()
    assert any(b'"connect"' in orjson.dumps(m) for m in answer["messages"]), answer
    return answer["session"]


async def bosh(server: Server) -> object:
    """A BOSH session that logs in and binds, then never sends another request."""
    client = Bosh(server)
    await client.login(server_side(server), "slow")
    return client


STALLS: dict[str, Stall] = {
    "websocket": websocket,
    "sse": sse,
    "http_stream": http_stream,
    "uni_websocket": uni_websocket,
    "uni_sse": uni_sse,
    "uni_http_stream": uni_http_stream,
    "stomp_websocket": stomp_websocket,
    "stomp_tcp": stomp_tcp,
    "xmpp_websocket": xmpp_websocket,
    "longpoll": longpoll,
    "bosh": bosh,
}


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """For hub state that has no event of its own to await."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("transport", list(STALLS))
async def test_a_slow_reader_is_dropped_once_and_others_miss_nothing(
    make_server, server_config, transport
):
    config = server_config(EXTRA, client__queue_max_bytes=QUEUE, stomp__tcp_port=free_port())
    server = await make_server(config)
    hub = server.hub
    healthy = Client(server.ws_url, token=server.token("healthy"), events=Recorder())
    await healthy.connect()
    try:
        _, recorder = await subscribed(healthy, CHANNEL)
        stalled = await STALLS[transport](server)
        assert "slow" in hub.users
        assert len(hub.channels[CHANNEL]) == 2
        for n in range(COUNT):
            # every publish succeeds, including those that overflow the slow client
            await server.publish(CHANNEL, {"n": n, "pad": PAYLOAD})
        last = COUNT - 1
        await recorder.wait_for("publication", lambda ctx: ctx.pub.data["n"] == last, timeout=20)
        pubs = recorder.of("publication")
        assert [p.pub.data["n"] for p in pubs] == list(range(COUNT))
        await wait_until(lambda: "slow" not in hub.users, "the slow client is forgotten")
        assert list(hub.channels[CHANNEL]) == [c for c in hub.clients.values()]
        assert hub.disconnects[DISCONNECT_SLOW.code] == 1, hub.disconnects
        # the channel still works afterwards
        await server.publish(CHANNEL, {"n": COUNT})
        await recorder.wait_for("publication", lambda ctx: ctx.pub.data["n"] == COUNT)
        del stalled
    finally:
        await healthy.disconnect()


def tcp_address(host: str, port: int) -> str:
    """An IPv4 address as /proc/net/tcp writes it (the address in host byte order)."""
    return f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}"


def server_end_open(client: str, server: str) -> bool:
    """Whether the server still holds its end of a client's TCP connection (the kernel's
    socket, not only the process's file descriptor)."""
    with open("/proc/net/tcp") as table:
        return any(line.split()[1:3] == [server, client] for line in table.readlines()[1:])


HALF_CLOSERS = ["websocket", "uni_websocket", "stomp_websocket", "stomp_tcp", "xmpp_websocket"]


@pytest.mark.parametrize("transport", HALF_CLOSERS)
async def test_a_peer_that_half_closes_and_never_reads_is_cut_off(
    make_server, server_config, monkeypatch, transport
):
    """EOF (TCP FIN) with bytes still queued for the peer, under the slow-client limit:
    a peer that never reads them is reset after a grace period. Before, the socket and
    the session stayed for as long as the peer kept its receive window shut (a
    FIN-then-silence client held them forever), and an abort left the kernel's socket
    probing the shut window with megabytes queued."""
    monkeypatch.setattr("pushgate.transport.cut_off.ABORT_AFTER", 0.5)
    config = server_config(
        EXTRA, client__queue_max_bytes=64 * 1024 * 1024, stomp__tcp_port=free_port()
    )
    server = await make_server(config)
    hub = server.hub
    stalled = await STALLS[transport](server)
    assert "slow" in hub.users
    for n in range(COUNT):  # 7 MB: more than both kernels' buffers, under the limit
        await server.publish(CHANNEL, {"n": n, "pad": PAYLOAD})
    sock = stalled.writer.get_extra_info("socket")
    ends = tcp_address(*sock.getsockname()), tcp_address(*sock.getpeername())
    stalled.writer.write_eof()  # sends nothing more, and still reads nothing
    assert server_end_open(*ends)  # megabytes queued that nobody reads
    await wait_until(lambda: "slow" not in hub.users, "the half-closed client is forgotten")
    await wait_until(lambda: not server_end_open(*ends), "the server's socket is reset")
    assert hub.disconnects[DISCONNECT_SLOW.code] == 0, hub.disconnects
    stalled.abort()
