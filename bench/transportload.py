"""A lean load client for every transport: many subscribers of one channel in one process.

Raw asyncio protocols on uvloop, HTTP/1.1, WebSocket, STOMP and BOSH framing done by
hand, so the load side costs little next to the server. One process speaks one
transport (``--transport``): websocket, http_stream and sse (bidirectional emulation:
commands go through ``POST /emulation``), uni_websocket, uni_sse and uni_http_stream
(the channel comes from the token's ``channels`` claim), longpoll and poll (pushgate's
polling protocol: session, rid, ack, commands; a long poll is re-issued as soon as it is
answered, a short poll after ``--poll-interval``), stomp (STOMP 1.2 over WebSocket at
``/stomp``: CONNECT with the JWT as ``passcode`` and no heart-beats, SUBSCRIBE to
``/topic/<channel>``; the offset is the MESSAGE's ``x-pushgate-offset`` header) and
bosh (XMPP over BOSH at ``/http-bind``: session, SASL PLAIN with the JWT as password,
restart, bind, session; the channel comes from the token's ``channels`` claim, each
publication is a headline message whose ``<item id>`` is its offset, and one request is
kept waiting at a time, hold=1, re-issued with the next rid as soon as it is answered).

Every publication received is checked against the subscriber's last offset (a repeat
is a duplicate, a jump is a gap) and its latency is taken from the send time ``t`` in
its data. Run as a separate process by bench.transports: it prints one JSON line per
phase on stdout and reads commands from stdin (``start``, ``until``, ``quit``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import html
import os
import random
import re
import resource
import sys
import time
from pathlib import Path
from urllib.parse import quote

import orjson

from bench.frames import masked, next_frame

TRANSPORTS = (
    "websocket",
    "http_stream",
    "sse",
    "uni_websocket",
    "uni_sse",
    "uni_http_stream",
    "longpoll",
    "poll",
    "stomp",
    "bosh",
)
UNI = ("uni_websocket", "uni_sse", "uni_http_stream")
#: transports whose subscription comes from the token's ``channels`` claim
TOKEN_CHANNELS = (*UNI, "bosh")
#: transports that cost an HTTP request per delivery batch (or per poll)
POLLING = ("longpoll", "poll", "bosh")
MAX_BUFFER = 16 * 1024 * 1024  # a peer that sends more than this without framing is broken
XMPP_DOMAIN = "localhost"  # pushgate's default xmpp.domain


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Stats:
    """What one round saw, over all subscribers."""

    def __init__(self) -> None:
        self.reset()
        self.target = 0  # every subscriber done when its last offset reaches this
        self.behind = 0
        self.done = asyncio.Event()
        self.errors: list[str] = []  # kept across rounds: setup or connection failures
        self.disconnects = 0

    def reset(self) -> None:
        self.deliveries = 0
        self.latencies: list[float] = []
        self.duplicates = 0
        self.missing = 0
        self.resent = 0  # polling messages with seq already processed (lost response replay)

    def error(self, text: str) -> None:
        if len(self.errors) < 20:
            self.errors.append(text)


class Subscriber:
    """The transport-independent part: what to do with each decoded message."""

    __slots__ = (
        "index",
        "last_offset",
        "node",
        "port",
        "ready",
        "session",
        "stats",
        "stopped",
        "transport",
        "uni",
    )

    def __init__(
        self, stats: Stats, ready: asyncio.Future, index: int, port: int, uni: bool = False
    ) -> None:
        self.uni = uni
        self.stats = stats
        self.ready = ready
        self.index = index
        self.port = port
        self.last_offset = 0
        self.session = ""
        self.node = ""
        self.stopped = False
        self.transport: asyncio.Transport | None = None

    # --- messages -------------------------------------------------------------------
    def message(self, raw: bytes) -> None:
        if raw == b"{}":
            self.ping()
            return
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.stats.error(f"#{self.index}: not JSON: {raw[:120]!r}")
            return
        if self.uni:
            push = msg
        elif "push" in msg:
            push = msg["push"]
        else:
            self.reply(msg)
            return
        pub = push.get("pub")
        if pub is not None:
            self.publication(pub)
        elif "connect" in push and self.uni:
            self.set_ready()
        elif "disconnect" in push:
            self.stats.disconnects += 1
            self.stats.error(f"#{self.index}: disconnect {push['disconnect']}")

    def publication(self, pub: dict) -> None:
        stats = self.stats
        now = time.time()
        stats.deliveries += 1
        offset = pub.get("offset", 0)
        last = self.last_offset
        if offset <= last:
            stats.duplicates += 1
            return
        if last and offset > last + 1:
            stats.missing += offset - last - 1
        self.last_offset = offset
        data = pub.get("data")
        if isinstance(data, dict) and "t" in data:
            stats.latencies.append(now - data["t"])
        if stats.target and last < stats.target <= offset:
            stats.behind -= 1
            if stats.behind <= 0:
                stats.done.set()

    def reply(self, msg: dict) -> None:
        if "error" in msg:
            self.fail(f"reply {msg}")
        elif msg.get("id") == 1:
            connect = msg.get("connect", {})
            self.session = connect.get("session", "")
            self.node = connect.get("node", "")
            self.connected()
        elif msg.get("id") == 2:
            self.set_ready()

    def connected(self) -> None:
        """The connect reply arrived (the subscribe may need a separate command)."""

    def ping(self) -> None:
        """A server ping: bidirectional transports answer it."""

    def set_ready(self) -> None:
        if not self.ready.done():
            self.ready.set_result(None)

    def fail(self, text: str) -> None:
        self.stats.error(f"#{self.index}: {text}")
        if not self.ready.done():
            self.ready.set_exception(RuntimeError(text))

    def stop(self) -> None:
        self.stopped = True
        if self.transport is not None:
            self.transport.close()

    # --- asyncio.Protocol -----------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        if not self.stopped:
            self.fail(f"connection lost: {exc}")

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    def eof_received(self) -> bool:
        return False


def connect_command(token: str) -> bytes:
    return orjson.dumps({"id": 1, "connect": {"token": token}})


def subscribe_command(channel: str) -> bytes:
    return orjson.dumps({"id": 2, "subscribe": {"channel": channel}})


# --- WebSocket --------------------------------------------------------------------------
class WebSocketSubscriber(Subscriber, asyncio.Protocol):
    """``/connection/websocket`` (connect + subscribe) or ``/connection/uni_websocket``."""

    __slots__ = ("buffer", "first", "handshaken", "path", "subprotocol")

    def __init__(
        self,
        stats,
        ready,
        index,
        port,
        path: str,
        first: list[bytes],
        uni: bool,
        subprotocol: str = "",
    ):
        super().__init__(stats, ready, index, port, uni)
        self.path = path
        self.first = first
        self.subprotocol = subprotocol
        self.buffer = b""
        self.handshaken = False

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        key = base64.b64encode(os.urandom(16)).decode()
        protocol = f"Sec-WebSocket-Protocol: {self.subprotocol}\r\n" if self.subprotocol else ""
        transport.write(
            (
                f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{protocol}\r\n"
            ).encode()
        )

    def ping(self) -> None:
        if not self.uni:
            self.transport.write(masked(b"{}"))

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        if not self.handshaken:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self.fail(buffer[:200].decode(errors="replace"))
                self.transport.close()
                return
            self.handshaken = True
            buffer = buffer[end + 4 :]
            self.transport.write(b"".join(masked(c) for c in self.first))
        pos = 0
        while (frame := next_frame(buffer, pos)) is not None:
            opcode, payload, pos = frame
            if opcode == 0x8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 0
                self.stats.disconnects += 1
                self.stats.error(f"#{self.index}: close frame {code} {payload[2:80]!r}")
                continue
            if opcode in (0x1, 0x2):
                self.payload(payload)
        self.buffer = buffer[pos:]

    def payload(self, payload: bytes) -> None:
        # the Centrifugo JSON protocol may put several messages in one frame
        for raw in payload.split(b"\n"):
            if raw:
                self.message(raw)


# --- STOMP over WebSocket ---------------------------------------------------------------
def stomp_escape(value: str) -> str:
    """A STOMP 1.2 header value (escaped in every frame but CONNECT)."""
    return value.replace("\\", "\\\\").replace(":", "\\c").replace("\n", "\\n")


class StompSubscriber(WebSocketSubscriber):
    """STOMP 1.2 at ``/stomp`` (subprotocol ``v12.stomp``): CONNECT with the JWT as
    ``passcode`` and ``heart-beat:0,0``, then SUBSCRIBE with a receipt; ready on the
    RECEIPT. The server sends each frame as one text message; a MESSAGE carries the
    publication's offset in ``x-pushgate-offset`` and its data as the JSON body."""

    __slots__ = ()

    def __init__(self, stats, ready, index, port, token: str, channel: str):
        connect = (
            f"CONNECT\naccept-version:1.2\nhost:/\nheart-beat:0,0\npasscode:{token}\n\n\0"
        ).encode()
        subscribe = (
            f"SUBSCRIBE\nid:0\ndestination:{stomp_escape('/topic/' + channel)}\nack:auto\n"
            "receipt:subscribed\n\n\0"
        ).encode()
        super().__init__(
            stats, ready, index, port, "/stomp", [connect, subscribe], False, "v12.stomp"
        )

    def payload(self, payload: bytes) -> None:
        pos = 0
        size = len(payload)
        while pos < size:
            if payload[pos] in (0x0A, 0x0D):  # heart-beats and EOLs between frames
                pos += 1
                continue
            end = payload.find(b"\n\n", pos)
            if end < 0:
                self.stats.error(f"#{self.index}: STOMP frame without headers end")
                return
            lines = payload[pos:end].split(b"\n")
            command = lines[0].rstrip(b"\r")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.rstrip(b"\r").partition(b":")
                headers.setdefault(name, value)
            start = end + 2
            length = headers.get(b"content-length")
            if length is not None:
                stop = start + int(length)
            else:
                stop = payload.find(b"\0", start)
                if stop < 0:
                    stop = size
            self.frame(command, headers, payload[start:stop])
            pos = stop + 1  # past the NUL

    def frame(self, command: bytes, headers: dict[bytes, bytes], body: bytes) -> None:
        if command == b"MESSAGE":
            offset = headers.get(b"x-pushgate-offset")
            if offset is None:
                self.stats.error(f"#{self.index}: MESSAGE without offset: {headers}")
                return
            try:
                data = orjson.loads(body)
            except orjson.JSONDecodeError:
                self.stats.error(f"#{self.index}: MESSAGE body not JSON: {body[:120]!r}")
                return
            self.publication({"offset": int(offset), "data": data})
        elif command == b"RECEIPT":
            self.set_ready()
        elif command == b"CONNECTED":
            self.session = headers.get(b"session", b"").decode()
        elif command == b"ERROR":
            self.stats.disconnects += 1
            self.fail(f"STOMP ERROR {headers.get(b'message', b'')!r}: {body[:200]!r}")
        else:
            self.stats.error(f"#{self.index}: unexpected STOMP {command[:20]!r}")


