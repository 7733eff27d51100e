"""Connection tokens: HS256, and RS256 / ES256 with keys from a real (local) JWKS server."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import jwt
import orjson
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from pulse.auth import InvalidTokenError, TokenExpiredError, issue_token
from pulse_dev.testing import GatewayFactory, free_port, serving
from ws_gateway.tokens import TokenVerifier, VerifierUnavailableError

pytestmark = pytest.mark.timeout(60)
SECRET = "ws-gateway-token-secret-0123456789abcdef"


@dataclass
class Jwks:
    url: str
    rsa_key: rsa.RSAPrivateKey
    ec_key: ec.EllipticCurvePrivateKey
    requests: list[str]

    def token(self, alg: str = "RS256", kid: str = "rsa-1", **claims: Any) -> str:
        payload = {"sub": "alice", "roles": ["ops"], "exp": int(time.time()) + 600, **claims}
        key = self.rsa_key if alg == "RS256" else self.ec_key
        return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})


@pytest.fixture(scope="module")
async def jwks() -> AsyncIterator[Jwks]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    keys = [
        {
            **jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True),
            "kid": "rsa-1",
            "alg": "RS256",
            "use": "sig",
        },
        {
            **jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True),
            "kid": "ec-1",
            "alg": "ES256",
            "use": "sig",
        },
    ]
    requests: list[str] = []

    async def serve_jwks(request: web.Request) -> web.Response:
        requests.append(request.path)
        return web.json_response({"keys": keys})

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", serve_jwks)
    async with serving(app) as base:
        yield Jwks(f"{base}/.well-known/jwks.json", rsa_key, ec_key, requests)


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


async def test_a_gateway_pinned_to_rs256_accepts_jwks_tokens_only(
    jwks: Jwks, gateways: GatewayFactory
) -> None:
    gateway = gateways.start(secret=SECRET, PULSE_JWT_ALGORITHM="RS256", PULSE_JWKS_URL=jwks.url)
    async with connect(f"{gateway.ws}?token={jwks.token()}") as ws:
        await ws.send('{"op":"subscribe","channel":"payments"}')
        assert orjson.loads(await ws.recv())["op"] == "subscribed"
    with pytest.raises(InvalidStatus) as info:
        async with connect(gateway.ws_url("a")):  # HS256 with the secret: not this algorithm
            pass
    assert info.value.response.status_code == 401
