"""The Protobuf protocol on every transport, with raw clients that check the bytes.

- WebSocket: ``centrifuge-protobuf`` is selected in the 101 and every message is a
  binary frame of length-delimited replies; ``cf_protocol=protobuf`` does the same
  without a subprotocol; pings are empty Replies answered by empty Commands;
- http_stream: an ``application/octet-stream`` body of delimited commands, a stream of
  delimited replies, ``EmulationRequest`` messages on /emulation;
- uni_websocket and uni_http_stream: a bare ``ConnectRequest``, then delimited Pushes;
- what cannot be spoken is refused with HTTP 400 and a JSON error before any upgrade
  or stream: an unknown subprotocol or cf_protocol, protobuf on SSE or polling;
- a broadcast is encoded once per (protocol, uni/bidi, framing), whatever the count
  of subscribers.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from pushgate.protocol.centrifugo import client_pb2 as pb
from pushgate.protocol.centrifugo import codecs
from pushgate.protocol.centrifugo.protobuf_codec import read_varint, varint

OCTETS = {"Content-Type": "application/octet-stream"}


def delimited(*messages) -> bytes:
    return b"".join(varint(m.ByteSize()) + m.SerializeToString() for m in messages)


def replies(frame: bytes, kind=pb.Reply) -> list:
    out, pos = [], 0
    while pos < len(frame):
        size, pos = read_varint(frame, pos)
        out.append(kind.FromString(frame[pos : pos + size]))
        pos += size
    return out


class PbWebSocket:
    """An aiohttp WebSocket speaking protobuf: every message must be a binary frame."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, kind=pb.Reply) -> None:
        self.ws = ws
        self.kind = kind
        self.pending: list = []

    async def send(self, *commands: pb.Command) -> None:
        await self.ws.send_bytes(delimited(*commands))

    async def next(self, timeout: float = 5.0):
        while not self.pending:
            message = await self.ws.receive(timeout=timeout)
            assert message.type == aiohttp.WSMsgType.BINARY, message
            self.pending.extend(replies(message.data, self.kind))
        return self.pending.pop(0)

    async def until(self, predicate, timeout: float = 5.0):
        async with asyncio.timeout(timeout):
            while not predicate(reply := await self.next()):
                pass
        return reply


class PbStream:
    """Delimited messages read from a streamed response."""

    def __init__(self, response: aiohttp.ClientResponse, kind=pb.Reply) -> None:
        self.response = response
        self.kind = kind
        self.buffer = b""

    async def next(self, timeout: float = 5.0):
        async with asyncio.timeout(timeout):
            while True:
                if self.buffer:
                    try:
                        size, pos = read_varint(self.buffer, 0)
                    except Exception:
                        size, pos = -1, 0
                    if size >= 0 and pos + size <= len(self.buffer):
                        message = self.buffer[pos : pos + size]
                        self.buffer = self.buffer[pos + size :]
                        return self.kind.FromString(message)
                chunk = await self.response.content.readany()
                assert chunk, "stream ended"
                self.buffer += chunk

    async def until(self, predicate, timeout: float = 5.0):
        async with asyncio.timeout(timeout):
            while not predicate(reply := await self.next()):
                pass
        return reply


def connect_command(token: str) -> pb.Command:
    return pb.Command(id=1, connect=pb.ConnectRequest(token=token))


def subscribe_command(command_id: int, channel: str) -> pb.Command:
    return pb.Command(id=command_id, subscribe=pb.SubscribeRequest(channel=channel))


def is_pub(channel: str):
    return lambda r: r.HasField("push") and r.push.HasField("pub") and r.push.channel == channel


# --- WebSocket -----------------------------------------------------------------------------
async def test_websocket_selects_centrifuge_protobuf_and_speaks_binary(server):
    ws = await server.session.ws_connect(server.ws_url, protocols=("centrifuge-protobuf",))
    assert ws.protocol == "centrifuge-protobuf"
    client = PbWebSocket(ws)
    await client.send(connect_command(server.token("alice")), subscribe_command(2, "board:1"))
    connect = await client.next()
    assert connect.id == 1 and connect.connect.client and connect.connect.version
    subscribe = await client.next()
    assert subscribe.id == 2 and subscribe.subscribe.recoverable and subscribe.subscribe.epoch
    published = await server.publish("board:1", {"n": 1})
    pub = await client.until(is_pub("board:1"))
    assert (pub.push.pub.data, pub.push.pub.offset) == (b'{"n":1}', published["offset"])
    await client.send(pb.Command(id=3, subscribe=pb.SubscribeRequest(channel="nope:1")))
    error = await client.next()
    assert (error.id, error.error.code, error.error.message) == (3, 102, "unknown channel")
    await ws.close()


