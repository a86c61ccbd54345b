"""RFC 6455 client-frame parser, sans-I/O: bytes in, whole messages and control frames out.

Used by the lean WebSocket connection (ws_connection.py) once aiohttp's handshake is
done. It is strict where the RFC says a server must be: client frames must be masked,
reserved bits and unknown opcodes are refused (no extension is negotiated), control
frames are short and never fragmented, a continuation needs a message to continue,
text must be valid UTF-8 and close codes must be ones a peer may send. Every refusal
is a ``WebSocketProtocolError`` carrying the close code to answer with.

The state is a handful of slots so an idle connection costs a few dozen bytes here.
"""

from __future__ import annotations

import struct

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009

_DATA_OPCODES = (OP_TEXT, OP_BINARY)
_CONTROL_OPCODES = (OP_CLOSE, OP_PING, OP_PONG)
#: codes a peer may put in a close frame (RFC 6455 7.4.1, 7.4.2)
_PEER_CLOSE_CODES = frozenset(
    (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014)
)


class WebSocketProtocolError(Exception):
    """The peer broke RFC 6455; ``code`` is the close code to answer with."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def valid_peer_close_code(code: int) -> bool:
    return code in _PEER_CLOSE_CODES or 3000 <= code <= 4999


def unmask(mask: bytes, payload: bytes) -> bytes:
    """XOR the payload with the repeating 4-byte mask (one big-integer operation)."""
    length = len(payload)
    if not length:
        return payload
    key = (mask * (length // 4 + 1))[:length]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
        length, "little"
    )


def parse_close(payload: bytes) -> tuple[int | None, str]:
    """A close frame's code and reason; None when it has no body."""
    if not payload:
        return None, ""
    if len(payload) == 1:
        raise WebSocketProtocolError(CLOSE_PROTOCOL_ERROR, "close frame with a 1-byte body")
    (code,) = struct.unpack_from("!H", payload)
    if not valid_peer_close_code(code):
        raise WebSocketProtocolError(CLOSE_PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise WebSocketProtocolError(CLOSE_INVALID_DATA, "close reason is not UTF-8") from None
    return code, reason


class FrameParser:
    """Feed it bytes; it returns ``(opcode, payload)`` for every complete message.

    Data messages come out whole (fragments joined) with OP_TEXT or OP_BINARY; control
    frames come out as they arrive, also between the fragments of a message.
    """

    __slots__ = ("_buffer", "_fragments", "_message_opcode", "_message_size", "max_size")

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buffer = b""
        self._message_opcode = 0
        self._message_size = 0
        self._fragments: list[bytes] | None = None

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buffer = self._buffer + data if self._buffer else data
        out: list[tuple[int, bytes]] = []
        pos = 0
        end = len(buffer)
        while end - pos >= 2:
            first = buffer[pos]
            second = buffer[pos + 1]
            if first & 0x70:
                raise WebSocketProtocolError(CLOSE_PROTOCOL_ERROR, "reserved bits set")
            if not second & 0x80:
                raise WebSocketProtocolError(CLOSE_PROTOCOL_ERROR, "client frame not masked")
            fin = first & 0x80
            opcode = first & 0x0F
            length = second & 0x7F
            head = pos + 2
            if length == 126:
                if end - head < 2:
                    break
                (length,) = struct.unpack_from("!H", buffer, head)
                head += 2
            elif length == 127:
                if end - head < 8:
                    break
                (length,) = struct.unpack_from("!Q", buffer, head)
                head += 8
            self._check_frame(opcode, fin, length)
            if end - head < 4 + length:
                break
            mask = buffer[head : head + 4]
            payload = unmask(mask, buffer[head + 4 : head + 4 + length])
            pos = head + 4 + length
            message = self._frame(opcode, fin, payload)
            if message is not None:
                out.append(message)
        self._buffer = buffer[pos:] if pos < end else b""
        return out

    def _check_frame(self, opcode: int, fin: int, length: int) -> None:
        """Refuse a frame by its header, before its payload is buffered."""
        if opcode in _CONTROL_OPCODES:
            if not fin:
                raise WebSocketProtocolError(CLOSE_PROTOCOL_ERROR, "fragmented control frame")
            if length > 125:
                raise WebSocketProtocolError(CLOSE_PROTOCOL_ERROR, "control frame over 125 bytes")
            return
        if opcode == OP_CONTINUATION:
            if self._fragments is None:
                raise WebSocketProtocolError(CLOSE_PROTOCOL_ERROR, "continuation without a message")
        elif opcode in _DATA_OPCODES:
            if self._fragments is not None:
                raise WebSocketProtocolError(
                    CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one"
                )
        else:
            raise WebSocketProtocolError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode}")
        if self._message_size + length > self.max_size:
            raise WebSocketProtocolError(CLOSE_TOO_BIG, f"message over {self.max_size} bytes")

    def _frame(self, opcode: int, fin: int, payload: bytes) -> tuple[int, bytes] | None:
        if opcode in _CONTROL_OPCODES:
            return opcode, payload
        if opcode != OP_CONTINUATION:
            if fin:
                return self._message(opcode, payload)
            self._message_opcode = opcode
            self._message_size = len(payload)
            self._fragments = [payload]
            return None
        fragments = self._fragments
        assert fragments is not None  # _check_frame refused a stray continuation
        fragments.append(payload)
        self._message_size += len(payload)
        if not fin:
            return None
        self._fragments = None
        self._message_size = 0
        return self._message(self._message_opcode, b"".join(fragments))

    @staticmethod
    def _message(opcode: int, payload: bytes) -> tuple[int, bytes]:
        if opcode == OP_TEXT:
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                raise WebSocketProtocolError(
                    CLOSE_INVALID_DATA, "text message is not UTF-8"
                ) from None
        return opcode, payload
