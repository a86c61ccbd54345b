"""``b64data`` / ``b64info``: Centrifugo's base64 spelling of a bytes field, checked to be JSON.

Centrifugo's server API, its tokens and its proxies carry binary payloads as base64 text
(``b64data``, ``b64info``). Every pushgate client reads publication data, info and
subscribe data as JSON (Centrifugo JSON protocol, STOMP bodies, XMPP stanzas), so the
decoded bytes must be a JSON document: anything else is refused where it comes in, with
the reason, instead of reaching subscribers that cannot read it (Centrifugo accepts it and
then closes every JSON client in the channel with 3506 "inappropriate protocol").
"""

from __future__ import annotations

import base64
import binascii

import orjson


def decode(text: object, name: str) -> bytes:
    """The JSON bytes ``text`` holds in standard base64; ValueError naming ``name`` when it
    is not a string, not base64 or its bytes are not JSON."""
    if not isinstance(text, str):
        raise ValueError(f"{name} must be a base64 string")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{name} is not valid base64") from None
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValueError(
            f"{name} does not decode to JSON: JSON-protocol, STOMP and XMPP clients "
            "could not read it"
        ) from None
    return raw


def field(params: dict, key: str, b64key: str) -> bytes | None:
    """The JSON bytes of ``params[key]`` or, when given (non-empty), of ``params[b64key]``
    (which wins, as in Centrifugo); None when neither is there. ValueError as ``decode``;
    ``orjson.JSONEncodeError`` for a ``key`` value too deep to encode."""
    encoded = params.get(b64key)
    if encoded not in (None, ""):
        return decode(encoded, b64key)
    if params.get(key) is None:
        return None
    return orjson.dumps(params[key])
