"""Bad tokens are refused on every door of the gateway: /ws, /sse, history, presence, refresh.

The gateway is a real process pinned to HS256 with this suite's secret. Each kind of bad
token (expired, not yet valid by ``nbf`` or ``iat``, tampered, unsigned, another algorithm,
another key, claims missing or malformed) is tried on each door; a good token opens every
door, so the refusals are the tokens' doing.
"""

from __future__ import annotations

import base64
import time
import warnings
from typing import Any

import aiohttp
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

pytestmark = pytest.mark.timeout(60)

CHANNEL = "account:alice"
NONE_HEADER = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
BAD_KINDS = (
    "expired",
    "not yet valid (nbf in the future)",
    "issued in the future (iat)",
    "payload tampered (roles ops added)",
    "signature tampered",
    "alg none",
    "alg none, empty signature",
    "HS512 with the right secret",
    "RS256 (another algorithm family)",
    "HS256 with another key",
    "no exp",
    "no sub",
    "empty sub",
    "roles not a list",
    "not a JWT",
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _bad_tokens(mint: Any) -> dict[str, str]:
    now = int(time.time())
    header, _, signature = mint().split(".")
    escalated = _b64(orjson.dumps({"sub": "alice", "roles": ["ops"], "exp": now + 600}))
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    claims = {"sub": "alice", "roles": ["ops"], "exp": now + 600}
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with warnings.catch_warnings():  # the gateway's secret is short for HS512: that is fine
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        hs512 = mint(algorithm="HS512")
    return {
        "expired": mint(exp=now - 60),
        "not yet valid (nbf in the future)": mint(nbf=now + 600),
        "issued in the future (iat)": mint(iat=now + 600),
        "payload tampered (roles ops added)": f"{header}.{escalated}.{signature}",
        "signature tampered": f"{header}.{_b64(orjson.dumps(claims))}.{flipped}",
        "alg none": jwt.encode(claims, "", algorithm="none"),
        "alg none, empty signature": f"{NONE_HEADER}.{escalated}.",
        "HS512 with the right secret": hs512,
        "RS256 (another algorithm family)": jwt.encode(claims, rsa_key, algorithm="RS256"),
        "HS256 with another key": mint(secret="not-the-gateway-secret-0123456789abcdef"),
        "no exp": mint(exp=None),
        "no sub": mint(sub=None),
        "empty sub": mint(sub=""),
        "roles not a list": mint(roles="ops"),
        "not a JWT": "not-a-jwt",
    }


@pytest.fixture(scope="module")
def bad_tokens(mint: Any) -> dict[str, str]:
    tokens = _bad_tokens(mint)
    assert tuple(tokens) == BAD_KINDS
    return tokens


async def _doors(gateway: Any, http: aiohttp.ClientSession, token: str) -> dict[str, int]:
    """The status each door answers ``token`` with (101 for an opened WebSocket)."""
    statuses: dict[str, int] = {}
    try:
        async with http.ws_connect(f"{gateway.ws}?token={token}") as ws:
            await ws.send_str('{"op":"ping"}')
            assert orjson.loads((await ws.receive(5)).data) == {"op": "pong"}
            statuses["ws"] = 101
    except aiohttp.WSServerHandshakeError as exc:
        statuses["ws"] = exc.status
    bearer = {"Authorization": f"Bearer {token}"}
    sse = f"{gateway.http}/sse?channels={CHANNEL}"
    async with http.get(sse, headers=bearer) as resp:
        statuses["sse"] = resp.status
    for door in ("history", "presence"):
        url = f"{gateway.http}/v1/channels/{CHANNEL}/{door}"
        async with http.get(url, params={"token": token}) as resp:
            statuses[door] = resp.status
        async with http.get(url, headers=bearer) as resp:
            statuses[f"{door} (bearer)"] = resp.status
    return statuses


async def test_a_good_token_opens_every_door(
    gateway: Any, http: aiohttp.ClientSession, mint: Any
) -> None:
    assert await _doors(gateway, http, mint()) == {
        "ws": 101,
        "sse": 200,
        "history": 200,
        "history (bearer)": 200,
        "presence": 200,
        "presence (bearer)": 200,
    }


@pytest.mark.parametrize("kind", BAD_KINDS)
async def test_a_bad_token_is_refused_at_every_door(
    gateway: Any, http: aiohttp.ClientSession, bad_tokens: dict[str, str], kind: str
) -> None:
    statuses = await _doors(gateway, http, bad_tokens[kind])
    assert statuses == dict.fromkeys(statuses, 401), kind


async def test_a_bad_token_cannot_replace_a_good_one_by_refresh(
    gateway: Any, http: aiohttp.ClientSession, bad_tokens: dict[str, str], mint: Any
) -> None:
    async with http.ws_connect(f"{gateway.ws}?token={mint()}") as ws:
        await ws.send_str(orjson.dumps({"op": "subscribe", "channel": CHANNEL}).decode())
        assert orjson.loads((await ws.receive(5)).data)["op"] == "subscribed"
        for kind, bad in bad_tokens.items():
            await ws.send_str(orjson.dumps({"op": "refresh", "token": bad}).decode())
            reply = orjson.loads((await ws.receive(5)).data)
            assert (reply["op"], reply["code"]) == ("error", "unauthorized"), kind
        # Still the same connection, with its channel: the refusals changed nothing.
        await ws.send_str(orjson.dumps({"op": "subscribe", "channel": "payments"}).decode())
        assert orjson.loads((await ws.receive(5)).data)["code"] == "forbidden"
        await ws.send_str(orjson.dumps({"op": "unsubscribe", "channel": CHANNEL}).decode())
        assert orjson.loads((await ws.receive(5)).data)["op"] == "unsubscribed"
