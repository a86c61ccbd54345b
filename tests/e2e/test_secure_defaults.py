"""Secure defaults, as Centrifugo has them: what a fresh configuration allows.

- With ``server.allowed_origins`` unset, a browser page of another site cannot connect
  on any endpoint (WebSocket, streams, emulation, polling, STOMP, XMPP, BOSH); the
  server's own pages and non-browser clients can. CORS never reflects an origin that
  only ``*`` lets in together with credentials.
- A user-limited channel (``ns:x#alice``) means nothing unless its namespace opts in.
- A connection has a command rate by default and a bound on connect attempts.
"""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest

from pushgate.auth import mint_connection_token
from tests import raw_clients
from tests.conftest import SECRET, Server

EVIL = "https://evil.example"


def same_origin_of(server: Server) -> str:
    return server.url  # http://127.0.0.1:<port>: the Host the requests carry


async def handshake(server: Server, path: str, origin: str | None, protocol: str = "") -> int:
    headers = {"Origin": origin} if origin else {}
    protocols = (protocol,) if protocol else ()
    url = server.url.replace("http://", "ws://") + path
    try:
        ws = await server.session.ws_connect(url, headers=headers, protocols=protocols)
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status
    await ws.close()
    return 101


WEBSOCKETS = [
    ("/connection/websocket", ""),
    ("/connection/uni_websocket", ""),
    ("/stomp", "v12.stomp"),
    ("/ws", "v12.stomp"),
    ("/xmpp-websocket", "xmpp"),
]


@pytest.mark.parametrize(("path", "protocol"), WEBSOCKETS)
async def test_websockets_refuse_other_sites_by_default(server, path, protocol):
    assert await handshake(server, path, EVIL, protocol) == 403
    assert await handshake(server, path, "null", protocol) == 403  # sandboxed frames, file://
    assert await handshake(server, path, same_origin_of(server), protocol) == 101
    assert await handshake(server, path, None, protocol) == 101  # not a browser


async def http_status(server: Server, method: str, path: str, origin: str, body: bytes = b""):
    async with server.session.request(
        method, server.url + path, data=body, headers={"Origin": origin}
    ) as response:
        return response.status, response.headers


HTTP_ENDPOINTS = [
    ("GET", "/connection/sse?cf_connect=%7B%7D"),
    ("POST", "/connection/http_stream"),
    ("GET", "/connection/uni_sse?cf_connect=%7B%7D"),
    ("POST", "/emulation"),
    ("POST", "/connection/longpoll"),
    ("POST", "/connection/poll"),
    ("POST", "/http-bind"),
]


@pytest.mark.parametrize(("method", "path"), HTTP_ENDPOINTS)
async def test_http_transports_refuse_other_sites_by_default(server, method, path):
    status, headers = await http_status(server, method, path, EVIL, b"{}")
    assert status == 403
    assert "Access-Control-Allow-Origin" not in headers
    status, _ = await http_status(server, method, path, same_origin_of(server), b"{}")
    assert status != 403


@pytest.mark.parametrize(("method", "path"), HTTP_ENDPOINTS)
async def test_cors_reflects_only_listed_origins_with_credentials(
    make_server, server_config, method, path
):
    listed = "https://app.example.com"
    server = await make_server(server_config(f'[server]\nallowed_origins = ["{listed}", "*"]\n'))
    status, headers = await http_status(server, method, path, listed, b"{}")
    assert status != 403
    assert headers["Access-Control-Allow-Origin"] == listed
    assert headers["Access-Control-Allow-Credentials"] == "true"
    # any other origin passes through "*", but never with credentials
    status, headers = await http_status(server, method, path, EVIL, b"{}")
    assert status != 403
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in headers


async def test_preflight_of_another_site_is_refused(server):
    headers = {"Origin": EVIL, "Access-Control-Request-Method": "POST"}
    for path in ("/emulation", "/connection/longpoll", "/http-bind"):
        async with server.session.options(server.url + path, headers=headers) as response:
            assert response.status == 403, path


# --- user-limited channels are opt-in ---------------------------------------------------------
CLOSED = """
[[namespace]]
name = "closed"
history_size = 10
history_ttl = "60s"
[[namespace]]
name = "open"
allow_subscribe_for_client = true
[[namespace]]
name = "mine"
allow_user_limited_channels = true
"""


async def subscribe_reply(server: Server, user: str, channel: str) -> dict:
    ws = await server.session.ws_connect(server.ws_url)
    await ws.send_str(orjson.dumps({"id": 1, "connect": {"token": server.token(user)}}).decode())
    await ws.receive_json(timeout=5)
    await ws.send_str(orjson.dumps({"id": 2, "subscribe": {"channel": channel}}).decode())
    reply = await ws.receive_json(timeout=5)
    await ws.close()
    return reply


