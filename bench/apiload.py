"""Load for the server HTTP API: publications accepted per second.

Run as a separate process by the ``api`` scenario. C keep-alive connections (raw
asyncio on uvloop, pipelining one request at a time per connection) post
``/api/publish`` (one publication per request) or ``/api/batch`` (B publications per
request) to one channel for at most ``--seconds`` and at most ``--requests`` requests.
Prints one JSON line: requests, publications accepted (replies without an error),
seconds, own CPU seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time

import orjson


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Poster(asyncio.Protocol):
    def __init__(self, request: bytes, state: dict, deadline: float, limit: int) -> None:
        self.request = request
        self.state = state
        self.deadline = deadline
        self.limit = limit
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._send()

    def _send(self) -> None:
        state = self.state
        if state["requests"] >= self.limit or time.monotonic() >= self.deadline:
            if not self.done.done():
                self.done.set_result(None)
            return
        state["requests"] += 1
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            status = self.buffer[9:12]
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            if status == b"200":
                self.state["accepted"] += self.state["per_request"] - body.count(b'"error"')
            else:
                self.state["failed"] += 1
            self._send()

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--mode", choices=("publish", "batch"), required=True)
    parser.add_argument("--channel", default="bench:api")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--requests", type=int, default=200_000)
    args = parser.parse_args()
    publish = {"channel": args.channel, "data": {"n": 1}}
    if args.mode == "publish":
        body, path, per_request = orjson.dumps(publish), "/api/publish", 1
    else:
        commands = [{"publish": publish}] * args.batch
        body, path, per_request = orjson.dumps({"commands": commands}), "/api/batch", args.batch
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {args.key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    state = {"requests": 0, "accepted": 0, "failed": 0, "per_request": per_request}
    loop = asyncio.get_running_loop()
    cpu0 = cpu_seconds()
    started = time.monotonic()
    deadline = started + args.seconds
    posters = []
    for _ in range(args.connections):
        poster = Poster(request, state, deadline, args.requests)
        posters.append(poster)
        await loop.create_connection(lambda p=poster: p, "127.0.0.1", args.port)
    await asyncio.wait_for(asyncio.gather(*(p.done for p in posters)), args.seconds + 30)
    elapsed = time.monotonic() - started
    for poster in posters:
        poster.transport.close()
    print(
        orjson.dumps(
            {
                "requests": state["requests"],
                "accepted": state["accepted"],
                "failed": state["failed"],
                "seconds": elapsed,
                "client_cpu": cpu_seconds() - cpu0,
            }
        ).decode(),
        flush=True,
    )


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
