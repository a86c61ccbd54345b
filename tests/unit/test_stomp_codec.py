"""The STOMP codec, destination mapping and heart-beat wheel, without sockets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushgate.engine.base import Publication
from pushgate.protocol.stomp.codec import (
    Frame,
    FrameError,
    FrameParser,
    encode_frame,
    escape,
    negotiate_version,
    parse_heartbeat,
)
from pushgate.protocol.stomp.destinations import DestinationError, Destinations, parse_mapping
from pushgate.protocol.stomp.heartbeat import HeartbeatWheel
from pushgate.protocol.stomp.session import json_body, message_tail


def parse(data: bytes, **kw) -> list:
    return FrameParser(**kw).feed(data)


def test_simple_frame_and_heartbeats_between_frames():
    data = (
        b"\n\r\nSEND\ndestination:/topic/a\n\nhello\x00\n\nSEND\r\ndestination:/topic/b\r\n\r\n\x00"
    )
    frames = parse(data)
    assert frames == [
        Frame("SEND", {"destination": "/topic/a"}, b"hello"),
        Frame("SEND", {"destination": "/topic/b"}, b""),
    ]


def test_content_length_body_may_hold_nul_bytes():
    body = b"a\x00b\x00\x00c"
    frame = encode_frame("SEND", {"destination": "/topic/x"}, body)
    assert parse(frame) == [
        Frame("SEND", {"destination": "/topic/x", "content-length": str(len(body))}, body)
    ]


def test_content_length_must_end_in_nul():
    [error] = parse(b"SEND\ncontent-length:2\nreceipt:r9\n\nabc\x00")
    assert isinstance(error, FrameError)
    assert error.message == "frame body not terminated by NUL" and error.receipt == "r9"


@pytest.mark.parametrize("cut", range(1, 60))
def test_a_frame_split_anywhere_is_reassembled(cut):
    data = encode_frame("SEND", {"destination": "/topic/board:1", "x": "a\nb"}, b"\x00{}\x00")
    data += b"\n" + encode_frame("ACK", {"id": "7"})
    parser = FrameParser()
    frames = parser.feed(data[:cut]) + parser.feed(data[cut:])
    assert [f.command for f in frames] == ["SEND", "ACK"], frames
    assert frames[0].headers["x"] == "a\nb"
    assert frames[0].body == b"\x00{}\x00"


def test_header_escapes_in_1_2_but_not_in_connect():
    frames = parse(
        b"CONNECT\npasscode:a\\cb\n\n\x00SEND\ndestination:/topic/a\\cb\nk\\c\\\\:v\\r\\n\n\n\x00"
    )
    assert frames[0].headers == {"passcode": "a\\cb"}
    assert frames[1].headers == {"destination": "/topic/a:b", "k:\\": "v\r\n"}


def test_undefined_escape_is_an_error():
    [error] = parse(b"SEND\ndestination:/topic/\\t\n\n\x00")
    assert isinstance(error, FrameError) and error.message == "invalid header escape"


def test_version_1_0_does_not_unescape():
    [frame] = parse(b"SEND\ndestination:/topic/a\\cb\n\n\x00", version="1.0")
    assert frame.headers["destination"] == "/topic/a\\cb"


def test_repeated_header_keeps_first_value():
    [frame] = parse(b"SEND\nfoo:1\nfoo:2\n\n\x00")
    assert frame.headers == {"foo": "1"}


def test_header_values_keep_colons_and_spaces():
    [frame] = parse(b"SEND\nfoo: a:b \n\n\x00")
    assert frame.headers == {"foo": " a:b "}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"HELLO\n\n\x00", "unknown command"),
        (b"MESSAGE\n\n\x00", "unknown command"),
        (b"SEND\nnocolon\n\n\x00", "malformed header"),
        (b"SEND\n:v\n\n\x00", "malformed header"),
        (b"SEND\ncontent-length:-1\n\n\x00", "invalid content-length"),
        (b"SEND\ncontent-length:x\n\n\x00", "invalid content-length"),
        (b"SEND\nk:\xff\n\n\x00", "header is not UTF-8"),
        (b"SEND\rX\n\n\x00", "unknown command"),
        (b"\rX", "malformed frame: CR without LF"),
        (b"SEND\ncontent-length:999999\n\n", "frame too large"),
        (b"SEND\n\n" + b"x" * 70000, "frame too large"),
        (b"SEND\n" + b"k:v\n" * 70, "too many headers"),
    ],
)
def test_bad_frames_are_errors_not_exceptions(data, message):
    parser = FrameParser()
    out = parser.feed(data)
    if message == "too many headers":
        out += parser.feed(b"\n\x00")
    assert out and isinstance(out[-1], FrameError), out
    assert out[-1].message == message
    assert parser.failed and parser.feed(b"SEND\n\n\x00") == []


def test_unknown_command_is_refused_before_the_frame_ends():
    [error] = FrameParser().feed(b"GET / HTTP/1.1\r\n")
    assert error.message == "unknown command"


def test_encoder_escapes_except_connected():
    assert encode_frame("MESSAGE", {"destination": "/topic/a:b", "x": "1\n2\\"}) == (
        b"MESSAGE\ndestination:/topic/a\\cb\nx:1\\n2\\\\\n\n\x00"
    )
    assert encode_frame("CONNECTED", {"server": "a:b"}) == b"CONNECTED\nserver:a:b\n\n\x00"
    assert encode_frame("ERROR", {"message": "x:y"}, version="1.0") == (
        b"ERROR\nmessage:x:y\n\n\x00"
    )
    assert escape("a\rb", "1.0") == "ab"


@pytest.mark.parametrize(
    ("accept", "version"),
    [("", "1.0"), ("1.0", "1.0"), ("1.1,1.0", "1.1"), ("1.0,1.1,1.2", "1.2"), ("2.0", None)],
)
def test_version_negotiation(accept, version):
    assert negotiate_version(accept) == version


def test_heartbeat_header():
    assert parse_heartbeat("0,10000") == (0, 10000)
    assert parse_heartbeat("10") is None and parse_heartbeat("a,b") is None


# --- fuzz: nothing raises out of the codec -----------------------------------------
COMMANDS = st.sampled_from(["SEND", "SUBSCRIBE", "ACK", "CONNECT", "DISCONNECT", "BOGUS", ""])
TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=20)


@st.composite
def frames(draw) -> bytes:
    headers = draw(st.lists(st.tuples(TEXT, TEXT), max_size=6))
    body = draw(st.binary(max_size=50))
    if draw(st.booleans()):
        return encode_frame(draw(COMMANDS) or "SEND", headers, body)
    raw = draw(COMMANDS).encode() + b"\n"
    raw += b"".join(k.encode() + b":" + v.encode() + b"\n" for k, v in headers)
    return raw + b"\n" + body + draw(st.sampled_from([b"\x00", b"", b"\x00\n\n"]))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(frames(), st.binary(max_size=80)), max_size=5), st.data())
def test_fuzz_random_and_truncated_input_never_raises(chunks, data):
    stream = b"".join(chunks)
    stream = stream[: data.draw(st.integers(0, len(stream)))]
    parser = FrameParser(max_frame_bytes=4096)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=4)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    out = []
    for piece in pieces:
        out += parser.feed(piece)
    for item in out:
        assert isinstance(item, Frame | FrameError)
    # an error is final
    errors = [i for i, item in enumerate(out) if isinstance(item, FrameError)]
    assert not errors or errors[0] == len(out) - 1


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=10), TEXT), max_size=5), st.binary())
def test_fuzz_encode_then_parse_round_trips(headers, body):
    data = encode_frame("SEND", headers, body)
    [frame] = FrameParser(max_frame_bytes=1 << 20).feed(data)
    expected = {}
    for k, v in [*headers, ("content-length", str(len(body)))] if body else headers:
        expected.setdefault(k, v)
    assert frame == Frame("SEND", expected, body)


# --- destinations -------------------------------------------------------------------
def test_destinations():
    dest = Destinations(
        ["board.events/board.* = board:{1}", "feed/news.# = news:{1}", "alerts = alerts:all"]
    )
    assert dest.channel_for("/topic/board:1", "alice") == "board:1"
    assert dest.channel_for("/exchange/board.events/board.42", "a") == "board:42"
    assert dest.channel_for("/exchange/amq.topic/board:7", "a") == "board:7"
    assert dest.channel_for("/exchange/alerts", "a") == "alerts:all"
    assert dest.channel_for_routing_key("feed", "news.eu.fr") == "news:eu.fr"
    assert dest.channel_for_routing_key("feed", "news") == "news:"
    assert dest.channel_for_routing_key("board.events", "board.1.2") is None
    assert dest.channel_for_routing_key("other", "x") is None
    assert dest.channel_for("/user/notifications", "alice") == "notifications:#alice"
    for bad in ("/queue/a", "/amq/queue/a", "/temp-queue/a", "/user/x", "/nope", "/topic/"):
        with pytest.raises(DestinationError):
            dest.channel_for(bad, "" if bad == "/user/x" else "bob")
    with pytest.raises(DestinationError, match="not supported"):
        dest.channel_for("/queue/jobs", "bob")


@pytest.mark.parametrize("spec", ["nothing", "ex/a.* = c:{2}", "= c", "ex/a ="])
def test_bad_mappings(spec):
    with pytest.raises(ValueError):
        parse_mapping(spec)


# --- message encoding and bodies --------------------------------------------------------
def test_message_tail_is_shared_and_complete():
    pub = Publication(b'{"n":1}', offset=5, epoch="ep")
    tail = message_tail(pub, ack=False)
    assert tail == (
        b"message-id:ep-5\ncontent-type:application/json\ncontent-length:7\n"
        b"x-pushgate-offset:5\nx-pushgate-epoch:ep\n\n"
        b'{"n":1}\x00'
    )
    with_ack = message_tail(pub, ack=True)
    assert b"ack:ep-5\n" in with_ack
    [frame] = FrameParser(commands=frozenset({"MESSAGE"})).feed(
        b"MESSAGE\nsubscription:s\ndestination:/topic/x\n" + with_ack
    )
    assert frame.headers["message-id"] == frame.headers["ack"] == "ep-5"
    assert frame.body == b'{"n":1}'


def test_json_body():
    assert json_body(b'{"a":1}') == b'{"a":1}'
    assert json_body(b"hello") == b'"hello"'
    assert json_body(b'{"a":1}', "text/plain") == b'"{\\"a\\":1}"'
    assert json_body(b"\xff\xfe") is None
    assert json_body(b"") == b"null"


# --- heart-beat wheel --------------------------------------------------------------------
class Beat:
    def __init__(self, every: float | None) -> None:
        self.hb_slot = None
        self.every = every
        self.calls: list[float] = []

    def heartbeat(self, now: float) -> float | None:
        self.calls.append(now)
        return None if self.every is None else now + self.every


def test_wheel_visits_only_due_connections():
    wheel = HeartbeatWheel(tick=0.5)
    fast, slow, once = Beat(1.0), Beat(10.0), Beat(None)
    wheel.schedule(fast, 1.0)
    wheel.schedule(slow, 10.0)
    wheel.schedule(once, 0.5)
    for step in range(1, 9):
        wheel.run(step * 0.5)
    assert fast.calls == [1.0, 2.0, 3.0, 4.0]
    assert slow.calls == []
    assert once.calls == [0.5]
    assert len(wheel) == 2
    wheel.remove(fast)
    wheel.run(100.0)
    assert fast.calls == [1.0, 2.0, 3.0, 4.0] and slow.calls == [100.0]
