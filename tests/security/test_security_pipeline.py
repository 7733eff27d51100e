"""A full run with distinctive secrets: no log line carries them; webhook signatures bind.

``pulse dev`` runs as a process (emulator, topology, the five services) at debug level with
a JWT secret, an AWS secret key and (through ``pulse webhooks add``) a webhook signing
secret of its own, none of them a default. The test sends payments, holds a WebSocket (token
in the query string, as browsers must) and an SSE stream (token in a header), receives the
signed webhooks, stops the stack, and then reads every line the run logged: no secret and no
bearer token appears. A receiver checking signatures the Standard Webhooks way, written here
from the spec rather than imported, accepts the deliveries with the endpoint's secret and
refuses them with another secret, with a changed body, id or timestamp.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from click.testing import CliRunner

from pulse.auth import issue_token
from pulse.cli import main as pulse_cli
from pulse.events import NOTIFICATION
from pulse_dev.devstack import DevStackProcess
from pulse_dev.testing import LOCAL_WEBHOOK_RECEIVERS_ENV, eventually, free_port

pytestmark = pytest.mark.timeout(240)

PAYMENTS = 3


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str
    deliveries: list[Delivery] = field(default_factory=list)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    port = free_port()
    state = Receiver(f"http://127.0.0.1:{port}/hook")

    async def hook(request: web.Request) -> web.Response:
        state.deliveries.append(Delivery(dict(request.headers), await request.read()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield state
    await runner.cleanup()


def verify_standard_webhook(
    secret: str, headers: dict[str, str], body: bytes, *, tolerance: int = 300
) -> bool:
    """A receiver's check, per the Standard Webhooks spec: HMAC-SHA256 keyed by the base64
    part of ``whsec_…`` over ``id.timestamp.body``; any ``v1,`` signature may match; the
    timestamp must be within ``tolerance`` seconds of now."""
    msg_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > tolerance:
        return False
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [
        s.removeprefix("v1,") for s in headers.get("webhook-signature", "").split() if "," in s
    ]
    return any(hmac.compare_digest(expected, s) for s in offered)


async def _notifications(ws: aiohttp.ClientWebSocketResponse, want: int) -> list[Any]:
    got: list[Any] = []
    async with asyncio.timeout(90):
        while len(got) < want:
            frame = orjson.loads((await ws.receive()).data)
            if frame.get("op") == "event" and frame["event"]["type"] == NOTIFICATION:
                got.append(frame["event"])
    return got


async def test_a_full_run_logs_no_secret_and_webhook_signatures_bind(
    redis_url: str,
    tmp_path: Path,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    jwt_secret = f"jwt-{secrets.token_hex(20)}"
    aws_secret = f"aws{secrets.token_hex(18)}"
    account = f"sec-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("PULSE_JWT_SECRET", jwt_secret)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAPULSESECURITY01")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", aws_secret)
    stack = DevStackProcess(
        tmp_path / "pulse-dev.log", redis_url=redis_url, prefix=f"sec{os.getpid()}-"
    )
    stack.start(extra_args=["--log-level", "debug", "--json-logs"])
    try:
        cli_env = {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{stack.emulator_port}",
            "PULSE_RESOURCE_PREFIX": stack.prefix,
            **LOCAL_WEBHOOK_RECEIVERS_ENV,  # the receiver is this test's, on loopback
        }
        added = CliRunner().invoke(
            pulse_cli,
            ["webhooks", "add", "--account", account, "--url", receiver.url],
            env=cli_env,
        )
        assert added.exit_code == 0, added.output
        webhook_secret = dict(line.split(": ", 1) for line in added.output.splitlines())["secret"]
        # The merchant's backend posts with an API key, as a real one would.
        made = CliRunner().invoke(pulse_cli, ["keys", "create", "--account", account], env=cli_env)
        assert made.exit_code == 0, made.output
        api_key = dict(line.split(": ", 1) for line in made.stdout.splitlines())["api key"]

        token = issue_token(jwt_secret, sub=account)
        sse_token = issue_token(jwt_secret, sub=account, ttl_seconds=1800)
        gateway_http = f"http://127.0.0.1:{stack.gateway_port}"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
            async with (
                http.ws_connect(f"{stack.gateway_url}?token={token}") as ws,
                http.get(
                    f"{gateway_http}/sse",
                    params={"channels": f"account:{account}"},
                    headers={"Authorization": f"Bearer {sse_token}"},
                ) as sse,
            ):
                assert sse.status == 200
                await ws.send_str(f'{{"op":"subscribe","channel":"account:{account}"}}')
                assert orjson.loads((await ws.receive(10)).data)["op"] == "subscribed"
                for n in range(PAYMENTS):
                    body = {
                        "account_id": account,
                        "amount": f"1{n}.00",
                        "currency": "EUR",
                        "merchant_id": "m-sec",
                    }
                    async with http.post(
                        f"{stack.ingest_url}/v1/payments",
                        json=body,
                        headers={"Authorization": f"Bearer {api_key}"},
                    ) as resp:
                        assert resp.status == 201
                notes = await _notifications(ws, PAYMENTS)
            await eventually(lambda: len(receiver.deliveries) >= PAYMENTS, timeout=60.0)
        assert stack.stop() == 0
    finally:
        stack.kill()

    # Every delivery verifies with the endpoint's secret, and fails every other way.
    assert {orjson.loads(d.body)["id"] for d in receiver.deliveries} == {n["id"] for n in notes}
    wrong_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    for d in receiver.deliveries:
        assert verify_standard_webhook(webhook_secret, d.headers, d.body)
        assert not verify_standard_webhook(wrong_secret, d.headers, d.body)
        assert not verify_standard_webhook(webhook_secret, d.headers, d.body + b" ")
        assert not verify_standard_webhook(
            webhook_secret, {**d.headers, "webhook-id": "msg_other"}, d.body
        )
        shifted = str(int(d.headers["webhook-timestamp"]) + 1)
        assert not verify_standard_webhook(
            webhook_secret, {**d.headers, "webhook-timestamp": shifted}, d.body
        )

    # No secret and no bearer token in anything the run logged.
    log = stack.logs()
    assert "notification sent" in log  # the services did log, at debug level
    assert api_key.split("_", 2)[1] in log  # the key is named, by its id
    key = base64.b64decode(webhook_secret.removeprefix("whsec_"))
    leaks = {
        "JWT secret": jwt_secret,
        "AWS secret key": aws_secret,
        "webhook secret": webhook_secret,
        "webhook key (base64 part)": webhook_secret.removeprefix("whsec_"),
        "webhook key (hex)": key.hex(),
        "WebSocket token": token,
        "SSE token": sse_token,
        "SSE token signature": sse_token.rsplit(".", 1)[1],
        "API key": api_key,
        "API key secret": api_key.split("_", 2)[2],
    }
    found = {name: _line_with(log, value) for name, value in leaks.items() if value in log}
    assert found == {}


def _line_with(log: str, value: str) -> str:
    line = next(line for line in log.splitlines() if value in line)
    return line[:300]
