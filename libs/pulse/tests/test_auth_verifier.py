"""The token verifier: HS256, and RS256 / ES256 with keys from a real (local) JWKS server."""

from __future__ import annotations

import asyncio
import base64
import time

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pulse.auth import (
    InvalidTokenError,
    TokenExpiredError,
    TokenVerifier,
    VerifierUnavailableError,
    issue_token,
)
from pulse_dev.jwks import Jwks
from pulse_dev.testing import free_port

pytestmark = pytest.mark.timeout(60)
SECRET = "ws-gateway-token-secret-0123456789abcdef"


async def test_rs256_and_es256_tokens_verify_with_keys_from_the_jwks(jwks: Jwks) -> None:
    rs = TokenVerifier(algorithm="RS256", secret="", jwks_url=jwks.url)
    claims = await rs.verify(jwks.token())
    assert (claims.sub, claims.is_ops) == ("alice", True)
    es = TokenVerifier(algorithm="ES256", secret="", jwks_url=jwks.url)
    assert (await es.verify(jwks.token("ES256", kid="ec-1", sub="bob"))).sub == "bob"
    # keys are cached: more verifications do not fetch the set again
    fetched = len(jwks.requests)
    for _ in range(5):
        await rs.verify(jwks.token())
    assert len(jwks.requests) == fetched


async def test_expired_tampered_and_unknown_key_tokens_are_refused(jwks: Jwks) -> None:
    verifier = TokenVerifier(algorithm="RS256", secret="", jwks_url=jwks.url)
    with pytest.raises(TokenExpiredError):
        await verifier.verify(jwks.token(exp=int(time.time()) - 60))
    header, _, signature = jwks.token().split(".")
    forged = base64.urlsafe_b64encode(
        orjson.dumps({"sub": "mallory", "roles": ["ops"], "exp": int(time.time()) + 600})
    ).rstrip(b"=")
    with pytest.raises(InvalidTokenError):
        await verifier.verify(f"{header}.{forged.decode()}.{signature}")
    with pytest.raises(InvalidTokenError):
        await verifier.verify(jwks.token(kid="nobody"))
    payload = {"sub": "alice", "roles": ["ops"]}  # no exp
    with pytest.raises(InvalidTokenError):
        await verifier.verify(jwt.encode(payload, jwks.rsa_key, "RS256", {"kid": "rsa-1"}))


async def test_the_algorithm_is_pinned(jwks: Jwks) -> None:
    rs = TokenVerifier(algorithm="RS256", secret="", jwks_url=jwks.url)
    # HS256 signed with the public key as the secret: the classic algorithm confusion
    public_pem = jwks.rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    confused = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT","kid":"rsa-1"}')
    body = base64.urlsafe_b64encode(
        orjson.dumps({"sub": "alice", "roles": ["ops"], "exp": int(time.time()) + 600})
    )
    signing_input = confused.rstrip(b"=") + b"." + body.rstrip(b"=")
    import hmac  # noqa: PLC0415 - only this test forges a signature

    mac = hmac.new(public_pem, signing_input, "sha256").digest()
    forged = signing_input + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")
    with pytest.raises(InvalidTokenError):
        await rs.verify(forged.decode())
    unsigned = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, "", "none")
    with pytest.raises(InvalidTokenError):
        await rs.verify(unsigned)
    with pytest.raises(InvalidTokenError):  # an ES256 token where RS256 is pinned
        await rs.verify(jwks.token("ES256", kid="ec-1"))
    hs = TokenVerifier(algorithm="HS256", secret=SECRET)
    assert (await hs.verify(issue_token(SECRET, sub="dev"))).sub == "dev"
    with pytest.raises(InvalidTokenError):
        await hs.verify(jwks.token())


async def test_an_unreachable_jwks_is_unavailable_not_invalid(jwks: Jwks) -> None:
    del jwks
    verifier = TokenVerifier(
        algorithm="RS256", secret="", jwks_url=f"http://127.0.0.1:{free_port()}/jwks.json"
    )
    token = jwt.encode(
        {"sub": "a", "exp": int(time.time()) + 60},
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "RS256",
        {"kid": "k"},
    )
    with pytest.raises(VerifierUnavailableError):
        await verifier.verify(token)


def test_asymmetric_algorithms_need_a_jwks_url() -> None:
    with pytest.raises(ValueError, match="JWKS"):
        TokenVerifier(algorithm="RS256", secret="")
    with pytest.raises(ValueError, match="unsupported"):
        TokenVerifier(algorithm="HS512", secret="x")


async def test_a_remembered_token_still_expires_and_a_changed_one_is_checked_again() -> None:
    hs = TokenVerifier(algorithm="HS256", secret=SECRET)
    exp = int(time.time()) + 2
    token = jwt.encode({"sub": "dev", "exp": exp}, SECRET, algorithm="HS256")
    assert (await hs.verify(token)).sub == "dev"
    assert (await hs.verify(token)).sub == "dev"  # remembered
    with pytest.raises(InvalidTokenError):
        await hs.verify(token[:-2] + ("AA" if token[-2:] != "AA" else "BB"))
    await asyncio.sleep(exp - time.time() + 0.1)
    with pytest.raises(TokenExpiredError):
        await hs.verify(token)


async def test_issuer_and_audience_are_required_when_set() -> None:
    hs = TokenVerifier(
        algorithm="HS256", secret=SECRET, issuer="https://id.example", audience="pulse-api"
    )
    claims = {"sub": "dev", "exp": int(time.time()) + 60}
    good = jwt.encode({**claims, "iss": "https://id.example", "aud": "pulse-api"}, SECRET)
    assert (await hs.verify(good)).sub == "dev"
    for other in (
        claims,  # neither
        {**claims, "iss": "https://id.example"},  # no audience
        {**claims, "iss": "https://other.example", "aud": "pulse-api"},
        {**claims, "iss": "https://id.example", "aud": "another-app"},
    ):
        with pytest.raises(InvalidTokenError):
            await hs.verify(jwt.encode(other, SECRET))
