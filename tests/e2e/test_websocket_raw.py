"""The Centrifugo protocol on the wire, with a plain WebSocket client.

What centrifuge-js relies on and a library client would hide: several commands in
one frame, server pings and the pong deadline, close codes, bad frames, a reader
that stops reading.
"""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import orjson
import pytest


async def recv_json(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> list[dict]:
    message = await ws.receive(timeout=timeout)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    return [orjson.loads(line) for line in message.data.split("\n") if line]


async def recv_until(ws, predicate, timeout: float = 5.0) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            for reply in await recv_json(ws, timeout):
                if predicate(reply):
                    return reply


async def connect(server, user: str = "alice", **claims) -> aiohttp.ClientWebSocketResponse:
    ws = await server.session.ws_connect(server.ws_url)
    await ws.send_str(
        orjson.dumps({"id": 1, "connect": {"token": server.token(user, **claims)}}).decode()
    )
    reply = await recv_until(ws, lambda r: r.get("id") == 1)
    assert "connect" in reply, reply
    return ws


async def test_several_commands_in_one_frame_are_all_answered(server):
    ws = await connect(server)
    frame = "\n".join(
        orjson.dumps(c).decode()
        for c in (
            {"id": 2, "subscribe": {"channel": "board:1"}},
            {"id": 3, "publish": {"channel": "board:1", "data": {"text": "hi"}}},
            {"id": 4, "presence_stats": {"channel": "board:1"}},
        )
    )
    await ws.send_str(frame)
    seen: dict[int, dict] = {}
    pubs = []
    async with asyncio.timeout(5):
        while len(seen) < 3 or not pubs:
            for reply in await recv_json(ws):
                if reply.get("id"):
                    seen[reply["id"]] = reply
                elif "push" in reply and "pub" in reply["push"]:
                    pubs.append(reply["push"])
    assert seen[2]["subscribe"]["recoverable"] is True
    assert seen[3] == {"id": 3, "publish": {}}
    assert seen[4]["presence_stats"] == {"num_clients": 1, "num_users": 1}
    assert pubs[0]["channel"] == "board:1"
    assert pubs[0]["pub"]["data"] == {"text": "hi"}
    assert pubs[0]["pub"]["info"]["user"] == "alice"
    await ws.close()


async def test_connect_reply_advertises_ping_and_pong(server):
    ws = await server.session.ws_connect(server.ws_url)
    await ws.send_str(orjson.dumps({"id": 1, "connect": {"token": server.token("a")}}).decode())
    [reply] = await recv_json(ws)
    assert reply["connect"]["ping"] == 25 and reply["connect"]["pong"] is True
    assert reply["connect"]["expires"] is True and 3590 <= reply["connect"]["ttl"] <= 3600
    await ws.close()


async def test_server_pings_and_disconnects_without_pong(make_server, server_config):
    server = await make_server(
        server_config(client__ping_interval="1s", client__pong_timeout="0.5s")
    )
    answering = await connect(server, "answers")
    silent = await connect(server, "silent")
    # the answering client sees pings ({}) and replies to each with a pong ({})
    for _ in range(2):
        await recv_until(answering, lambda r: r == {}, timeout=4)
        await answering.send_str("{}")
    # the silent one gets a ping, says nothing, and is closed with "no pong"
    await recv_until(silent, lambda r: r == {}, timeout=4)
    message = await silent.receive(timeout=5)
    assert message.type == aiohttp.WSMsgType.CLOSE
    assert (message.data, message.extra) == (3012, "no pong")
    assert not answering.closed
    await answering.close()


async def test_a_pong_before_connect_is_a_bad_request(server):
    ws = await server.session.ws_connect(server.ws_url)
    await ws.send_str("{}")
    message = await ws.receive(timeout=5)
    assert (message.type, message.data) == (aiohttp.WSMsgType.CLOSE, 3501)


async def test_malformed_frame_closes_with_bad_request(server):
    ws = await connect(server)
    await ws.send_str("{this is not json")
    message = await ws.receive(timeout=5)
    assert message.type == aiohttp.WSMsgType.CLOSE
    assert message.data == 3501
    # the node keeps serving others
    other = await connect(server, "bob")
    await other.close()


async def test_command_before_connect_is_a_bad_request(server):
    ws = await server.session.ws_connect(server.ws_url)
    await ws.send_str(orjson.dumps({"id": 1, "subscribe": {"channel": "board:1"}}).decode())
    message = await ws.receive(timeout=5)
    assert (message.type, message.data) == (aiohttp.WSMsgType.CLOSE, 3501)


async def test_invalid_token_closes_with_3500(server):
    ws = await server.session.ws_connect(server.ws_url)
    await ws.send_str(orjson.dumps({"id": 1, "connect": {"token": "a.b.c"}}).decode())
    message = await ws.receive(timeout=5)
    assert (message.type, message.data) == (aiohttp.WSMsgType.CLOSE, 3500)


async def test_expired_token_gets_error_109(server):
    ws = await server.session.ws_connect(server.ws_url)
    token = server.token("alice", ttl=-10)
    await ws.send_str(orjson.dumps({"id": 1, "connect": {"token": token}}).decode())
    [reply] = await recv_json(ws)
    assert reply["error"]["code"] == 109
    await ws.close()


async def test_unknown_method_and_rpc_errors(server):
    ws = await connect(server)
    await ws.send_str(orjson.dumps({"id": 7, "teleport": {}}).decode())
    reply = await recv_until(ws, lambda r: r.get("id") == 7)
    assert reply["error"]["code"] == 104
    await ws.send_str(orjson.dumps({"id": 8, "rpc": {"method": "x", "data": {}}}).decode())
    reply = await recv_until(ws, lambda r: r.get("id") == 8)
    assert reply["error"]["code"] == 108
    assert "RPC" in reply["error"]["message"]
    await ws.close()


async def test_oversized_frame_is_refused(make_server, server_config):
    server = await make_server(server_config(client__max_frame_bytes=1024))
    ws = await connect(server)
    big = {"id": 2, "publish": {"channel": "board:1", "data": "x" * 4096}}
    await ws.send_str(orjson.dumps(big).decode())
    message = await ws.receive(timeout=5)
    assert message.type == aiohttp.WSMsgType.CLOSE
    assert message.data == 1009  # message too big


def masked_text_frame(body: bytes) -> bytes:
    """A client frame (masked with a zero key, which leaves the bytes as they are)."""
    if len(body) < 126:
        header = bytes((0x81, 0x80 | len(body)))
    else:
        header = bytes((0x81, 0x80 | 126)) + len(body).to_bytes(2, "big")
    return header + b"\x00\x00\x00\x00" + body


async def test_reader_that_stops_reading_is_dropped_as_slow(make_server, server_config):
    server = await make_server(server_config(client__queue_max_bytes=64 * 1024))
    port = int(server.url.rsplit(":", 1)[1])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window fills fast
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    # a raw handshake, then never read again
    writer.write(
        b"GET /connection/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    await reader.readuntil(b"\r\n\r\n")
    payload = orjson.dumps({"id": 1, "connect": {"token": server.token("slow")}})
    sub = orjson.dumps({"id": 2, "subscribe": {"channel": "board:slow"}})
    for body in (payload, sub):
        writer.write(masked_text_frame(body))
        # read the reply (connect, then subscribe) before going silent
        header = await reader.readexactly(2)
        length = header[1] & 0x7F
        if length == 126:
            length = int.from_bytes(await reader.readexactly(2), "big")
        await reader.readexactly(length)
    healthy = await connect(server, "healthy")
    await healthy.send_str(orjson.dumps({"id": 2, "subscribe": {"channel": "board:slow"}}).decode())
    await recv_until(healthy, lambda r: r.get("id") == 2)
    hub = server.hub
    assert "slow" in hub.users
    received = 0

    async def read_healthy() -> None:
        nonlocal received
        while True:
            received += sum("push" in r for r in await recv_json(healthy, timeout=20))

    reading = asyncio.create_task(read_healthy())
    data = "x" * 32768
    published = 0
    async with asyncio.timeout(20):
        while "slow" in hub.users and published < 2000:
            await server.publish("board:slow", data)
            published += 1
        while received < published:
            await asyncio.sleep(0.01)
    reading.cancel()
    assert "slow" not in hub.users, "a reader that never reads was never dropped"
    assert hub.disconnects[3008] == 1
    assert "healthy" in hub.users
    writer.close()
    await healthy.close()


def rss_bytes() -> int:
    for line in open("/proc/self/status").read().splitlines():  # noqa: SIM115
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def open_silent_subscriber(server, channel: str):
    """A raw client that connects, subscribes, reads the replies, then never reads again."""
    port = int(server.url.rsplit(":", 1)[1])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(
        b"GET /connection/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    await reader.readuntil(b"\r\n\r\n")
    for body in (
        orjson.dumps({"id": 1, "connect": {"token": server.token("silent")}}),
        orjson.dumps({"id": 2, "subscribe": {"channel": channel}}),
    ):
        writer.write(masked_text_frame(body))
        header = await reader.readexactly(2)
        length = header[1] & 0x7F
        if length == 126:
            length = int.from_bytes(await reader.readexactly(2), "big")
        await reader.readexactly(length)
    return writer


async def round_trip(server, ws, channel: str, n: int) -> float:
    """Seconds from an API publish to its arrival at ``ws``."""
    started = time.perf_counter()
    await server.publish(channel, {"n": n})
    await recv_until(ws, lambda r: r.get("push", {}).get("pub", {}).get("data") == {"n": n})
    return time.perf_counter() - started


async def test_a_slow_reader_costs_the_others_nothing_and_memory_stays_bounded(
    make_server, server_config
):
    server = await make_server(server_config(client__queue_max_bytes=256 * 1024))
    watcher = await connect(server, "watcher")
    await watcher.send_str(orjson.dumps({"id": 2, "subscribe": {"channel": "board:lat"}}).decode())
    await recv_until(watcher, lambda r: r.get("id") == 2)
    baseline = sorted([await round_trip(server, watcher, "board:lat", n) for n in range(30)])
    rss_before = rss_bytes()

    silent = await open_silent_subscriber(server, "board:flood")
    hub = server.hub
    assert "silent" in hub.users
    data = "y" * 65536
    flooded = 0

    async def flood() -> None:
        nonlocal flooded
        while "silent" in hub.users and flooded < 3000:
            await server.publish("board:flood", data)
            flooded += 1

    flooding = asyncio.create_task(flood())
    during = []
    async with asyncio.timeout(30):
        n = 100
        while not flooding.done():
            during.append(await round_trip(server, watcher, "board:lat", n))
            n += 1
        await flooding
    assert "silent" not in hub.users and hub.disconnects[3008] >= 1
    rss_after = rss_bytes()
    during.sort()
    median_before, median_during = baseline[len(baseline) // 2], during[len(during) // 2]
    # the watcher's latency while another client's queue fills and is dropped: bounded by
    # a small multiple of its own baseline (generous: the machine is shared and noisy)
    assert median_during <= 5 * median_before + 0.05, (median_before, median_during)
    # the slow client's queue was bounded (256 KiB), so memory does not grow with the flood
    # (flooded * 64 KiB of publications went out meanwhile)
    assert rss_after - rss_before < 48 * 1024 * 1024, (rss_before, rss_after, flooded)
    print(
        f"watcher p50 {median_before * 1000:.2f} ms before, {median_during * 1000:.2f} ms during;"
        f" {flooded} x 64 KiB flooded; RSS {rss_before >> 20} -> {rss_after >> 20} MiB"
    )
    silent.close()
    await watcher.close()


@pytest.mark.parametrize("origin", ["https://evil.example"])
async def test_disallowed_origin_is_refused(make_server, server_config, origin):
    server = await make_server(server_config(server__allowed_origins="https://app.example"))
    with pytest.raises(aiohttp.WSServerHandshakeError) as error:
        await server.session.ws_connect(server.ws_url, headers={"Origin": origin})
    assert error.value.status == 403
    ok = await server.session.ws_connect(server.ws_url, headers={"Origin": "https://app.example"})
    await ok.close()
