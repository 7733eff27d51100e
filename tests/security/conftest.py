"""A gateway process (HS256, a secret of this suite) shared by the security tests of a module."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from pulse_dev.testing import ServiceProcess, free_port

SECRET = "security-suite-gateway-secret-7f3c9a1e5b"
MAX_SUBSCRIPTIONS = 5


@dataclass
class Gateway:
    port: int
    prefix: str
    process: ServiceProcess

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"


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
def gateway(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    port = free_port()
    prefix = f"pulse:sec{uuid.uuid4().hex[:8]}:"
    env = {
        "REDIS_URL": redis_url,
        "PULSE_REDIS_PREFIX": prefix,
        "PULSE_HTTP_PORT": str(port),
        "PULSE_JWT_SECRET": SECRET,
        "PULSE_MAX_SUBSCRIPTIONS": str(MAX_SUBSCRIPTIONS),
    }
    log: Path = tmp_path_factory.mktemp("security-gateway") / "ws_gateway.log"
    with ServiceProcess("ws_gateway", env, log) as process:
        process.start(wait_port=port)
        yield Gateway(port, prefix, process)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session
