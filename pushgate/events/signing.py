"""The webhook's signature: HMAC-SHA256 over the timestamp and the body.

Headers of every webhook request::

    X-Pushgate-Timestamp: 1712345678            (unix seconds when it was sent)
    X-Pushgate-Signature: sha256=<hex>          (HMAC-SHA256(secret, "<timestamp>." + body))

A receiver recomputes the HMAC over the raw body, compares in constant time, and refuses
a timestamp too far from its clock (replays of an old request).
"""

from __future__ import annotations

import hashlib
import hmac
import time

TIMESTAMP_HEADER = "X-Pushgate-Timestamp"
SIGNATURE_HEADER = "X-Pushgate-Signature"
#: how far from now a receiver should accept a timestamp (seconds)
DEFAULT_TOLERANCE = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def headers(secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    timestamp = int(time.time() if now is None else now)
    return {
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, timestamp, body),
    }


def verify(
    secret: str,
    body: bytes,
    timestamp: str | None,
    sig: str | None,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> bool:
    """True when ``sig`` signs ``body`` at ``timestamp`` and the timestamp is recent."""
    if not timestamp or not sig or not timestamp.isdigit():
        return False
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, int(timestamp), body), sig)
