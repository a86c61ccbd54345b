"""The soak's load processes: ``python -m soak.clients steady|churn|publish …``.

Raw asyncio protocols on uvloop speaking the Centrifugo JSON protocol over WebSocket
(like bench/wsload.py, but every message is parsed and every connection has a life
cycle). Each process prints JSON lines on stdout: ``{"phase": "stats", …}`` every few
seconds and one ``{"phase": "final", …}`` at its end.

- ``steady``: N connections that stay for the whole run, each subscribed to two of the
  published channels. Every publication is checked by offset, per connection and channel:
  the next one expected, a gap (lost), or one already seen (doubled). A connection the
  server drops reconnects with recovery (counted as an error kind); an "insufficient
  state" unsubscribe resubscribes with recovery. On ``{"cmd": "final", "tops": {…}}`` on
  stdin it waits (bounded) for every connection to reach the channels' top offsets and
  counts what is still missing as lost.
- ``churn``: new connections at a bounded rate, at most ``--max-open`` at once; each
  connects, subscribes to one published channel and one channel of its own, stays for a
  random time (checking the publications it gets follow the subscribe position with no
  gap or duplicate), then closes cleanly, aborts the TCP connection, or aborts while its
  commands are in flight.
- ``publish``: ``/api/publish`` to each channel at a paced rate, one request at a time
  per channel; counts accepted publications and errors by kind.

Every loop is bounded in count and time; everything connects to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import resource
import sys
import time
from collections import Counter

import orjson

from bench.wsload import masked
from pushgate.auth import mint_connection_token

SECRET = "soak-secret-0123456789abcdef0123456789ab"
API_KEY = "soak-api-key"
HOST = "127.0.0.1"
STATS_EVERY = 5.0
#: per-step timeouts of one connection (TCP + upgrade, connect + subscribe replies)
STEP_TIMEOUT = 15.0

#: error kind -> count, for the whole process
ERRORS: Counter = Counter()
#: the first few losses and duplicates, described
EXAMPLES: list[str] = []


def example(text: str) -> None:
    if len(EXAMPLES) < 20:
        EXAMPLES.append(text)


def emit(**fields) -> None:
    sys.stdout.write(orjson.dumps(fields).decode() + "\n")
    sys.stdout.flush()


def control_frame(opcode: int, payload: bytes = b"") -> bytes:
    """A masked (zero key) client control frame; payload < 126 bytes."""
    return bytes((0x80 | opcode, 0x80 | len(payload))) + b"\0\0\0\0" + payload


def raise_nofile(wanted: int) -> None:
    """At most 20,000 open files per process, and no more than the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, 20_000, hard if hard != resource.RLIM_INFINITY else 20_000)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class Track:
    """One connection's view of one channel: offsets must follow each other."""

    __slots__ = (
        "at_position",
        "channel",
        "doubled",
        "early",
        "epoch",
        "first",
        "in_order",
        "last",
        "lost",
        "pending",
        "replaying",
        "stale",
        "stash",
    )

    def __init__(self, channel: str = "") -> None:
        self.channel = channel
        self.replaying = False
        self.at_position = False  # ``last`` is a subscribe reply's position, not a push
        self.last: int | None = None  # None until the first subscribe reply
        self.first: int | None = None  # the position of the first subscribe
        self.epoch: str | None = None
        self.in_order = 0
        self.lost = 0
        self.doubled = 0
        self.early = 0  # pushed before the subscribe reply, at or below its position
        #: pushed after the subscribe reply at or below its position (its data arrives once
        #: on a fresh subscribe, twice when the reply recovered it)
        self.stale = 0
        self.pending = True  # a (re)subscribe is in flight: publications wait in stash
        self.stash: list[int] = []

    def pub(self, offset: int) -> None:
        if self.pending:
            if len(self.stash) < 10_000:
                self.stash.append(offset)
            else:
                ERRORS["stash_overflow"] += 1
            return
        last = self.last
        if offset == last + 1:
            self.in_order += 1
        elif offset <= last and self.replaying:
            self.early += 1
            example(
                f"{self.channel}: offset {offset} pushed before the subscribe reply "
                f"(position {last})"
            )
            return
        elif offset <= last and self.at_position:
            self.stale += 1
            example(
                f"{self.channel}: offset {offset} pushed after the subscribe reply that gave "
                f"position {last}"
            )
            return
        elif offset <= last:
            self.doubled += 1
            example(f"{self.channel}: doubled offset {offset} after publication {last}")
            return
        else:
            self.lost += offset - last - 1
            example(f"{self.channel}: gap, offset {offset} after {last}")
            self.in_order += 1
        self.last = offset
        self.at_position = False

    def position(self, result: dict, kind: str) -> None:
        """A subscribe (or connect ``subs``) result: the position, maybe recovered pubs."""
        offset = int(result.get("offset", 0))
        epoch = result.get("epoch")
        if self.last is None:
            self.last = self.first = offset
            self.epoch = epoch
            self.at_position = True
        else:
            if epoch != self.epoch:
                ERRORS[f"{kind}_epoch_changed"] += 1
                self.epoch = epoch
            self.pending = False
            for pub in result.get("publications") or ():
                self.pub(int(pub.get("offset", 0)))
            if offset > self.last:
                example(f"{self.channel}: not recovered, position {offset} after {self.last}")
                self.lost += offset - self.last
                self.last = offset
        self.pending = False
        stash, self.stash = self.stash, []
        self.replaying = True
        for pub_offset in stash:
            self.pub(pub_offset)
        self.replaying = False


