"""Delta compression (Centrifugo's ``delta: "fossil"``): what a delta subscriber is sent.

A subscriber that negotiated delta gets each publication either whole or as a fossil
delta against the publication it got just before (``delta: true``), which it applies to
its copy. A delta is sent only when the subscriber's previous publication is exactly the
one the hub made it against (``Publication.prev``), and only when it is smaller than the
data; the first publication after a subscribe, one after a gap, or one whose publisher
did not ask for delta goes whole. In JSON the data of a delta subscription is always a
JSON *string* — the publication's JSON text, or the delta — since the client needs the
exact bytes as its next base; Protobuf carries the bytes as they are.

Encode once still holds: a publication's delta is computed once (kept in its cache) and
its delta form is framed once per encoding, shared by every delta subscriber.
"""

from __future__ import annotations

from dataclasses import replace

import orjson

from pushgate.engine.base import BinaryData, Publication
from pushgate.protocol.centrifugo import fossil

#: the cache key of a publication's delta against its ``prev`` (b"" = not worth sending)
PATCH = ("fossil",)


def patch_of(pub: Publication) -> bytes | None:
    """``pub``'s delta against ``pub.prev``, made once; None when it is no smaller."""
    patch = pub.cache.get(PATCH)
    if patch is None:
        assert pub.prev is not None
        made = fossil.create(pub.prev.data, pub.data)
        patch = pub.cache[PATCH] = made if len(made) < len(pub.data) else b""
    return patch or None


class NotText(ValueError):
    """Binary data cannot be a JSON string: only Protobuf delta subscribers take it."""


def as_json_string(data: bytes) -> bytes:
    """``data`` (JSON text or a delta of it) as a JSON string literal."""
    if type(data) is BinaryData:
        raise NotText("binary publication data in a JSON delta subscription")
    return orjson.dumps(data.decode())


def whole(pub: Publication, json: bool) -> Publication:
    """The whole publication as a delta subscriber gets it."""
    if not json:
        return pub
    return replace(pub, data=as_json_string(pub.data), prev=None, cache={})


def patched(pub: Publication, patch: bytes, json: bool) -> Publication:
    """The publication as its delta (``delta: true``)."""
    data = as_json_string(patch) if json else patch
    return replace(pub, data=data, delta=True, prev=None, cache={})


def recovered(publications: list[Publication], json: bool) -> list[Publication]:
    """Publications a subscribe reply recovers, for a delta subscriber: the first whole,
    each later one as a delta against the one before it where that is smaller."""
    out = []
    previous: Publication | None = None
    for pub in publications:
        if previous is None:
            out.append(whole(pub, json))
        else:
            patch = fossil.create(previous.data, pub.data)
            if len(patch) < len(pub.data):
                out.append(patched(pub, patch, json))
            else:
                out.append(whole(pub, json))
        previous = pub
    return out