async def test_request_types_pushgate_does_not_have_are_refused_not_misread(server):
    """Map and shared-poll subscriptions, map publishes, track/untrack (``type`` > 0):
    error 108, never served as a plain stream subscription or publication."""
    ws = await server.session.ws_connect(server.ws_url, protocols=("centrifuge-protobuf",))
    client = PbWebSocket(ws)
    await client.send(
        connect_command(server.token("alice")),
        pb.Command(id=2, subscribe=pb.SubscribeRequest(channel="board:m", type=1)),
        pb.Command(id=3, publish=pb.PublishRequest(channel="board:m", data=b"1", type=1)),
        pb.Command(id=4, sub_refresh=pb.SubRefreshRequest(channel="board:m", type=1)),
        subscribe_command(5, "board:m"),
    )
    await client.next()
    for command_id, method in ((2, "subscribe"), (3, "publish"), (4, "sub_refresh")):
        reply = await client.next()
        assert (reply.id, reply.error.code) == (command_id, 108)
        assert reply.error.message.startswith(f"not available: {method} type 1 (map)")
    assert (await client.next()).subscribe.recoverable  # the connection goes on
    await ws.close()


@pytest.mark.parametrize(
    ("protocols", "query", "selected", "binary"),
    [
        (("centrifuge-json",), "", "centrifuge-json", False),
        ((), "?cf_protocol=protobuf", None, True),
        ((), "?format=protobuf", None, True),
        ((), "?cf_protocol=json", None, False),
        (("foo", "centrifuge-protobuf"), "", "centrifuge-protobuf", True),
        (("centrifuge-protobuf",), "?cf_protocol=protobuf", "centrifuge-protobuf", True),
    ],
)
async def test_websocket_negotiation(server, protocols, query, selected, binary):
    ws = await server.session.ws_connect(server.ws_url + query, protocols=protocols)
    assert ws.protocol == selected
    if binary:
        client = PbWebSocket(ws)
        await client.send(connect_command(server.token("alice")))
        assert (await client.next()).connect.client
    else:
        await ws.send_str(json.dumps({"id": 1, "connect": {"token": server.token("alice")}}))
        message = await ws.receive(timeout=5)
        assert message.type == aiohttp.WSMsgType.TEXT
        assert json.loads(message.data)["connect"]["client"]
    await ws.close()


@pytest.mark.parametrize(
    ("path", "headers", "error"),
    [
        ("/connection/websocket", {"Sec-WebSocket-Protocol": "mqtt"}, "subprotocol mqtt"),
        ("/connection/websocket?cf_protocol=xyz", {}, "cf_protocol='xyz'"),
        ("/connection/websocket?format=msgpack", {}, "format='msgpack'"),
        (
            "/connection/websocket?cf_protocol=protobuf",
            {"Sec-WebSocket-Protocol": "centrifuge-json"},
            "asks for json but cf_protocol asks for protobuf",
        ),
        ("/connection/uni_websocket", {"Sec-WebSocket-Protocol": "v12.stomp"}, "subprotocol"),
        ("/connection/uni_websocket?cf_protocol=xml", {}, "cf_protocol='xml'"),
    ],
)
async def test_websocket_refusals_are_400_before_the_upgrade(server, path, headers, error):
    upgrade = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        **headers,
    }
    async with server.session.get(server.url + path, headers=upgrade) as response:
        assert response.status == 400
        body = await response.json()
        assert error in body["error"], body