class Conn(asyncio.Protocol):
    """One WebSocket connection: upgrade, frames, commands with replies, pushes."""

    kind = "conn"

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.handshaken = False
        self.opened: asyncio.Future = loop.create_future()
        self.closed: asyncio.Future = loop.create_future()
        self.close_code: int | None = None
        self.close_sent = False
        self.next_id = 0
        self.waiting: dict[int, asyncio.Future] = {}
        self.on_reply: dict[int, object] = {}
        self.tracks: dict[str, Track] = {}

    # --- transport ------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                f"GET /connection/websocket HTTP/1.1\r\nHost: {HOST}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def connection_lost(self, exc) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed before the upgrade: {exc}"))
            self.opened.exception()  # retrieved: no "never retrieved" warning
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(ConnectionError("connection closed"))
                future.exception()
        self.waiting.clear()
        if not self.closed.done():
            self.closed.set_result(self.close_code)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        if not self.handshaken:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                status = buffer[9:12].decode(errors="replace")
                ERRORS[f"{self.kind}_upgrade_http_{status}"] += 1
                if not self.opened.done():
                    self.opened.set_exception(ConnectionError(f"upgrade refused: {status}"))
                self.transport.abort()
                return
            self.handshaken = True
            if not self.opened.done():
                self.opened.set_result(None)
            buffer = buffer[end + 4 :]
        pos = 0
        size = len(buffer)
        while size - pos >= 2:
            length = buffer[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buffer[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buffer[pos + 2 : pos + 10], "big")
                head = 10
            end = pos + head + length
            if end > size:
                break
            opcode = buffer[pos] & 0x0F
            payload = buffer[pos + head : end]
            pos = end
            if opcode == 0x1:
                for line in payload.split(b"\n"):
                    if line:
                        try:
                            message = orjson.loads(line)
                        except orjson.JSONDecodeError:
                            ERRORS[f"{self.kind}_bad_json"] += 1
                            continue
                        self.message(message)
            elif opcode == 0x8:
                if len(payload) >= 2:
                    self.close_code = int.from_bytes(payload[:2], "big")
                if self.transport is not None and not self.transport.is_closing():
                    if not self.close_sent:
                        self.close_sent = True
                        self.transport.write(control_frame(0x8, payload[:2]))
                    self.transport.close()
            elif opcode == 0x9:
                self.transport.write(control_frame(0xA, payload[:125]))
            elif opcode != 0xA:
                ERRORS[f"{self.kind}_unexpected_opcode_{opcode}"] += 1
        self.buffer = buffer[pos:]

    # --- protocol -------------------------------------------------------------------
    def command(self, method: str, params: dict, on_reply=None) -> asyncio.Future:
        """Send a command; its reply resolves the future. ``on_reply(reply)`` runs as the
        reply is read, in wire order with the pushes around it."""
        self.next_id += 1
        future = asyncio.get_running_loop().create_future()
        self.waiting[self.next_id] = future
        if on_reply is not None:
            self.on_reply[self.next_id] = on_reply
        self.transport.write(masked(orjson.dumps({"id": self.next_id, method: params})))
        return future

    def message(self, message: dict) -> None:
        if not message:
            self.transport.write(masked(b"{}"))  # the server's ping
            return
        reply_id = message.get("id")
        if reply_id:
            future = self.waiting.pop(reply_id, None)
            callback = self.on_reply.pop(reply_id, None)
            if callback is not None and "error" not in message:
                callback(message)
            if future is not None and not future.done():
                future.set_result(message)
            return
        push = message.get("push")
        if push is None:
            ERRORS[f"{self.kind}_unknown_message"] += 1
            return
        channel = push.get("channel", "")
        if "pub" in push:
            track = self.tracks.get(channel)
            if track is None:
                ERRORS[f"{self.kind}_pub_unsubscribed_channel"] += 1
            else:
                track.pub(int(push["pub"].get("offset", 0)))
        elif "unsubscribe" in push:
            self.unsubscribed(channel, push["unsubscribe"])
        elif "disconnect" in push:
            ERRORS[f"{self.kind}_disconnect_push_{push['disconnect'].get('code')}"] += 1

    def unsubscribed(self, channel: str, body: dict) -> None:
        ERRORS[f"{self.kind}_unsubscribed_{body.get('code')}"] += 1

    def close(self, abort: bool = False) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if abort:
            self.transport.abort()
        elif not self.close_sent:
            self.close_sent = True
            self.transport.write(control_frame(0x8, (1000).to_bytes(2, "big")))


def reply_error(reply: dict, kind: str, what: str) -> bool:
    """Count a reply's error (``kind_what_error_<code>``); True if there was one."""
    error = reply.get("error")
    if error:
        ERRORS[f"{kind}_{what}_error_{error.get('code')}"] += 1
        return True
    return False


# --- steady subscribers -------------------------------------------------------------------


class Steady(Conn):
    kind = "steady"

    def __init__(self, tracks: dict[str, Track]) -> None:
        super().__init__()
        self.tracks = tracks  # shared across this subscriber's reconnects

    def unsubscribed(self, channel: str, body: dict) -> None:
        super().unsubscribed(channel, body)
        track = self.tracks.get(channel)
        if track is not None and self.transport is not None and not self.transport.is_closing():
            asyncio.get_running_loop().create_task(self.resubscribe(channel, track))

    async def resubscribe(self, channel: str, track: Track) -> None:
        track.pending = True
        params = {"channel": channel, "recover": True, "offset": track.last, "epoch": track.epoch}

        def recovered(reply: dict) -> None:
            result = reply["subscribe"]
            if result.get("recovered") is not True:
                ERRORS["steady_not_recovered"] += 1
            track.position(result, self.kind)

        try:
            reply = await asyncio.wait_for(
                self.command("subscribe", params, recovered), STEP_TIMEOUT
            )
        except (TimeoutError, ConnectionError):
            ERRORS["steady_resubscribe_failed"] += 1
            return
        reply_error(reply, self.kind, "resubscribe")


async def steady_one(
    index: int, token: str, channels: list[str], stop: asyncio.Event, ready: asyncio.Future
) -> dict[str, Track]:
    """One subscriber for the whole run; reconnects (with recovery) at most 20 times."""
    loop = asyncio.get_running_loop()
    tracks = {channel: Track(channel) for channel in channels}
    LIVE[index] = tracks
    attempts = 0
    while not stop.is_set() and attempts <= 20:
        proto = Steady(tracks)
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda p=proto: p, HOST, PORT), STEP_TIMEOUT
            )
            await asyncio.wait_for(proto.opened, STEP_TIMEOUT)
            subs = {
                ch: {"recover": True, "offset": t.last, "epoch": t.epoch}
                for ch, t in tracks.items()
                if t.last is not None
            }
            for channel in subs:
                tracks[channel].pending = True

            def connected(reply: dict) -> None:
                for channel, result in reply["connect"].get("subs", {}).items():
                    if result.get("recovered") is not True:
                        ERRORS["steady_not_recovered"] += 1
                    tracks[channel].position(result, "steady")

            reply = await asyncio.wait_for(
                proto.command("connect", {"token": token, "subs": subs}, connected), STEP_TIMEOUT
            )
            if reply_error(reply, "steady", "connect"):
                raise ConnectionError("connect refused")
            for channel, track in tracks.items():
                if track.last is None:
                    reply = await asyncio.wait_for(
                        proto.command(
                            "subscribe",
                            {"channel": channel},
                            lambda r, t=track: t.position(r["subscribe"], "steady"),
                        ),
                        STEP_TIMEOUT,
                    )
                    if reply_error(reply, "steady", "subscribe"):
                        raise ConnectionError("subscribe refused")
            if not ready.done():
                ready.set_result(None)
            stopped = loop.create_task(stop.wait())
            await asyncio.wait([proto.closed, stopped], return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if stop.is_set():
                break
            ERRORS[f"steady_dropped_by_server_{proto.close_code}"] += 1
        except TimeoutError:
            ERRORS["steady_timeout"] += 1
        except (ConnectionError, OSError) as exc:
            ERRORS[f"steady_{type(exc).__name__}"] += 1
        finally:
            proto.close(abort=True)
        attempts += 1
        ERRORS["steady_reconnect"] += 1
        await asyncio.sleep(1.0 + random.random())
    if not ready.done():
        ready.set_exception(RuntimeError(f"steady subscriber {index} never subscribed"))
    return tracks


def steady_totals(all_tracks: list[dict[str, Track]], tops: dict[str, int] | None) -> dict:
    total = Counter()
    for tracks in all_tracks:
        for channel, track in tracks.items():
            total["in_order"] += track.in_order
            total["lost_gaps"] += track.lost
            total["doubled"] += track.doubled
            total["pushed_before_reply"] += track.early
            total["behind_position"] += track.stale
            if tops is not None and track.last is not None and channel in tops:
                total["expected"] += tops[channel] - (track.first or 0)
                total["lost_tail"] += max(0, tops[channel] - track.last)
            if track.last is None:
                total["never_subscribed"] += 1
    total["lost"] = total["lost_gaps"] + total["lost_tail"]
    return dict(total)


async def run_steady(args) -> None:
    loop = asyncio.get_running_loop()
    channels = [f"soak:c{n}" for n in range(args.channels)]
    users = [mint_connection_token(SECRET, f"steady{i}", ttl=24 * 3600) for i in range(100)]
    stop = asyncio.Event()
    readies, tasks = [], []
    started = time.monotonic()
    for i in range(args.connections):
        ready = loop.create_future()
        mine = [channels[i % len(channels)], channels[(i + 1) % len(channels)]]
        readies.append(ready)
        tasks.append(loop.create_task(steady_one(i, users[i % len(users)], mine, stop, ready)))
        if i % 100 == 99:
            await asyncio.sleep(0.05)  # a gentle ramp
    try:
        await asyncio.wait_for(asyncio.gather(*readies), 120)
    except Exception as exc:
        emit(phase="failed", reason=f"steady subscribers not ready: {exc}")
        return
    emit(phase="ready", seconds=time.monotonic() - started)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tops = None
    deadline = time.monotonic() + args.max_seconds
    while time.monotonic() < deadline:
        try:
            line = await asyncio.wait_for(reader.readline(), STATS_EVERY)
        except TimeoutError:
            line = None
        if line is None:
            emit(phase="stats", errors=dict(ERRORS), **steady_totals(list(LIVE.values()), None))
            continue
        if not line:
            break
        command = orjson.loads(line)
        if command.get("cmd") == "final":
            tops = command["tops"]
            break
    # the publisher has stopped: let the last publications arrive (bounded wait)
    wait_until = time.monotonic() + 30
    while tops is not None and time.monotonic() < wait_until:
        if all_caught_up(tops):
            break
        await asyncio.sleep(0.5)
    stop.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 30)
    emit(
        phase="final",
        connections=len(results),
        errors=dict(ERRORS),
        examples=EXAMPLES,
        cpu_seconds=cpu_seconds(),
        **steady_totals(results, tops),
    )


