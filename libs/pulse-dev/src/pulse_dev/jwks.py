"""A real JWKS server for tests: RS256 and ES256 keys served over HTTP, as an identity
provider would. The ``jwks`` fixture is module-scoped; :meth:`Jwks.token` signs tokens."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pulse_dev.testing import serving

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["Jwks", "jwks"]


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