async def test_websocket_pings_are_empty_replies_answered_by_empty_commands(
    make_server, server_config
):
    server = await make_server(
        server_config(client__ping_interval="1s", client__pong_timeout="0.5s")
    )
    ws = await server.session.ws_connect(server.ws_url, protocols=("centrifuge-protobuf",))
    client = PbWebSocket(ws)
    await client.send(connect_command(server.token("alice")), subscribe_command(2, "board:p"))
    connect = await client.next()
    assert connect.connect.ping == 1 and connect.connect.pong
    await client.next()
    for _ in range(2):  # past the pong timeout: unanswered, the server would close
        while (message := await ws.receive(timeout=5)).data != b"\x00":
            assert message.type == aiohttp.WSMsgType.BINARY  # e.g. our own join push
        await ws.send_bytes(b"\x00")  # the pong: an empty Command
    await server.publish("board:p", "still here")
    pub = await client.until(is_pub("board:p"))
    assert pub.push.pub.data == b'"still here"'
    await ws.close()


# --- HTTP streaming with emulation ---------------------------------------------------------
async def test_http_stream_protobuf_with_emulation_requests(server):
    response = await server.session.post(
        server.url + "/connection/http_stream",
        data=delimited(connect_command(server.token("alice"))),
        headers=OCTETS,
    )
    assert response.headers["Content-Type"] == "application/octet-stream"
    stream = PbStream(response)
    connect = (await stream.next()).connect
    assert connect.session and connect.node and connect.pong

    request = pb.EmulationRequest(
        session=connect.session, node=connect.node, data=delimited(subscribe_command(2, "board:e"))
    )
    async with server.session.post(
        server.url + "/emulation", data=request.SerializeToString(), headers=OCTETS
    ) as posted:
        assert posted.status == 204
    assert (await stream.next()).subscribe.recoverable
    await server.publish("board:e", [1, 2])
    pub = await stream.until(is_pub("board:e"))
    assert pub.push.pub.data == b"[1,2]"

    # the session speaks protobuf: JSON commands for it are refused, and said why
    body = {"session": connect.session, "node": connect.node, "data": '{"id":3,"ping":{}}'}
    async with server.session.post(server.url + "/emulation", json=body) as posted:
        assert posted.status == 400
        assert "speaks protobuf" in (await posted.json())["error"]
    async with server.session.post(
        server.url + "/emulation", data=b"\x0a\xff", headers=OCTETS
    ) as posted:
        assert posted.status == 400
        assert "emulation request" in (await posted.json())["error"]
    response.close()


async def test_http_stream_bad_protobuf_is_a_bad_request_disconnect(server):
    response = await server.session.post(
        server.url + "/connection/http_stream", data=b"\x05\x08", headers=OCTETS
    )
    disconnect = (await PbStream(response).next()).push.disconnect
    assert (disconnect.code, disconnect.reason, disconnect.reconnect) == (
        3501,
        "bad request",
        False,
    )


@pytest.mark.parametrize(
    ("method", "path", "error"),
    [
        ("POST", "/connection/http_stream?cf_protocol=xyz", "cf_protocol='xyz'"),
        ("POST", "/connection/uni_http_stream?cf_protocol=cbor", "cf_protocol='cbor'"),
        ("GET", "/connection/sse?cf_protocol=protobuf&cf_connect=%7B%7D", "SSE carries text"),
        ("GET", "/connection/uni_sse?cf_protocol=protobuf&cf_connect=%7B%7D", "SSE carries text"),
        ("POST", "/connection/longpoll?cf_protocol=protobuf", "polling carries the JSON"),
        ("POST", "/connection/poll?cf_protocol=protobuf", "polling carries the JSON"),
    ],
)
async def test_http_refusals_are_400_with_a_reason(server, method, path, error):
    async with server.session.request(method, server.url + path, data=b"{}") as response:
        assert response.status == 400
        assert error in (await response.json())["error"]


async def test_protobuf_connect_in_sse_cf_connect_is_refused_so_the_client_moves_on(server):
    """centrifuge-js's protobuf build, trying SSE, writes its connect command's bytes as
    comma-separated numbers; refused with 400, an EventSource fails for good (no retry)
    and centrifuge-js goes on to its next transport."""
    frame = delimited(connect_command(server.token("alice")))
    as_text = ",".join(str(b) for b in frame)
    async with server.session.get(
        server.url + "/connection/sse", params={"cf_connect": as_text}
    ) as response:
        assert response.status == 400
        assert "SSE carries text" in (await response.json())["error"]