#: the tracks of every steady subscriber, by task (filled as they start)
LIVE: dict[int, dict[str, Track]] = {}


def all_caught_up(tops: dict[str, int]) -> bool:
    return all(
        track.last is not None and track.last >= tops.get(channel, 0)
        for tracks in LIVE.values()
        for channel, track in tracks.items()
    )


# --- churn --------------------------------------------------------------------------------


class Churner(Conn):
    kind = "churn"


CHURN: Counter = Counter()


async def churn_one(serial: int, token: str, shared: str, hold: float, mode: str) -> None:
    loop = asyncio.get_running_loop()
    proto = Churner()
    CHURN["started"] += 1
    stage = "tcp"
    try:
        await asyncio.wait_for(loop.create_connection(lambda: proto, HOST, PORT), STEP_TIMEOUT)
        stage = "upgrade"
        await asyncio.wait_for(proto.opened, STEP_TIMEOUT)
        CHURN["upgraded"] += 1
        own = f"soak:x{serial}"
        track = proto.tracks[shared] = Track(shared)
        connected = proto.command("connect", {"token": token})
        subscribed = proto.command(
            "subscribe", {"channel": shared}, lambda r: track.position(r["subscribe"], "churn")
        )
        own_subscribed = proto.command("subscribe", {"channel": own})
        if mode == "race":
            # drop the connection while connect/subscribe are in flight on the server
            await asyncio.sleep(random.random() * 0.02)
            for future in (connected, subscribed, own_subscribed):
                future.cancel()
            proto.close(abort=True)
            CHURN["aborted_in_flight"] += 1
            return
        stage = "connect"
        reply = await asyncio.wait_for(connected, STEP_TIMEOUT)
        if reply_error(reply, "churn", "connect"):
            return
        stage = "subscribe"
        reply, own_reply = await asyncio.wait_for(
            asyncio.gather(subscribed, own_subscribed), STEP_TIMEOUT
        )
        if reply_error(reply, "churn", "subscribe") or reply_error(own_reply, "churn", "subscribe"):
            return
        CHURN["subscribed"] += 1
        stage = "hold"
        done, _ = await asyncio.wait([proto.closed], timeout=hold)
        if done:
            ERRORS[f"churn_dropped_by_server_{proto.close_code}"] += 1
            return
        if mode == "clean":
            stage = "close"
            proto.close()
            try:
                await asyncio.wait_for(asyncio.shield(proto.closed), 5)
                CHURN["closed_clean"] += 1
            except TimeoutError:
                ERRORS["churn_close_not_answered"] += 1
        else:
            proto.close(abort=True)
            CHURN["aborted"] += 1
    except TimeoutError:
        ERRORS[f"churn_timeout_{stage}"] += 1
    except (ConnectionError, OSError) as exc:
        ERRORS[f"churn_{stage}_{type(exc).__name__}"] += 1
    finally:
        proto.close(abort=True)
        track = proto.tracks.get(shared)
        if track is not None and track.last is not None:
            CHURN["deliveries_in_order"] += track.in_order
            CHURN["lost"] += track.lost
            CHURN["doubled"] += track.doubled
            CHURN["pushed_before_reply"] += track.early
            CHURN["behind_position"] += track.stale