# --- long HTTP responses: HTTP streaming and SSE -----------------------------------------
class StreamSubscriber(Subscriber, asyncio.Protocol):
    """A chunked response carrying newline-delimited JSON or SSE ``data:`` events."""

    __slots__ = ("body", "chunked", "headers_done", "lines", "request", "sse")

    def __init__(self, stats, ready, index, port, request: bytes, sse: bool, uni: bool):
        super().__init__(stats, ready, index, port, uni)
        self.request = request
        self.sse = sse
        self.headers_done = False
        self.body = b""  # raw (chunked) bytes not yet decoded
        self.lines = b""  # decoded bytes not yet split into messages

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        body = self.body + data
        if not self.headers_done:
            end = body.find(b"\r\n\r\n")
            if end < 0:
                self.body = body
                return
            head = body[:end].lower()
            if not head.startswith(b"http/1.1 200"):
                self.fail(body[:300].decode(errors="replace"))
                self.transport.close()
                return
            if b"transfer-encoding: chunked" not in head:
                self.fail("stream response is not chunked")
                self.transport.close()
                return
            self.headers_done = True
            body = body[end + 4 :]
        decoded = []
        pos = 0
        size = len(body)
        while True:
            eol = body.find(b"\r\n", pos)
            if eol < 0:
                break
            length = int(body[pos:eol].split(b";", 1)[0], 16)
            if length == 0:
                self.fail("the server ended the stream")
                self.stopped = True  # reported once, not again when the socket closes
                break
            end = eol + 2 + length
            if end + 2 > size:
                break
            decoded.append(body[eol + 2 : end])
            pos = end + 2
        self.body = body[pos:]
        if len(self.body) > MAX_BUFFER:
            self.fail("chunk framing lost")
            self.transport.close()
            return
        if not decoded:
            return
        text = self.lines + b"".join(decoded)
        cut = text.rfind(b"\n")
        if cut < 0:
            self.lines = text
            return
        self.lines = text[cut + 1 :]
        if self.sse:
            for raw in text[:cut].split(b"\n"):
                if raw.startswith(b"data:"):
                    self.message(raw[5:].strip())
        else:
            for raw in text[:cut].split(b"\n"):
                if raw:
                    self.message(raw)

    def connected(self) -> None:
        # bidirectional emulation: the subscribe command goes through /emulation
        if not self.uni:
            emulate(self, subscribe_command(CHANNEL[0]))

    def ping(self) -> None:
        if not self.uni:
            emulate(self, b"{}")