async def test_user_limited_channels_are_opt_in_per_namespace(make_server, server_config):
    server = await make_server(server_config(CLOSED))
    # a closed namespace stays closed, whatever the channel's name says
    assert (await subscribe_reply(server, "alice", "closed:x#alice"))["error"]["code"] == 103
    # in a namespace that did not opt in, '#' is just a character: the namespace's rules
    assert "subscribe" in await subscribe_reply(server, "alice", "open:x#bob")
    # opted in: only the listed users, without a token
    assert "subscribe" in await subscribe_reply(server, "alice", "mine:x#alice")
    assert (await subscribe_reply(server, "alice", "mine:x#bob"))["error"]["code"] == 103


# --- connections have bounds by default -------------------------------------------------------
async def test_a_command_flood_is_cut_off_by_default(server):
    ws = await server.session.ws_connect(server.ws_url)
    await ws.send_str(orjson.dumps({"id": 1, "connect": {"token": server.token("f")}}).decode())
    await ws.receive_json(timeout=5)
    flood = "\n".join(orjson.dumps({"id": n, "ping": {}}).decode() for n in range(2, 3000))
    await ws.send_str(flood)
    too_many = 0
    async for message in ws:
        if message.type == aiohttp.WSMsgType.TEXT:
            too_many += message.data.count('"code":111')
    assert ws.close_code == 3013  # too many requests
    assert too_many >= 1
    assert server.hub.disconnects[3013] == 1


async def test_a_pong_flood_is_cut_off_by_default(server):
    ws = await server.session.ws_connect(server.ws_url)
    await ws.send_str(orjson.dumps({"id": 1, "connect": {"token": server.token("f")}}).decode())
    await ws.receive_json(timeout=5)
    await ws.send_str("\n".join(["{}"] * 3000))
    async for _ in ws:
        pass
    assert ws.close_code == 3013


async def test_a_flood_of_pong_frames_is_cut_off_by_default(server):
    """Pongs one per frame take the short way in (no task each): the rate still holds."""
    ws = await server.session.ws_connect(server.ws_url)
    await ws.send_str(orjson.dumps({"id": 1, "connect": {"token": server.token("f")}}).decode())
    await ws.receive_json(timeout=5)
    for _ in range(3000):
        if ws.closed:
            break
        await ws.send_str("{}")
    async for _ in ws:
        pass
    assert ws.close_code == 3013


async def test_connect_attempts_are_bounded(server):
    expired = mint_connection_token(SECRET, "late", ttl=-10)
    ws = await server.session.ws_connect(server.ws_url)
    codes = []
    for n in range(1, 6):
        await ws.send_str(orjson.dumps({"id": n, "connect": {"token": expired}}).decode())
        message = await ws.receive(timeout=5)
        if message.type != aiohttp.WSMsgType.TEXT:
            break
        codes.append(orjson.loads(message.data)["error"]["code"])
    assert codes == [109, 109, 109]  # token expired, three times: then closed
    assert ws.close_code == 3501


async def test_a_stomp_frame_flood_is_cut_off_by_default(server):
    port = int(server.url.rsplit(":", 1)[1])
    ws = await raw_clients.stomp_websocket(port, server.token("f"))
    ws.send("".join(f"ACK\nid:{n}\n\n\x00" for n in range(3000)))
    errors = []
    async with asyncio.timeout(10):
        while True:
            try:
                payload = await ws.receive()
            except asyncio.IncompleteReadError:
                break
            if payload.startswith(b"ERROR"):
                errors.append(payload)
    assert len(errors) == 1 and b"message:too many requests" in errors[0]
    assert "f" not in server.hub.users


async def test_an_xmpp_stanza_flood_is_cut_off_by_default(make_server, server_config):
    server = await make_server(server_config('[xmpp]\ndomain = "pushgate.test"\n'))
    port = int(server.url.rsplit(":", 1)[1])
    ws = await raw_clients.xmpp_websocket(port, "f", server.token("f"), "pushgate.test")
    for n in range(400):
        ws.send(
            f"<iq xmlns='jabber:client' type='get' id='p{n}'><ping xmlns='urn:xmpp:ping'/></iq>"
        )
    seen = b""
    async with asyncio.timeout(10):
        while b"policy-violation" not in seen:
            seen += await ws.receive()
    assert b"resource-constraint" in seen
    assert seen.count(b"type='result'") + seen.count(b'type="result"') < 400