async def run_churn(args) -> None:
    loop = asyncio.get_running_loop()
    rng = random.Random(args.seed)
    channels = [f"soak:c{n}" for n in range(args.channels)]
    tokens = [mint_connection_token(SECRET, f"churn{i}", ttl=24 * 3600) for i in range(2000)]
    emit(phase="ready")
    tasks: set[asyncio.Task] = set()
    interval = 1.0 / args.rate
    started = loop.time()
    deadline = started + args.seconds
    next_at = started
    next_stats = started + STATS_EVERY
    serial = 0
    while loop.time() < deadline and serial < args.rate * args.seconds + 1:
        if len(tasks) < args.max_open:
            roll = rng.random()
            mode = "race" if roll < 0.1 else "clean" if roll < 0.55 else "abort"
            task = loop.create_task(
                churn_one(
                    serial,
                    tokens[serial % len(tokens)],
                    channels[serial % len(channels)],
                    rng.uniform(args.hold_min, args.hold_max),
                    mode,
                )
            )
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            serial += 1
        else:
            CHURN["throttled"] += 1
        CHURN["peak_open"] = max(CHURN["peak_open"], len(tasks))
        now = loop.time()
        if now >= next_stats:
            next_stats = now + STATS_EVERY
            emit(phase="stats", open=len(tasks), churn=dict(CHURN), errors=dict(ERRORS))
        next_at += interval
        delay = next_at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -1.0:
            next_at = loop.time()  # fell behind: do not burst to catch up
            CHURN["fell_behind"] += 1
    if tasks:
        _, pending = await asyncio.wait(set(tasks), timeout=args.hold_max + 3 * STEP_TIMEOUT)
        for task in pending:
            task.cancel()
        ERRORS["churn_unfinished"] += len(pending)
    emit(
        phase="final",
        churn=dict(CHURN),
        errors=dict(ERRORS),
        examples=EXAMPLES,
        cpu_seconds=cpu_seconds(),
    )


