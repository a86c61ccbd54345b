"""JWT verification and minting for Centrifugo-compatible connection and subscription tokens.

Owns ``TokenVerifier`` (built once from ``[token]``: key objects are prepared up front and
the key is chosen by the token header's ``alg``, so verifying is one signature check plus
a few claim checks), the claim dataclasses the hub consumes, and ``mint_*`` helpers for
tests, demos and the CLI. Signature algorithms come from PyJWT; the JWS parsing and claim
checks are done here so no per-token key preparation or warning machinery runs.
"""

import binascii
import logging
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import jwt
import orjson
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import Algorithm, get_default_algorithms
from jwt.utils import base64url_decode

from pushgate import b64json, capabilities, subscribe_options
from pushgate.capabilities import Capability
from pushgate.config import ConfigError, TokenConfig
from pushgate.subscribe_options import SubscribeOptions

__all__ = [
    "INTERNAL_KID",
    "ConnectionClaims",
    "InternalToken",
    "SubscriptionClaims",
    "TokenError",
    "TokenExpired",
    "TokenVerifier",
    "looks_like_jwt",
    "mint_connection_token",
    "mint_internal_token",
    "mint_subscription_token",
    "verify_internal_token",
]

log = logging.getLogger("pushgate.auth")

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
ECDSA_ALGORITHMS = ("ES256", "ES384", "ES512")
_MIN_HMAC_BYTES = 32
_PEM_MARKER = "-----BEGIN"
#: the ``kid`` header of internal connection tokens: the server mints them with a key of
#: its own (never one of ``[token]``'s), for connections it authorizes itself
INTERNAL_KID = "pushgate-internal"


_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def looks_like_jwt(text: str) -> bool:
    """``header.payload.signature`` in base64url: a password field that holds a token
    (STOMP passcode, XMPP SASL password) rather than a password for the connect proxy."""
    return bool(_JWT_SHAPE.fullmatch(text))


class TokenError(Exception):
    """The token cannot be accepted; the message is a short, client-safe reason."""


class TokenExpired(TokenError):
    """The token's ``exp`` has passed; the client should refresh it."""


class InternalToken(TokenError):
    """An internal token (``kid`` = INTERNAL_KID): only ``verify_internal_token`` with
    the server's own key may accept it, never the ``[token]`` keys."""


@dataclass(slots=True)
class ConnectionClaims:
    """What a verified connection token grants."""

    user: str
    exp: int | None = None
    info: bytes | None = None
    channels: list[str] = field(default_factory=list)
    subs: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, Any] | None = None
    expire_at: int | None = None
    #: minted by this server for a connection of its own (the admin page)
    internal: bool = False
    #: ``caps``: what the connection may do in channels beyond the namespace options
    caps: tuple[Capability, ...] = ()
    #: ``subs`` decoded: each channel's info, data and option override
    sub_options: dict[str, SubscribeOptions] = field(default_factory=dict)


@dataclass(slots=True)
class SubscriptionClaims:
    """What a verified subscription token grants."""

    user: str
    channel: str
    exp: int | None = None
    info: bytes | None = None
    expire_at: int | None = None
    #: ``data`` / ``b64data``: sent to the client in the subscribe result
    data: bytes | None = None
    #: ``override``: namespace options replaced for this subscription
    override: dict[str, bool] = field(default_factory=dict)
    #: ``allow``: operations granted in this channel (pub, prs, hst)
    allow: frozenset[str] = frozenset()
    #: ``client``: the connection the token is for ("" = any of the user's)
    client: str = ""


