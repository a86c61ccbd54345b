"""Fossil deltas (Fossil SCM's delta format), as Centrifugo's ``delta: "fossil"`` sends them.

``create(source, target)`` gives the bytes that turn ``source`` into ``target``: a
header (the target's length and a newline), segments that either copy a run of the
source (``<count>@<offset>,``) or insert literal bytes (``<count>:<bytes>``), and a
trailer (the target's checksum and ``;``). Numbers are written in Fossil's base-64 digits.
centrifuge-js and centrifuge-python apply them.

The encoder samples the source in non-overlapping 16-byte blocks, and walks the target
looking each 16-byte window up among them; a hit is extended both ways and becomes a copy
when that is shorter than inserting the bytes. One deviation from Fossil's own encoder,
on purpose: copies start and end on UTF-8 character boundaries of the target, so every
inserted run of a UTF-8 target is itself valid UTF-8 — the JSON protocol carries a delta
inside a JSON string, which cannot hold half a character (Centrifugo's Go encoder can
split one there).

Why not a library: the PyPI packages for Fossil deltas are C extensions last released in
2017-2018 that no longer build; this is one pure function, run once per publication (not
per subscriber), with the format's decoders in both SDKs as its test oracle.
"""

from __future__ import annotations

DIGITS = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~"
#: the width of the windows compared between source and target
NHASH = 16


def _number(value: int) -> bytes:
    """``value`` in Fossil's base-64 digits, most significant first."""
    if value == 0:
        return b"0"
    out = bytearray()
    while value:
        out.append(DIGITS[value & 63])
        value >>= 6
    out.reverse()
    return bytes(out)


def checksum(data: bytes) -> int:
    """Fossil's checksum: the 32-bit sum of the data read as big-endian words (the last,
    partial word padded with zeros)."""
    whole = len(data) - len(data) % 4
    total = sum(int.from_bytes(data[i : i + 4], "big") for i in range(0, whole, 4))
    tail = data[whole:]
    if tail:
        total += int.from_bytes(tail.ljust(4, b"\0"), "big")
    return total & 0xFFFFFFFF


def _continuation(byte: int) -> bool:
    return byte & 0xC0 == 0x80


def _insert(out: bytearray, literal: bytes) -> None:
    if literal:
        out += _number(len(literal)) + b":" + literal


def create(source: bytes, target: bytes) -> bytes:
    """The delta that turns ``source`` into ``target``."""
    out = bytearray(_number(len(target)) + b"\n")
    size = len(target)
    if len(source) >= NHASH:
        blocks: dict[bytes, list[int]] = {}
        for offset in range(0, len(source) - NHASH + 1, NHASH):
            blocks.setdefault(source[offset : offset + NHASH], []).append(offset)
        base = 0  # target bytes before base are encoded
        at = 0  # where the window starts
        while at + NHASH <= size:
            found = blocks.get(target[at : at + NHASH])
            best = _best_copy(source, target, base, at, found) if found else None
            if best is None:
                at += 1
                continue
            start, offset, count = best
            _insert(out, target[base:start])
            out += _number(count) + b"@" + _number(offset) + b","
            base = at = start + count
        _insert(out, target[base:])
    else:
        _insert(out, target)
    out += _number(checksum(target)) + b";"
    return bytes(out)


def _best_copy(
    source: bytes, target: bytes, base: int, at: int, offsets: list[int]
) -> tuple[int, int, int] | None:
    """The longest worthwhile copy through the window at ``at``: (target start, source
    offset, length), cut to whole UTF-8 characters of the target; or None."""
    best: tuple[int, int, int] | None = None
    for offset in offsets:
        end, source_end = at + NHASH, offset + NHASH
        while end < len(target) and source_end < len(source) and target[end] == source[source_end]:
            end += 1
            source_end += 1
        start, source_start = at, offset
        while start > base and source_start > 0 and target[start - 1] == source[source_start - 1]:
            start -= 1
            source_start -= 1
        # never split a character: the bytes around a copy go out as literal text
        while start < end and _continuation(target[start]):
            start += 1
            source_start += 1
        while end > start and end < len(target) and _continuation(target[end]):
            end -= 1
        count = end - start
        cost = len(_number(count)) + len(_number(source_start)) + 3
        if count > cost and (best is None or count > best[2]):
            best = (start, source_start, count)
    return best
