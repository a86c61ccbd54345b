"""Tests for pushgate.auth: verifying and minting Centrifugo-style JWTs."""

import base64
import hashlib
import hmac
import time
from pathlib import Path

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pushgate.auth import (
    INTERNAL_KID,
    ConnectionClaims,
    InternalToken,
    SubscriptionClaims,
    TokenError,
    TokenExpired,
    TokenVerifier,
    mint_connection_token,
    mint_internal_token,
    mint_subscription_token,
    verify_internal_token,
)
from pushgate.config import ConfigError, TokenConfig

SECRET = "a-test-secret-that-is-long-enough-for-hs512-keys-0123456789abcdef"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_pem(private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def hmac_verifier() -> TokenVerifier:
    return TokenVerifier(TokenConfig(hmac_secret=SECRET))


# --------------------------------------------------------------------------- HMAC


def test_hs256_round_trip_with_info_and_channels(hmac_verifier: TokenVerifier) -> None:
    token = mint_connection_token(
        SECRET,
        "alice",
        info={"name": "Alice"},
        channels=["board:1", "personal:#alice"],
        subs={"team:7": {"info": {"role": "lead"}}},
        meta={"k": 1},
    )
    claims = hmac_verifier.verify_connection(token)
    assert isinstance(claims, ConnectionClaims)
    assert claims.user == "alice"
    assert orjson.loads(claims.info or b"") == {"name": "Alice"}
    assert claims.channels == ["board:1", "personal:#alice"]
    assert claims.subs == {"team:7": {"info": {"role": "lead"}}}
    assert claims.meta == {"k": 1}
    assert claims.exp is not None and abs(claims.exp - (time.time() + 3600)) < 5
    assert claims.expire_at is None


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_other_hmac_algorithms(hmac_verifier: TokenVerifier, algorithm: str) -> None:
    token = mint_connection_token(SECRET, "bob", algorithm=algorithm)
    assert hmac_verifier.verify_connection(token).user == "bob"


def test_defaults_without_optional_claims(hmac_verifier: TokenVerifier) -> None:
    token = jwt.encode({}, SECRET, algorithm="HS256")
    claims = hmac_verifier.verify_connection(token)
    assert claims == ConnectionClaims(
        user="", exp=None, info=None, channels=[], subs={}, meta=None, expire_at=None
    )


def test_no_ttl_and_expire_at(hmac_verifier: TokenVerifier) -> None:
    expire_at = int(time.time()) + 60
    token = mint_connection_token(SECRET, "u", ttl=None, expire_at=expire_at)
    claims = hmac_verifier.verify_connection(token)
    assert claims.exp is None
    assert claims.expire_at == expire_at


def test_expired_token(hmac_verifier: TokenVerifier) -> None:
    token = mint_connection_token(SECRET, "alice", ttl=-10)
    with pytest.raises(TokenExpired):
        hmac_verifier.verify_connection(token)
    sub_token = mint_subscription_token(SECRET, "alice", "board:1", ttl=-10)
    with pytest.raises(TokenExpired):
        hmac_verifier.verify_subscription(sub_token, "board:1")


def test_not_yet_valid(hmac_verifier: TokenVerifier) -> None:
    token = mint_connection_token(SECRET, "alice", nbf=int(time.time()) + 600)
    with pytest.raises(TokenError, match="not valid yet"):
        hmac_verifier.verify_connection(token)


def test_wrong_secret(hmac_verifier: TokenVerifier) -> None:
    token = mint_connection_token("another-secret-of-reasonable-length-0123456789", "alice")
    with pytest.raises(TokenError, match="invalid signature") as excinfo:
        hmac_verifier.verify_connection(token)
    assert not isinstance(excinfo.value, TokenExpired)


def test_tampered_payload(hmac_verifier: TokenVerifier) -> None:
    header, _, signature = mint_connection_token(SECRET, "alice").split(".")
    forged = b64(orjson.dumps({"sub": "admin", "exp": int(time.time()) + 3600}))
    with pytest.raises(TokenError, match="invalid signature"):
        hmac_verifier.verify_connection(f"{header}.{forged}.{signature}")


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_refused(hmac_verifier: TokenVerifier, alg: str) -> None:
    header = b64(orjson.dumps({"alg": alg, "typ": "JWT"}))
    payload = b64(orjson.dumps({"sub": "admin", "exp": int(time.time()) + 3600}))
    for token in (f"{header}.{payload}.", f"{header}.{payload}.{b64(b'x')}"):
        with pytest.raises(TokenError, match="algorithm not allowed"):
            hmac_verifier.verify_connection(token)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "!!!.???.###",
        "é.é.é",
        b64(b"[1]") + "." + b64(b"{}") + ".",
        b64(b"not json") + ".e30.",
        None,
        42,
    ],
)
def test_malformed_tokens(hmac_verifier: TokenVerifier, token: object) -> None:
    with pytest.raises(TokenError):
        hmac_verifier.verify_connection(token)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": 5},
        {"channels": "board:1"},
        {"channels": [1]},
        {"subs": []},
        {"subs": {"a": 1}},
        {"meta": [1]},
        {"exp": "soon"},
        {"exp": True},
        {"channel": "board:1"},
    ],
)
def test_bad_claims_refused(hmac_verifier: TokenVerifier, claims: dict[str, object]) -> None:
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    with pytest.raises(TokenError):
        hmac_verifier.verify_connection(token)