class TokenVerifier:
    """Verifies tokens against the keys configured in ``[token]``.

    Only algorithms with a configured key are accepted (HMAC from ``hmac_secret``, RSA
    and RSA-PSS from ``rsa_public_key``, ECDSA from ``ecdsa_public_key``); ``none`` never
    is. Raises ``ConfigError`` at construction if a public key cannot be loaded.
    """

    __slots__ = ("_audience", "_issuer", "_keys")

    def __init__(self, token_config: TokenConfig) -> None:
        self._keys: dict[str, tuple[Algorithm, Any]] = {}
        self._audience = token_config.audience
        self._issuer = token_config.issuer
        algorithms = get_default_algorithms()
        if token_config.hmac_secret:
            secret = token_config.hmac_secret.encode()
            if len(secret) < _MIN_HMAC_BYTES:
                log.warning("token.hmac_secret is shorter than %d bytes", _MIN_HMAC_BYTES)
            self._add(algorithms, HMAC_ALGORITHMS, secret, "token.hmac_secret")
        if token_config.rsa_public_key:
            key = _load_public_key(
                token_config.rsa_public_key, "token.rsa_public_key", RSAPublicKey, "an RSA"
            )
            self._add(algorithms, RSA_ALGORITHMS, key, "token.rsa_public_key")
        if token_config.ecdsa_public_key:
            key = _load_public_key(
                token_config.ecdsa_public_key,
                "token.ecdsa_public_key",
                EllipticCurvePublicKey,
                "an ECDSA",
            )
            self._add(algorithms, ECDSA_ALGORITHMS, key, "token.ecdsa_public_key")

    def _add(
        self, algorithms: dict[str, Algorithm], names: tuple[str, ...], key: object, option: str
    ) -> None:
        """Register ``key`` for each of ``names`` it suits (an EC key suits one curve)."""
        problems = []
        for name in names:
            try:
                self._keys[name] = (algorithms[name], algorithms[name].prepare_key(key))
            except (jwt.InvalidKeyError, ValueError, TypeError) as exc:
                problems.append(f"{name}: {exc}")
        if len(problems) == len(names):
            raise ConfigError(f"{option}: unusable key ({'; '.join(problems)})")

    @property
    def configured(self) -> bool:
        """True when at least one key is configured."""
        return bool(self._keys)

    @property
    def algorithms(self) -> list[str]:
        """The algorithms this verifier accepts."""
        return list(self._keys)

    def verify_connection(self, token: str) -> ConnectionClaims:
        """Verify a connection token; a missing ``sub`` means the anonymous user "".
        An internal token raises InternalToken (see ``verify_internal_token``)."""
        return _connection_claims(self._decode(token))

    def verify_subscription(self, token: str, channel: str) -> SubscriptionClaims:
        """Verify a subscription token; its ``channel`` claim must equal ``channel``."""
        claims = self._decode(token)
        if claims.get("channel") != channel:
            raise TokenError("token channel mismatch")
        options = _options(claims, "")
        client = claims.get("client", "")
        if not isinstance(client, str):
            raise TokenError("invalid client claim")
        try:
            allow = capabilities.parse_allow(claims.get("allow"))
        except ValueError as exc:
            raise TokenError(f"invalid {exc}") from None
        return SubscriptionClaims(
            user=_user(claims),
            channel=channel,
            exp=_optional_int(claims, "exp"),
            info=options.info,
            expire_at=_optional_int(claims, "expire_at"),
            data=options.data,
            override=options.override,
            allow=allow,
            client=client,
        )

    def _decode(self, token: str) -> dict[str, Any]:
        """Check the signature and the registered claims; return the payload."""
        header_b64, payload_b64, signature = _split(token)
        header = _json_part(header_b64)
        if header.get("kid") == INTERNAL_KID:
            raise InternalToken("internal token")
        if "crit" in header:
            raise TokenError("unsupported critical header")
        alg = header.get("alg")
        entry = self._keys.get(alg) if isinstance(alg, str) else None
        if entry is None:
            raise TokenError(f"algorithm not allowed: {str(alg)[:16]!r}")
        algorithm, key = entry
        if not _signature_ok(algorithm, key, f"{header_b64}.{payload_b64}".encode(), signature):
            raise TokenError("invalid signature")
        claims = _json_part(payload_b64)
        self._check_registered(claims)
        return claims

    def _check_registered(self, claims: dict[str, Any]) -> None:
        now = time.time()
        exp = _number_claim(claims, "exp")
        if exp is not None and exp <= now:
            raise TokenExpired("token expired")
        nbf = _number_claim(claims, "nbf")
        if nbf is not None and nbf > now:
            raise TokenError("token not valid yet")
        if self._audience and self._audience not in _audiences(claims):
            raise TokenError("invalid audience")
        if self._issuer and claims.get("iss") != self._issuer:
            raise TokenError("invalid issuer")


