"""STOMP end to end: the wire (a raw client sending exact bytes) and stomp.py over
WebSocket and over the plain TCP listener, against a real pushgate server."""

from __future__ import annotations

import asyncio
import queue
import time

import orjson
import pytest
import stomp

from pushgate.engine.base import Publication
from tests.conftest import free_port
from tests.stomp_client import RawStomp

EXCHANGES = 'exchanges = ["board.events/board.* = board:{1}"]'


def stomp_url(server, path: str = "/stomp") -> str:
    return server.url.replace("http://", "ws://") + path


@pytest.fixture
async def stomp_server(make_server, server_config):
    return await make_server(
        server_config(f"[stomp]\n{EXCHANGES}\nheartbeat_send = 1000\nheartbeat_receive = 1000\n")
    )


@pytest.fixture
async def raw():
    clients: list[RawStomp] = []

    async def open_(url: str, **kw) -> RawStomp:
        client = await RawStomp.websocket(url, **kw)
        clients.append(client)
        return client

    yield open_
    for client in clients:
        await client.close()


def body(frame) -> object:
    return orjson.loads(frame.body)


# --- connecting ------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/stomp", "/ws"])
async def test_connect_negotiates_subprotocol_version_and_heartbeat(stomp_server, raw, path):
    client = await raw(stomp_url(stomp_server, path), protocols=("v12.stomp", "v11.stomp"))
    assert client.protocol == "v12.stomp"
    connected = await client.connect(
        stomp_server.token("alice"), accept_version="1.0,1.1,1.2", heart_beat="0,0"
    )
    assert connected.headers["version"] == "1.2"
    assert connected.headers["heart-beat"] == "1000,1000"
    assert connected.headers["user-name"] == "alice"
    assert connected.headers["server"].startswith("pushgate/")
    assert connected.headers["session"] in stomp_server.hub.clients


async def test_version_from_accept_version_and_unsupported_version(stomp_server, raw):
    client = await raw(stomp_url(stomp_server), protocols=("v11.stomp",))
    assert client.protocol == "v11.stomp"
    connected = await client.connect(stomp_server.token("alice"), accept_version="1.0,1.1")
    assert connected.headers["version"] == "1.1"

    client = await raw(stomp_url(stomp_server))
    await client.send("CONNECT", {"accept-version": "2.0", "host": "/"})
    error = await client.expect("ERROR")
    assert error.headers["version"] == "1.0,1.1,1.2"
    assert b"Supported protocol versions" in error.body
    await client.wait_closed()


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"passcode": "not-a-jwt"}, "invalid token"),
        ({}, "unauthorized"),
        ({"login": "mallory", "passcode": "TOKEN"}, "login does not match the token's subject"),
    ],
)
async def test_bad_credentials_get_error_then_close(stomp_server, raw, headers, message):
    client = await raw(stomp_url(stomp_server))
    headers = {k: stomp_server.token("alice") if v == "TOKEN" else v for k, v in headers.items()}
    await client.send("CONNECT", {"accept-version": "1.2", "host": "/", **headers})
    error = await client.expect("ERROR")
    assert error.headers["message"] == message
    await client.wait_closed()
    await asyncio.sleep(0.05)
    assert not stomp_server.hub.clients


async def test_authorization_header_and_matching_login(stomp_server, raw):
    client = await raw(stomp_url(stomp_server))
    token = stomp_server.token("alice")
    await client.send(
        "STOMP",
        {
            "accept-version": "1.2",
            "host": "/",
            "Authorization": f"Bearer {token}",
            "login": "alice",
        },
    )
    assert (await client.expect("CONNECTED")).headers["user-name"] == "alice"


async def test_frame_before_connect_and_bad_frame_get_error_with_receipt_id(stomp_server, raw):
    client = await raw(stomp_url(stomp_server))
    await client.send("SUBSCRIBE", {"id": "1", "destination": "/topic/board:1", "receipt": "r1"})
    error = await client.expect("ERROR")
    assert (error.headers["message"], error.headers["receipt-id"]) == ("not connected", "r1")
    await client.wait_closed()

    client = await raw(stomp_url(stomp_server))
    await client.connect(stomp_server.token("alice"))
    await client.send_raw(
        b"SEND\ndestination:/topic/board:1\nreceipt:r2\ncontent-length:1\n\nxy\x00"
    )
    error = await client.expect("ERROR")
    assert error.headers["message"] == "frame body not terminated by NUL"
    assert error.headers["receipt-id"] == "r2"
    await client.wait_closed()


