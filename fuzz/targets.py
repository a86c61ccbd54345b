"""Every parser of untrusted input, as a function of arbitrary bytes.

Each target feeds the bytes to one parser and accepts only its documented error value
(ProtocolError, BadPoll, FrameError, XmlError, ConfigError, None); anything else
escapes and is a bug. ``tests/unit/test_fuzz_parsers.py`` drives them with hypothesis on
every test run; ``fuzz/run.py`` (``make fuzz``) drives them with atheris for minutes.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable

from pushgate.config import ConfigError, load_config
from pushgate.protocol.centrifugo import protobuf_codec
from pushgate.protocol.centrifugo.commands import ProtocolError, decode_commands
from pushgate.protocol.centrifugo.session import parse_position_event_id
from pushgate.protocol.stomp.codec import Frame, FrameError, FrameParser
from pushgate.transport.polling import BadPoll, _parse


def centrifugo_commands(data: bytes) -> None:
    """A WebSocket frame (binary or text) of Centrifugo JSON commands."""
    for frame in (data, data.decode("utf-8", "replace")):
        with contextlib.suppress(ProtocolError):
            decode_commands(frame)


def centrifugo_protobuf(data: bytes) -> None:
    """A binary frame of length-delimited Protobuf commands; the same bytes as a
    unidirectional ConnectRequest and as a protobuf client's /emulation body."""
    for decode in (
        protobuf_codec.decode_commands,
        protobuf_codec.decode_connect_request,
        protobuf_codec.decode_emulation_request,
    ):
        with contextlib.suppress(ProtocolError):
            decode(data)


def polling_request(data: bytes) -> None:
    """A long/short polling request body."""
    with contextlib.suppress(BadPoll):
        _parse(data)


def sse_last_event_id(data: bytes) -> None:
    """A Last-Event-ID header naming a stream position."""
    result = parse_position_event_id(data.decode("utf-8", "replace"))
    assert result is None or isinstance(result, tuple)


def stomp_frames(data: bytes) -> None:
    """STOMP bytes in two chunks split at the first byte's value."""
    parser = FrameParser(max_frame_bytes=4096)
    cut = data[0] % (len(data) + 1) if data else 0
    for chunk in (data[:cut], data[cut:]):
        for item in parser.feed(chunk):
            assert isinstance(item, Frame | FrameError)


def xmpp_xml(data: bytes) -> None:
    """A BOSH body or XMPP WebSocket frame."""
    from pushgate.protocol.xmpp.xml import XmlError, parse

    with contextlib.suppress(XmlError):
        parse(data, max_bytes=65536, max_depth=32)


_CONFIG_DIR = tempfile.mkdtemp(prefix="pushgate-fuzz-")


def config_toml(data: bytes) -> None:
    """A configuration file."""
    path = os.path.join(_CONFIG_DIR, "pushgate.toml")
    with open(path, "wb") as fh:
        fh.write(data)
    with contextlib.suppress(ConfigError):
        load_config(path, env={})


TARGETS: dict[str, Callable[[bytes], None]] = {
    "centrifugo": centrifugo_commands,
    "centrifugo_protobuf": centrifugo_protobuf,
    "polling": polling_request,
    "event_id": sse_last_event_id,
    "stomp": stomp_frames,
    "xmpp": xmpp_xml,
    "config": config_toml,
}
