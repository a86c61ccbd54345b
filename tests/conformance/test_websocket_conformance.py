"""RFC 6455 conformance of every WebSocket endpoint, with a raw-frame client.

The Autobahn testsuite does not run here (its PyPI package is Python 2 code), so these
are pushgate's own cases for what Autobahn checks and clients meet in practice. aiohttp
reads client frames; pushgate writes pre-built frames. docs/conformance.md has the
results table, including where aiohttp deviates from the RFC.

``make test`` runs them on /connection/websocket and /stomp; ``make conformance``
(PUSHGATE_CONFORMANCE=full) on every endpoint.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

import pytest

from pushgate.auth import mint_connection_token
from tests.conformance.rawws import (
    BINARY,
    CLOSE,
    CONT,
    PING,
    PONG,
    TEXT,
    RawWebSocket,
    close_payload,
    encode,
)
from tests.conftest import SECRET

LIMIT = 4096  # every endpoint's message limit in these tests (see the config below)
FULL = os.environ.get("PUSHGATE_CONFORMANCE", "") == "full"


@dataclass(frozen=True)
class Endpoint:
    path: str
    protocols: tuple[str, ...]
    #: a first message the endpoint answers, and a piece of that answer
    hello: bytes
    answer: bytes

    def __str__(self) -> str:
        return self.path


def _token() -> str:
    return mint_connection_token(SECRET, "alice")


def endpoints() -> list[Endpoint]:
    token = _token()
    all_endpoints = [
        Endpoint(
            "/connection/websocket",
            (),
            b'{"id":1,"connect":{"token":"%s"}}' % token.encode(),
            b'"connect"',
        ),
        Endpoint(
            "/stomp",
            ("v12.stomp",),
            b"CONNECT\naccept-version:1.2\nhost:/\npasscode:%s\n\n\x00" % token.encode(),
            b"CONNECTED",
        ),
        Endpoint(
            "/connection/uni_websocket",
            (),
            b'{"token":"%s"}' % token.encode(),
            b'"connect"',
        ),
        Endpoint(
            "/ws",
            ("v12.stomp",),
            b"CONNECT\naccept-version:1.2\nhost:/\npasscode:%s\n\n\x00" % token.encode(),
            b"CONNECTED",
        ),
        Endpoint(
            "/xmpp-websocket",
            ("xmpp",),
            b'<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="localhost" version="1.0"/>',
            b"<open",
        ),
    ]
    return all_endpoints if FULL else all_endpoints[:2]


ENDPOINTS = endpoints()


@pytest.fixture
async def conf_server(make_server, server_config):
    return await make_server(
        server_config(
            client__max_frame_bytes=LIMIT,
            stomp__max_frame_bytes=LIMIT,
            xmpp__max_stanza_bytes=LIMIT,
        )
    )


async def open_ws(server, endpoint: Endpoint, extensions: str = "") -> RawWebSocket:
    ws = await RawWebSocket.connect(
        server.url, endpoint.path, protocols=endpoint.protocols, extensions=extensions
    )
    assert ws.status == 101, (endpoint, ws.status)
    return ws


async def hello(ws: RawWebSocket, endpoint: Endpoint) -> None:
    ws.send(TEXT, endpoint.hello)
    frame = await ws.recv_until(TEXT)
    assert frame is not None and endpoint.answer in frame.payload, frame


parametrize = pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)


@parametrize
async def test_ping_is_answered_with_its_payload(conf_server, endpoint):
    ws = await open_ws(conf_server, endpoint)
    ws.send(PING, b"are you there")
    pong = await ws.recv_until(PONG)
    assert pong is not None and pong.payload == b"are you there"
    ws.abort()


@parametrize
async def test_fragmented_message_with_pings_interleaved(conf_server, endpoint):
    ws = await open_ws(conf_server, endpoint)
    data = endpoint.hello
    parts = [data[:5], data[5:20], data[20:]]
    ws.send(TEXT, parts[0], fin=False)
    ws.send(PING, b"1")
    ws.send(CONT, parts[1], fin=False)
    ws.send(PING, b"2")
    ws.send(CONT, parts[2], fin=True)
    pongs, answer = [], None
    async with asyncio.timeout(5):
        while len(pongs) < 2 or answer is None:
            frame = await ws.recv()
            assert frame is not None and frame.opcode != CLOSE, frame
            if frame.opcode == PONG:
                pongs.append(frame.payload)
            elif frame.opcode == TEXT and endpoint.answer in frame.payload:
                answer = frame
    assert pongs == [b"1", b"2"]
    ws.abort()


@parametrize
async def test_invalid_utf8_in_text_frame_closes_1007(conf_server, endpoint):
    ws = await open_ws(conf_server, endpoint)
    ws.send(TEXT, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited")
    assert await ws.close_code() == 1007
    ws.abort()


@parametrize
async def test_invalid_utf8_across_fragments_closes_1007(conf_server, endpoint):
    ws = await open_ws(conf_server, endpoint)
    ws.send(TEXT, b"abc\xce", fin=False)
    ws.send(CONT, b"\xff", fin=True)
    assert await ws.close_code() == 1007
    ws.abort()


@parametrize
@pytest.mark.parametrize("rsv", [1, 2, 4])
async def test_reserved_bits_close_1002(conf_server, endpoint, rsv):
    ws = await open_ws(conf_server, endpoint)
    ws.send(TEXT, b"hello", rsv=rsv)
    assert await ws.close_code() == 1002
    ws.abort()


@parametrize
@pytest.mark.parametrize("opcode", [0x3, 0x7, 0xB, 0xF])
async def test_unknown_opcode_closes_1002(conf_server, endpoint, opcode):
    ws = await open_ws(conf_server, endpoint)
    ws.send(opcode, b"x")
    assert await ws.close_code() == 1002
    ws.abort()


@parametrize
async def test_continuation_without_a_start_closes_1002(conf_server, endpoint):
    ws = await open_ws(conf_server, endpoint)
    ws.send(CONT, b"orphan", fin=True)
    assert await ws.close_code() == 1002
    ws.abort()


@parametrize
async def test_new_message_inside_a_fragmented_one_closes_1002(conf_server, endpoint):
    ws = await open_ws(conf_server, endpoint)
    ws.send(TEXT, b"one", fin=False)
    ws.send(TEXT, b"two", fin=True)
    assert await ws.close_code() == 1002
    ws.abort()


@parametrize
async def test_fragmented_control_frame_closes_1002(conf_server, endpoint):
    ws = await open_ws(conf_server, endpoint)
    ws.send(PING, b"part", fin=False)
    assert await ws.close_code() == 1002
    ws.abort()


@parametrize
async def test_control_frame_over_125_bytes_closes_1002(conf_server, endpoint):
    ws = await open_ws(conf_server, endpoint)
    ws.send(PING, b"x" * 126)
    assert await ws.close_code() == 1002
    ws.abort()


@parametrize
async def test_unmasked_client_frame_closes_1002(conf_server, endpoint):
    ws = await open_ws(conf_server, endpoint)
    ws.send(PING, b"bare", mask=False)
    try:
        assert await ws.close_code(timeout=1) == 1002
    finally:
        ws.abort()


@parametrize
async def test_server_serves_others_after_a_protocol_error(conf_server, endpoint):
    bad = await open_ws(conf_server, endpoint)
    bad.send(PING, b"bare", mask=False)
    assert await bad.close_code() == 1002
    bad.abort()
    good = await open_ws(conf_server, endpoint)
    await hello(good, endpoint)
    good.abort()


@parametrize
async def test_oversized_message_closes_1009(conf_server, endpoint):
    ws = await open_ws(conf_server, endpoint)
    ws.send(BINARY if endpoint.path == "/connection/websocket" else TEXT, b"a" * (LIMIT * 5))
    assert await ws.close_code() == 1009
    ws.abort()


@parametrize
async def test_oversized_fragmented_message_closes_1009(conf_server, endpoint):
    ws = await open_ws(conf_server, endpoint)
    for _ in range(10):
        ws.send(TEXT if _ == 0 else CONT, b"b" * LIMIT, fin=False)
    assert await ws.close_code() == 1009
    ws.abort()


@parametrize
@pytest.mark.parametrize("code", [1000, 1001, 3000, 4999])
async def test_closing_handshake_echoes_the_code_and_closes_tcp(conf_server, endpoint, code):
    ws = await open_ws(conf_server, endpoint)
    await hello(ws, endpoint)
    ws.send(CLOSE, close_payload(code, b"bye"))
    reply = await ws.close_code()
    assert reply in (code, 1000), reply
    assert await ws.tcp_closed()


@parametrize
async def test_empty_close_is_answered(conf_server, endpoint):
    ws = await open_ws(conf_server, endpoint)
    ws.send(CLOSE, b"")
    assert await ws.close_code() in (1000, 1005)
    assert await ws.tcp_closed()


@parametrize
@pytest.mark.parametrize(
    "code",
    [
        0,
        999,
        1004,
        1005,
        1006,
        1015,
        1016,
        2999,
        5000,
    ],
)
async def test_invalid_close_code_closes_1002(conf_server, endpoint, code):
    ws = await open_ws(conf_server, endpoint)
    ws.send(CLOSE, close_payload(code))
    assert await ws.close_code() == 1002
    ws.abort()


@parametrize
async def test_one_byte_close_payload_closes_1002(conf_server, endpoint):
    ws = await open_ws(conf_server, endpoint)
    ws.send(CLOSE, b"\x03")
    assert await ws.close_code() == 1002
    ws.abort()


@parametrize
async def test_close_reason_with_invalid_utf8_closes_1007(conf_server, endpoint):
    ws = await open_ws(conf_server, endpoint)
    ws.send(CLOSE, close_payload(1000, b"\xff\xfe"))
    assert await ws.close_code() in (1002, 1007)
    ws.abort()


@parametrize
async def test_frames_sent_with_the_handshake_request_are_read(conf_server, endpoint):
    """A client that does not wait for the 101 (RFC 6455 says it should): its first
    message arrives in the same packet as the request and is still handled."""
    ws = await RawWebSocket.connect(
        conf_server.url,
        endpoint.path,
        protocols=endpoint.protocols,
        early=encode(TEXT, endpoint.hello),
    )
    assert ws.status == 101
    frame = await ws.recv_until(TEXT)
    assert frame is not None and endpoint.answer in frame.payload, frame
    ws.abort()


@parametrize
async def test_permessage_deflate_is_declined(conf_server, endpoint):
    ws = await open_ws(
        conf_server, endpoint, extensions="permessage-deflate; client_max_window_bits"
    )
    assert "sec-websocket-extensions" not in ws.headers, ws.headers
    await hello(ws, endpoint)  # and the connection works uncompressed
    ws.abort()


@parametrize
async def test_compressed_frame_after_declining_closes_1002(conf_server, endpoint):
    ws = await open_ws(conf_server, endpoint, extensions="permessage-deflate")
    ws.send(TEXT, b"\xf2\x48\xcd\xc9\xc9\x07\x00", rsv=4)  # "Hello", deflated
    assert await ws.close_code() == 1002
    ws.abort()