# --- framing over WebSocket --------------------------------------------------------------
async def test_several_frames_per_message_split_frames_binary_and_receipts(stomp_server, raw):
    client = await raw(stomp_url(stomp_server))
    await client.connect(stomp_server.token("alice"))
    two = (
        b"SUBSCRIBE\nid:a\ndestination:/topic/board:split\nreceipt:1\n\n\x00\n"
        b"SUBSCRIBE\nid:b\ndestination:/topic/board:other\nreceipt:2\n\n\x00"
    )
    await client.send_raw(two)
    third = b'SEND\ndestination:/topic/board:split\nreceipt:3\ncontent-length:7\n\n{"n":1}\x00'
    await client.send_raw(third[:10], binary=True)
    await client.send_raw(third[10:25])
    await client.send_raw(third[25:], binary=True)
    got = [await client.next() for _ in range(4)]
    assert [(f.command, f.headers.get("receipt-id")) for f in got[:2]] == [
        ("RECEIPT", "1"),
        ("RECEIPT", "2"),
    ]
    kinds = sorted((f.command, f.headers.get("receipt-id", "")) for f in got[2:])
    assert kinds == [("MESSAGE", ""), ("RECEIPT", "3")]
    message = next(f for f in got if f.command == "MESSAGE")
    assert body(message) == {"n": 1}


# --- subscriptions and deliveries ----------------------------------------------------------
async def test_message_headers_order_and_data(stomp_server, raw):
    client = await raw(stomp_url(stomp_server))
    await client.connect(stomp_server.token("alice"))
    receipt = await client.subscribe("s1", "/topic/board:1")
    assert receipt.headers["x-pushgate-offset"] == "0"
    positions = [await stomp_server.publish("board:1", {"n": n}) for n in range(20)]
    messages = [await client.expect("MESSAGE") for _ in range(20)]
    assert [body(m) for m in messages] == [{"n": n} for n in range(20)]
    first = messages[0].headers
    assert first["subscription"] == "s1"
    assert first["destination"] == "/topic/board:1"
    assert first["content-type"] == "application/json"
    assert first["x-pushgate-offset"] == str(positions[0]["offset"])
    assert first["x-pushgate-epoch"] == positions[0]["epoch"]
    assert len({m.headers["message-id"] for m in messages}) == 20
    assert "ack" not in first


async def test_destinations_user_exchange_and_unsupported(stomp_server, raw):
    client = await raw(stomp_url(stomp_server))
    await client.connect(stomp_server.token("alice"))
    await client.subscribe("mine", "/user/notifications")
    await client.subscribe("ex", "/exchange/board.events/board.9")
    await stomp_server.publish("notifications:#alice", "for alice")
    await stomp_server.publish("board:9", "board nine")
    got = {(await client.expect("MESSAGE")).headers["subscription"] for _ in range(2)}
    assert got == {"mine", "ex"}

    for destination in ("/queue/jobs", "/amq/queue/jobs", "/temp-queue/x"):
        other = await raw(stomp_url(stomp_server))
        await other.connect(stomp_server.token("alice"))
        await other.send("SUBSCRIBE", {"id": "q", "destination": destination})
        error = await other.expect("ERROR")
        assert "not supported" in error.headers["message"], error
        await other.wait_closed()


async def test_permissions_are_the_hubs(stomp_server, raw):
    client = await raw(stomp_url(stomp_server))
    await client.connect(stomp_server.token("alice"))
    await client.send("SUBSCRIBE", {"id": "1", "destination": "/topic/notifications:#bob"})
    error = await client.expect("ERROR")
    assert error.headers["message"] == "permission denied"

    client = await raw(stomp_url(stomp_server))
    await client.connect(stomp_server.token("alice"))
    await client.send("SUBSCRIBE", {"id": "1", "destination": "/topic/nope:1"})
    assert (await client.expect("ERROR")).headers["message"] == "unknown channel"

    # a subscription token opens a private channel
    client = await raw(stomp_url(stomp_server))
    await client.connect(stomp_server.token("alice"))
    await client.subscribe(
        "p", "/topic/private:x", x_pushgate_token=stomp_server.sub_token("alice", "private:x")
    )


