"""STOMP frames as bytes, sans I/O: a streaming parser and the encoder.

``FrameParser.feed`` takes whatever bytes arrived (a WebSocket message, a TCP read, a
part of a frame or several frames) and returns the complete frames it now holds, in
order. It never raises on bad input: a malformed frame comes out as a ``FrameError``
and the parser stops there (STOMP's answer to a bad frame is ERROR, then close).
End-of-line octets between frames are heart-beats and are skipped.

Header escaping (``\\r``, ``\\n``, ``\\c``, ``\\\\``) applies from STOMP 1.1 on, except in
CONNECT, STOMP and CONNECTED frames, as the 1.2 specification says. A repeated header
keeps its first value. A ``content-length`` body may hold NUL octets.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

CLIENT_COMMANDS = frozenset(
    {
        "CONNECT",
        "STOMP",
        "SEND",
        "SUBSCRIBE",
        "UNSUBSCRIBE",
        "ACK",
        "NACK",
        "BEGIN",
        "COMMIT",
        "ABORT",
        "DISCONNECT",
    }
)
SERVER_COMMANDS = frozenset({"CONNECTED", "MESSAGE", "RECEIPT", "ERROR"})
#: frames whose headers are never escaped, whatever the version
UNESCAPED_COMMANDS = frozenset({"CONNECT", "STOMP", "CONNECTED"})

VERSIONS = ("1.0", "1.1", "1.2")
HEARTBEAT = b"\n"

MAX_HEADERS = 64
MAX_HEADER_LINE = 8192

_ESCAPES = {"r": "\r", "n": "\n", "c": ":", "\\": "\\"}
_ENCODE_TABLE = str.maketrans({"\\": "\\\\", "\r": "\\r", "\n": "\\n", ":": "\\c"})
# 1.0 has no escaping: a value may not hold a line break, so those are dropped
_ENCODE_TABLE_10 = str.maketrans({"\r": None, "\n": None})


@dataclass(slots=True)
class Frame:
    """One STOMP frame. ``headers`` keeps the first value of each header name."""

    command: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def get(self, name: str, default: str = "") -> str:
        return self.headers.get(name, default)


@dataclass(slots=True, frozen=True)
class FrameError:
    """Input that is not a valid frame; the connection gets ERROR and is closed."""

    message: str
    #: the ``receipt`` header of the bad frame, when it could be read
    receipt: str = ""
    detail: str = ""


class FrameParser:
    """Incremental parser of one direction of a STOMP connection."""

    __slots__ = ("_buffer", "_commands", "failed", "max_frame_bytes", "version")

    def __init__(
        self,
        *,
        max_frame_bytes: int = 65536,
        commands: frozenset[str] = CLIENT_COMMANDS,
        version: str = "1.2",
    ) -> None:
        self._buffer = bytearray()
        self._commands = commands
        self.max_frame_bytes = max_frame_bytes
        #: the negotiated version: decides header unescaping (set after CONNECT)
        self.version = version
        self.failed = False

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame | FrameError]:
        """Frames completed by ``data``; after a FrameError, nothing more."""
        if self.failed:
            return []
        buffer = self._buffer
        buffer += data
        out: list[Frame | FrameError] = []
        while buffer:
            try:
                item = self._next()
            except _Bad as bad:
                self.failed = True
                buffer.clear()
                out.append(FrameError(bad.message, bad.receipt, bad.detail))
                break
            if item is None:
                break
            out.append(item)
        return out

    def _next(self) -> Frame | None:
        buffer = self._buffer
        # heart-beats and the optional EOLs after a frame's NUL
        start = 0
        size = len(buffer)
        while start < size and buffer[start] in (0x0A, 0x0D):
            if buffer[start] == 0x0D and (start + 1 >= size or buffer[start + 1] != 0x0A):
                if start + 1 >= size:
                    break  # a CR whose LF has not arrived yet
                raise _Bad("malformed frame: CR without LF")
            start += 1 if buffer[start] == 0x0A else 2
        if start:
            del buffer[:start]
        if not buffer or buffer == b"\r":
            return None
        end = _header_end(buffer)
        if end is None:
            if len(buffer) > self.max_frame_bytes:
                raise _Bad("frame too large", detail=f"headers over {self.max_frame_bytes} bytes")
            # a command line that cannot be a command is refused without waiting
            newline = buffer.find(b"\n")
            line = bytes(buffer if newline < 0 else buffer[:newline]).rstrip(b"\r")
            if (newline >= 0 or len(line) > 16) and line.decode("latin-1") not in self._commands:
                raise _Bad("unknown command", detail=_show(line))
            return None
        head_end, body_start = end
        lines = bytes(buffer[:head_end]).split(b"\n")
        command_line = lines[0].rstrip(b"\r")
        command = command_line.decode("latin-1")
        if command not in self._commands:
            raise _Bad("unknown command", detail=_show(command_line))
        escaped = self.version != "1.0" and command not in UNESCAPED_COMMANDS
        headers: dict[str, str] = {}
        receipt = ""
        if len(lines) - 1 > MAX_HEADERS:
            raise _Bad("too many headers", detail=f"more than {MAX_HEADERS}")
        for raw in lines[1:]:
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if len(raw) > MAX_HEADER_LINE:
                raise _Bad("header too long", receipt)
            name_raw, colon, value_raw = raw.partition(b":")
            if not colon:
                raise _Bad("malformed header", receipt, _show(raw))
            try:
                name = name_raw.decode()
                value = value_raw.decode()
            except UnicodeDecodeError:
                raise _Bad("header is not UTF-8", receipt, _show(raw)) from None
            if escaped:
                name = _unescape(name, receipt)
                value = _unescape(value, receipt)
            if not name:
                raise _Bad("malformed header", receipt, "empty header name")
            if name not in headers:
                headers[name] = value
                if name == "receipt":
                    receipt = value
        length_text = headers.get("content-length")
        if length_text is not None:
            if not length_text.isascii() or not length_text.isdigit():
                raise _Bad("invalid content-length", receipt, _show(length_text.encode()))
            length = int(length_text)
            if body_start + length > self.max_frame_bytes:
                raise _Bad("frame too large", receipt, f"over {self.max_frame_bytes} bytes")
            if len(buffer) < body_start + length + 1:
                return None
            if buffer[body_start + length] != 0:
                raise _Bad("frame body not terminated by NUL", receipt, "check content-length")
            body = bytes(buffer[body_start : body_start + length])
            del buffer[: body_start + length + 1]
        else:
            nul = buffer.find(b"\x00", body_start)
            if nul < 0:
                if len(buffer) > self.max_frame_bytes:
                    raise _Bad("frame too large", receipt, f"over {self.max_frame_bytes} bytes")
                return None
            if nul > self.max_frame_bytes:
                raise _Bad("frame too large", receipt, f"over {self.max_frame_bytes} bytes")
            body = bytes(buffer[body_start:nul])
            del buffer[: nul + 1]
        return Frame(command, headers, body)


class _Bad(Exception):
    def __init__(self, message: str, receipt: str = "", detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.receipt = receipt
        self.detail = detail


def _header_end(buffer: bytearray) -> tuple[int, int] | None:
    """(end of the header block, start of the body), or None while incomplete."""
    lf = buffer.find(b"\n\n")
    crlf = buffer.find(b"\n\r\n")
    if lf < 0 and crlf < 0:
        return None
    if crlf < 0 or (0 <= lf < crlf):
        return lf, lf + 2
    return crlf, crlf + 3


def _unescape(text: str, receipt: str) -> str:
    if "\\" not in text:
        return text
    out = []
    chars = iter(text)
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        escaped = _ESCAPES.get(next(chars, ""))
        if escaped is None:
            raise _Bad("invalid header escape", receipt, _show(text.encode()))
        out.append(escaped)
    return "".join(out)


def _show(raw: bytes) -> str:
    return repr(bytes(raw[:64]))[2:-1]


# --- encoding --------------------------------------------------------------------------


def escape(value: str, version: str = "1.2") -> str:
    """A header name or value as it goes on the wire in ``version``."""
    if version == "1.0":
        return value.translate(_ENCODE_TABLE_10)
    return value.translate(_ENCODE_TABLE)


def encode_headers(headers: Iterable[tuple[str, str]], *, escaped: bool = True) -> bytes:
    """Header lines, each ending in LF (no blank line)."""
    if escaped:
        text = "".join(f"{escape(k)}:{escape(v)}\n" for k, v in headers)
    else:
        table = _ENCODE_TABLE_10
        text = "".join(f"{k.translate(table)}:{v.translate(table)}\n" for k, v in headers)
    return text.encode()


def encode_frame(
    command: str,
    headers: dict[str, str] | Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    *,
    version: str = "1.2",
    content_length: bool = True,
) -> bytes:
    """One complete frame. ``content-length`` is added for a non-empty body."""
    items = list(headers.items() if isinstance(headers, dict) else headers)
    if body and content_length and not any(k == "content-length" for k, _ in items):
        items.append(("content-length", str(len(body))))
    escaped = version != "1.0" and command not in UNESCAPED_COMMANDS
    return b"".join(
        (command.encode(), b"\n", encode_headers(items, escaped=escaped), b"\n", body, b"\x00")
    )


def parse_heartbeat(value: str) -> tuple[int, int] | None:
    """``cx,cy`` of a heart-beat header (milliseconds), or None when malformed."""
    first, comma, second = value.partition(",")
    first, second = first.strip(), second.strip()
    if not comma or not first.isdigit() or not second.isdigit():
        return None
    return int(first), int(second)


def negotiate_version(accept_version: str) -> str | None:
    """The highest version both sides speak; 1.0 when the client names none."""
    if not accept_version:
        return "1.0"
    offered = {v.strip() for v in accept_version.split(",")}
    for version in reversed(VERSIONS):
        if version in offered:
            return version
    return None