def test_critical_header_refused(hmac_verifier: TokenVerifier) -> None:
    token = jwt.encode({"sub": "a"}, SECRET, algorithm="HS256", headers={"crit": ["exp"]})
    with pytest.raises(TokenError, match="critical"):
        hmac_verifier.verify_connection(token)


def test_hmac_token_refused_when_only_rsa_configured(rsa_key: rsa.RSAPrivateKey) -> None:
    pem = public_pem(rsa_key)
    verifier = TokenVerifier(TokenConfig(rsa_public_key=pem))
    # Key confusion: an HS256 token MACed with the (public) RSA key text must not pass.
    header, payload = b64(b'{"alg":"HS256"}'), b64(b'{"sub":"admin"}')
    signing_input = f"{header}.{payload}"
    mac = hmac.new(pem.encode(), signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(TokenError, match="algorithm not allowed"):
        verifier.verify_connection(f"{signing_input}.{b64(mac)}")
    with pytest.raises(TokenError, match="algorithm not allowed"):
        verifier.verify_connection(mint_connection_token(SECRET, "alice"))


def test_configured_property(rsa_key: rsa.RSAPrivateKey) -> None:
    assert not TokenVerifier(TokenConfig()).configured
    assert TokenVerifier(TokenConfig(hmac_secret="x")).configured
    assert TokenVerifier(TokenConfig(rsa_public_key=public_pem(rsa_key))).configured


def test_nothing_configured_refuses_everything() -> None:
    verifier = TokenVerifier(TokenConfig())
    with pytest.raises(TokenError):
        verifier.verify_connection(mint_connection_token(SECRET, "alice"))


# --------------------------------------------------------------------------- RSA / ECDSA


@pytest.mark.parametrize("algorithm", ["RS256", "RS512", "PS256"])
def test_rsa_round_trip(rsa_key: rsa.RSAPrivateKey, algorithm: str) -> None:
    verifier = TokenVerifier(TokenConfig(rsa_public_key=public_pem(rsa_key)))
    token = mint_connection_token(rsa_key, "carol", info={"x": 1}, algorithm=algorithm)
    claims = verifier.verify_connection(token)
    assert claims.user == "carol"
    assert claims.info == b'{"x":1}'


def test_rsa_token_from_other_key_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    verifier = TokenVerifier(TokenConfig(rsa_public_key=public_pem(rsa_key)))
    with pytest.raises(TokenError, match="invalid signature"):
        verifier.verify_connection(mint_connection_token(other, "carol", algorithm="RS256"))


def test_rsa_key_from_file(rsa_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    path = tmp_path / "rsa.pem"
    path.write_text(public_pem(rsa_key))
    verifier = TokenVerifier(TokenConfig(rsa_public_key=str(path)))
    path.unlink()  # read once, at construction
    token = mint_subscription_token(rsa_key, "dave", "board:1", algorithm="RS256")
    assert verifier.verify_subscription(token, "board:1").user == "dave"


def test_es256_round_trip(ec_key: ec.EllipticCurvePrivateKey) -> None:
    verifier = TokenVerifier(TokenConfig(ecdsa_public_key=public_pem(ec_key)))
    assert verifier.algorithms == ["ES256"]
    token = mint_connection_token(ec_key, "erin", channels=["a"], algorithm="ES256")
    assert verifier.verify_connection(token).channels == ["a"]
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(TokenError, match="invalid signature"):
        verifier.verify_connection(mint_connection_token(other, "erin", algorithm="ES256"))


def test_rsa_token_refused_by_ecdsa_only_verifier(
    ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    verifier = TokenVerifier(TokenConfig(ecdsa_public_key=public_pem(ec_key)))
    with pytest.raises(TokenError, match="algorithm not allowed"):
        verifier.verify_connection(mint_connection_token(rsa_key, "x", algorithm="RS256"))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (TokenConfig(rsa_public_key="/no/such/file.pem"), "token.rsa_public_key: cannot read"),
        (
            TokenConfig(rsa_public_key="-----BEGIN PUBLIC KEY-----\nxx\n-----END PUBLIC KEY-----"),
            "token.rsa_public_key: cannot load PEM public key",
        ),
    ],
)
def test_bad_key_configuration(config: TokenConfig, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TokenVerifier(config)


def test_key_of_wrong_type(ec_key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(ConfigError, match="not an RSA public key"):
        TokenVerifier(TokenConfig(rsa_public_key=public_pem(ec_key)))


# --------------------------------------------------------------------------- subscriptions


def test_subscription_token(hmac_verifier: TokenVerifier) -> None:
    token = mint_subscription_token(SECRET, "alice", "board:1", info={"role": "owner"})
    claims = hmac_verifier.verify_subscription(token, "board:1")
    assert isinstance(claims, SubscriptionClaims)
    assert (claims.user, claims.channel) == ("alice", "board:1")
    assert claims.info == b'{"role":"owner"}'
    assert claims.exp is not None


def test_subscription_token_channel_mismatch(hmac_verifier: TokenVerifier) -> None:
    token = mint_subscription_token(SECRET, "alice", "board:1")
    with pytest.raises(TokenError, match="token channel mismatch"):
        hmac_verifier.verify_subscription(token, "board:2")
    with pytest.raises(TokenError, match="token channel mismatch"):
        hmac_verifier.verify_subscription(mint_connection_token(SECRET, "alice"), "board:1")


def test_subscription_token_is_not_a_connection_token(hmac_verifier: TokenVerifier) -> None:
    token = mint_subscription_token(SECRET, "alice", "board:1")
    with pytest.raises(TokenError, match="subscription token"):
        hmac_verifier.verify_connection(token)


# --------------------------------------------------------------------------- aud / iss


def test_audience_and_issuer_checked() -> None:
    verifier = TokenVerifier(
        TokenConfig(hmac_secret=SECRET, audience="pushgate", issuer="https://auth.example.com")
    )
    good = {"aud": ["other", "pushgate"], "iss": "https://auth.example.com"}
    assert verifier.verify_connection(mint_connection_token(SECRET, "a", **good)).user == "a"
    single = {"aud": "pushgate", "iss": "https://auth.example.com"}
    assert verifier.verify_connection(mint_connection_token(SECRET, "a", **single)).user == "a"
    for claims, reason in [
        ({"aud": "other", "iss": "https://auth.example.com"}, "invalid audience"),
        ({"iss": "https://auth.example.com"}, "invalid audience"),
        ({"aud": "pushgate", "iss": "https://evil.example.com"}, "invalid issuer"),
        ({"aud": "pushgate"}, "invalid issuer"),
    ]:
        with pytest.raises(TokenError, match=reason):
            verifier.verify_connection(mint_connection_token(SECRET, "a", **claims))


def test_audience_and_issuer_ignored_when_not_configured(hmac_verifier: TokenVerifier) -> None:
    token = mint_connection_token(SECRET, "a", aud="anything", iss="anyone")
    assert hmac_verifier.verify_connection(token).user == "a"


def test_internal_tokens_need_the_servers_own_key() -> None:
    key = b"k" * 32
    token = mint_internal_token(key, "pushgate-admin", 60, ["__pushgate:admin"])
    claims = verify_internal_token(token, key)
    assert claims.internal and claims.channels == ["__pushgate:admin"]
    verifier = TokenVerifier(TokenConfig(hmac_secret=SECRET))
    with pytest.raises(InternalToken):  # never by the [token] keys
        verifier.verify_connection(token)
    assert not verifier.verify_connection(mint_connection_token(SECRET, "pushgate-admin")).internal
    headers = {"kid": INTERNAL_KID}
    forged = jwt.encode({"sub": "x", "exp": time.time() + 60}, SECRET, "HS256", headers=headers)
    no_exp = jwt.encode({"sub": "x"}, key, "HS256", headers=headers)
    expired = jwt.encode({"sub": "x", "exp": time.time() - 1}, key, "HS256", headers=headers)
    plain = jwt.encode({"sub": "x", "exp": time.time() + 60}, key, "HS256")
    for bad in (forged, no_exp, plain):
        with pytest.raises(TokenError):
            verify_internal_token(bad, key)
    with pytest.raises(TokenExpired):
        verify_internal_token(expired, key)
    with pytest.raises(InternalToken):  # a subscription token with that kid too
        verifier.verify_subscription(forged, "x")