async def test_send_publishes_where_the_namespace_allows(stomp_server, raw):
    alice = await raw(stomp_url(stomp_server))
    await alice.connect(stomp_server.token("alice"))
    await alice.subscribe("b", "/topic/board:chat")
    await alice.send("SEND", {"destination": "/topic/board:chat", "receipt": "s"}, b'{"hi":1}')
    frames = [await alice.next(), await alice.next()]
    assert {f.command for f in frames} == {"RECEIPT", "MESSAGE"}
    history = await stomp_server.api("history", {"channel": "board:chat", "limit": 10})
    assert [p["data"] for p in history["result"]["publications"]] == [{"hi": 1}]
    # text that is not JSON becomes a JSON string
    await alice.send(
        "SEND", {"destination": "/topic/board:chat", "content-type": "text/plain"}, b"yo"
    )
    assert body(await alice.expect("MESSAGE")) == "yo"
    # notifications do not allow client publishing
    await alice.send("SEND", {"destination": "/user/notifications", "receipt": "x"}, b"1")
    error = await alice.expect("ERROR")
    assert (error.headers["message"], error.headers["receipt-id"]) == ("permission denied", "x")


async def test_unsubscribe_ack_nack_and_shared_channel_ids(stomp_server, raw):
    client = await raw(stomp_url(stomp_server))
    await client.connect(stomp_server.token("alice"))
    await client.subscribe("a", "/topic/board:acks", ack="client-individual")
    await client.subscribe("b", "/topic/board:acks")
    await stomp_server.publish("board:acks", 1)
    messages = {}
    for _ in range(2):
        m = await client.expect("MESSAGE")
        messages[m.headers["subscription"]] = m
    assert messages["a"].headers["ack"] == messages["a"].headers["message-id"]
    assert "ack" not in messages["b"].headers
    assert messages["a"].body == messages["b"].body == b"1"
    await client.send("ACK", {"id": messages["a"].headers["ack"], "receipt": "k"})
    assert (await client.expect("RECEIPT")).headers["receipt-id"] == "k"
    await client.send("NACK", {"id": messages["a"].headers["ack"], "receipt": "n"})
    assert (await client.expect("RECEIPT")).headers["receipt-id"] == "n"

    await client.send("UNSUBSCRIBE", {"id": "a", "receipt": "u"})
    await client.expect("RECEIPT")
    assert "board:acks" in stomp_server.hub.channels  # "b" still holds it
    await stomp_server.publish("board:acks", 2)
    assert (await client.expect("MESSAGE")).headers["subscription"] == "b"
    await client.send("UNSUBSCRIBE", {"id": "b", "receipt": "u2"})
    await client.expect("RECEIPT")
    assert "board:acks" not in stomp_server.hub.channels


async def test_transactions(stomp_server, raw):
    client = await raw(stomp_url(stomp_server))
    await client.connect(stomp_server.token("alice"))
    await client.subscribe("t", "/topic/board:tx")
    await client.send("BEGIN", {"transaction": "tx1"})
    await client.send("SEND", {"destination": "/topic/board:tx", "transaction": "tx1"}, b"1")
    await client.send("SEND", {"destination": "/topic/board:tx", "transaction": "tx1"}, b"2")
    await client.send("BEGIN", {"transaction": "tx2"})
    await client.send("SEND", {"destination": "/topic/board:tx", "transaction": "tx2"}, b"9")
    await client.send("ABORT", {"transaction": "tx2"})
    await client.send("COMMIT", {"transaction": "tx1", "receipt": "c"})
    frames = [await client.next() for _ in range(3)]
    assert [f.body for f in frames if f.command == "MESSAGE"] == [b"1", b"2"]
    await client.send("COMMIT", {"transaction": "tx2"})
    assert (await client.expect("ERROR")).headers["message"] == "unknown transaction"


