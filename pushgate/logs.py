"""Log output: plain text, JSON lines or logfmt (``server.log_format``).

Structured records carry the fields operators search by — ``client``, ``user``,
``channel``, ``code``, ``transport``, ``node`` — when a log call passes them in
``extra``. Only those named fields are ever printed, so a token, key or secret that
reached a record by mistake would still not be written.

Messages and fields often quote what a client sent (a method name, a channel, a
user). Every format escapes control characters in them — a newline becomes ``\n`` —
so no client can forge a log line; only a traceback, the server's own text, spans
several lines.
"""

from __future__ import annotations

import json
import logging
import re
import time

FIELDS = ("client", "user", "channel", "code", "transport", "node", "method", "remote")

#: C0 and C1 controls, DEL and the Unicode line and paragraph separators
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """``text`` on one line: control characters written as escapes."""
    return _CONTROLS.sub(_escape_char, text)


def _fields(record: logging.LogRecord) -> dict[str, object]:
    out: dict[str, object] = {}
    for name in FIELDS:
        value = getattr(record, name, None)  # set only by a call that passed extra={…}
        if value is not None and value != "":
            out[name] = value
    return out


def _stamp(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": _stamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        line = json.dumps(entry, ensure_ascii=False, default=str)
        # JSON escapes every C0 control; these two are line breaks to some readers
        return line.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _logfmt_value(value: object) -> str:
    text = str(value)
    if text and not any(c in text for c in ' ="\\') and not _CONTROLS.search(text):
        return text
    return '"' + escape(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        pairs = {
            "time": _stamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            pairs["error"] = self.formatException(record.exc_info)
        return " ".join(f"{key}={_logfmt_value(value)}" for key, value in pairs.items())


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = _fields(record)
        if fields:
            text += " " + " ".join(f"{k}={escape(str(v))}" for k, v in fields.items())
        return text


FORMATTERS = {"json": JsonFormatter, "logfmt": LogfmtFormatter, "text": TextFormatter}


def setup(level: str = "info", fmt: str = "text") -> None:
    """Configure the root logger once for the process."""
    handler = logging.StreamHandler()
    handler.setFormatter(FORMATTERS[fmt]())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