def _connection_claims(claims: dict[str, Any], internal: bool = False) -> ConnectionClaims:
    if claims.get("channel"):
        raise TokenError("subscription token used as connection token")
    subs = _subs(claims)
    try:
        caps = capabilities.parse_caps(claims.get("caps"))
    except ValueError as exc:
        raise TokenError(f"invalid caps claim: {exc}") from None
    return ConnectionClaims(
        user=_user(claims),
        exp=_optional_int(claims, "exp"),
        info=_info(claims),
        channels=_channels(claims),
        subs=subs,
        meta=_meta(claims),
        expire_at=_optional_int(claims, "expire_at"),
        internal=internal,
        caps=caps,
        sub_options={channel: _options(opts, f"subs.{channel}.") for channel, opts in subs.items()},
    )


def verify_internal_token(token: str, key: bytes) -> ConnectionClaims:
    """Verify an internal connection token (HS256, ``kid`` INTERNAL_KID) with the
    server's own ``key``; its claims are marked ``internal``."""
    header_b64, payload_b64, signature = _split(token)
    header = _json_part(header_b64)
    if header.get("kid") != INTERNAL_KID or header.get("alg") != "HS256" or "crit" in header:
        raise TokenError("not an internal token")
    algorithm = get_default_algorithms()["HS256"]
    signing_input = f"{header_b64}.{payload_b64}".encode()
    if not _signature_ok(algorithm, algorithm.prepare_key(key), signing_input, signature):
        raise TokenError("invalid signature")
    claims = _json_part(payload_b64)
    exp = _number_claim(claims, "exp")
    if exp is None:
        raise TokenError("internal token without exp")
    if exp <= time.time():
        raise TokenExpired("token expired")
    return _connection_claims(claims, internal=True)


# --------------------------------------------------------------------------- key loading


def _load_public_key(value: str, option: str, kind: type, what: str) -> Any:
    """Load a PEM public key (or certificate) given as text or as a path to a file."""
    data = _pem_bytes(value, option)
    try:
        if b"CERTIFICATE" in data.split(b"\n", 1)[0]:
            key: Any = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{option}: cannot load PEM public key: {exc}") from None
    if not isinstance(key, kind):
        raise ConfigError(f"{option}: not {what} public key")
    return key


def _pem_bytes(value: str, option: str) -> bytes:
    text = value.strip()
    if _PEM_MARKER in text:
        return text.encode()
    try:
        with open(os.path.expanduser(text), "rb") as fh:
            return fh.read().strip()
    except OSError as exc:
        raise ConfigError(f"{option}: cannot read key file {text!r}: {exc.strerror}") from None


# --------------------------------------------------------------------------- JWS parsing


def _split(token: str) -> tuple[str, str, bytes]:
    if not isinstance(token, str) or not token.isascii() or token.count(".") != 2:
        raise TokenError("malformed token")
    header_b64, payload_b64, signature_b64 = token.split(".")
    try:
        signature = base64url_decode(signature_b64)
    except (binascii.Error, ValueError):
        raise TokenError("malformed token") from None
    return header_b64, payload_b64, signature


def _json_part(part: str) -> dict[str, Any]:
    try:
        value = orjson.loads(base64url_decode(part))
    except (binascii.Error, ValueError):
        raise TokenError("malformed token") from None
    if not isinstance(value, dict):
        raise TokenError("malformed token")
    return value


