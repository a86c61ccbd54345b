"""A raw RFC 6455 client: any frame, well-formed or not, written byte for byte.

Only for tests: it sends frames with chosen FIN/RSV bits, opcode, mask (or none) and
payload, and reads the server's frames back without judging them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
from dataclasses import dataclass

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


@dataclass
class Frame:
    fin: bool
    rsv: int
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        if self.opcode != CLOSE:
            return None
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else 1005


def encode(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
    length: int | None = None,
) -> bytes:
    """One frame; ``length`` overrides the announced payload length."""
    size = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if mask else 0
    if size < 126:
        head += bytes([mask_bit | size])
    elif size < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", size)
    if not mask:
        return head + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


class RawWebSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.headers: dict[str, str] = {}
        self.status = 0

    @classmethod
    async def connect(
        cls,
        url: str,
        path: str,
        *,
        protocols: tuple[str, ...] = (),
        extensions: str = "",
        early: bytes = b"",
    ) -> RawWebSocket:
        """Open a WebSocket; ``early`` bytes go out with the request, before the 101."""
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if protocols:
            lines.append("Sec-WebSocket-Protocol: " + ", ".join(protocols))
        if extensions:
            lines.append("Sec-WebSocket-Extensions: " + extensions)
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + early)
        ws = cls(reader, writer)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        ws.status = int(status_line.split()[1])
        for line in header_lines:
            if ":" in line:
                name, value = line.split(":", 1)
                ws.headers[name.strip().lower()] = value.strip()
        if ws.status == 101:
            # RFC 6455 4.2.2: the accept value proves the server read this handshake
            digest = hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode())
            expected = base64.b64encode(digest.digest()).decode()
            assert ws.headers.get("sec-websocket-accept") == expected, ws.headers
        return ws

    def send(self, opcode: int, payload: bytes = b"", **options) -> None:
        self.writer.write(encode(opcode, payload, **options))

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def recv(self, timeout: float = 5.0) -> Frame | None:
        """The next frame, or None when the server closed the TCP connection."""
        try:
            async with asyncio.timeout(timeout):
                first, second = await self.reader.readexactly(2)
                size = second & 0x7F
                if size == 126:
                    size = struct.unpack("!H", await self.reader.readexactly(2))[0]
                elif size == 127:
                    size = struct.unpack("!Q", await self.reader.readexactly(8))[0]
                key = await self.reader.readexactly(4) if second & 0x80 else b""
                payload = await self.reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        if key:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        return Frame(bool(first & 0x80), (first >> 4) & 7, first & 0x0F, payload)

    async def recv_until(self, opcode: int, timeout: float = 5.0) -> Frame | None:
        """Skip other frames (pushes, pings) up to one with ``opcode``; None if closed."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv(timeout)
                if frame is None or frame.opcode == opcode:
                    return frame

    async def close_code(self, timeout: float = 5.0) -> int | None:
        """The code of the server's close frame (None: TCP closed without one)."""
        frame = await self.recv_until(CLOSE, timeout)
        return None if frame is None else frame.close_code

    async def tcp_closed(self, timeout: float = 5.0) -> bool:
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        return True

    def abort(self) -> None:
        self.writer.transport.abort()