async def test_recovery_with_since_header(stomp_server, raw):
    client = await raw(stomp_url(stomp_server))
    await client.connect(stomp_server.token("alice"))
    await client.subscribe("r", "/topic/board:rec")
    for n in range(3):
        await stomp_server.publish("board:rec", n)
    last = [await client.expect("MESSAGE") for _ in range(3)][-1]
    since = f"{last.headers['x-pushgate-epoch']}:{last.headers['x-pushgate-offset']}"
    await client.close()

    for n in range(3, 6):
        await stomp_server.publish("board:rec", n)
    client = await raw(stomp_url(stomp_server))
    await client.connect(stomp_server.token("alice"))
    receipt = await client.subscribe("r", "/topic/board:rec", x_pushgate_since=since)
    assert receipt.headers["x-pushgate-recovered"] == "true"
    await stomp_server.publish("board:rec", 6)
    got = [body(await client.expect("MESSAGE")) for _ in range(4)]
    assert got == [3, 4, 5, 6]

    # a position that cannot be recovered is said so, not skipped silently
    client = await raw(stomp_url(stomp_server))
    await client.connect(stomp_server.token("alice"))
    receipt = await client.subscribe("r", "/topic/board:rec", x_pushgate_since="bogus:1")
    assert receipt.headers["x-pushgate-recovered"] == "false"
    marker = await client.expect("MESSAGE")
    assert marker.headers["x-pushgate-recovered"] == "false" and marker.body == b""
    assert marker.headers["x-pushgate-offset"] == "7" or marker.headers["x-pushgate-offset"] == "6"


async def test_stomp_subscriber_counts_in_presence(stomp_server, raw):
    client = await raw(stomp_url(stomp_server))
    connected = await client.connect(stomp_server.token("carol"))
    await client.subscribe("p", "/topic/board:presence")
    presence = await stomp_server.api("presence", {"channel": "board:presence"})
    clients = presence["result"]["presence"]
    assert [(cid, info["user"]) for cid, info in clients.items()] == [
        (connected.headers["session"], "carol")
    ]
    await client.send("DISCONNECT", {"receipt": "bye"})
    assert (await client.expect("RECEIPT")).headers["receipt-id"] == "bye"
    await client.wait_closed()
    await asyncio.sleep(0.1)
    presence = await stomp_server.api("presence", {"channel": "board:presence"})
    assert presence["result"]["presence"] == {}


async def test_server_side_subscription_from_token(stomp_server, raw):
    client = await raw(stomp_url(stomp_server))
    await client.connect(stomp_server.token("alice", channels=["board:srv"]))
    await asyncio.sleep(0.05)
    await stomp_server.publish("board:srv", "pushed")
    message = await client.expect("MESSAGE")
    assert message.headers["subscription"] == "/topic/board:srv"
    assert body(message) == "pushed"


# --- heart-beats ---------------------------------------------------------------------------
async def test_server_sends_heartbeats_and_drops_a_silent_client(stomp_server, raw):
    client = await raw(stomp_url(stomp_server))
    await client.connect(stomp_server.token("alice"), heart_beat="1000,500")
    started = time.monotonic()
    # the client promised a beat every second (max(1000, 1000)) and sends none
    error = await client.expect("ERROR", timeout=5)
    assert error.headers["message"] == "heart-beat timeout"
    await client.wait_closed()
    elapsed = time.monotonic() - started
    assert 1.4 < elapsed < 3.5, elapsed
    assert client.heartbeats >= 1  # the server beat every max(1000, 500) ms meanwhile


async def test_client_beats_keep_the_connection(stomp_server, raw):
    client = await raw(stomp_url(stomp_server))
    await client.connect(stomp_server.token("alice"), heart_beat="1000,0")
    for _ in range(6):
        await asyncio.sleep(0.5)
        await client.send_raw(b"\n")
    assert not client.closed.is_set()
    assert client.frames.empty()


