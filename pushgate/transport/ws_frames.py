"""Server-to-client WebSocket frames (RFC 6455), built once and written to many.

Server frames are never masked, so one frame's bytes can go to every subscriber.
"""

from __future__ import annotations

import struct

OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8


def build_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    length = len(payload)
    first = 0x80 | opcode
    if length < 126:
        return bytes((first, length)) + payload
    if length < 1 << 16:
        return struct.pack("!BBH", first, 126, length) + payload
    return struct.pack("!BBQ", first, 127, length) + payload


def build_text_frame(payload: bytes) -> bytes:
    """A text message (JSON, STOMP, XMPP): what ``WebSocketConnection.frame`` builds."""
    return build_frame(payload, OP_TEXT)


def build_binary_frame(payload: bytes) -> bytes:
    """A binary message (the Centrifugo protocol's Protobuf encoding)."""
    return build_frame(payload, OP_BINARY)


def close_frame(code: int, reason: str) -> bytes:
    body = struct.pack("!H", code) + reason.encode()[:123]
    return build_frame(body, OP_CLOSE)
