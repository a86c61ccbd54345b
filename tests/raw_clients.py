"""Clients on plain asyncio sockets, one per dialect and transport, for tests that need
exact control of the bytes: a client that stops reading (slow readers), drops its socket
without a word, or makes no garbage of its own (tests/hub/test_gc_cycles.py).

Each opener connects, authenticates with the token it is given, subscribes to the
channels it is given and returns once the server has confirmed all of it.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from collections.abc import Callable
from typing import Self
from urllib.parse import quote

import orjson

HOST = "127.0.0.1"
WAIT = 10.0
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"


class RawSocket:
    """A TCP client on asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, request: bytes = b"", rcvbuf: int = 0) -> Self:
        """``rcvbuf``: a small kernel receive buffer, so a client that stops reading
        backs the server's writes up after a few KiB rather than megabytes."""
        if rcvbuf:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (HOST, port))
            reader, writer = await asyncio.open_connection(sock=sock)
        else:
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

    def stop_reading(self) -> None:
        """From now on nothing is read: what the server writes backs up."""
        self.writer.transport.pause_reading()

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
    async def open(cls, port: int, path: str, protocol: str = "", rcvbuf: int = 0) -> Self:
        key = base64.b64encode(os.urandom(16)).decode()
        extra = f"Sec-WebSocket-Protocol: {protocol}\r\n" if protocol else ""
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
        ws = await cls.connect(port, request.encode(), rcvbuf)
        head = await ws.reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return ws

    def send(self, data: str | bytes, opcode: int = 1) -> None:
        payload = data.encode() if isinstance(data, str) else data
        mask = os.urandom(4)
        size = len(payload)
        if size < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
        elif size < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
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


# --- one opener per dialect and transport -------------------------------------------------
def centrifugo_reply(reply_id: int) -> Callable[[bytes], bool]:
    return lambda payload: any(
        orjson.loads(line).get("id") == reply_id for line in payload.split(b"\n") if line
    )


async def centrifugo_websocket(
    port: int, token: str, channels: tuple[str, ...] = (), rcvbuf: int = 0
) -> RawWebSocket:
    """Connected, and subscribed to ``channels`` by subscribe commands."""
    ws = await RawWebSocket.open(port, "/connection/websocket", rcvbuf=rcvbuf)
    ws.send(orjson.dumps({"id": 1, "connect": {"token": token}}))
    await ws.receive_until(centrifugo_reply(1))
    for command_id, channel in enumerate(channels, start=2):
        ws.send(orjson.dumps({"id": command_id, "subscribe": {"channel": channel}}))
        await ws.receive_until(centrifugo_reply(command_id))
    return ws


async def uni_websocket(port: int, token: str, rcvbuf: int = 0) -> RawWebSocket:
    """A unidirectional connection (the token's ``channels`` are its subscriptions)."""
    query = quote(orjson.dumps({"token": token}).decode())
    ws = await RawWebSocket.open(port, f"/connection/uni_websocket?cf_connect={query}", "", rcvbuf)
    await ws.receive_until(lambda payload: b'"connect"' in payload)
    return ws


async def stream(port: int, method: str, path: str, body: str = "", rcvbuf: int = 0) -> RawSocket:
    """An HTTP streaming response, once its connect reply or push came."""
    request = f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len(body)}\r\n"
    raw = await RawSocket.connect(port, f"{request}\r\n{body}".encode(), rcvbuf)
    await raw.read_until(b'"connect"')
    return raw


def _connect_command(token: str) -> str:
    return orjson.dumps({"id": 1, "connect": {"token": token}}).decode()


async def sse(port: int, token: str, rcvbuf: int = 0) -> RawSocket:
    """Bidirectional SSE (the token's ``channels`` are its subscriptions)."""
    query = quote(_connect_command(token))
    return await stream(port, "GET", f"/connection/sse?cf_connect={query}", rcvbuf=rcvbuf)


async def http_stream(port: int, token: str, rcvbuf: int = 0) -> RawSocket:
    """Bidirectional HTTP streaming (the token's ``channels`` are its subscriptions)."""
    return await stream(port, "POST", "/connection/http_stream", _connect_command(token), rcvbuf)


async def uni_sse(port: int, token: str, rcvbuf: int = 0) -> RawSocket:
    query = quote(orjson.dumps({"token": token}).decode())
    return await stream(port, "GET", f"/connection/uni_sse?cf_connect={query}", rcvbuf=rcvbuf)


async def uni_http_stream(port: int, token: str, rcvbuf: int = 0) -> RawSocket:
    body = orjson.dumps({"token": token}).decode()
    return await stream(port, "POST", "/connection/uni_http_stream", body, rcvbuf)


def _stomp_connect(token: str) -> str:
    return f"CONNECT\naccept-version:1.2\nhost:/\npasscode:{token}\n\n\x00"


def _stomp_subscribe(receipt: int, channel: str) -> str:
    return f"SUBSCRIBE\nid:{receipt}\ndestination:/topic/{channel}\nreceipt:{receipt}\n\n\x00"


async def stomp_websocket(
    port: int, token: str, channels: tuple[str, ...] = (), rcvbuf: int = 0
) -> RawWebSocket:
    ws = await RawWebSocket.open(port, "/stomp", "v12.stomp", rcvbuf)
    ws.send(_stomp_connect(token))
    await ws.receive_until(lambda payload: payload.startswith(b"CONNECTED"))
    for receipt, channel in enumerate(channels, start=1):
        ws.send(_stomp_subscribe(receipt, channel))
        await ws.receive_until(
            lambda p, r=receipt: p.startswith(f"RECEIPT\nreceipt-id:{r}".encode())
        )
    return ws


async def stomp_tcp(
    port: int, token: str, channels: tuple[str, ...] = (), rcvbuf: int = 0
) -> RawSocket:
    raw = await RawSocket.connect(port, _stomp_connect(token).encode(), rcvbuf)
    await raw.read_until(b"CONNECTED")
    for receipt, channel in enumerate(channels, start=1):
        raw.writer.write(_stomp_subscribe(receipt, channel).encode())
        await raw.read_until(f"receipt-id:{receipt}".encode())
    return raw


async def xmpp_websocket(
    port: int, user: str, token: str, domain: str, rooms: tuple[str, ...] = (), rcvbuf: int = 0
) -> RawWebSocket:
    """Logged in and bound (the token's ``channels`` are its subscriptions), and joined
    to ``rooms`` (room@conference.<domain>)."""
    opening = f"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='{domain}' version='1.0'/>"
    ws = await RawWebSocket.open(port, "/xmpp-websocket", "xmpp", rcvbuf)
    ws.send(opening)
    await ws.receive_until(lambda payload: b"mechanisms" in payload)
    credentials = base64.b64encode(f"\0{user}\0{token}".encode()).decode()
    ws.send(
        f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{credentials}</auth>"
    )
    await ws.receive_until(lambda payload: payload.startswith(b"<success"))
    ws.send(opening)
    await ws.receive_until(lambda payload: b"bind" in payload)
    ws.send(f"<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='{NS_BIND}'/></iq>")
    await ws.receive_until(lambda payload: b"<jid>" in payload)
    for room in rooms:
        ws.send(f"<presence xmlns='jabber:client' to='{room}@conference.{domain}/{user}'/>")
        await ws.receive_until(lambda payload, r=room: f"{r}@conference".encode() in payload)
    return ws