# --- publisher ----------------------------------------------------------------------------


async def run_publish(args) -> None:
    import aiohttp

    loop = asyncio.get_running_loop()
    channels = [f"soak:c{n}" for n in range(args.channels)]
    accepted: Counter = Counter()
    url = f"http://{HOST}:{PORT}/api/publish"
    headers = {"X-API-Key": API_KEY}
    timeout = aiohttp.ClientTimeout(total=10)
    deadline = loop.time() + args.seconds
    emit(phase="ready")

    async def one_channel(session, channel: str, phase: float) -> None:
        interval = 1.0 / args.rate
        next_at = loop.time() + phase * interval
        seq = 0
        limit = int(args.rate * args.seconds) + 1
        while loop.time() < deadline and seq < limit:
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            next_at = max(next_at + interval, loop.time() - 1.0)
            seq += 1
            body = {"channel": channel, "data": {"n": seq, "t": time.time()}}
            try:
                async with session.post(url, json=body, headers=headers) as response:
                    reply = await response.read()
                    if response.status != 200:
                        ERRORS[f"publish_http_{response.status}"] += 1
                        continue
                    parsed = orjson.loads(reply)
                    if "error" in parsed:
                        ERRORS[f"publish_error_{parsed['error'].get('code')}"] += 1
                        continue
                    accepted[channel] += 1
            except TimeoutError:
                ERRORS["publish_timeout"] += 1  # may or may not be stored: the tops tell
            except aiohttp.ClientError as exc:
                ERRORS[f"publish_{type(exc).__name__}"] += 1

    async def stats() -> None:
        while loop.time() < deadline:
            await asyncio.sleep(STATS_EVERY)
            emit(phase="stats", accepted=sum(accepted.values()), errors=dict(ERRORS))

    connector = aiohttp.TCPConnector(limit=len(channels))
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        reporter = loop.create_task(stats())
        await asyncio.gather(
            *(one_channel(session, ch, n / len(channels)) for n, ch in enumerate(channels))
        )
        reporter.cancel()
    emit(
        phase="final",
        accepted=sum(accepted.values()),
        by_channel=dict(accepted),
        errors=dict(ERRORS),
        cpu_seconds=cpu_seconds(),
    )


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


PORT = 0


def main() -> None:
    global PORT
    parser = argparse.ArgumentParser(prog="python -m soak.clients")
    parser.add_argument("role", choices=["steady", "churn", "publish"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--channels", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=600, help="churn/publish: how long")
    parser.add_argument("--max-seconds", type=float, default=3600, help="steady: hard bound")
    parser.add_argument("--connections", type=int, default=1000, help="steady subscribers")
    parser.add_argument("--rate", type=float, default=100, help="per second (publish: per channel)")
    parser.add_argument("--max-open", type=int, default=2000, help="churn: open at most")
    parser.add_argument("--hold-min", type=float, default=1.0)
    parser.add_argument("--hold-max", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    PORT = args.port
    raise_nofile(max(args.connections, args.max_open) + 500)
    role = {"steady": run_steady, "churn": run_churn, "publish": run_publish}[args.role]

    import uvloop

    uvloop.run(role(args))


if __name__ == "__main__":
    main()
