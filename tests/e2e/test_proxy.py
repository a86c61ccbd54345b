"""The backend decides (docs/proxy.md): connect, refresh, subscribe, publish, sub_refresh,
rpc and send proxies, against a real backend (tests/proxy_backend.py) on its own port.

Clients: centrifuge-python (JSON and Protobuf) with a session cookie and no token, and
raw connections where a test needs to see the exact reply. Failure behaviour: a backend
that is down, slow, overloaded or failing gets the client a temporary error at once and
never holds up other clients; the circuit breaker and the metrics say so.
"""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest
from centrifuge import ReplyError
from prometheus_client import REGISTRY

from tests.centrifuge_helpers import Recorder, clients_fixture, subscribed, wait_until  # noqa: F401
from tests.proxy_backend import ProxyBackend


@pytest.fixture
async def backend():
    backend = ProxyBackend()
    await backend.start()
    yield backend
    await backend.stop()


@pytest.fixture
def proxied(make_server, server_config, backend):
    """A pushgate whose proxies point at ``backend``: ``await proxied(extra_toml,
    connect=…, refresh=…, send=…, rpc=…, proxy_options=…, sub_refresh=…)``."""

    async def make(extra: str = "", **options):
        switches = {k: options.pop(k) for k in ("connect", "refresh", "send") if k in options}
        config = server_config(
            backend.toml(**options) + extra, **ProxyBackend.overrides(**switches)
        )
        return await make_server(config)

    return make


def calls(proxy: str, kind: str, result: str) -> float:
    labels = {"proxy": proxy, "kind": kind, "result": result}
    return REGISTRY.get_sample_value("pushgate_proxy_calls_total", labels) or 0.0


async def raw_connect(server, headers: dict | None = None, connect: dict | None = None) -> dict:
    """One WebSocket, one connect command: the reply (or the disconnect) it gets."""
    async with server.session.ws_connect(server.ws_url, headers=headers or {}) as ws:
        await ws.send_str(orjson.dumps({"id": 1, "connect": connect or {}}).decode())
        message = await ws.receive(timeout=10)
        if message.type == aiohttp.WSMsgType.TEXT:
            return orjson.loads(message.data)
        return {"closed": ws.close_code, "reason": message.extra}


# --- the happy path -------------------------------------------------------------------
async def test_a_session_cookie_is_all_a_client_needs(proxied, backend, clients):
    server = await proxied()
    headers = {"Cookie": backend.cookie("alice"), "X-Trace": "t-1", "X-Other": "not forwarded"}
    client, events = clients(server, token="", headers=headers)
    await client.connect()
    connected = await events.wait_for("connected")
    assert connected.data == {"greeting": "hello alice"}

    call = await backend.wait_for_call("connect")
    assert call.headers["Cookie"].startswith("session=")
    assert call.headers["X-Trace"] == "t-1"
    assert "X-Other" not in call.headers
    assert call.body["client"] == connected.client
    assert (call.body["transport"], call.body["protocol"], call.body["encoding"]) == (
        "websocket",
        "json",
        "json",
    )
    assert call.body["name"] == "python"

    # rpc: the backend answers, and it sees the connection's cookie too
    reply = await client.rpc("whoami", {})
    assert reply.data == {"user": "alice", "cookie": True}
    assert (await client.rpc("echo", {"n": [1, 2]})).data == {"n": [1, 2]}
    with pytest.raises(ReplyError) as failed:
        await client.rpc("fail", {})
    assert (failed.value.code, failed.value.message) == (1002, "that went wrong")
    with pytest.raises(ReplyError) as unknown:
        await client.rpc("nosuchns:call", {})
    assert unknown.value.code == 104  # no [[rpc_namespace]] "nosuchns"

    # subscribe: the backend says who may, and what they get
    sub, sub_events = await subscribed(client, "proj:1")
    [ctx] = sub_events.of("subscribed")
    assert ctx.data == {"welcome": "proj:1"}
    assert (await backend.wait_for_call("subscribe")).body["user"] == "alice"
    presence = await sub.presence()
    [info] = presence.clients.values()
    assert (info.user, info.conn_info, info.chan_info) == (
        "alice",
        {"name": "Alice"},
        {"role": "member"},
    )
    refused = Recorder()
    client.new_subscription("proj:2", events=refused)
    await client.get_subscription("proj:2").subscribe()
    gone = await refused.wait_for("unsubscribed")
    assert gone.code == 403

    # publish: rewritten by the backend, or refused
    chat, chat_events = await subscribed(client, "chat:1")
    await chat.publish({"text": "  hello team  "})
    pub = await chat_events.wait_for("publication")
    assert pub.pub.data == {"text": "hello team", "by": "alice", "checked": True}
    with pytest.raises(ReplyError) as spam:
        await chat.publish({"text": "buy spam"})
    assert spam.value.code == 1001
    assert [p.pub.data["text"] for p in chat_events.of("publication")] == ["hello team"]


