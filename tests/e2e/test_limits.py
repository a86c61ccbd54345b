"""Every configured limit, hit on purpose: the dialect's own error or disconnect code,
a ``pushgate_limit_hits_total{limit}`` increment, and the node goes on serving."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson

from pushgate.metrics import LIMIT_HITS
from tests.conftest import API_KEY
from tests.e2e.test_websocket_raw import connect, recv_until


def hits(limit: str) -> float:
    return LIMIT_HITS.labels(limit)._value.get()


async def command(ws, cid: int, method: str, params: dict) -> dict:
    await ws.send_str(orjson.dumps({"id": cid, method: params}).decode())
    return await recv_until(ws, lambda r: r.get("id") == cid)


async def closed_with(ws, timeout: float = 5.0) -> int | None:
    async with asyncio.timeout(timeout):
        while True:
            message = await ws.receive()
            if message.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.CLOSING,
            ):
                return ws.close_code


async def still_serving(server) -> None:
    ws = await connect(server, "bystander")
    reply = await command(ws, 99, "subscribe", {"channel": "board:alive"})
    assert "subscribe" in reply, reply
    await ws.close()


async def connect_raw(server, user: str) -> tuple[aiohttp.ClientWebSocketResponse, dict]:
    ws = await server.session.ws_connect(server.ws_url)
    reply = await command(ws, 1, "connect", {"token": server.token(user)})
    return ws, reply


async def test_connections_per_node(make_server, server_config):
    server = await make_server(server_config(client__max_connections=2))
    before = hits("connections")
    first = await connect(server, "a")
    second = await connect(server, "b")
    third = await server.session.ws_connect(server.ws_url)
    await third.send_str(orjson.dumps({"id": 1, "connect": {"token": server.token("c")}}).decode())
    assert await closed_with(third) == 3504
    assert hits("connections") == before + 1
    await first.close()
    await asyncio.sleep(0.1)
    fourth = await connect(server, "d")  # room again once one left
    await asyncio.gather(second.close(), fourth.close())


async def test_connections_per_user(make_server, server_config):
    server = await make_server(server_config(client__max_connections_per_user=1))
    before = hits("connections_per_user")
    first = await connect(server, "alice")
    second = await server.session.ws_connect(server.ws_url)
    await second.send_str(
        orjson.dumps({"id": 1, "connect": {"token": server.token("alice")}}).decode()
    )
    assert await closed_with(second) == 3504
    assert hits("connections_per_user") == before + 1
    other = await connect(server, "bob")
    await asyncio.gather(first.close(), other.close())


async def test_subscriptions_per_connection(make_server, server_config):
    server = await make_server(server_config(client__max_subscriptions=2))
    before = hits("subscriptions")
    ws = await connect(server)
    for i in range(2):
        assert "subscribe" in await command(ws, 10 + i, "subscribe", {"channel": f"board:{i}"})
    reply = await command(ws, 20, "subscribe", {"channel": "board:9"})
    assert reply["error"]["code"] == 106, reply
    assert hits("subscriptions") == before + 1
    assert "publish" in await command(ws, 21, "publish", {"channel": "board:0", "data": 1})
    await ws.close()
    await still_serving(server)


async def test_channel_name_length(make_server, server_config):
    server = await make_server(server_config(channel__max_length=20))
    before = hits("channel_length")
    ws = await connect(server)
    reply = await command(ws, 2, "subscribe", {"channel": "board:" + "x" * 30})
    assert reply["error"]["code"] == 106, reply
    reply = await command(ws, 3, "publish", {"channel": "board:" + "y" * 30, "data": 1})
    assert reply["error"]["code"] == 106, reply
    assert hits("channel_length") == before + 2
    assert "subscribe" in await command(ws, 4, "subscribe", {"channel": "board:short"})
    await ws.close()


async def test_websocket_frame_size(make_server, server_config):
    server = await make_server(server_config(client__max_frame_bytes=1024))
    ws = await connect(server)
    big = {"id": 2, "publish": {"channel": "board:1", "data": "x" * 2000}}
    await ws.send_str(orjson.dumps(big).decode())
    assert await closed_with(ws) == 1009  # RFC 6455 "message too big"
    await still_serving(server)


async def test_http_transport_body_size(make_server, server_config):
    server = await make_server(server_config(client__max_frame_bytes=1024))
    body = orjson.dumps({"id": 1, "connect": {"token": server.token("a"), "x": "y" * 2000}})
    for path in ("/connection/poll", "/connection/longpoll", "/emulation"):
        async with server.session.post(server.url + path, data=body) as response:
            assert response.status == 413, path
    await still_serving(server)


async def test_api_body_size(make_server, server_config):
    server = await make_server(server_config(api__max_body_bytes=1000))
    before = hits("api_body")
    headers = {"X-API-Key": API_KEY}
    body = orjson.dumps({"channel": "board:1", "data": "z" * 2000})
    async with server.session.post(
        server.api_url + "/publish", data=body, headers=headers
    ) as response:
        assert response.status == 413
        assert (await response.json())["error"]["code"] == 107

    async def chunked():  # no Content-Length: the limit still holds while reading
        for _ in range(4):
            yield b" " * 500

    async with server.session.post(
        server.api_url + "/publish", data=chunked(), headers=headers
    ) as response:
        assert response.status == 413
    assert hits("api_body") == before + 2
    assert "result" in await server.api("publish", {"channel": "board:1", "data": 1})


async def test_commands_per_second(make_server, server_config):
    server = await make_server(
        server_config(client__commands_per_second=1, client__commands_burst=5)
    )
    before = hits("commands_per_second")
    ws = await connect(server)  # connect spends one token
    codes = []
    for i in range(6):
        reply = await command(ws, 10 + i, "presence_stats", {"channel": "board:1"})
        codes.append(reply.get("error", {}).get("code"))
    # four tokens left after connect; then 111 (temporary: the client may retry later)
    assert 111 not in codes[:4], codes
    assert codes[4:] == [111, 111], codes
    assert hits("commands_per_second") == before + 2
    await asyncio.sleep(1.1)  # the bucket refills
    reply = await command(ws, 30, "presence_stats", {"channel": "board:1"})
    assert reply.get("error", {}).get("code") != 111, reply
    await ws.close()


async def test_repeated_rate_abuse_disconnects(make_server, server_config):
    server = await make_server(
        server_config(client__commands_per_second=1, client__commands_burst=2)
    )
    ws = await connect(server)
    frame = "\n".join(
        orjson.dumps({"id": 10 + i, "presence_stats": {"channel": "board:1"}}).decode()
        for i in range(30)
    )
    await ws.send_str(frame)
    assert await closed_with(ws) == 3013
    await still_serving(server)


async def test_publications_per_second(make_server, server_config):
    server = await make_server(server_config(client__publications_per_second=2))
    before = hits("publications_per_second")
    ws = await connect(server)
    await command(ws, 2, "subscribe", {"channel": "board:1"})
    results = []
    for i in range(4):
        reply = await command(ws, 10 + i, "publish", {"channel": "board:1", "data": i})
        results.append(reply.get("error", {}).get("code"))
    assert results == [None, None, 111, 111], results
    assert hits("publications_per_second") == before + 2
    # the API is not a client: it is not limited
    assert "result" in await server.api("publish", {"channel": "board:1", "data": "api"})
    await ws.close()


async def test_presence_size(make_server, server_config):
    server = await make_server(server_config(client__presence_max_size=1))
    before = hits("presence_size")
    first = await connect(server, "a")
    second = await connect(server, "b")
    for ws in (first, second):
        assert "subscribe" in await command(ws, 2, "subscribe", {"channel": "board:p"})
    reply = await command(first, 3, "presence", {"channel": "board:p"})
    assert reply["error"]["code"] == 106, reply
    assert hits("presence_size") == before + 1
    await asyncio.gather(first.close(), second.close())


async def test_oversized_frames_and_bodies_are_counted(make_server, server_config):
    server = await make_server(server_config(client__max_frame_bytes=1024))
    before = hits("frame_size")
    ws = await server.session.ws_connect(server.ws_url)
    await ws.send_str("x" * 4096)
    closing = await ws.receive(timeout=5)
    assert closing.data == 1009
    async with server.session.post(server.url + "/connection/poll", data=b"{" * 4096) as r:
        assert r.status == 413
    async with server.session.post(server.url + "/emulation", data=b"{" * 4096) as r:
        assert r.status == 413
    assert hits("frame_size") - before == 3
