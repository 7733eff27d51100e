"""A gateway pinned to RS256 with keys from a real (local) JWKS server."""

from __future__ import annotations

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from pulse_dev.jwks import Jwks
from pulse_dev.testing import GatewayFactory

pytestmark = pytest.mark.timeout(60)
SECRET = "ws-gateway-token-secret-0123456789abcdef"


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
