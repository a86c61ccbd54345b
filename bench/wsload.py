"""A lean WebSocket load client: many Centrifugo-protocol subscribers in one process.

Raw asyncio protocols on uvloop, no library per connection, so the load side costs
little next to the server. Each connection connects with a token, subscribes to the
given channels and counts the publication pushes it receives (and their latency,
when the publication carries a send time). Run as a separate process by bench.run;
it prints one JSON line per phase on stdout and reads commands from stdin.

Options for many processes against one server (the ``c100k`` scenario; without them
the behaviour is unchanged): ``--source-address`` binds every connection to that
loopback address (127.0.0.1 → 127.0.0.1:port alone has ~28k ephemeral ports, so each
load process takes its own 127.0.0.x); ``--first-index`` offsets the connection index
used in channel names; ``--rate`` connects at that many connections per second with at
most ``--max-pending`` in flight and ``--connect-timeout`` per connection, and reports
failures instead of raising; ``--timeline`` adds deliveries per wall-clock second and
each latency sample's arrival second to the report. ``--protobuf``: the Centrifugo
Protobuf protocol (the ``centrifuge-protobuf`` subprotocol, binary frames of
length-delimited messages) instead of JSON, with the same checks.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import os
import resource
import socket
import sys
import time
from pathlib import Path

import orjson

from bench.frames import masked, next_frame
from pushgate.protocol.centrifugo import client_pb2 as pb
from pushgate.protocol.centrifugo.protobuf_codec import read_varint, varint
from pushgate.transport.ws_frames import OP_BINARY


class Stats:
    def __init__(self) -> None:
        self.pubs = 0
        self.latencies: list[float] = []
        self.sample_every = 1
        self.done = asyncio.Event()
        self.expected = 0
        #: publications that arrived out of order, duplicated or after a gap
        self.order_errors = 0
        self.examples: list[str] = []
        #: --timeline: wall-clock second -> deliveries; arrival second of each latency
        self.timeline: dict[int, int] | None = None
        self.latency_seconds: list[int] = []
        #: connections closed (by the server or the network) after they were ready
        self.closed = 0

    def add(self, count: int) -> None:
        self.pubs += count
        if self.timeline is not None:
            second = int(time.time())
            self.timeline[second] = self.timeline.get(second, 0) + count
        if self.expected and self.pubs >= self.expected:
            self.done.set()

    def disorder(self, index: int, channel: bytes, last: int, offset: int) -> None:
        self.order_errors += 1
        if len(self.examples) < 5:
            self.examples.append(f"conn {index} {channel.decode()}: offset {offset} after {last}")


PUSH = b'{"push":{"channel":"'


class Subscriber(asyncio.Protocol):
    __slots__ = (
        "buffer",
        "commands",
        "count",
        "handshaken",
        "index",
        "last",
        "ready",
        "ready_id",
        "sampled",
        "stats",
        "transport",
    )

    def __init__(self, stats: Stats, commands: list[bytes], ready: asyncio.Future, index: int):
        self.stats = stats
        self.commands = commands
        self.ready = ready
        # ready once the last command (the last subscribe) is answered
        self.ready_id = b'{"id":%d,' % len(commands)
        self.buffer = b""
        self.handshaken = False
        self.transport: asyncio.Transport | None = None
        self.index = index
        self.sampled = index % stats.sample_every == 0
        #: publications received since the last ``expect``
        self.count = 0
        #: channel -> last offset received: each publication must be the next one
        self.last: dict[bytes, int] = {}

    #: extra request header lines (the Protobuf subclass asks for its subprotocol)
    HEADERS = ""

    def connection_made(self, transport) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                "GET /connection/websocket HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"{self.HEADERS}\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        if not self.handshaken:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(RuntimeError(buffer[:200].decode(errors="replace")))
                return
            self.handshaken = True
            buffer = buffer[end + 4 :]
            self.transport.write(b"".join(self.frame(c) for c in self.commands))
        self.buffer = self.receive(buffer)

    @staticmethod
    def frame(command: bytes) -> bytes:
        return masked(command)

    def receive(self, buffer: bytes) -> bytes:
        """Count the publications in the complete frames of ``buffer``; the rest stays."""
        pubs = 0
        pos = 0
        last = self.last
        while (frame := next_frame(buffer, pos)) is not None:
            opcode, payload, pos = frame
            if opcode == 0x8:
                continue
            if payload.startswith(PUSH):
                quote = payload.find(b'"', 20)
                if payload[quote + 1 : quote + 8] != b',"pub":':
                    continue  # join, leave, subscribe …: not a publication
                pubs += 1
                channel = payload[20:quote]
                at = payload.rfind(b'"offset":')
                if at > 0:
                    stop = payload.find(b"}", at)
                    offset = int(payload[at + 9 : stop].split(b",", 1)[0])
                    previous = last.get(channel)
                    if previous is not None and offset != previous + 1:
                        self.stats.disorder(self.index, channel, previous, offset)
                    last[channel] = offset
                if self.sampled:
                    at = payload.find(b'"t":')
                    if at > 0:
                        stop = payload.find(b"}", at)
                        sent = float(payload[at + 4 : stop].split(b",", 1)[0])
                        now = time.time()
                        self.stats.latencies.append(now - sent)
                        if self.stats.timeline is not None:
                            self.stats.latency_seconds.append(int(now))
            elif payload == b"{}":
                self.transport.write(masked(b"{}"))
            elif not self.ready.done() and payload.startswith(self.ready_id):
                if b'"error"' in payload:
                    self.ready.set_exception(RuntimeError(payload.decode()))
                else:
                    self.ready.set_result(None)
        if pubs:
            self.count += pubs
            self.stats.add(pubs)
        return buffer[pos:]

    def publication(self, channel: bytes, offset: int, data: bytes) -> None:
        """Order check and latency sample of one publication (the Protobuf path)."""
        if offset:
            previous = self.last.get(channel)
            if previous is not None and offset != previous + 1:
                self.stats.disorder(self.index, channel, previous, offset)
            self.last[channel] = offset
        if self.sampled:
            at = data.find(b'"t":')
            if at > 0:
                stop = data.find(b"}", at)
                now = time.time()
                self.stats.latencies.append(now - float(data[at + 4 : stop].split(b",", 1)[0]))
                if self.stats.timeline is not None:
                    self.stats.latency_seconds.append(int(now))

    def connection_lost(self, exc) -> None:
        if not self.ready.done():
            self.ready.set_exception(RuntimeError(f"connection lost: {exc}"))
        elif not self.ready.cancelled() and self.ready.exception() is None:
            self.stats.closed += 1


PING = b"\x00"  # an empty Reply (the server's ping) and an empty Command (the pong)


class ProtobufSubscriber(Subscriber):
    """The same subscriber speaking the Protobuf protocol."""

    __slots__ = ()

    HEADERS = "Sec-WebSocket-Protocol: centrifuge-protobuf\r\n"

    @staticmethod
    def frame(command: bytes) -> bytes:
        return masked(command, OP_BINARY)

    def receive(self, buffer: bytes) -> bytes:
        pubs = 0
        pos = 0
        while (frame := next_frame(buffer, pos)) is not None:
            opcode, payload, pos = frame
            if opcode == 0x8:
                continue
            if payload == PING:
                self.transport.write(masked(PING, OP_BINARY))
                continue
            at = 0
            while at < len(payload):
                size, at = read_varint(payload, at)
                reply = pb.Reply.FromString(payload[at : at + size])
                at += size
                if reply.HasField("push"):
                    push = reply.push
                    if push.HasField("pub"):
                        pubs += 1
                        self.publication(push.channel.encode(), push.pub.offset, push.pub.data)
                elif not self.ready.done() and reply.id == len(self.commands):
                    if reply.HasField("error"):
                        self.ready.set_exception(RuntimeError(str(reply.error)))
                    else:
                        self.ready.set_result(None)
        if pubs:
            self.count += pubs
            self.stats.add(pubs)
        return buffer[pos:]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def commands_for(args, tokens: list[str], i: int) -> list[bytes]:
    """connect + one subscribe per channel of connection ``i`` (a global index)."""
    token = tokens[(i - args.first_index) % len(tokens)]
    channels = [
        c.replace("{i}", str(i)).replace("{g}", str(i // args.group_size)) for c in args.channel
    ]
    if args.protobuf:
        messages = [pb.Command(id=1, connect=pb.ConnectRequest(token=token))]
        messages += [
            pb.Command(id=2 + n, subscribe=pb.SubscribeRequest(channel=ch))
            for n, ch in enumerate(channels)
        ]
        return [varint(m.ByteSize()) + m.SerializeToString() for m in messages]
    commands = [orjson.dumps({"id": 1, "connect": {"token": token}})]
    commands += [
        orjson.dumps({"id": 2 + n, "subscribe": {"channel": ch}}) for n, ch in enumerate(channels)
    ]
    return commands


async def open_one(loop, args, proto: Subscriber) -> None:
    """One connection from ``--source-address`` (its port chosen at connect time)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if args.source_address:
            # without it bind() reserves a port per socket whatever the destination
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((args.source_address, 0))
        await loop.sock_connect(sock, ("127.0.0.1", args.port))
        await loop.create_connection(lambda: proto, sock=sock)
    except BaseException:
        sock.close()
        raise


