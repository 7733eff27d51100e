"""A gateway process (HS256, a secret of this suite) shared by the security tests of a module."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import jwt
import pytest

from pulse_dev.testing import GatewayFactory, RunningGateway

SECRET = "security-suite-gateway-secret-7f3c9a1e5b"
MAX_SUBSCRIPTIONS = 5


def mint_token(secret: str = SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    """A JWT with ``sub``, ``roles`` and a ten-minute ``exp`` unless ``claims`` say otherwise;
    a claim given as None is left out."""
    payload = {"sub": "alice", "roles": [], "exp": int(time.time()) + 600, **claims}
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, secret, algorithm=algorithm)


@pytest.fixture(scope="session")
def mint() -> Callable[..., str]:
    """:func:`mint_token`, for test modules (which cannot import this conftest)."""
    return mint_token


@pytest.fixture(scope="module")
def gateway(module_gateways: GatewayFactory) -> RunningGateway:
    return module_gateways.start(secret=SECRET, PULSE_MAX_SUBSCRIPTIONS=str(MAX_SUBSCRIPTIONS))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session
