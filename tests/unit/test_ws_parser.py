"""The client-frame parser on its own (sans-I/O): bytes in, messages or a close code out."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushgate.transport.ws_handshake import accept_key
from pushgate.transport.ws_parser import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    FrameParser,
    WebSocketProtocolError,
    parse_close,
    unmask,
)


def client_frame(opcode: int, payload: bytes, fin: bool = True, mask: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    length = len(payload)
    bit = 0x80 if mask else 0
    if length < 126:
        head = bytes((first, bit | length))
    elif length < 1 << 16:
        head = struct.pack("!BBH", first, bit | 126, length)
    else:
        head = struct.pack("!BBQ", first, bit | 127, length)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def test_accept_key_matches_rfc_6455_example():
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@given(st.binary(max_size=300), st.binary(min_size=4, max_size=4))
def test_unmask_is_the_repeating_xor(payload, key):
    assert unmask(key, payload) == bytes(b ^ key[i % 4] for i, b in enumerate(payload))


@settings(max_examples=60, deadline=None)
@given(
    messages=st.lists(st.binary(max_size=70_000), min_size=1, max_size=4),
    pieces=st.integers(min_value=1, max_value=4),
    cut=st.integers(min_value=1, max_value=700),
)
def test_fragmented_and_split_messages_come_out_whole_and_in_order(messages, pieces, cut):
    """Each message sent in ``pieces`` fragments with pings between them, the byte stream
    fed in chunks of ``cut`` bytes: the parser yields the pings and each message whole."""
    stream = b""
    expected = []
    for n, message in enumerate(messages):
        step = max(1, len(message) // pieces)
        parts = [message[i : i + step] for i in range(0, len(message), step)] or [b""]
        for i, part in enumerate(parts):
            opcode = OP_BINARY if i == 0 else 0
            stream += client_frame(opcode, part, fin=i == len(parts) - 1)
            if i == 0 and len(parts) > 1:
                stream += client_frame(OP_PING, b"p%d" % n)
                expected.append((OP_PING, b"p%d" % n))
        expected.append((OP_BINARY, message))
    parser = FrameParser(max_size=1 << 20)
    out = []
    for i in range(0, len(stream), cut):
        out += parser.feed(stream[i : i + cut])
    assert out == expected


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (client_frame(OP_TEXT, b"hi", mask=False), 1002),
        (bytes((0x81 | 0x40, 0x80)) + b"\0" * 4, 1002),  # RSV1 without an extension
        (client_frame(0x3, b""), 1002),  # reserved opcode
        (client_frame(0, b"x"), 1002),  # continuation of nothing
        (client_frame(OP_PING, b"x", fin=False), 1002),
        (client_frame(OP_PING, b"x" * 126), 1002),
        (client_frame(OP_TEXT, b"\xff\xfe"), 1007),
        (client_frame(OP_TEXT, b"a", fin=False) + client_frame(OP_TEXT, b"b"), 1002),
        # refused by its header, before any of the 2^40-byte payload arrives
        (struct.pack("!BBQ", 0x82, 0x80 | 127, 1 << 40), 1009),
    ],
)
def test_protocol_errors_carry_the_close_code(data, code):
    with pytest.raises(WebSocketProtocolError) as error:
        FrameParser(max_size=1024).feed(data)
    assert error.value.code == code


def test_a_message_over_the_limit_across_fragments_is_refused():
    parser = FrameParser(max_size=100)
    assert parser.feed(client_frame(OP_TEXT, b"a" * 60, fin=False)) == []
    with pytest.raises(WebSocketProtocolError) as error:
        parser.feed(client_frame(0, b"b" * 60))
    assert error.value.code == 1009


@pytest.mark.parametrize(
    ("payload", "result"),
    [
        (b"", (None, "")),
        (struct.pack("!H", 1000) + b"bye", (1000, "bye")),
        (struct.pack("!H", 4999), (4999, "")),
    ],
)
def test_close_payloads(payload, result):
    assert parse_close(payload) == result
    assert FrameParser(125).feed(client_frame(OP_CLOSE, payload)) == [(OP_CLOSE, payload)]


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 2999, 5000])
def test_close_codes_a_peer_may_not_send(code):
    with pytest.raises(WebSocketProtocolError) as error:
        parse_close(struct.pack("!H", code))
    assert error.value.code == 1002