TASKS: set[asyncio.Task] = set()
CHANNEL: list[str] = []


def emulate(sub: Subscriber, data: bytes) -> None:
    """Send commands of an emulated connection as ``POST /emulation`` (one short request)."""
    body = orjson.dumps({"session": sub.session, "node": sub.node, "data": data.decode()})
    task = asyncio.get_running_loop().create_task(post_emulation(sub, body))
    TASKS.add(task)
    task.add_done_callback(TASKS.discard)


async def post_emulation(sub: Subscriber, body: bytes) -> None:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", sub.port), 10)
        try:
            writer.write(
                b"POST /emulation HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
                % (len(body), body)
            )
            status = await asyncio.wait_for(reader.readline(), 10)
        finally:
            writer.close()
        if not status.startswith(b"HTTP/1.1 204"):
            sub.fail(f"/emulation answered {status!r}")
    except (OSError, TimeoutError) as exc:
        sub.fail(f"/emulation failed: {exc!r}")


# --- request/response over one keep-alive connection ------------------------------------
class HttpSubscriber(Subscriber, asyncio.Protocol):
    """POSTs one at a time on a keep-alive connection; each answer (``Content-Length``
    framed) goes to ``answer``."""

    __slots__ = ("buffer",)

    def __init__(self, stats, ready, index, port, uni: bool = False):
        super().__init__(stats, ready, index, port, uni)
        self.buffer = b""

    def post(self, path: bytes, content_type: bytes, body: bytes) -> None:
        self.transport.write(
            b"POST %b HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: %b\r\n"
            b"Content-Length: %d\r\n\r\n%b" % (path, content_type, len(body), body)
        )

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buffer[:end].lower()
            length = -1
            for header in head.split(b"\r\n")[1:]:
                name, _, value = header.partition(b":")
                if name.strip() == b"content-length":
                    length = int(value)
            if length < 0:
                self.fail(f"answer without content-length: {head[:200]!r}")
                self.transport.close()
                return
            if len(buffer) < end + 4 + length:
                break
            body = buffer[end + 4 : end + 4 + length]
            buffer = buffer[end + 4 + length :]
            if not head.startswith(b"http/1.1 200"):
                self.fail(f"answered {head[:15]!r}: {body[:200]!r}")
                self.transport.close()
                return
            self.answer(body)
        self.buffer = buffer
        if len(buffer) > MAX_BUFFER:
            self.fail("HTTP framing lost")
            self.transport.close()

    def answer(self, body: bytes) -> None:
        raise NotImplementedError


