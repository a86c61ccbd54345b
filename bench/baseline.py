"""The Python limit: a raw asyncio server on uvloop that writes one pre-built frame to
every subscribed socket.

It speaks just enough of the same wire for bench.wsload to connect unchanged: the
WebSocket handshake, Centrifugo ``connect`` and ``subscribe`` commands (answered with
empty results, no token check), and ``POST /api/publish`` / ``/api/batch`` / ``GET
/health`` over keep-alive HTTP/1.1. A publication is one orjson encode, one frame, and
one ``transport.write`` per subscriber: no protocol state, presence, history or queue
limits. Every pushgate figure is also given as a ratio to this server's, measured the
same way in the same run. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib

import orjson

from pushgate.transport.ws_frames import build_frame

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B85"


class State:
    def __init__(self) -> None:
        self.channels: dict[str, dict[asyncio.Transport, None]] = {}
        self.offsets: dict[str, int] = {}

    def publish(self, channel: str, data: object) -> None:
        offset = self.offsets.get(channel, 0) + 1
        self.offsets[channel] = offset
        subs = self.channels.get(channel)
        if not subs:
            return
        frame = build_frame(
            orjson.dumps({"push": {"channel": channel, "pub": {"data": data, "offset": offset}}})
        )
        for transport in subs:
            transport.write(frame)


class Conn(asyncio.Protocol):
    __slots__ = ("buffer", "joined", "state", "transport", "ws")

    def __init__(self, state: State) -> None:
        self.state = state
        self.buffer = b""
        self.ws = False
        self.joined: list[str] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.ws:
            self._frames()
        else:
            self._http()

    def _http(self) -> None:
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1").split("\r\n")
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", 0))
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            method, path = head[0].split(" ")[:2]
            if headers.get("upgrade", "").lower() == "websocket":
                key = headers["sec-websocket-key"].encode()
                accept = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
                self.transport.write(
                    (
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                    ).encode()
                )
                self.ws = True
                self._frames()
                return
            if method == "POST" and path.startswith("/api/"):
                params = orjson.loads(body) if body else {}
                if path == "/api/batch":
                    for command in params.get("commands", []):
                        publish = command.get("publish")
                        if publish is not None:
                            self.state.publish(publish["channel"], publish["data"])
                    reply = b'{"replies":[]}'
                else:
                    self.state.publish(params["channel"], params["data"])
                    reply = b'{"result":{}}'
            else:
                reply = b"ok"
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(reply)).encode()
                + b"\r\n\r\n"
                + reply
            )

    def _frames(self) -> None:
        buffer = self.buffer
        pos = 0
        while len(buffer) - pos >= 2:
            length = buffer[pos + 1] & 0x7F
            head = 2
            if length == 126:
                length = int.from_bytes(buffer[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                length = int.from_bytes(buffer[pos + 2 : pos + 10], "big")
                head = 10
            masked = buffer[pos + 1] & 0x80
            if masked:
                mask = buffer[pos + head : pos + head + 4]
                head += 4
            end = pos + head + length
            if end > len(buffer):
                break
            payload = buffer[pos + head : end]
            if masked and mask != b"\0\0\0\0":
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            opcode = buffer[pos] & 0x0F
            pos = end
            if opcode == 0x8:
                self.transport.close()
                return
            if opcode in (0x1, 0x2) and payload != b"{}":
                self._command(orjson.loads(payload))
        self.buffer = buffer[pos:]

    def _command(self, command: dict) -> None:
        if "connect" in command:
            reply = {"id": command["id"], "connect": {"client": "baseline", "version": "0"}}
        elif "subscribe" in command:
            channel = command["subscribe"]["channel"]
            self.state.channels.setdefault(channel, {})[self.transport] = None
            self.joined.append(channel)
            reply = {"id": command["id"], "subscribe": {}}
        else:
            reply = {"id": command.get("id", 0), "error": {"code": 104, "message": "no"}}
        self.transport.write(build_frame(orjson.dumps(reply)))

    def connection_lost(self, exc) -> None:
        for channel in self.joined:
            self.state.channels[channel].pop(self.transport, None)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    state = State()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Conn(state), "127.0.0.1", args.port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
