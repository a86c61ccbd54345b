"""The STOMP attacks of the security review, measured on a served node:
``python -m bench.stomp_attack [--frames 4000] [--size 60000] [--transactions 1]
[--connections 1] [--ids N] [-o SECTION.KEY=VALUE]``.

Starts a pushgate node (a child process, memory engine, default limits unless ``-o``
says otherwise) and reads its RSS. Each attacking connection then either opens
``--transactions`` transactions and sends ``--frames`` SENDs of ``--size`` bytes into
each (never COMMIT), or, with ``--ids N``, subscribes N ids to one channel (500 frames
to a WebSocket message); it stops when the node closes it, and keeps its connection open
until the RSS after is read. Meanwhile a healthy subscriber on its own connection is sent
a publication every 50 ms and must receive all of them, in order; the longest any of them
took is printed with the node's RSS before and after, its peak, and what each attacker
got back. Bounded: frames x size x transactions bytes (or N ids) per connection, over
loopback, and a minute per step.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

from bench.common import rss_kib
from bench.run import free_port
from pushgate.auth import mint_connection_token
from pushgate.protocol.stomp.codec import SERVER_COMMANDS, Frame, FrameParser, encode_frame

SECRET = "attack-secret-0123456789abcdef0123456789"
API_KEY = "attack-api-key"
CONFIG = f"""
[token]
hmac_secret = "{SECRET}"
[api]
key = "{API_KEY}"
[[namespace]]
name = "board"
allow_subscribe_for_client = true
allow_publish_for_client = true
"""
STEP = 60.0


def peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


class Stomp:
    """A STOMP-over-WebSocket client that sends exact frames and keeps what comes back."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.parser = FrameParser(commands=SERVER_COMMANDS, max_frame_bytes=1 << 22)
        self.frames: asyncio.Queue[Frame | None] = asyncio.Queue()
        #: when each frame arrived
        self.arrivals: list[float] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                data = message.data.encode() if isinstance(message.data, str) else message.data
                for frame in self.parser.feed(data):
                    self.arrivals.append(time.monotonic())
                    self.frames.put_nowait(frame)  # type: ignore[arg-type]
        self.frames.put_nowait(None)

    async def send(self, command: str, headers: dict, body: bytes = b"") -> bool:
        return await self.send_raw(encode_frame(command, headers, body))

    async def send_raw(self, data: bytes) -> bool:
        if self.ws.closed:
            return False
        try:
            await self.ws.send_bytes(data)
        except (OSError, aiohttp.ClientConnectionError):
            return False
        return True

    async def outcome(self, what: str) -> str:
        """Whether the node took everything sent before: it answers a probe after it."""
        probe = {"id": "probe", "destination": "/topic/board:probe", "receipt": "probe"}
        await self.send("SUBSCRIBE", probe)
        answer = await self.next()
        if answer is None:
            return f"{what}, closed without a frame"
        if answer.command == "ERROR":
            return f"{what}, ERROR message:{answer.headers.get('message')}"
        return f"{what}, all taken ({answer.command} {answer.headers['receipt-id']})"

    async def next(self) -> Frame | None:
        return await asyncio.wait_for(self.frames.get(), STEP)


async def open_stomp(session: aiohttp.ClientSession, url: str, user: str) -> Stomp:
    ws = await session.ws_connect(url, protocols=("v12.stomp",), max_msg_size=1 << 22)
    client = Stomp(ws)
    token = mint_connection_token(SECRET, user, ttl=3600)
    await client.send("CONNECT", {"accept-version": "1.2", "host": "/", "passcode": token})
    frame = await client.next()
    assert frame is not None and frame.command == "CONNECTED", frame
    return client


async def attack(
    session: aiohttp.ClientSession, url: str, n: int, args: argparse.Namespace
) -> tuple[Stomp, str]:
    """One attacking connection, and what it got back."""
    client = await open_stomp(session, url, f"mallory{n}")
    body = b"x" * args.size
    sent = 0
    for t in range(args.transactions):
        if not await client.send("BEGIN", {"transaction": f"tx{t}"}):
            break
        headers = {"destination": "/topic/board:attack", "transaction": f"tx{t}"}
        headers["content-type"] = "text/plain"
        for _ in range(args.frames):
            if not await client.send("SEND", headers, body):
                break
            sent += 1
    return client, await client.outcome(f"sent {sent} SENDs")