# --- polling ------------------------------------------------------------------------------
class PollSubscriber(HttpSubscriber):
    """pushgate's polling protocol over one keep-alive connection.

    Each request carries ``session`` (after the first), ``rid`` (one more each time),
    ``ack`` (highest ``seq`` processed) and commands (connect + subscribe on the first).
    Only messages with ``seq`` above the last processed one are handled.
    """

    __slots__ = ("ack", "commands", "hold", "interval", "path", "rid")

    def __init__(self, stats, ready, index, port, hold: bool, interval: float, commands):
        super().__init__(stats, ready, index, port)
        self.path = b"/connection/longpoll" if hold else b"/connection/poll"
        self.hold = hold
        self.interval = interval
        self.commands = commands
        self.rid = 0
        self.ack = 0

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.send()

    def send(self) -> None:
        if self.stopped or self.transport is None or self.transport.is_closing():
            return
        self.rid += 1
        request: dict = {"rid": self.rid, "ack": self.ack}
        if self.session:
            request["session"] = self.session
        if self.commands:
            request["commands"] = self.commands
            self.commands = None
        self.post(self.path, b"application/json", orjson.dumps(request))

    def answer(self, body: bytes) -> None:
        response = orjson.loads(body)
        self.session = response["session"]
        for seq, message in response["messages"]:
            if seq <= self.ack:
                self.stats.resent += 1
                continue
            self.ack = seq
            if "push" in message:
                push = message["push"]
                if "pub" in push:
                    self.publication(push["pub"])
                elif "disconnect" in push:
                    self.stats.disconnects += 1
                    self.stats.error(f"#{self.index}: disconnect {push['disconnect']}")
            else:
                self.reply(message)
        if self.hold:
            self.send()  # a long poll is re-issued at once
        else:
            asyncio.get_running_loop().call_later(self.interval, self.send)


