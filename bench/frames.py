"""WebSocket framing for the load clients: masked client frames out, server frames in."""

from __future__ import annotations

from pushgate.transport.ws_frames import OP_TEXT, build_frame


def masked(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """A client frame: masked with a zero key, which leaves the payload unchanged."""
    frame = build_frame(payload, opcode)
    # set the MASK bit on the length byte and insert a zero key after the length
    head_len = 2 if frame[1] < 126 else (4 if frame[1] == 126 else 10)
    return frame[:1] + bytes((frame[1] | 0x80,)) + frame[2:head_len] + b"\0\0\0\0" + payload


def next_frame(buffer: bytes, pos: int) -> tuple[int, bytes, int] | None:
    """The server frame at ``pos``: (opcode, payload, end), or None while incomplete."""
    size = len(buffer)
    if size - pos < 2:
        return None
    length = buffer[pos + 1] & 0x7F
    head = 2
    if length == 126:
        if size - pos < 4:
            return None
        length = int.from_bytes(buffer[pos + 2 : pos + 4], "big")
        head = 4
    elif length == 127:
        if size - pos < 10:
            return None
        length = int.from_bytes(buffer[pos + 2 : pos + 10], "big")
        head = 10
    end = pos + head + length
    if end > size:
        return None
    return buffer[pos] & 0x0F, buffer[pos + head : end], end
