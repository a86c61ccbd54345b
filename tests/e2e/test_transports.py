"""Every non-WebSocket transport over real HTTP: emulation, unidirectional, polling, CORS.

These speak the wire formats of docs/transports.md directly, as a browser's fetch or
EventSource would; the browser tests run the real clients over the same endpoints.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import orjson
import pytest

from tests.conftest import API_KEY


def connect_command(token: str, **extra) -> bytes:
    return orjson.dumps({"id": 1, "connect": {"token": token, **extra}})


#: a body of bytes is application/octet-stream to aiohttp, which is Protobuf to pushgate
JSON = {"Content-Type": "application/json"}


class Lines:
    """Messages read from a streaming response: newline-delimited JSON or SSE events."""

    def __init__(self, response: aiohttp.ClientResponse, sse: bool = False) -> None:
        self.response = response
        self.sse = sse

    async def next(self, timeout: float = 5.0) -> dict:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    line = await self.response.content.readline()
                except (RuntimeError, aiohttp.ClientPayloadError):
                    line = b""  # the server closed the connection with the stream
                if not line:
                    raise EOFError("stream ended")
                line = line.strip()
                if not line or line.startswith((b"id: ", b"retry: ")):
                    continue
                if self.sse:
                    assert line.startswith(b"data: "), line
                    line = line[6:]
                return orjson.loads(line)

    async def until(self, predicate, timeout: float = 5.0) -> dict:
        async with asyncio.timeout(timeout):
            while True:
                message = await self.next(timeout)
                if predicate(message):
                    return message


async def emulate(server, session: str, node: str, *commands: dict) -> int:
    body = {"session": session, "node": node, "data": "\n".join(json.dumps(c) for c in commands)}
    async with server.session.post(server.url + "/emulation", json=body) as response:
        return response.status


@pytest.mark.parametrize("kind", ["http_stream", "sse"])
async def test_bidirectional_emulation(server, kind):
    token = server.token("alice")
    if kind == "sse":
        response = await server.session.get(
            server.url + "/connection/sse", params={"cf_connect": connect_command(token).decode()}
        )
        assert response.headers["Content-Type"].startswith("text/event-stream")
    else:
        response = await server.session.post(
            server.url + "/connection/http_stream", data=connect_command(token), headers=JSON
        )
    stream = Lines(response, sse=kind == "sse")
    connect = (await stream.next())["connect"]
    assert connect["pong"] is True and connect["session"] and connect["node"]
    session, node = connect["session"], connect["node"]
    await server.publish("board:e", {"n": 0})
    status = await emulate(server, session, node, {"id": 2, "subscribe": {"channel": "board:e"}})
    assert status == 204
    reply = await stream.until(lambda m: m.get("id") == 2)
    assert reply["subscribe"]["offset"] == 1 and reply["subscribe"]["recoverable"]
    for n in range(1, 6):
        await server.publish("board:e", {"n": n})
    pubs = [(await stream.until(lambda m: "pub" in m.get("push", {})))["push"] for _ in range(5)]
    assert [p["pub"]["data"]["n"] for p in pubs] == [1, 2, 3, 4, 5]
    # presence and history travel the same way
    await emulate(
        server,
        session,
        node,
        {"id": 3, "presence_stats": {"channel": "board:e"}},
        {"id": 4, "history": {"channel": "board:e", "limit": 2, "reverse": True}},
    )
    stats = await stream.until(lambda m: m.get("id") == 3)
    assert stats["presence_stats"] == {"num_clients": 1, "num_users": 1}
    history = await stream.until(lambda m: m.get("id") == 4)
    assert [p["data"]["n"] for p in history["history"]["publications"]] == [5, 4]
    # a server disconnect arrives as a push, then the stream ends
    await server.api("disconnect", {"user": "alice"})
    push = await stream.until(lambda m: "disconnect" in m.get("push", {}))
    assert push["push"]["disconnect"]["code"] == 3503
    with pytest.raises(EOFError):
        await stream.next()
    # the session is gone: /emulation says so without an error
    assert await emulate(server, session, node, {"id": 5, "ping": {}}) == 204
    assert await emulate(server, session, "another-node", {"id": 5, "ping": {}}) == 404
    response.close()


async def test_emulation_rejects_bad_requests(server):
    url = server.url + "/emulation"
    for body in (b"{", b"[]", b'{"session": 1}', b'{"session": "x", "data": {}}'):
        async with server.session.post(url, data=body, headers=JSON) as response:
            assert response.status == 400
            assert "error" in await response.json()
    async with server.session.post(server.url + "/connection/http_stream", data=b"") as response:
        assert response.status == 400
    async with server.session.get(server.url + "/connection/sse") as response:
        assert response.status == 400


async def test_emulated_pings_are_answered_through_emulation(make_server, server_config):
    server = await make_server(
        server_config(client__ping_interval="1s", client__pong_timeout="0.5s")
    )
    response = await server.session.post(
        server.url + "/connection/http_stream",
        data=connect_command(server.token("alice")),
        headers=JSON,
    )
    stream = Lines(response)
    connect = (await stream.next())["connect"]
    for _ in range(2):
        assert await stream.until(lambda m: m == {}, timeout=4) == {}
        body = {"session": connect["session"], "node": connect["node"], "data": "{}"}
        async with server.session.post(server.url + "/emulation", json=body) as answer:
            assert answer.status == 204
    assert "alice" in server.hub.users
    response.close()


@pytest.mark.parametrize("kind", ["uni_sse_get", "uni_sse_post", "uni_http_stream"])
async def test_unidirectional_streams(server, kind):
    token = server.token("bob", channels=["board:u"])
    request = {"token": token}
    if kind == "uni_sse_get":
        response = await server.session.get(
            server.url + "/connection/uni_sse", params={"cf_connect": json.dumps(request)}
        )
    elif kind == "uni_sse_post":
        response = await server.session.post(server.url + "/connection/uni_sse", json=request)
    else:
        response = await server.session.post(
            server.url + "/connection/uni_http_stream", json=request
        )
    assert response.status == 200
    stream = Lines(response, sse=kind.startswith("uni_sse"))
    first = await stream.next()
    assert "board:u" in first["connect"]["subs"]
    for n in range(3):
        await server.publish("board:u", n)
    pubs = [await stream.until(lambda m: "pub" in m) for _ in range(3)]
    assert [(p["channel"], p["pub"]["data"]) for p in pubs] == [("board:u", n) for n in range(3)]
    await server.api("disconnect", {"user": "bob"})
    bye = await stream.until(lambda m: "disconnect" in m)
    assert bye["disconnect"]["code"] == 3503
    response.close()


async def test_unidirectional_refusals_are_http_statuses(server):
    url = server.url + "/connection/uni_sse"
    async with server.session.get(url, params={"cf_connect": '{"token": "bad"}'}) as response:
        assert response.status == 401
    async with server.session.get(url, params={"cf_connect": "{nope"}) as response:
        assert response.status == 400
    async with server.session.get(url) as response:
        assert response.status == 400
        assert "token" in (await response.json())["error"]


async def test_uni_websocket(server):
    token = server.token("carol", channels=["board:w"])
    ws = await server.session.ws_connect(server.url + "/connection/uni_websocket")
    await ws.send_str(json.dumps({"token": token}))
    first = orjson.loads((await ws.receive(timeout=5)).data)
    assert "board:w" in first["connect"]["subs"]
    await server.publish("board:w", "hello")
    while True:
        message = orjson.loads((await ws.receive(timeout=5)).data)
        if "pub" in message:
            break
    assert message == {"channel": "board:w", "pub": {"data": "hello", "offset": 1}}
    await server.api("disconnect", {"user": "carol", "disconnect": {"code": 4500, "reason": "bye"}})
    closing = await ws.receive(timeout=5)
    assert (closing.type, closing.data, closing.extra) == (aiohttp.WSMsgType.CLOSE, 4500, "bye")


async def test_uni_websocket_with_bad_token_closes_3500(server):
    ws = await server.session.ws_connect(
        server.url + "/connection/uni_websocket?cf_connect=" + json.dumps({"token": "x.y.z"})
    )
    closing = await ws.receive(timeout=5)
    assert (closing.type, closing.data) == (aiohttp.WSMsgType.CLOSE, 3500)


# --- polling ----------------------------------------------------------------------------
class Poller:
    """A polling client as the spec describes it (what pushgate.js does)."""

    def __init__(self, server, path: str = "/connection/longpoll") -> None:
        self.server = server
        self.url = server.url + path
        self.session_id = ""
        self.rid = 0
        self.ack = 0

    async def request(self, commands: list | None = None, *, rid: int | None = None) -> dict:
        if rid is None:
            self.rid += 1
            rid = self.rid
        body: dict = {"rid": rid, "ack": self.ack, "commands": commands or []}
        if self.session_id:
            body["session"] = self.session_id
        async with self.server.session.post(self.url, json=body) as response:
            answer = await response.json()
            answer["_status"] = response.status
        if response.status == 200:
            self.session_id = answer["session"]
        return answer

    def take(self, answer: dict) -> list[dict]:
        """Messages not seen before, acknowledging them."""
        fresh = [m for seq, m in answer["messages"] if seq > self.ack]
        if answer["messages"]:
            self.ack = max(self.ack, answer["messages"][-1][0])
        return fresh


async def test_longpoll_session_delivers_in_order_and_holds(server):
    poller = Poller(server)
    first = await poller.request(
        [
            {"id": 1, "connect": {"token": server.token("dave")}},
            {"id": 2, "subscribe": {"channel": "board:lp"}},
        ]
    )
    replies = poller.take(first)
    assert replies[0]["connect"]["session"] == poller.session_id
    assert replies[1]["id"] == 2
    # a held request answers as soon as something is published
    held = asyncio.create_task(poller.request())
    await asyncio.sleep(0)  # let the request reach the server
    for n in range(3):
        await server.publish("board:lp", n)
    answer = await asyncio.wait_for(held, 5)
    got = [m["push"]["pub"]["data"] for m in poller.take(answer) if "pub" in m.get("push", {})]
    while len(got) < 3:
        answer = await poller.request()
        got += [m["push"]["pub"]["data"] for m in poller.take(answer) if "pub" in m.get("push", {})]
    assert got == [0, 1, 2]


async def test_lost_response_is_resent_and_retried_commands_do_not_run_twice(server):
    poller = Poller(server, "/connection/poll")
    poller.take(await poller.request([{"id": 1, "connect": {"token": server.token("erin")}}]))
    subscribe = [{"id": 2, "subscribe": {"channel": "board:lost"}}]
    await poller.request(subscribe)  # its response is "lost": nothing is taken or acked
    await server.publish("board:lost", "x")
    retry = await poller.request(subscribe, rid=poller.rid)  # same rid: a retry
    messages = poller.take(retry)
    replies = [m for m in messages if m.get("id") == 2]
    assert len(replies) == 1 and "error" not in replies[0], messages  # not "already subscribed"
    assert [m["push"]["pub"]["data"] for m in messages if "pub" in m.get("push", {})] == ["x"]
    # once acknowledged, a message is not sent again
    assert poller.take(await poller.request()) == []


async def test_short_poll_answers_at_once(server):
    poller = Poller(server, "/connection/poll")
    poller.take(await poller.request([{"id": 1, "connect": {"token": server.token("fay")}}]))
    answer = await asyncio.wait_for(poller.request(), 2)
    assert answer["messages"] == []


async def test_idle_polling_session_expires_and_user_goes_offline(make_server, server_config):
    server = await make_server(server_config(polling__session_timeout="1s"))
    poller = Poller(server, "/connection/poll")
    poller.take(await poller.request([{"id": 1, "connect": {"token": server.token("gus")}}]))
    assert "gus" in server.hub.users
    async with asyncio.timeout(5):
        while "gus" in server.hub.users:
            await asyncio.sleep(0.05)
    answer = await poller.request()
    assert answer["_status"] == 404 and answer["error"] == "unknown session"


async def test_polling_disconnect_is_delivered_then_session_ends(server):
    poller = Poller(server, "/connection/poll")
    poller.take(await poller.request([{"id": 1, "connect": {"token": server.token("hal")}}]))
    await server.api("disconnect", {"user": "hal", "disconnect": {"code": 4001, "reason": "re"}})
    messages = poller.take(await poller.request())
    assert messages[-1]["push"]["disconnect"] == {"code": 4001, "reason": "re", "reconnect": True}
    acknowledged = await poller.request()
    assert (acknowledged["_status"], acknowledged["messages"]) == (200, [])
    assert (await poller.request())["_status"] == 404


@pytest.mark.parametrize(
    "body",
    [b"{", b"[]", b'{"rid": -1}', b'{"commands": {}}', b'{"commands": [{"id": 1, "ping": {}}]}'],
)
async def test_bad_polling_requests_get_400(server, body):
    async with server.session.post(server.url + "/connection/longpoll", data=body) as response:
        assert response.status == 400
        assert "error" in await response.json()


# --- origins ----------------------------------------------------------------------------
async def test_cors_preflight_and_headers(make_server, server_config):
    server = await make_server(server_config(server__allowed_origins="https://app.example"))
    url = server.url + "/connection/longpoll"
    preflight = {
        "Origin": "https://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    async with server.session.options(url, headers=preflight) as response:
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert "POST" in response.headers["Access-Control-Allow-Methods"]
    evil = {**preflight, "Origin": "https://evil.example"}
    async with server.session.options(url, headers=evil) as response:
        assert response.status == 403
    body = {"rid": 1, "commands": [{"id": 1, "connect": {"token": server.token("ivy")}}]}
    async with server.session.post(url, json=body, headers={"Origin": "https://evil.example"}) as r:
        assert r.status == 403
    async with server.session.post(url, json=body, headers={"Origin": "https://app.example"}) as r:
        assert r.status == 200
        assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert r.headers["Access-Control-Allow-Credentials"] == "true"
    for path in ("/connection/uni_sse", "/connection/sse", "/emulation"):
        async with server.session.get(
            server.url + path, headers={"Origin": "https://evil.example"}
        ) as r:
            assert r.status == 403, path
    # the server API is not browser-facing: no CORS, key required as ever
    reply = await server.api("info", {})
    assert reply["_status"] == 200 and API_KEY


async def test_uni_sse_recovers_from_last_event_id(server):
    """What a browser EventSource does on its own when its stream breaks."""
    token = server.token("bob", channels=["board:resume"])
    url = server.url + "/connection/uni_sse"
    params = {"cf_connect": json.dumps({"token": token})}
    response = await server.session.get(url, params=params)
    for n in range(1, 4):
        await server.publish("board:resume", n)
    ids = []
    while len(ids) < 3:
        line = (await response.content.readline()).strip()
        if line.startswith(b"id: "):
            ids.append(line[4:].decode())
    response.close()  # the cut
    for n in range(4, 7):
        await server.publish("board:resume", n)
    again = await server.session.get(url, params=params, headers={"Last-Event-ID": ids[1]})
    stream = Lines(again, sse=True)
    connect = await stream.until(lambda m: "connect" in m)
    assert connect["connect"]["subs"]["board:resume"]["recovered"] is True
    # the reply carries what was missed after the acknowledged event (3 was in flight)
    recovered = [p["data"] for p in connect["connect"]["subs"]["board:resume"]["publications"]]
    assert recovered == [3, 4, 5, 6]
    again.close()


async def test_polling_client_can_end_its_session(server):
    poller = Poller(server, "/connection/poll")
    poller.take(await poller.request([{"id": 1, "connect": {"token": server.token("ida")}}]))
    assert "ida" in server.hub.users
    async with server.session.post(
        poller.url, json={"session": poller.session_id, "rid": 9, "ack": poller.ack, "close": True}
    ) as response:
        assert response.status == 200
    assert "ida" not in server.hub.users
    assert (await poller.request())["_status"] == 404