# --- XMPP over BOSH -------------------------------------------------------------------------
NS_HTTPBIND = "http://jabber.org/protocol/httpbind"
BOSH_PATH = b"/http-bind"
BOSH_TYPE = b"text/xml; charset=utf-8"
# a publication: <message type="headline"><event><items node=…><item id="<offset>">
# <json xmlns="urn:xmpp:json:0">…JSON, XML-escaped…</json></item></items></event></message>
HEADLINE = re.compile(rb'<item id="(\d*)"><json xmlns="urn:xmpp:json:0">([^<]*)</json>')
SID = re.compile(rb'\ssid="([^"]+)"')


def jwt_subject(token: str) -> str:
    payload = token.split(".")[1]
    return orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"]


class BoshSubscriber(HttpSubscriber):
    """XMPP over BOSH at ``/http-bind`` with ``hold=1``: session creation, SASL PLAIN
    (the JWT as password), stream restart, resource bind, session; then one empty
    request is kept waiting at all times, the next (rid + 1) sent as soon as the last
    is answered. Publications of the token's ``channels`` arrive as headline messages
    (XEP-0060 event, ``<item id>`` = offset, JSON in an XEP-0335 ``<json/>``)."""

    __slots__ = ("rid", "sid", "step", "token", "user")

    STEPS = ("session creation", "SASL", "restart", "bind", "session")

    def __init__(self, stats, ready, index, port, token: str):
        super().__init__(stats, ready, index, port)
        self.token = token
        self.user = jwt_subject(token)
        self.rid = random.randrange(1 << 20, 1 << 40)
        self.sid = ""
        self.step = 0  # index in STEPS; len(STEPS) once publications flow

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.send(f' to="{XMPP_DOMAIN}" wait="60" hold="1" ver="1.6" xmpp:version="1.0"', "")

    def send(self, attrs: str = "", inner: str = "") -> None:
        if self.stopped or self.transport is None or self.transport.is_closing():
            return
        sid = f' sid="{self.sid}"' if self.sid else ""
        body = (
            f'<body xmlns="{NS_HTTPBIND}" xmlns:xmpp="urn:xmpp:xbosh" rid="{self.rid}"{sid}{attrs}'
        )
        body += f">{inner}</body>" if inner else "/>"
        self.rid += 1
        self.post(BOSH_PATH, BOSH_TYPE, body.encode())

    def answer(self, body: bytes) -> None:
        head = body[: body.find(b">") + 1]
        if b'type="terminate"' in head:
            self.stats.disconnects += 1
            self.fail(f"BOSH session terminated: {body[:300]!r}")
            self.stopped = True  # reported once, not again when the socket closes
            self.transport.close()
            return
        step = self.step
        if step >= len(self.STEPS):
            self.headlines(body)
            self.send()  # hold=1: the next request waits as soon as this one is answered
            return
        if step == 0:
            found = SID.search(head)
            ok = found is not None and b"<mechanism>PLAIN</mechanism>" in body
            if ok:
                self.sid = found.group(1).decode()
                creds = base64.b64encode(f"\0{self.user}\0{self.token}".encode()).decode()
                self.send(
                    "",
                    '<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">'
                    f"{creds}</auth>",
                )
        elif step == 1:
            ok = b"<success " in body
            if ok:
                self.send(f' to="{XMPP_DOMAIN}" xmpp:restart="true"')
        elif step == 2:
            ok = b"<bind " in body
            if ok:
                self.send(
                    "",
                    '<iq xmlns="jabber:client" type="set" id="b1"><bind '
                    'xmlns="urn:ietf:params:xml:ns:xmpp-bind"><resource>bench</resource>'
                    "</bind></iq>",
                )
        elif step == 3:
            ok = b"<jid>" in body
            if ok:
                self.send(
                    "",
                    '<iq xmlns="jabber:client" type="set" id="s1">'
                    '<session xmlns="urn:ietf:params:xml:ns:xmpp-session"/></iq>',
                )
        else:
            ok = b'type="result" id="s1"' in body
            if ok:
                self.headlines(body)
                self.set_ready()
                self.send()
        if not ok:
            self.fail(f"BOSH {self.STEPS[step]} failed: {body[:300]!r}")
            self.stopped = True
            self.transport.close()
            return
        self.step = step + 1

    def headlines(self, body: bytes) -> None:
        if b"<message " not in body:
            return
        found = 0
        for item_id, text in HEADLINE.findall(body):
            found += 1
            if not item_id:
                self.stats.error(f"#{self.index}: headline without an item id")
                continue
            if b"&" in text:
                text = html.unescape(text.decode()).encode()
            try:
                data = orjson.loads(text)
            except orjson.JSONDecodeError:
                self.stats.error(f"#{self.index}: headline JSON {text[:120]!r}")
                continue
            self.publication({"offset": int(item_id), "data": data})
        if found != body.count(b"<message "):
            self.stats.error(f"#{self.index}: unexpected stanza {body[:300]!r}")


