"""A closed connection leaves no reference cycle: reference counting frees all of it.

A node with many connections pays for the cyclic GC in full collections that walk
every object alive; a closed connection that only the collector can free (its
connection, session and client referring to each other) makes that garbage pile up
between collections and the collections more frequent. Each endpoint here opens
connections, subscribes them to two channels, closes them (a close frame from the
client, a disconnect by the server, the client dropping its socket without a word)
and checks that a collection with ``gc.DEBUG_SAVEALL`` finds nothing.

The server runs on uvloop, pushgate's loop in production, where nothing at all may be
left; and on asyncio's own loop, whose socket transports (CPython 3.11) refer to
themselves through a cached bound method: that cycle is the event loop's and is
set aside.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import os
import struct
import time
import types
import weakref
from asyncio import selector_events
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Self
from urllib.parse import quote

import orjson
import pytest
import uvloop
from aiohttp import web

from pushgate.auth import mint_connection_token
from pushgate.hub.hub import Hub
from pushgate.transport.app_keys import OPEN_SOCKETS
from tests.conftest import SECRET, free_port, make_config, start_server

CONNECTIONS = 50
HOST = "127.0.0.1"
WAIT = 10.0
DOMAIN = "pushgate.test"
EXTRA_CONFIG = f"""
[[namespace]]
name = "room"
allow_subscribe_for_client = true
[xmpp]
domain = "{DOMAIN}"
"""
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
OPEN_XMPP = f"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='{DOMAIN}' version='1.0'/>"


class RawSocket:
    """A client on plain asyncio streams: it makes no garbage of its own."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, request: bytes = b"") -> Self:
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(request)
        return cls(reader, writer)

    async def read_until(self, needle: bytes) -> bytes:
        data = b""
        async with asyncio.timeout(WAIT):
            while needle not in data:
                more = await self.reader.read(65536)
                assert more, f"closed before {needle!r} came: {data[-200:]!r}"
                data += more
        return data

    async def closed(self) -> None:
        """Read what comes until the server closes the socket."""
        async with asyncio.timeout(WAIT):
            while await self.reader.read(65536):
                pass
        self.writer.close()

    def abort(self) -> None:
        self.writer.transport.abort()


