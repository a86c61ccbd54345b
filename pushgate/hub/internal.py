"""Internal connections: the ones the server authorizes itself (the admin page's).

An internal connection token is signed with a random key of the cluster's own, kept in
the engine (so every node and worker verifies what any of them minted) and never shared
with the product's backend: whoever holds ``token.hmac_secret`` can mint a token for any
user name, but not this one. Only an internal connection may hold a server-side
subscription to a reserved channel (``__pushgate…``, see channels.py); a user named like
the internal identity gains nothing by the name.
"""

from __future__ import annotations

import secrets

from pushgate.auth import (
    ConnectionClaims,
    InternalToken,
    TokenError,
    TokenVerifier,
    mint_internal_token,
    verify_internal_token,
)
from pushgate.engine.base import Engine

#: the engine key of the internal token key
KEY_NAME = "internal-token-key"
KEY_BYTES = 32


async def internal_key(engine: Engine) -> bytes:
    """The cluster's internal token key, made by the first node that needs it."""
    key = await engine.kv_get(KEY_NAME)
    if key is None:
        await engine.kv_set(KEY_NAME, secrets.token_bytes(KEY_BYTES), 0, only_new=True)
        key = await engine.kv_get(KEY_NAME)
    if key is None:  # pragma: no cover - the engine lost it between two calls
        raise RuntimeError("the engine did not keep the internal token key")
    return key


async def mint(engine: Engine, user: str, channels: list[str], ttl: float) -> str:
    """An internal connection token for ``user`` subscribed server-side to ``channels``."""
    return mint_internal_token(await internal_key(engine), user, ttl, channels)


async def verify_connection(tokens: TokenVerifier, engine: Engine, token: str) -> ConnectionClaims:
    """A connection token's claims: an ordinary token by ``tokens``' keys, an internal
    one by the cluster's internal key (``claims.internal`` set)."""
    try:
        return tokens.verify_connection(token)
    except InternalToken:
        pass
    key = await engine.kv_get(KEY_NAME)
    if key is None:
        raise TokenError("unknown internal key")
    return verify_internal_token(token, key)