# --- the process ---------------------------------------------------------------------------
def make_subscriber(args, stats: Stats, ready, index: int, token: str) -> Subscriber:
    transport = args.transport
    port = args.port
    channel = args.channel
    if transport == "websocket":
        first = [connect_command(token), subscribe_command(channel)]
        return WebSocketSubscriber(
            stats, ready, index, port, "/connection/websocket", first, uni=False
        )
    if transport == "uni_websocket":
        first = [orjson.dumps({"token": token})]
        return WebSocketSubscriber(
            stats, ready, index, port, "/connection/uni_websocket", first, uni=True
        )
    if transport in ("http_stream", "uni_http_stream"):
        body = (
            connect_command(token) if transport == "http_stream" else orjson.dumps({"token": token})
        )
        request = (
            b"POST /connection/%b HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
            % (transport.encode(), len(body), body)
        )
        return StreamSubscriber(stats, ready, index, port, request, sse=False, uni=transport in UNI)
    if transport in ("sse", "uni_sse"):
        connect = {"id": 1, "connect": {"token": token}} if transport == "sse" else {"token": token}
        query = quote(orjson.dumps(connect).decode(), safe="")
        request = (
            f"GET /connection/{transport}?cf_connect={query} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Accept: text/event-stream\r\n\r\n"
        ).encode()
        return StreamSubscriber(stats, ready, index, port, request, sse=True, uni=transport in UNI)
    if transport in ("longpoll", "poll"):
        commands = [
            {"id": 1, "connect": {"token": token}},
            {"id": 2, "subscribe": {"channel": channel}},
        ]
        return PollSubscriber(
            stats, ready, index, port, transport == "longpoll", args.poll_interval, commands
        )
    if transport == "stomp":
        return StompSubscriber(stats, ready, index, port, token, channel)
    if transport == "bosh":
        return BoshSubscriber(stats, ready, index, port, token)
    raise SystemExit(f"unknown transport {transport!r}")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def emit(obj: dict) -> None:
    print(orjson.dumps(obj).decode(), flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--transport", choices=TRANSPORTS, required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--tokens", required=True, help="file with one token per line")
    parser.add_argument("--channel", required=True)
    parser.add_argument("--poll-interval", type=float, default=0.5)
    args = parser.parse_args()
    CHANNEL.append(args.channel)
    loop = asyncio.get_running_loop()
    stats = Stats()
    tokens = Path(args.tokens).read_text().split()
    subscribers: list[Subscriber] = []
    started = time.time()
    batch = 100
    try:
        for start in range(0, args.connections, batch):
            pending = []
            for i in range(start, min(start + batch, args.connections)):
                ready = loop.create_future()
                pending.append(ready)
                sub = make_subscriber(args, stats, ready, i, tokens[i % len(tokens)])
                subscribers.append(sub)
                await loop.create_connection(lambda s=sub: s, "127.0.0.1", args.port)
            await asyncio.wait_for(asyncio.gather(*pending), 60)
    except Exception as exc:  # reported to the controller, which stops
        emit({"phase": "failed", "error": repr(exc), "errors": stats.errors})
        return
    emit({"phase": "ready", "seconds": time.time() - started})
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    cpu0 = cpu_seconds()
    wall0 = time.time()
    while line := await reader.readline():
        command = orjson.loads(line)
        if command["cmd"] == "start":
            stats.reset()
            stats.target = 0
            stats.done.clear()
            cpu0 = cpu_seconds()
            wall0 = time.time()
            emit({"phase": "started"})
        elif command["cmd"] == "until":
            # done when every subscriber has the publication at this offset
            stats.target = command["offset"]
            stats.behind = sum(1 for s in subscribers if s.last_offset < stats.target)
            if stats.behind <= 0:
                stats.done.set()
            try:
                await asyncio.wait_for(stats.done.wait(), command.get("timeout", 60))
                complete = True
            except TimeoutError:
                complete = False
            now = time.time()
            emit(
                {
                    "phase": "received",
                    "complete": complete,
                    "behind": max(stats.behind, 0),
                    "deliveries": stats.deliveries,
                    "duplicates": stats.duplicates,
                    "missing": stats.missing,
                    "resent": stats.resent,
                    "disconnects": stats.disconnects,
                    "errors": stats.errors[:5],
                    "at": now,
                    "client_cpu": cpu_seconds() - cpu0,
                    "client_wall": now - wall0,
                    "latency_count": len(stats.latencies),
                    "latency_p50": percentile(stats.latencies, 0.5),
                    "latency_p99": percentile(stats.latencies, 0.99),
                    "latency_max": max(stats.latencies, default=float("nan")),
                }
            )
        elif command["cmd"] == "quit":
            break
    for sub in subscribers:
        sub.stop()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