class RawWebSocket(RawSocket):
    @classmethod
    async def open(cls, port: int, path: str, protocol: str = "") -> RawWebSocket:
        key = base64.b64encode(os.urandom(16)).decode()
        extra = f"Sec-WebSocket-Protocol: {protocol}\r\n" if protocol else ""
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
        ws = await cls.connect(port, request.encode())
        head = await ws.reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return ws

    def send(self, data: str | bytes, opcode: int = 1) -> None:
        payload = data.encode() if isinstance(data, str) else data
        mask = os.urandom(4)
        size = len(payload)
        if size < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
        else:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(head + mask + masked)

    async def receive(self) -> bytes:
        """The next text or binary message's payload."""
        while True:
            first, second = await self.reader.readexactly(2)
            size = second & 0x7F
            if size == 126:
                (size,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif size == 127:
                (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
            payload = await self.reader.readexactly(size)
            if first & 0x0F in (1, 2):
                return payload

    async def receive_until(self, found: Callable[[bytes], bool]) -> bytes:
        async with asyncio.timeout(WAIT):
            while not found(payload := await self.receive()):
                pass
        return payload

    async def close(self) -> None:
        """Send a close frame and read what comes until the server closes the socket."""
        self.send(struct.pack("!H", 1000), opcode=8)
        await self.closed()


# --- one connection per dialect: connect, subscribe to two channels ----------------------
@dataclass
class Ports:
    http: int
    stomp: int


def make_token(user: str, **claims: object) -> str:
    return mint_connection_token(SECRET, user, ttl=3600, **claims)


def centrifugo_reply(reply_id: int) -> Callable[[bytes], bool]:
    return lambda payload: any(
        orjson.loads(line).get("id") == reply_id for line in payload.split(b"\n") if line
    )


async def centrifugo(url: str, token: Callable[..., str], user: str) -> RawWebSocket:
    """``user`` connected to the server at ``url`` and subscribed to two channels
    (also used by tests/test_gc_freeze.py)."""
    ws = await RawWebSocket.open(int(url.rsplit(":", 1)[1]), "/connection/websocket")
    ws.send(orjson.dumps({"id": 1, "connect": {"token": token(user)}}))
    await ws.receive_until(centrifugo_reply(1))
    for command_id, channel in ((2, "board:gc"), (3, "nohistory:gc")):
        ws.send(orjson.dumps({"id": command_id, "subscribe": {"channel": channel}}))
        await ws.receive_until(centrifugo_reply(command_id))
    return ws


async def centrifugo_websocket(ports: Ports, user: str) -> RawWebSocket:
    return await centrifugo(f"http://{HOST}:{ports.http}", make_token, user)


def connect_request(user: str, command: bool = False) -> str:
    """A connect whose token subscribes to two channels (server-side subscriptions)."""
    request = {"token": make_token(user, channels=["board:gc", "notifications:gc"])}
    return orjson.dumps({"id": 1, "connect": request} if command else request).decode()


async def uni(ports: Ports, user: str) -> RawWebSocket:
    path = "/connection/uni_websocket?cf_connect=" + quote(connect_request(user))
    ws = await RawWebSocket.open(ports.http, path)
    await ws.receive_until(lambda payload: b'"connect"' in payload)
    return ws


async def stomp(ports: Ports, user: str) -> RawWebSocket:
    ws = await RawWebSocket.open(ports.http, "/stomp", "v12.stomp")
    ws.send(f"CONNECT\naccept-version:1.2\nhost:/\npasscode:{make_token(user)}\n\n\x00")
    await ws.receive_until(lambda payload: payload.startswith(b"CONNECTED"))
    for receipt, channel in ((1, "board:gc"), (2, "nohistory:gc")):
        ws.send(f"SUBSCRIBE\nid:{receipt}\ndestination:/topic/{channel}\nreceipt:{receipt}\n\n\x00")
        await ws.receive_until(
            lambda p, r=receipt: p.startswith(f"RECEIPT\nreceipt-id:{r}".encode())
        )
    return ws


async def xmpp(ports: Ports, user: str) -> RawWebSocket:
    ws = await RawWebSocket.open(ports.http, "/xmpp-websocket", "xmpp")
    ws.send(OPEN_XMPP)
    await ws.receive_until(lambda payload: b"mechanisms" in payload)
    credentials = base64.b64encode(f"\0{user}\0{make_token(user)}".encode()).decode()
    ws.send(
        f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{credentials}</auth>"
    )
    await ws.receive_until(lambda payload: payload.startswith(b"<success"))
    ws.send(OPEN_XMPP)
    await ws.receive_until(lambda payload: b"bind" in payload)
    ws.send(f"<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='{NS_BIND}'/></iq>")
    await ws.receive_until(lambda payload: b"<jid>" in payload)
    for room in ("gc1", "gc2"):
        ws.send(f"<presence xmlns='jabber:client' to='{room}@conference.{DOMAIN}/{user}'/>")
        await ws.receive_until(lambda payload, r=room: f"{r}@conference".encode() in payload)
    return ws


async def stream(port: int, method: str, path: str, body: str = "") -> RawSocket:
    request = f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len(body)}\r\n"
    raw = await RawSocket.connect(port, f"{request}\r\n{body}".encode())
    await raw.read_until(b'"connect"')
    return raw


async def sse(ports: Ports, user: str) -> RawSocket:
    query = quote(connect_request(user, command=True))
    return await stream(ports.http, "GET", f"/connection/sse?cf_connect={query}")


async def http_stream(ports: Ports, user: str) -> RawSocket:
    return await stream(ports.http, "POST", "/connection/http_stream", connect_request(user, True))


async def uni_sse(ports: Ports, user: str) -> RawSocket:
    query = quote(connect_request(user))
    return await stream(ports.http, "GET", f"/connection/uni_sse?cf_connect={query}")


async def stomp_tcp(ports: Ports, user: str) -> RawSocket:
    raw = await RawSocket.connect(
        ports.stomp,
        f"CONNECT\naccept-version:1.2\nhost:/\npasscode:{make_token(user)}\n\n\x00".encode(),
    )
    await raw.read_until(b"CONNECTED")
    for receipt, channel in ((1, "board:gc"), (2, "nohistory:gc")):
        raw.writer.write(
            f"SUBSCRIBE\nid:{receipt}\ndestination:/topic/{channel}\nreceipt:{receipt}\n\n\x00".encode()
        )
        await raw.read_until(f"receipt-id:{receipt}".encode())
    return raw


DIALECTS: dict[str, Callable[[Ports, str], Awaitable[RawSocket]]] = {
    "centrifugo": centrifugo_websocket,
    "uni": uni,
    "stomp": stomp,
    "xmpp": xmpp,
    "sse": sse,
    "http_stream": http_stream,
    "uni_sse": uni_sse,
    "stomp_tcp": stomp_tcp,
}
WEBSOCKETS = ("centrifugo", "uni", "stomp", "xmpp")
# A stream whose client went away is noticed at its next write (a ping, up to
# client.ping_interval later): streams are closed by the server only.
CASES = [
    *(
        (dialect, how)
        for dialect in WEBSOCKETS
        for how in ("client-close", "server-disconnect", "abort")
    ),
    *((dialect, "server-disconnect") for dialect in ("sse", "http_stream", "uni_sse")),
    ("stomp_tcp", "server-disconnect"),
    ("stomp_tcp", "abort"),
]


# --- the check -------------------------------------------------------------------------
def describe(obj: object) -> str:
    kind = type(obj)
    name = f"{kind.__module__}.{kind.__qualname__}"
    if isinstance(obj, types.FunctionType | types.MethodType):
        name += f" {obj.__qualname__}"
    return name


def loops_own(garbage: list) -> set[int]:
    """Garbage that only asyncio's socket transports reach: their own cycle, not ours."""
    ids = {id(obj) for obj in garbage}
    seen: set[int] = set()
    todo = [obj for obj in garbage if isinstance(obj, selector_events._SelectorTransport)]
    while todo:
        obj = todo.pop()
        if id(obj) not in seen:
            seen.add(id(obj))
            todo.extend(r for r in gc.get_referents(obj) if id(r) in ids)
    return seen


async def wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.01)