async def test_without_a_session_the_backend_refuses_for_good(proxied, clients):
    server = await proxied()
    client, events = clients(server, token="", headers={"Cookie": "session=forged"})
    await client.connect()
    disconnected = await events.wait_for("disconnected")
    assert (disconnected.code, disconnected.reason) == (4501, "unauthorized")
    assert not events.of("connected")


async def test_a_token_still_works_and_skips_the_connect_proxy(proxied, backend, clients):
    server = await proxied()
    client, events = clients(server, "carol")
    await client.connect()
    await events.wait_for("connected")
    assert (await client.rpc("whoami", {})).data == {"user": "carol", "cookie": False}
    assert not backend.of("connect")


async def test_protobuf_clients_send_and_get_binary_rpc_data(proxied, backend, clients):
    server = await proxied()
    client, events = clients(
        server, token="", use_protobuf=True, headers={"Cookie": backend.cookie("bob")}
    )
    await client.connect()
    await events.wait_for("connected")
    reply = await client.rpc("echo", b"\x00\x01\xff")
    assert reply.data == b"\xff\x01\x00"
    call = await backend.wait_for_call("rpc")
    assert (call.body["protocol"], call.body["encoding"]) == ("protobuf", "binary")
    assert "data" not in call.body and call.body["b64data"] == "AAH/"


async def test_rpc_without_a_proxy_is_not_available(proxied, backend, clients):
    server = await proxied(rpc=False)
    client, events = clients(server, token="", headers={"Cookie": backend.cookie("alice")})
    await client.connect()
    await events.wait_for("connected")
    with pytest.raises(ReplyError) as failed:
        await client.rpc("whoami", {})
    assert failed.value.code == 108
    assert not backend.of("rpc")


async def test_the_backend_may_close_a_connection_from_an_rpc(proxied, backend, clients):
    server = await proxied()
    client, events = clients(server, token="", headers={"Cookie": backend.cookie("alice")})
    await client.connect()
    await events.wait_for("connected")
    with pytest.raises(Exception):  # noqa: B017 - the connection goes while the call waits
        await client.rpc("bye", {})
    disconnected = await events.wait_for("disconnected")
    assert (disconnected.code, disconnected.reason) == (4502, "goodbye")


async def test_send_reaches_the_backend_with_emulated_headers(proxied, backend):
    server = await proxied(send=True, proxy_options='timeout = "2s"\nemulated_headers = ["X-App"]')
    headers = {"Cookie": backend.cookie("alice")}
    async with server.session.ws_connect(server.ws_url, headers=headers) as ws:
        connect = {"id": 1, "connect": {"headers": {"X-App": "board/2", "X-Nope": "x"}}}
        await ws.send_str(orjson.dumps(connect).decode())
        reply = orjson.loads((await ws.receive(timeout=5)).data)
        assert reply["connect"]["data"] == {"greeting": "hello alice"}
        await ws.send_str('{"send": {"data": {"typing": true}}}')
        call = await backend.wait_for_call("send")
    assert call.body["data"] == {"typing": True}
    assert call.body["user"] == "alice"
    assert call.headers["X-App"] == "board/2" and "X-Nope" not in call.headers
    connect_call = backend.of("connect")[0]
    assert connect_call.headers["X-App"] == "board/2"