async def attack_ids(
    session: aiohttp.ClientSession, url: str, n: int, args: argparse.Namespace
) -> tuple[Stomp, str]:
    """One connection subscribing ``args.ids`` ids to one channel."""
    client = await open_stomp(session, url, f"mallory{n}")
    started = time.monotonic()
    sent = 0
    for first in range(0, args.ids, 500):
        batch = range(first, min(args.ids, first + 500))
        data = b"".join(
            encode_frame("SUBSCRIBE", {"id": f"i{k}", "destination": "/topic/board:many"})
            for k in batch
        )
        if not await client.send_raw(data):
            break
        sent += len(batch)
    outcome = await client.outcome(f"sent {sent} SUBSCRIBEs")
    return client, f"{outcome} in {time.monotonic() - started:.2f} s"


async def publish_every(session: aiohttp.ClientSession, base: str, sent: list[float]) -> None:
    """Publish 0, 1, 2… to board:live every 50 ms, noting when each was sent."""
    while True:
        sent.append(time.monotonic())
        async with session.post(
            base + "/api/publish",
            json={"channel": "board:live", "data": len(sent) - 1},
            headers={"X-API-Key": API_KEY},
        ) as response:
            assert response.status == 200, await response.text()
        await asyncio.sleep(0.05)


async def run(args: argparse.Namespace) -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "attack.toml"
        config.write_text(CONFIG)
        options = [arg for option in args.option for arg in ("-o", option)]
        node = subprocess.Popen(
            [
                *(sys.executable, "-m", "pushgate", "serve", "-c", str(config)),
                *("--port", str(port), "--log-level", "warning", *options),
            ],
            stderr=subprocess.DEVNULL,
        )
        try:
            await measure(node.pid, port, args)
        finally:
            node.terminate()
            node.wait(10)


async def measure(pid: int, port: int, args: argparse.Namespace) -> None:
    connections = args.connections
    base = f"http://127.0.0.1:{port}"
    url = f"ws://127.0.0.1:{port}/stomp"
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + STEP
        while True:
            try:
                async with session.get(base + "/ready") as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientConnectionError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the node did not start")
            await asyncio.sleep(0.1)
        watcher = await open_stomp(session, url, "bob")
        await watcher.send("SUBSCRIBE", {"id": "live", "destination": "/topic/board:live"})
        before = rss_kib(pid)
        print(f"node pid {pid}: RSS before {before / 1024:.1f} MiB")
        started = time.monotonic()
        published: list[float] = []
        publisher = asyncio.create_task(publish_every(session, base, published))
        attackers = []
        for n in range(connections):
            run_one = attack_ids if args.ids else attack
            client, outcome = await run_one(session, url, n, args)
            attackers.append(client)
            print(f"attacker {n}: {outcome}; RSS {rss_kib(pid) / 1024:.1f} MiB")
        while len(published) < 6:  # a few even when the attack is over at once
            await asyncio.sleep(0.05)
        publisher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publisher
        after = rss_kib(pid)
        elapsed = time.monotonic() - started
        got = []
        for _ in range(len(published) - 1):  # the last may have been cut short
            frame = await watcher.next()
            assert frame is not None and frame.command == "MESSAGE", frame
            got.append(orjson.loads(frame.body))
        assert got == list(range(len(got))), got
        # the watcher's first frames were CONNECTED and nothing else: arrivals[1:] are
        # the publications
        latency = max(at - sent for at, sent in zip(watcher.arrivals[1:], published, strict=False))
        print(
            f"RSS after {after / 1024:.1f} MiB ({(after - before) / 1024:+.1f}), "
            f"peak {peak_kib(pid) / 1024:.1f} MiB, {elapsed:.1f} s; the subscriber got "
            f"{len(got)} publications in order, the slowest in {latency * 1000:.0f} ms"
        )
        for client in [watcher, *attackers]:
            await client.ws.close()
            client.reader.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=4000)
    parser.add_argument("--size", type=int, default=60000)
    parser.add_argument("--transactions", type=int, default=1)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--ids", type=int, default=0, help="subscription ids instead")
    parser.add_argument(
        "-o", "--option", action="append", default=[], help="a node option SECTION.KEY=VALUE"
    )
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