# --- unidirectional ----------------------------------------------------------------------
async def test_uni_websocket_protobuf(server):
    token = server.token("alice", channels=["board:uni"])
    ws = await server.session.ws_connect(
        server.url + "/connection/uni_websocket", protocols=("centrifuge-protobuf",)
    )
    assert ws.protocol == "centrifuge-protobuf"
    await ws.send_bytes(pb.ConnectRequest(token=token).SerializeToString())
    client = PbWebSocket(ws, kind=pb.Push)
    connect = await client.next()
    assert connect.connect.client and "board:uni" in connect.connect.subs
    await server.publish("board:uni", {"to": "uni"})
    pub = await client.until(lambda p: p.HasField("pub"))
    assert (pub.channel, pub.pub.data) == ("board:uni", b'{"to":"uni"}')
    await ws.close()


async def test_uni_websocket_protobuf_pushes_with_a_json_cf_connect(server):
    token = server.token("alice", channels=["board:uni2"])
    query = json.dumps({"token": token})
    ws = await server.session.ws_connect(
        server.url + "/connection/uni_websocket",
        params={"cf_connect": query, "cf_protocol": "protobuf"},
    )
    client = PbWebSocket(ws, kind=pb.Push)
    assert (await client.next()).connect.subs["board:uni2"].recoverable
    await ws.close()


async def test_uni_http_stream_protobuf(server):
    token = server.token("alice", channels=["board:unis"])
    response = await server.session.post(
        server.url + "/connection/uni_http_stream",
        data=pb.ConnectRequest(token=token).SerializeToString(),
        headers=OCTETS,
    )
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/octet-stream"
    stream = PbStream(response, kind=pb.Push)
    assert "board:unis" in (await stream.next()).connect.subs
    for n in range(3):
        await server.publish("board:unis", n)
    pubs = [await stream.until(lambda p: p.HasField("pub")) for _ in range(3)]
    assert [p.pub.data for p in pubs] == [b"0", b"1", b"2"]
    assert [p.pub.offset for p in pubs] == [1, 2, 3]
    response.close()


async def test_uni_http_stream_protobuf_bad_token_is_401(server):
    async with server.session.post(
        server.url + "/connection/uni_http_stream",
        data=pb.ConnectRequest(token="x.y.z").SerializeToString(),
        headers=OCTETS,
    ) as response:
        assert response.status == 401


# --- encode once ---------------------------------------------------------------------------
async def test_a_broadcast_is_encoded_once_per_protocol_and_framing(server, monkeypatch):
    calls: list[str] = []
    for codec_class in (codecs.JsonCodec, codecs.ProtobufCodec):
        original = codec_class.pub_push

        def counting(channel, pub, uni=False, _original=original, _name=codec_class.name):
            calls.append(_name)
            return _original(channel, pub, uni)

        monkeypatch.setattr(codec_class, "pub_push", staticmethod(counting))

    protobuf = []
    for n in range(5):
        ws = await server.session.ws_connect(server.ws_url, protocols=("centrifuge-protobuf",))
        client = PbWebSocket(ws)
        await client.send(connect_command(server.token(f"p{n}")), subscribe_command(2, "board:x"))
        await client.next()
        await client.next()
        protobuf.append(client)
    json_clients = []
    for n in range(3):
        ws = await server.session.ws_connect(server.ws_url)
        await ws.send_str(json.dumps({"id": 1, "connect": {"token": server.token(f"j{n}")}}))
        await ws.receive(timeout=5)
        await ws.send_str(json.dumps({"id": 2, "subscribe": {"channel": "board:x"}}))
        await ws.receive(timeout=5)
        json_clients.append(ws)
    stream = await server.session.post(
        server.url + "/connection/http_stream",
        data=delimited(connect_command(server.token("s")), subscribe_command(2, "board:x")),
        headers=OCTETS,
    )
    streamed = PbStream(stream)
    await streamed.next()
    await streamed.next()

    calls.clear()
    await server.publish("board:x", {"once": True})
    for client in protobuf:
        assert (await client.until(is_pub("board:x"))).push.pub.data == b'{"once":true}'
    for ws in json_clients:
        while "pub" not in (push := json.loads((await ws.receive(timeout=5)).data)["push"]):
            pass  # joins of the later subscribers
        assert push["pub"]["data"] == {"once": True}
    await streamed.until(is_pub("board:x"))
    # 5 protobuf WebSockets: one encode; the protobuf stream (another framing): one; the
    # 3 JSON WebSockets: one
    assert sorted(calls) == ["json", "protobuf", "protobuf"]
    stream.close()
