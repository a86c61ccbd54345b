"""Fossil deltas made by pushgate, applied by the SDKs' own decoders (centrifuge-python's
here; centrifuge-js's in tests that deliver them): the target comes back exactly, the
delta is small when little changed, and inserted runs never split a UTF-8 character."""

from __future__ import annotations

import orjson
from centrifuge.fossil import apply_delta
from hypothesis import given, settings
from hypothesis import strategies as st

from pushgate.protocol.centrifugo.fossil import checksum, create


def roundtrip(source: bytes, target: bytes) -> bytes:
    delta = create(source, target)
    assert bytes(apply_delta(source, delta)) == target
    return delta


def card(title: str, column: str, version: int) -> bytes:
    return orjson.dumps(
        {
            "type": "card",
            "card": {
                "id": 7,
                "board_id": 1,
                "title": title,
                "column": column,
                "assignee": "bob",
                "description": "Write the release notes for the next version of the app " * 3,
                "version": version,
            },
            "actor": {"id": "carol", "name": "Carol", "color": "#e8590c"},
        }
    )


def test_a_card_moved_is_a_small_delta():
    before = card("Release notes", "doing", 4)
    after = card("Release notes", "done", 5)
    delta = roundtrip(before, after)
    assert len(delta) < len(after) / 5, (len(delta), len(after))


def test_edge_cases():
    for source, target in [
        (b"", b""),
        (b"", b"new"),
        (b"short", b"shorter than a window"),
        (b"x" * 100, b""),
        (b"same content, more than sixteen bytes", b"same content, more than sixteen bytes"),
    ]:
        roundtrip(source, target)


def test_checksum_matches_the_decoders():
    # the decoder verifies it: a wrong checksum fails apply_delta
    for data in (b"", b"a", b"ab", b"abc", b"abcd", b"abcde", bytes(range(256))):
        delta = create(b"", data)
        assert delta.endswith(b";")
        assert bytes(apply_delta(b"", delta)) == data
        assert checksum(data) >= 0


def test_inserted_runs_are_whole_characters():
    before = ("é" * 40 + "the same middle part of a long text" + "ü" * 40).encode()
    after = ("è" * 41 + "the same middle part of a long text" + "ö" * 39).encode()
    delta = roundtrip(before, after)
    delta.decode("utf-8")  # fits in a JSON string


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.binary(max_size=400))
def test_any_bytes_round_trip(source, target):
    roundtrip(source, target)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200), st.text(max_size=200), st.integers(0, 200))
def test_texts_with_shared_parts_round_trip_as_utf8(a, b, cut):
    source = (a + b).encode()
    target = (a[:cut] + "inserted ✓" + b + a[cut:]).encode()
    roundtrip(source, target).decode("utf-8")
