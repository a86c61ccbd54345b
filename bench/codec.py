"""Why the Protobuf codec uses generated code: the two hot operations, timed.

``python -m bench.codec``: decoding a subscribe command into the typed
``SubscribeRequest`` and encoding a publication push, per call, for

- ``json``: commands.py / replies.py (orjson), for reference;
- ``protobuf``: protobuf_codec.py, the module generated from client.proto and run by the
  protobuf package's C implementation (upb);
- ``hand``: a lean pure-Python varint codec written for this comparison (the option
  the project would take if it were faster; it is not, on decoding).

Decoding runs once per command a client sends; encoding once per publication and kind
of recipient (never per subscriber), so decoding is what a faster codec would buy.
Single process, no sockets; best of 5 repeats.
"""

from __future__ import annotations

import timeit

from pushgate.engine.base import ClientInfo, Publication
from pushgate.protocol.centrifugo import client_pb2 as pb
from pushgate.protocol.centrifugo import protobuf_codec, replies
from pushgate.protocol.centrifugo.commands import SubscribeRequest, decode_commands

CHANNEL = "board:42"
PUB = Publication(
    b'{"type":"card_moved","card":{"id":1234,"column":"done","title":"Ship protobuf"}}',
    12345,
    "epoch",
    ClientInfo("c1234567-89ab-cdef-0123-456789abcdef", "alice"),
)
SUBSCRIBE = pb.Command(
    id=7,
    subscribe=pb.SubscribeRequest(
        channel=CHANNEL,
        recover=True,
        offset=1234,
        epoch="abcd",
        join_leave=True,
        positioned=True,
        recoverable=True,
    ),
)
PROTOBUF_FRAME = protobuf_codec.varint(SUBSCRIBE.ByteSize()) + SUBSCRIBE.SerializeToString()
JSON_FRAME = (
    b'{"id":7,"subscribe":{"channel":"board:42","recover":true,"offset":1234,'
    b'"epoch":"abcd","join_leave":true,"positioned":true,"recoverable":true}}'
)


# --- the hand-written alternative ------------------------------------------------------
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes):
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        if key & 7 == 0:
            value, pos = _varint(buf, pos)
        else:  # length-delimited (the only other wire type these messages use)
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        yield key >> 3, value


_SUBSCRIBE_FIELDS = {1: "channel", 2: "token", 6: "epoch", 12: "delta", 17: "cursor"}
_SUBSCRIBE_FLAGS = {3: "recover", 9: "positioned", 10: "recoverable", 11: "join_leave", 19: "asc"}
_SUBSCRIBE_INTS = {7: "offset", 14: "flag", 15: "type", 16: "phase", 18: "limit"}


def hand_decode_subscribe(frame: bytes) -> SubscribeRequest:
    size, pos = _varint(frame, 0)
    command_id, body = 0, b""
    for number, value in _fields(frame[pos : pos + size]):
        if number == 1:
            command_id = value
        elif number == 5:
            body = value
    out = SubscribeRequest(command_id, "subscribe")
    for number, value in _fields(body):
        if number in _SUBSCRIBE_FIELDS:
            setattr(out, _SUBSCRIBE_FIELDS[number], bytes(value).decode())
        elif number in _SUBSCRIBE_FLAGS:
            setattr(out, _SUBSCRIBE_FLAGS[number], bool(value))
        elif number in _SUBSCRIBE_INTS:
            setattr(out, _SUBSCRIBE_INTS[number], value)
        elif number == 8:
            out.data = bytes(value)
    return out


def _ld(tag: int, value: bytes) -> bytes:
    return bytes((tag,)) + protobuf_codec.varint(len(value)) + value


def hand_pub_push(channel: str, pub: Publication) -> bytes:
    body = _ld(0x22, pub.data)
    if pub.info is not None:
        info = _ld(0x0A, pub.info.user.encode()) + _ld(0x12, pub.info.client.encode())
        body += _ld(0x2A, info)
    if pub.offset:
        body += b"\x30" + protobuf_codec.varint(pub.offset)
    reply = _ld(0x22, _ld(0x12, channel.encode()) + _ld(0x22, body))
    return protobuf_codec.varint(len(reply)) + reply


# --- timing ------------------------------------------------------------------------------
CASES = {
    "decode subscribe": {
        "json": lambda: decode_commands(JSON_FRAME),
        "protobuf": lambda: protobuf_codec.decode_commands(PROTOBUF_FRAME),
        "hand": lambda: hand_decode_subscribe(PROTOBUF_FRAME),
    },
    "encode pub push": {
        "json": lambda: replies.pub_push(CHANNEL, PUB),
        "protobuf": lambda: protobuf_codec.pub_push(CHANNEL, PUB),
        "hand": lambda: hand_pub_push(CHANNEL, PUB),
    },
}


def per_call_us(function, number: int = 100_000) -> float:
    return min(timeit.repeat(function, number=number, repeat=5)) / number * 1e6


def main() -> None:
    assert (
        hand_decode_subscribe(PROTOBUF_FRAME) == protobuf_codec.decode_commands(PROTOBUF_FRAME)[0]
    )
    assert hand_pub_push(CHANNEL, PUB) == protobuf_codec.pub_push(CHANNEL, PUB)
    for case, functions in CASES.items():
        figures = {name: per_call_us(f) for name, f in functions.items()}
        print(f"{case}: " + ", ".join(f"{name} {us:.2f} µs" for name, us in figures.items()))


if __name__ == "__main__":
    main()