async def open_and_close(
    runner: web.AppRunner, hub: Hub, ports: Ports, dialect: str, how: str, count: int
) -> list[weakref.ref]:
    """``count`` connections opened, subscribed and closed; weak references to their
    clients (the hub's object for a connection)."""
    open_sockets = runner.app[OPEN_SOCKETS]
    users = [f"gc-{dialect}-{how}-{i}" for i in range(count)]
    sockets = [await DIALECTS[dialect](ports, user) for user in users]
    await wait_for(lambda: len(hub.clients) == count, "every connection is registered")
    clients = [weakref.ref(client) for client in hub.clients.values()]
    if how == "client-close":
        await asyncio.gather(*(ws.close() for ws in sockets))  # type: ignore[attr-defined]
    elif how == "server-disconnect":
        for user in users:
            await hub.disconnect_user(user)
        await asyncio.gather(*(raw.closed() for raw in sockets))
    else:
        for raw in sockets:
            raw.abort()
    del sockets
    await wait_for(
        lambda: not hub.clients and not hub.users and not hub.channels,
        "the hub has forgotten every connection",
    )
    await wait_for(lambda: open_sockets.count == 0, "every WebSocket is closed")
    # A connection is freed the moment its close completes. One left in a cycle waits
    # for the collector instead: that is not waited for here, the check says what held it.
    deadline = time.monotonic() + 2.0
    while any(ref() is not None for ref in clients) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return clients


async def garbage_of_closed_connections(tmp_path: Path, dialect: str, how: str) -> Counter:
    """What a collection finds after CONNECTIONS connections were opened and closed, by
    type (less the event loop's own transport cycles)."""
    config = make_config(tmp_path, EXTRA_CONFIG, stomp__tcp_port=free_port())
    runner, hub, url = await start_server(config)
    ports = Ports(http=int(url.rsplit(":", 1)[1]), stomp=config.stomp.tcp_port)
    flags = gc.get_debug()
    try:
        # first connections warm caches up (imports, compiled patterns) unchecked
        await open_and_close(runner, hub, ports, dialect, how, 2)
        gc.collect()
        gc.garbage.clear()
        gc.set_debug(gc.DEBUG_SAVEALL)  # from here every collection keeps what it finds
        clients = await open_and_close(runner, hub, ports, dialect, how, CONNECTIONS)
        gc.collect()
        gc.set_debug(flags)
        skip = loops_own(gc.garbage)
        found = Counter(describe(obj) for obj in gc.garbage if id(obj) not in skip)
        gc.garbage.clear()
        if not found:
            assert all(ref() is None for ref in clients), "closed clients are still referenced"
        return found
    finally:
        gc.set_debug(flags)
        gc.garbage.clear()
        await runner.cleanup()


def run(loop: str, coro: Awaitable) -> object:
    factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


@pytest.mark.parametrize(("dialect", "how"), CASES)
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_a_closed_connection_leaves_no_cyclic_garbage(tmp_path, loop, dialect, how):
    found = run(loop, garbage_of_closed_connections(tmp_path, dialect, how))
    total = sum(found.values())
    assert not found, (
        f"{total} objects ({total / CONNECTIONS:.1f} a connection) in reference cycles: "
        f"{found.most_common(12)}"
    )
