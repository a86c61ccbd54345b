"""Duration parsing: turns "500ms", "10m", "1h30m" or a plain number into seconds.

Owns only the duration syntax used by the configuration (and anything else that wants
human-friendly time spans). Plain numbers (int, float or numeric strings) are seconds.
"""

from __future__ import annotations

import math
import re

__all__ = ["format_duration", "parse_duration"]

_UNITS: dict[str, float] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(ms|s|m|h)")
_WHOLE = re.compile(r"(?:(?:\d+(?:\.\d+)?|\.\d+)(?:ms|s|m|h))+")


def parse_duration(value: str | int | float) -> float:
    """Return ``value`` as a number of seconds (a non-negative, finite float).

    Accepts numbers (seconds), numeric strings (seconds) and unit strings made of one or
    more ``<number><unit>`` parts with units ``ms``, ``s``, ``m``, ``h`` ("1h30m").
    Raises ``ValueError`` for negative, non-finite or unparseable values.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}: expected a number or a string like '10s'")
    if isinstance(value, int | float):
        return _checked(float(value), value)
    if not isinstance(value, str):
        raise ValueError(f"invalid duration {value!r}: expected a number or a string like '10s'")
    text = value.strip()
    number = _plain_number(text)
    if number is not None:
        return _checked(number, value)
    if not text or not _WHOLE.fullmatch(text):
        raise ValueError(
            f"invalid duration {value!r}: use a number of seconds or units ms, s, m, h "
            "(e.g. '500ms', '10s', '1h30m')"
        )
    total = sum(float(num) * _UNITS[unit] for num, unit in _PART.findall(text))
    return _checked(total, value)


def format_duration(seconds: float) -> str:
    """Render seconds compactly ("500ms", "10s", "1h30m"); inverse of ``parse_duration``."""
    if seconds == 0:
        return "0s"
    if seconds < 1 or seconds != int(seconds):
        millis = seconds * 1000
        if millis == int(millis):
            return f"{int(millis)}ms"
        return f"{seconds}s"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{u}" for n, u in ((hours, "h"), (minutes, "m"), (secs, "s")) if n]
    return "".join(parts)


def _plain_number(text: str) -> float | None:
    """Parse ``text`` as a bare number of seconds, or return None if it has units."""
    try:
        return float(text)
    except ValueError:
        return None


def _checked(seconds: float, original: object) -> float:
    """Reject negative and non-finite durations."""
    if not math.isfinite(seconds):
        raise ValueError(f"invalid duration {original!r}: must be finite")
    if seconds < 0:
        raise ValueError(f"invalid duration {original!r}: must not be negative")
    return seconds
