"""Integration: a browser page of a listed origin may call ingest (CORS), over real HTTP to
``python -m ingest``; other origins get no CORS header."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from pulse.auth import issue_token
from pulse.settings import DEV_JWT_SECRET
from pulse.topology import TopologyOutputs
from pulse_dev.testing import free_port, put_in_review

CONSOLE = "http://127.0.0.1:8090"
OPS = {"Authorization": f"Bearer {issue_token(DEV_JWT_SECRET, sub='ops-1', roles=['ops'])}"}


@pytest.fixture
def ingest(topology: TopologyOutputs, service_process: Any) -> str:
    port = free_port()
    service_process(
        "ingest",
        PULSE_HTTP_PORT=str(port),
        PULSE_CORS_ORIGINS=f"{CONSOLE}, https://console.example.com",
    ).start(wait_port=port)
    return f"http://127.0.0.1:{port}"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session


async def test_a_preflight_from_a_listed_origin_is_answered_without_a_credential(
    ingest: str, http: aiohttp.ClientSession
) -> None:
    preflight = {
        "Origin": CONSOLE,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    async with http.options(f"{ingest}/v1/payments/some-id/review", headers=preflight) as resp:
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == CONSOLE
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]
        allowed = {
            h.strip().lower() for h in resp.headers["Access-Control-Allow-Headers"].split(",")
        }
        assert {"authorization", "content-type", "idempotency-key"} <= allowed
        assert "Origin" in resp.headers["Vary"]


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
async def test_a_page_may_change_and_remove_webhook_endpoints(
    ingest: str, http: aiohttp.ClientSession, method: str
) -> None:
    preflight = {"Origin": CONSOLE, "Access-Control-Request-Method": method}
    async with http.options(f"{ingest}/v1/webhook-endpoints/ep_1", headers=preflight) as resp:
        assert resp.status == 204
        allowed = {m.strip() for m in resp.headers["Access-Control-Allow-Methods"].split(",")}
        assert method in allowed


async def test_answers_to_a_listed_origin_carry_it_errors_included(
    ingest: str, http: aiohttp.ClientSession, stack_settings: Any
) -> None:
    from pulse.clients import aws_client  # noqa: PLC0415

    ddb = aws_client("dynamodb", stack_settings)
    payment_id = put_in_review(ddb, stack_settings.names.payments_table)
    origin = {"Origin": CONSOLE}
    async with http.post(
        f"{ingest}/v1/payments/{payment_id}/review",
        json={"decision": "APPROVED"},
        headers={**origin, **OPS},
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Access-Control-Allow-Origin"] == CONSOLE
        assert "RateLimit" in resp.headers["Access-Control-Expose-Headers"]
    async with http.get(f"{ingest}/v1/payments?status=REVIEW", headers=origin) as resp:
        assert resp.status == 401  # no credential: the page can still read why
        assert resp.headers["Access-Control-Allow-Origin"] == CONSOLE
        assert "WWW-Authenticate" in resp.headers["Access-Control-Expose-Headers"]


async def test_an_origin_not_listed_gets_no_cors_header(
    ingest: str, http: aiohttp.ClientSession
) -> None:
    other = {"Origin": "http://evil.example"}
    preflight = {**other, "Access-Control-Request-Method": "POST"}
    async with http.options(f"{ingest}/v1/payments", headers=preflight) as resp:
        assert resp.status != 204
        assert "Access-Control-Allow-Origin" not in resp.headers
    async with http.get(f"{ingest}/v1/payments?status=REVIEW", headers={**other, **OPS}) as resp:
        assert resp.status == 200  # the credential decides; the browser withholds the answer
        assert "Access-Control-Allow-Origin" not in resp.headers


@pytest.mark.parametrize(
    "origins", ["http://127.0.0.1:8090/", "127.0.0.1:8090", "ftp://h", "http://h/console", "*"]
)
def test_an_origin_is_scheme_host_and_port_only(
    origins: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydantic import ValidationError  # noqa: PLC0415

    from ingest.settings import IngestSettings  # noqa: PLC0415

    monkeypatch.setenv("PULSE_CORS_ORIGINS", origins)
    with pytest.raises(ValidationError, match="scheme://host"):
        IngestSettings()
    monkeypatch.setenv("PULSE_CORS_ORIGINS", " http://a:1 ,https://b.example,, ")
    assert IngestSettings().cors_origins == ("http://a:1", "https://b.example")