async def ramp(loop, args, stats: Stats, tokens: list[str]) -> tuple[list[Subscriber], dict]:
    """--rate: connect at a bounded rate; connections that fail are reported, not raised."""
    subscribers: list[Subscriber | None] = [None] * args.connections
    errors: dict[str, int] = {}
    pending = asyncio.Semaphore(args.max_pending)
    started = time.time()
    tasks = []

    async def one(k: int) -> None:
        i = args.first_index + k
        ready = loop.create_future()
        proto = args.subscriber(stats, commands_for(args, tokens, i), ready, i)
        try:
            await asyncio.wait_for(open_one(loop, args, proto), args.connect_timeout)
            await asyncio.wait_for(ready, args.connect_timeout)
            subscribers[k] = proto
        except Exception as exc:
            kind = f"{type(exc).__name__}: {str(exc)[:120]}"
            errors[kind] = errors.get(kind, 0) + 1
            if proto.transport is not None:
                proto.transport.abort()
        finally:
            pending.release()

    tick = 0.01
    for k in range(args.connections):
        delay = started + k / args.rate - time.time()
        if delay > tick:
            await asyncio.sleep(delay)
        await pending.acquire()
        tasks.append(asyncio.create_task(one(k)))
    if tasks:
        await asyncio.wait(tasks, timeout=args.connect_timeout + 5)
    for task in tasks:
        task.cancel()
    ready_ones = [p for p in subscribers if p is not None]
    return ready_ones, {
        "connected": len(ready_ones),
        "failed": args.connections - len(ready_ones),
        "errors": errors,
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--tokens", required=True, help="file with one token per line")
    parser.add_argument(
        "--channel", action="append", required=True, help="{i}: connection index, {g}: its group"
    )
    parser.add_argument("--group-size", type=int, default=10)
    parser.add_argument("--sample-every", type=int, help="latency of every n-th connection")
    parser.add_argument("--source-address", help="bind every connection to this local address")
    parser.add_argument(
        "--first-index", type=int, default=0, help="index of the first connection ({i}, {g})"
    )
    parser.add_argument("--rate", type=float, help="connections started per second")
    parser.add_argument("--max-pending", type=int, default=1000, help="with --rate")
    parser.add_argument(
        "--connect-timeout", type=float, default=60.0, help="with --rate, per connection"
    )
    parser.add_argument("--timeline", action="store_true", help="deliveries per second")
    parser.add_argument("--protobuf", action="store_true", help="the Protobuf protocol")
    args = parser.parse_args()
    args.subscriber = ProtobufSubscriber if args.protobuf else Subscriber
    loop = asyncio.get_running_loop()
    stats = Stats()
    stats.sample_every = args.sample_every or max(1, args.connections // 200)
    if args.timeline:
        stats.timeline = {}
    tokens = Path(args.tokens).read_text().split()
    subscribers = []
    futures = []
    started = time.time()
    ramped: dict = {}
    if args.rate:
        subscribers, ramped = await ramp(loop, args, stats, tokens)
    batch = 500
    for start in range(0, 0 if args.rate else args.connections, batch):
        pending = []
        for i in range(
            args.first_index + start, args.first_index + min(start + batch, args.connections)
        ):
            ready = loop.create_future()
            futures.append(ready)
            pending.append(ready)
            proto = args.subscriber(stats, commands_for(args, tokens, i), ready, i)
            subscribers.append(proto)
            if args.source_address:
                await open_one(loop, args, proto)
            else:
                await loop.create_connection(lambda p=proto: p, "127.0.0.1", args.port)
        await asyncio.wait_for(asyncio.gather(*pending), 60)
    # the connections live until the end: no collection needs to walk them again, and a
    # full collection over 15k of them would show as latency that is the client's own
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 10, 10)
    print(
        orjson.dumps({"phase": "ready", "seconds": time.time() - started, **ramped}).decode(),
        flush=True,
    )
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = orjson.loads(line)
        if command["cmd"] == "expect":
            stats.expected = stats.pubs + command["count"]
            stats.latencies = []
            stats.done.clear()
            stats.order_errors = 0
            stats.examples = []
            if stats.timeline is not None:
                stats.timeline = {}
                stats.latency_seconds = []
            for proto in subscribers:
                proto.count = 0
            cpu0 = cpu_seconds()
            print(orjson.dumps({"phase": "expecting"}).decode(), flush=True)
            try:
                await asyncio.wait_for(stats.done.wait(), command.get("timeout", 120))
                complete = True
            except TimeoutError:
                complete = False
            counts = [proto.count for proto in subscribers]
            per_connection = command.get("per_connection")
            print(
                orjson.dumps(
                    {
                        "phase": "received",
                        "complete": complete,
                        "received": stats.pubs - (stats.expected - command["count"]),
                        "at": time.time(),
                        "client_cpu": cpu_seconds() - cpu0,
                        "latencies": stats.latencies,
                        "order_errors": stats.order_errors,
                        "order_examples": stats.examples,
                        "per_connection_min": min(counts),
                        "per_connection_max": max(counts),
                        "short_connections": (
                            sum(1 for c in counts if c != per_connection)
                            if per_connection is not None
                            else None
                        ),
                        "closed_connections": stats.closed,
                        **(
                            {
                                "timeline": {str(k): v for k, v in stats.timeline.items()},
                                "latency_seconds": stats.latency_seconds,
                            }
                            if stats.timeline is not None
                            else {}
                        ),
                    }
                ).decode(),
                flush=True,
            )
        elif command["cmd"] == "quit":
            break
    for proto in subscribers:
        if proto.transport is not None:
            proto.transport.close()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