def _signature_ok(algorithm: Algorithm, key: Any, signing_input: bytes, signature: bytes) -> bool:
    try:
        return bool(algorithm.verify(signing_input, key, signature))
    except Exception:  # malformed signatures make some backends raise instead of failing
        return False


# --------------------------------------------------------------------------- claims


def _number_claim(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenError(f"invalid {name} claim")
    return value


def _optional_int(claims: dict[str, Any], name: str) -> int | None:
    value = _number_claim(claims, name)
    return None if value is None else int(value)


def _audiences(claims: dict[str, Any]) -> list[str]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list):
        return [a for a in aud if isinstance(a, str)]
    return []


def _user(claims: dict[str, Any]) -> str:
    sub = claims.get("sub", "")
    if not isinstance(sub, str):
        raise TokenError("invalid sub claim")
    return sub


def _info(claims: dict[str, Any]) -> bytes | None:
    try:
        return b64json.field(claims, "info", "b64info")
    except (ValueError, orjson.JSONEncodeError) as exc:
        raise TokenError(f"invalid {exc}") from None


def _options(claims: dict[str, Any], where: str) -> SubscribeOptions:
    """info/b64info, data/b64data and override of a subscription (token or ``subs``)."""
    try:
        return subscribe_options.parse(claims)
    except ValueError as exc:
        raise TokenError(f"invalid {where}{exc}") from None


def _channels(claims: dict[str, Any]) -> list[str]:
    channels = claims.get("channels")
    if channels is None:
        return []
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise TokenError("invalid channels claim")
    return channels


def _subs(claims: dict[str, Any]) -> dict[str, dict[str, Any]]:
    subs = claims.get("subs")
    if subs is None:
        return {}
    if not isinstance(subs, dict) or not all(isinstance(v, dict) for v in subs.values()):
        raise TokenError("invalid subs claim")
    return subs


def _meta(claims: dict[str, Any]) -> dict[str, Any] | None:
    meta = claims.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise TokenError("invalid meta claim")
    return meta


# --------------------------------------------------------------------------- minting


def mint_connection_token(
    secret: str | bytes | Any,
    user: str,
    ttl: float | None = 3600,
    info: object = None,
    channels: list[str] | None = None,
    algorithm: str = "HS256",
    **extra: Any,
) -> str:
    """A connection token for ``user``; ``secret`` is the HMAC secret or a private key
    (PEM or key object) for RS*/PS*/ES*. ``ttl=None`` means no ``exp``."""
    claims: dict[str, Any] = {"sub": user}
    if info is not None:
        claims["info"] = info
    if channels:
        claims["channels"] = list(channels)
    return _mint(secret, claims, ttl, algorithm, extra)


def mint_internal_token(key: bytes, user: str, ttl: float, channels: list[str]) -> str:
    """An internal connection token (see ``verify_internal_token``) for ``user`` with
    server-side subscriptions to ``channels``; the server's own ``key`` signs it."""
    claims: dict[str, Any] = {"sub": user, "channels": list(channels)}
    claims["exp"] = int(time.time() + ttl)
    return jwt.encode(claims, key, algorithm="HS256", headers={"kid": INTERNAL_KID})


def mint_subscription_token(
    secret: str | bytes | Any,
    user: str,
    channel: str,
    ttl: float | None = 3600,
    info: object = None,
    algorithm: str = "HS256",
    **extra: Any,
) -> str:
    """A subscription token letting ``user`` join ``channel``."""
    claims: dict[str, Any] = {"sub": user, "channel": channel}
    if info is not None:
        claims["info"] = info
    return _mint(secret, claims, ttl, algorithm, extra)


def _mint(
    secret: Any, claims: dict[str, Any], ttl: float | None, algorithm: str, extra: dict[str, Any]
) -> str:
    if ttl is not None:
        claims["exp"] = int(time.time() + ttl)
    claims.update(extra)
    with warnings.catch_warnings():  # short demo secrets are the caller's choice
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        return jwt.encode(claims, secret, algorithm=algorithm)