@pytest.mark.parametrize("transport", ["http_stream", "sse", "longpoll", "uni_sse"])
async def test_every_transport_forwards_the_cookie(proxied, backend, transport):
    server = await proxied()
    cookie = {"Cookie": backend.cookie("alice")}
    session = server.session
    url = f"{server.url}/connection/{transport}"
    if transport == "http_stream":
        json_body = {**cookie, "Content-Type": "application/json"}
        async with session.post(url, data=b'{"id":1,"connect":{}}', headers=json_body) as response:
            first = orjson.loads(await response.content.readline())
        assert first["connect"]["data"] == {"greeting": "hello alice"}
    elif transport in ("sse", "uni_sse"):
        connect = '{"id":1,"connect":{}}' if transport == "sse" else "{}"
        async with session.get(url, params={"cf_connect": connect}, headers=cookie) as response:
            while not (line := await response.content.readline()).startswith(b"data:"):
                pass
        message = orjson.loads(line[5:])
        connect_result = message["connect"]
        assert connect_result["data"] == {"greeting": "hello alice"}
    else:
        body = {"commands": [{"id": 1, "connect": {}}]}
        async with session.post(url, json=body, headers=cookie) as response:
            answer = await response.json()
        [[_, reply]] = answer["messages"]
        assert reply["connect"]["data"] == {"greeting": "hello alice"}
    call = await backend.wait_for_call("connect")
    assert call.body["transport"] == transport
    assert call.headers["Cookie"] == cookie["Cookie"]


# --- failure is a feature ----------------------------------------------------------------
async def test_a_down_backend_gets_a_retryable_error_and_clients_come_back(
    proxied, backend, clients
):
    server = await proxied()
    cookie = backend.cookie("alice")
    port = backend.port
    await backend.stop()
    reply = await raw_connect(server, {"Cookie": cookie})
    assert reply["error"] == {"code": 100, "message": "internal server error", "temporary": True}

    client, events = clients(server, token="", headers={"Cookie": cookie})
    await client.connect()
    await events.wait_for("error", lambda ctx: ctx.error.code == 100)
    assert not events.of("disconnected")  # retrying, not given up
    await backend.start(port)
    await events.wait_for("connected", timeout=15)


async def test_a_slow_backend_holds_its_callers_only(proxied, backend, clients):
    """Fifty connects wait on a backend that does not answer; meanwhile another client
    connects (with a token), subscribes and gets a publication, while all fifty still wait."""
    server = await proxied()
    backend.gate = asyncio.Event()
    cookie = backend.cookie("alice")
    waiting = [asyncio.create_task(raw_connect(server, {"Cookie": cookie})) for _ in range(50)]
    await backend.wait_for_waiting(50)

    loop = asyncio.get_running_loop()
    started = loop.time()
    other, other_events = clients(server, "bob")
    await other.connect()
    await other_events.wait_for("connected")
    _, sub_events = await subscribed(other, "board:1")
    await server.publish("board:1", {"n": 1})
    await sub_events.wait_for("publication")
    took = loop.time() - started
    assert backend.waiting == 50, "the publication came only once the backend answered"
    assert not any(task.done() for task in waiting)
    print(f"\nconnect+subscribe+publication while 50 proxy calls hang: {took * 1000:.1f} ms")

    backend.gate.set()
    replies = await asyncio.gather(*waiting)
    assert all(reply["connect"]["data"] == {"greeting": "hello alice"} for reply in replies)


async def test_a_timeout_answers_at_once_with_a_temporary_error(proxied, backend):
    server = await proxied(proxy_options='timeout = "0.3s"')
    backend.gate = asyncio.Event()  # never set: the backend never answers
    before = calls("connect", "connect", "timeout")
    reply = await raw_connect(server, {"Cookie": backend.cookie("alice")})
    assert reply["error"]["code"] == 100 and reply["error"]["temporary"] is True
    assert calls("connect", "connect", "timeout") == before + 1
    async with server.session.get(f"{server.url}/metrics") as response:
        text = await response.text()
    assert 'pushgate_proxy_calls_total{kind="connect",proxy="connect",result="timeout"}' in text
    assert "pushgate_proxy_duration_seconds_bucket" in text
    backend.gate.set()


