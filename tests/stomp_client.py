"""A small asyncio STOMP client for tests, over aiohttp WebSocket or plain TCP, built on
pushgate's own codec (parsing server frames). Third-party clients are tested elsewhere;
this one lets a test send exactly the bytes it wants."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp

from pushgate.protocol.stomp.codec import SERVER_COMMANDS, Frame, FrameParser, encode_frame

WAIT = 5.0


class RawStomp:
    def __init__(self) -> None:
        self.parser = FrameParser(commands=SERVER_COMMANDS, max_frame_bytes=1 << 22)
        self.frames: asyncio.Queue[Frame | None] = asyncio.Queue()
        self.raw: list[bytes] = []
        self.heartbeats = 0
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tcp: asyncio.StreamWriter | None = None
        self._reader: asyncio.Task | None = None

    # --- connecting -------------------------------------------------------------------
    @classmethod
    async def websocket(cls, url: str, protocols=("v12.stomp", "v11.stomp")) -> RawStomp:
        self = cls()
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(url, protocols=protocols, autoping=True)
        self._reader = asyncio.create_task(self._read_ws())
        return self

    @classmethod
    async def tcp(cls, host: str, port: int) -> RawStomp:
        self = cls()
        reader, self._tcp = await asyncio.open_connection(host, port)
        self._reader = asyncio.create_task(self._read_tcp(reader))
        return self

    @property
    def protocol(self) -> str | None:
        return self._ws.protocol if self._ws is not None else None

    def _take(self, data: bytes) -> None:
        self.raw.append(data)
        self.heartbeats += data.count(b"\n") if data.strip(b"\n") == b"" else 0
        for item in self.parser.feed(data):
            assert isinstance(item, Frame), item
            self.frames.put_nowait(item)

    async def _read_ws(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                self._take(message.data.encode())
            elif message.type == aiohttp.WSMsgType.BINARY:
                self._take(message.data)
        self.close_code = self._ws.close_code
        self.closed.set()
        self.frames.put_nowait(None)

    async def _read_tcp(self, reader: asyncio.StreamReader) -> None:
        while data := await reader.read(65536):
            self._take(data)
        self.closed.set()
        self.frames.put_nowait(None)

    # --- sending ----------------------------------------------------------------------
    async def send_raw(self, data: bytes, binary: bool = False) -> None:
        if self._ws is not None:
            if binary:
                await self._ws.send_bytes(data)
            else:
                await self._ws.send_str(data.decode())
        else:
            assert self._tcp is not None
            self._tcp.write(data)
            await self._tcp.drain()

    async def send(self, command: str, headers: dict | None = None, body: bytes = b"") -> None:
        await self.send_raw(encode_frame(command, headers or {}, body))

    async def next(self, timeout: float = WAIT) -> Frame:
        frame = await asyncio.wait_for(self.frames.get(), timeout)
        assert frame is not None, "connection closed"
        return frame

    async def expect(self, command: str, timeout: float = WAIT) -> Frame:
        frame = await self.next(timeout)
        assert frame.command == command, frame
        return frame

    async def connect(self, token: str = "", **headers: str) -> Frame:
        hdrs = {"accept-version": "1.2", "host": "/", "heart-beat": "0,0"}
        if token:
            hdrs["passcode"] = token
        hdrs.update({k.replace("_", "-"): v for k, v in headers.items()})
        await self.send("CONNECT", hdrs)
        return await self.expect("CONNECTED")

    async def subscribe(self, sub_id: str, destination: str, **headers: str) -> Frame:
        receipt = f"sub-{sub_id}"
        hdrs = {"id": sub_id, "destination": destination, "receipt": receipt}
        hdrs.update({k.replace("_", "-"): v for k, v in headers.items()})
        await self.send("SUBSCRIBE", hdrs)
        frame = await self.next()
        assert frame.command == "RECEIPT" and frame.headers["receipt-id"] == receipt, frame
        return frame

    async def wait_closed(self, timeout: float = WAIT) -> None:
        await asyncio.wait_for(self.closed.wait(), timeout)

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(Exception):
                await self._tcp.wait_closed()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        if self._session is not None:
            await self._session.close()