# --- encode once ---------------------------------------------------------------------------
async def test_message_bytes_are_built_once_per_publication(stomp_server, raw):
    clients = []
    for n in range(3):
        client = await raw(stomp_url(stomp_server))
        await client.connect(stomp_server.token(f"u{n}"))
        await client.subscribe(f"id{n}", "/topic/board:once")
        clients.append(client)
    seen: list[Publication] = []
    hub = stomp_server.hub
    original = hub.handle_publication

    def spy(channel, pub, epoch):
        seen.append(pub)
        original(channel, pub, epoch)

    hub.handle_publication = spy
    try:
        await stomp_server.publish("board:once", {"x": 1})
        frames = [await c.expect("MESSAGE") for c in clients]
    finally:
        hub.handle_publication = original
    [pub] = seen
    stomp_keys = {k for k in pub.cache if k[0] == "stomp"}
    assert stomp_keys == {("stomp", True, False)}
    assert pub.message_id == frames[0].headers["message-id"]
    assert [f.headers["subscription"] for f in frames] == ["id0", "id1", "id2"]
    assert len({f.headers["message-id"] for f in frames}) == 1


# --- stomp.py ------------------------------------------------------------------------------
class Collector(stomp.ConnectionListener):
    def __init__(self) -> None:
        self.frames: queue.Queue = queue.Queue()

    def on_message(self, frame):
        self.frames.put(("MESSAGE", frame.headers, frame.body))

    def on_receipt(self, frame):
        self.frames.put(("RECEIPT", frame.headers, frame.body))

    def on_error(self, frame):
        self.frames.put(("ERROR", frame.headers, frame.body))

    async def next(self, timeout: float = 5.0):
        return await asyncio.to_thread(self.frames.get, True, timeout)


async def _stomp_py_round_trip(server, conn) -> None:
    listener = Collector()
    conn.set_listener("collector", listener)
    await asyncio.to_thread(conn.connect, "alice", server.token("alice"), wait=True)
    try:
        conn.subscribe("/topic/board:py", id="py-1", ack="auto", headers={"receipt": "s1"})
        kind, headers, _ = await listener.next()
        assert (kind, headers["receipt-id"]) == ("RECEIPT", "s1")
        await server.publish("board:py", {"from": "api", "text": "a:b\nc"})
        kind, headers, payload = await listener.next()
        assert kind == "MESSAGE"
        assert headers["destination"] == "/topic/board:py"
        assert headers["subscription"] == "py-1"
        assert orjson.loads(payload) == {"from": "api", "text": "a:b\nc"}
        conn.send("/topic/board:py", '{"from": "stomp.py"}', content_type="application/json")
        kind, _, payload = await listener.next()
        assert (kind, orjson.loads(payload)) == ("MESSAGE", {"from": "stomp.py"})
    finally:
        await asyncio.to_thread(conn.disconnect, receipt="bye")


async def test_stomp_py_over_websocket(stomp_server):
    port = int(stomp_server.url.rsplit(":", 1)[1])
    conn = stomp.WSConnection([("127.0.0.1", port)], ws_path="/ws", heartbeats=(1000, 1000))
    await _stomp_py_round_trip(stomp_server, conn)


async def test_stomp_py_over_tcp_listener(make_server, server_config):
    port = free_port()
    server = await make_server(server_config(f"[stomp]\ntcp_port = {port}\n"))
    conn = stomp.Connection12([("127.0.0.1", port)], heartbeats=(0, 0))
    await _stomp_py_round_trip(server, conn)


async def test_raw_tcp_split_frames_and_error_close(make_server, server_config):
    port = free_port()
    server = await make_server(server_config(f"[stomp]\ntcp_port = {port}\n"))
    client = await RawStomp.tcp("127.0.0.1", port)
    try:
        connect = (
            f"CONNECT\naccept-version:1.2\nhost:/\npasscode:{server.token('alice')}\n\n\x00"
        ).encode()
        for i in range(0, len(connect), 7):
            await client.send_raw(connect[i : i + 7])
        await client.expect("CONNECTED")
        await client.subscribe("t", "/topic/board:tcp")
        await server.publish("board:tcp", [1, 2])
        assert body(await client.expect("MESSAGE")) == [1, 2]
        await client.send_raw(b"BOGUS\n\n\x00")
        assert (await client.expect("ERROR")).headers["message"] == "unknown command"
        await client.wait_closed()
    finally:
        await client.close()