async def test_past_max_concurrency_calls_fail_fast(proxied, backend):
    server = await proxied(proxy_options='timeout = "10s"\nmax_concurrency = 2')
    backend.gate = asyncio.Event()
    cookie = {"Cookie": backend.cookie("alice")}
    held = [asyncio.create_task(raw_connect(server, cookie)) for _ in range(2)]
    await backend.wait_for_waiting(2)
    before = calls("connect", "connect", "overloaded")
    reply = await raw_connect(server, cookie)
    assert reply["error"]["code"] == 100 and reply["error"]["temporary"] is True
    assert backend.waiting == 2 and len(backend.of("connect")) == 2  # never reached it
    assert calls("connect", "connect", "overloaded") == before + 1
    backend.gate.set()
    assert all("connect" in r for r in await asyncio.gather(*held))


async def test_the_circuit_opens_after_failures_and_closes_when_the_backend_is_back(
    proxied, backend
):
    server = await proxied(
        proxy_options='timeout = "2s"\ncircuit_failures = 2\ncircuit_open = "0.5s"'
    )
    backend.status = 503
    cookie = {"Cookie": backend.cookie("alice")}
    for _ in range(2):
        assert (await raw_connect(server, cookie))["error"]["code"] == 100
    assert len(backend.of("connect")) == 2
    before = calls("connect", "connect", "circuit_open")
    assert (await raw_connect(server, cookie))["error"]["code"] == 100
    assert len(backend.of("connect")) == 2  # open: the backend was left alone
    assert calls("connect", "connect", "circuit_open") == before + 1

    backend.status = 200

    async def connects() -> bool:
        return "connect" in await raw_connect(server, cookie)

    await wait_until(connects, timeout=5, what="the circuit lets a call through again")
    assert (await raw_connect(server, cookie))["connect"]["data"] == {"greeting": "hello alice"}


# --- refresh and sub_refresh: the server prolongs, the backend decides -------------------------
async def test_the_refresh_proxy_prolongs_a_connection_until_the_session_ends(
    proxied, backend, clients
):
    server = await proxied(
        refresh=True, proxy_options='timeout = "2s"\ninclude_connection_meta = true'
    )
    backend.connect_ttl = backend.refresh_ttl = 1
    cookie = backend.cookie("alice")
    reply = await raw_connect(server, {"Cookie": cookie})
    assert "expires" not in reply["connect"]  # the server refreshes: the client is not told

    client, events = clients(server, token="", headers={"Cookie": cookie})
    await client.connect()
    await events.wait_for("connected")
    first = await backend.wait_for_call("refresh", timeout=5)
    assert first.body["user"] == "alice"
    assert first.body["meta"] == {"session": cookie.partition("=")[2]}
    await backend.wait_for_call("refresh", lambda c: c is not first, timeout=5)
    assert [c.code for c in events.of("connecting")] == [0]  # never dropped
    assert not events.of("disconnected")

    del backend.sessions[cookie.partition("=")[2]]  # signed out elsewhere
    # expired (3005): the client reconnects, and the connect proxy refuses it for good
    disconnected = await events.wait_for("disconnected", timeout=10)
    assert disconnected.code == 4501
    assert any(c.code == 3005 for c in events.of("connecting"))


async def test_the_sub_refresh_proxy_ends_a_subscription_when_membership_ends(
    proxied, backend, clients
):
    server = await proxied(sub_refresh=("proj",))
    backend.sub_ttl = 1
    client, events = clients(server, token="", headers={"Cookie": backend.cookie("alice")})
    await client.connect()
    await events.wait_for("connected")
    _, sub_events = await subscribed(client, "proj:1")
    await backend.wait_for_call("sub_refresh", timeout=5)
    assert [c.code for c in sub_events.of("subscribing")] == [0]  # never ended
    assert not sub_events.of("unsubscribed")

    backend.members["proj:1"].discard("alice")
    gone = await sub_events.wait_for("unsubscribed", timeout=10)
    assert gone.code == 403  # 2501 made it subscribe again, and the backend said no
    assert any(c.code == 2501 for c in sub_events.of("subscribing"))
