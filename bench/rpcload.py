"""Load for the ``proxy`` bench: client RPCs answered by the backend through pushgate.

Run as its own process. C WebSocket connections (raw asyncio on uvloop) connect with a
session cookie and no token (pushgate's connect proxy asks the backend), then each sends
one ``rpc`` at a time — the next when the previous is answered — for at most
``--seconds`` and ``--calls`` calls in all. Prints one JSON line: connections and the
seconds connecting took, calls answered, errors, seconds, latency percentiles (ms) and the
client's own CPU seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import resource
import time

import orjson

from bench.frames import masked, next_frame


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Caller(asyncio.Protocol):
    def __init__(self, index: int, state: dict, connected: asyncio.Future) -> None:
        self.index = index
        self.state = state
        self.connected = connected
        self.buffer = b""
        self.handshaken = False
        self.transport: asyncio.Transport | None = None
        self.next_id = 1
        self.sent_at = 0.0
        self.running = False
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                "GET /connection/websocket HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Cookie: session=user{self.index}\r\n\r\n"
            ).encode()
        )
        self._command({"connect": {"name": "rpcload"}})

    def _command(self, body: dict) -> None:
        body["id"] = self.next_id
        self.next_id += 1
        self.sent_at = time.perf_counter()
        self.transport.write(masked(orjson.dumps(body)))

    def call(self) -> None:
        state = self.state
        if state["calls"] >= state["limit"] or time.monotonic() >= state["deadline"]:
            if not self.done.done():
                self.done.set_result(None)
            return
        state["calls"] += 1
        self._command({"rpc": {"method": "echo", "data": {"n": self.next_id}}})

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        if not self.handshaken:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self.connected.set_exception(RuntimeError(buffer[:200].decode(errors="replace")))
                return
            self.handshaken = True
            buffer = buffer[end + 4 :]
        pos = 0
        while (frame := next_frame(buffer, pos)) is not None:
            _, payload, pos = frame
            for line in payload.split(b"\n"):
                if line.strip() and line != b"{}":
                    self._reply(orjson.loads(line))
        self.buffer = buffer[pos:]

    def _reply(self, reply: dict) -> None:
        if "id" not in reply:
            return  # a push
        if "connect" in reply:
            self.connected.set_result(None)
            return
        if "error" in reply:
            if not self.connected.done():
                self.connected.set_exception(RuntimeError(str(reply["error"])))
                return
            self.state["errors"] += 1
        elif self.running:
            self.state["latencies"].append(time.perf_counter() - self.sent_at)
        if self.running:
            self.call()

    def connection_lost(self, exc) -> None:
        if not self.connected.done():
            self.connected.set_exception(RuntimeError("closed before connect"))
        if not self.done.done():
            self.done.set_result(None)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--calls", type=int, default=1_000_000)
    args = parser.parse_args()
    loop = asyncio.get_running_loop()
    cpu0 = cpu_seconds()
    state = {"calls": 0, "errors": 0, "latencies": [], "limit": args.calls, "deadline": 0.0}
    started = time.monotonic()
    callers = []
    for index in range(args.connections):
        connected = loop.create_future()
        caller = Caller(index, state, connected)
        await loop.create_connection(lambda c=caller: c, "127.0.0.1", args.port)
        callers.append(caller)
        await asyncio.wait_for(connected, 10)
    connect_seconds = time.monotonic() - started
    state["deadline"] = time.monotonic() + args.seconds
    begun = time.monotonic()
    for caller in callers:
        caller.running = True
        caller.call()
    await asyncio.wait_for(asyncio.gather(*(c.done for c in callers)), args.seconds + 30)
    seconds = time.monotonic() - begun
    for caller in callers:
        caller.transport.close()
    latencies = state["latencies"]
    print(
        orjson.dumps(
            {
                "connections": args.connections,
                "connect_seconds": connect_seconds,
                "calls": len(latencies),
                "errors": state["errors"],
                "seconds": seconds,
                "p50_ms": percentile(latencies, 0.5) * 1000,
                "p99_ms": percentile(latencies, 0.99) * 1000,
                "client_cpu": cpu_seconds() - cpu0,
            }
        ).decode()
    )


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    asyncio.run(main())
