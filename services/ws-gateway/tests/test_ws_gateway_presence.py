"""Presence across sessions and gateway processes, with real processes and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import aiohttp
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from pulse_dev.testing import GatewayFactory, RunningGateway

SECRET = "ws-gateway-presence-secret-0123456789abcdef"
LEASE_SECONDS = 2.5  # renewed every third; slack for a loaded CI machine
pytestmark = pytest.mark.timeout(60)


def _start(gateways: GatewayFactory, prefix: str | None = None) -> RunningGateway:
    return gateways.start(
        secret=SECRET, prefix=prefix, PULSE_PRESENCE_LEASE_SECONDS=str(LEASE_SECONDS)
    )


async def _subscribe(ws: ClientConnection, channel: str, *, presence: bool = False) -> None:
    await ws.send(
        orjson.dumps({"op": "subscribe", "channel": channel, "presence": presence}).decode()
    )
    frame = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
    assert frame["op"] == "subscribed", frame


async def _presence_frames(ws: ClientConnection, user: str, seconds: float) -> list[str]:
    """``joined`` / ``left`` for ``user`` seen on ``ws`` within ``seconds``."""
    seen: list[str] = []
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(_collect_presence(ws, user, seen), seconds)
    return seen


async def _collect_presence(ws: ClientConnection, user: str, seen: list[str]) -> None:
    while True:
        frame: dict[str, Any] = orjson.loads(await ws.recv())
        if frame["op"] == "presence":
            seen.extend(k for k in ("joined", "left") if frame.get(k, {}).get("user") == user)


async def _present(gateway: RunningGateway, channel: str) -> dict[str, int]:
    token = gateway.token("ops-q", ["ops"])
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{gateway.http}/v1/channels/{channel}/presence",
            headers={"Authorization": f"Bearer {token}"},
        ) as resp,
    ):
        assert resp.status == 200
        body = await resp.json()
    return {u["user"]: u["sessions"] for u in body["users"]}


async def test_a_user_leaves_only_when_their_last_session_closes(
    gateways: GatewayFactory,
) -> None:
    gateway = _start(gateways)
    account = f"acct-{uuid.uuid4().hex[:8]}"
    channel = f"account:{account}"
    try:
        async with connect(gateway.ws_url("watcher", ["ops"])) as watcher:
            await _subscribe(watcher, channel, presence=True)
            async with (
                connect(gateway.ws_url(account)) as phone,
                connect(gateway.ws_url(account)) as pc,
            ):
                await _subscribe(phone, channel)
                await _subscribe(pc, channel)
                assert await _presence_frames(watcher, account, 0.5) == ["joined"]
                assert await _present(gateway, channel) == {account: 2, "watcher": 1}
                await phone.close()
                assert await _presence_frames(watcher, account, 0.5) == []
                assert await _present(gateway, channel) == {account: 1, "watcher": 1}
            assert await _presence_frames(watcher, account, 0.5) == ["left"]
            assert await _present(gateway, channel) == {"watcher": 1}
    finally:
        gateway.kill()


async def test_a_killed_gateways_users_leave_within_the_lease_once(
    gateways: GatewayFactory,
) -> None:
    doomed = _start(gateways)
    survivor = _start(gateways, doomed.prefix)
    account = f"acct-{uuid.uuid4().hex[:8]}"
    channel = f"account:{account}"
    try:
        async with connect(survivor.ws_url("watcher", ["ops"])) as watcher:
            await _subscribe(watcher, channel, presence=True)
            user = await connect(doomed.ws_url(account))
            await _subscribe(user, channel)
            # leases are renewed: still present after several lease times
            assert await _presence_frames(watcher, account, LEASE_SECONDS * 2) == ["joined"]
            assert await _present(survivor, channel) == {account: 1, "watcher": 1}
            doomed.kill()
            seen = await _presence_frames(watcher, account, LEASE_SECONDS * 2 + 1)
            assert seen == ["left"]
            assert await _present(survivor, channel) == {"watcher": 1}
            await user.close()
    finally:
        doomed.kill()
        survivor.kill()
