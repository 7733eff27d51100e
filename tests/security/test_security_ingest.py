"""The door of the ingest API, against a real ingest process, the emulator and Redis:
credentials (JWT and API keys), who may do what, throttling, failed-credential limits."""

from __future__ import annotations

import asyncio
import time
import uuid
import warnings
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest
from jwt.warnings import InsecureKeyLengthWarning

from pulse.api_keys import PAYMENTS_READ, PAYMENTS_WRITE, SCOPES, ApiKeyTable, new_api_key
from pulse.auth import issue_token
from pulse.clients import aws_client
from pulse.settings import DEV_JWT_SECRET, PulseSettings
from pulse.topology import TopologyOutputs
from pulse_dev.testing import ServiceProcess, free_port

pytestmark = pytest.mark.timeout(90)
NOW = "2026-12-04T10:00:00Z"


def _body(account: str) -> dict[str, str]:
    return {"account_id": account, "amount": "9.99", "currency": "EUR", "merchant_id": "m-1"}


def _bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def _jwt(sub: str, *roles: str) -> str:
    return issue_token(DEV_JWT_SECRET, sub=sub, roles=list(roles))


class Api:
    def __init__(self, url: str, process: ServiceProcess, http: aiohttp.ClientSession) -> None:
        self.url = url
        self.process = process
        self.http = http

    async def call(
        self, method: str, path: str, credential: str | None = None, **kwargs: Any
    ) -> tuple[int, Any, Any]:
        headers = {**kwargs.pop("headers", {}), **(_bearer(credential) if credential else {})}
        async with self.http.request(method, self.url + path, headers=headers, **kwargs) as resp:
            return resp.status, await resp.json(content_type=None), resp.headers

    async def create(self, credential: str | None, account: str) -> tuple[int, Any, Any]:
        return await self.call("POST", "/v1/payments", credential, json=_body(account))

    async def metrics(self) -> str:
        async with self.http.get(self.url + "/metrics") as resp:
            return await resp.text()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session


@pytest.fixture
def keys(topology: TopologyOutputs, stack_settings: PulseSettings) -> ApiKeyTable:
    return ApiKeyTable(aws_client("dynamodb", stack_settings), stack_settings.names.api_keys_table)


@pytest.fixture
def start(topology: TopologyOutputs, service_process: Any, http: aiohttp.ClientSession) -> Any:
    def run(**env: str) -> Api:
        port = free_port()
        settings = {"PULSE_HTTP_PORT": str(port), "PULSE_API_KEY_CACHE_SECONDS": "0.5", **env}
        process = service_process("ingest", **settings).start(wait_port=port)
        return Api(f"http://127.0.0.1:{port}", process, http)

    return run


async def _early_in_a_window(seconds: int) -> None:
    """Wait for a fresh throttling window (they are aligned to the clock) if the current one
    ends within 5 s, so a test's requests all count in one."""
    left = seconds - time.time() % seconds
    if left < 5:
        await asyncio.sleep(left + 0.05)


def _hs512(claims: dict[str, Any]) -> str:
    """The right secret, the wrong algorithm (the development secret is short for HS512)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(claims, DEV_JWT_SECRET, "HS512")


def _key(keys: ApiKeyTable, account: str, *scopes: str) -> tuple[str, str]:
    made = new_api_key(account, name="test", scopes=frozenset(scopes) or SCOPES, now=NOW)
    keys.put(made.key)
    return made.key.key_id, made.token


async def test_every_v1_route_needs_a_bearer_and_the_rest_stays_open(start: Any) -> None:
    api = start()
    payment = f"/v1/payments/{uuid.uuid4()}"
    routes = (
        ("POST", "/v1/payments"),
        ("GET", payment),
        ("GET", f"{payment}/events"),
        ("GET", "/v1/payments?status=REVIEW"),
        ("POST", f"{payment}/review"),
    )
    for method, path in routes:
        status, problem, headers = await api.call(method, path)
        assert status == 401, (method, path)
        assert headers["Content-Type"].startswith("application/problem+json")
        assert problem["type"] == "https://pulse.dev/problems/unauthorized"
        assert headers["WWW-Authenticate"] == 'Bearer realm="pulse"'  # RFC 6750 §3.1
    for path in ("/healthz", "/readyz", "/openapi.json", "/metrics"):
        async with api.http.get(api.url + path) as resp:
            assert resp.status == 200, path


async def test_bad_credentials_are_refused_with_invalid_token(
    start: Any, keys: ApiKeyTable
) -> None:
    api = start()
    expired = jwt.encode({"sub": "a", "exp": int(time.time()) - 10}, DEV_JWT_SECRET, "HS256")
    good = _jwt("acct-a")
    head, body, signature = good.split(".")
    key_id, token = _key(keys, "acct-a")
    keys.revoke(key_id, now=NOW)
    cases = {
        "malformed API key": "psk_not-a-key",
        "garbage": "garbage",
        "expired": expired,
        "tampered": f"{head}.{body}x.{signature}",
        "another key": jwt.encode({"sub": "a", "exp": int(time.time()) + 60}, "k" * 40, "HS256"),
        "HS512": _hs512({"sub": "a", "exp": int(time.time()) + 60}),
        "alg none": jwt.encode({"sub": "a", "exp": int(time.time()) + 60}, "", "none"),
        "unknown API key": new_api_key("acct-a", name="", now=NOW).token,
        "revoked API key": token,
    }
    for name, credential in cases.items():
        status, problem, headers = await api.create(credential, "acct-a")
        assert status == 401, name
        assert problem["status"] == 401
        challenge = headers["WWW-Authenticate"]
        assert challenge.startswith('Bearer realm="pulse", error="invalid_token"'), name
    status, _, headers = await api.create(None, "acct-a")
    assert (status, headers["WWW-Authenticate"]) == (401, 'Bearer realm="pulse"')
    metrics = await api.metrics()
    for reason in ("malformed", "expired", "invalid", "revoked", "missing"):
        assert f'pulse_http_auth_failures_total{{reason="{reason}"}}' in metrics


async def test_an_account_acts_only_on_its_own_payments(start: Any) -> None:
    api = start()
    alice, bob, ops = _jwt("alice"), _jwt("bob"), _jwt("op", "ops")
    status, problem, _ = await api.create(alice, "bob")
    assert status == 403
    assert problem["type"] == "https://pulse.dev/problems/forbidden"
    status, payment, _ = await api.create(bob, "bob")
    assert status == 201
    path = f"/v1/payments/{payment['payment_id']}"
    absent = f"/v1/payments/{uuid.uuid4()}"
    for target in (path, f"{path}/events"):
        assert (await api.call("GET", target, bob))[0] == 200
        assert (await api.call("GET", target, ops))[0] == 200
        status, problem, _ = await api.call("GET", target, alice)
        assert status == 404  # not 403: another account's payment looks absent
        _, absent_problem, _ = await api.call("GET", absent + target.removeprefix(path), alice)
        assert problem["title"] == absent_problem["title"]
    assert (await api.create(ops, "carol"))[0] == 201  # ops acts for every account


async def test_api_keys_act_for_their_account_within_their_scopes(
    start: Any, keys: ApiKeyTable
) -> None:
    api = start()
    _, full = _key(keys, "shop-1")
    _, reader = _key(keys, "shop-1", PAYMENTS_READ)
    _, writer = _key(keys, "shop-1", PAYMENTS_WRITE)
    status, payment, _ = await api.create(full, "shop-1")
    assert status == 201
    path = f"/v1/payments/{payment['payment_id']}"
    assert (await api.call("GET", path, full))[0] == 200
    assert (await api.call("GET", path, reader))[0] == 200
    assert (await api.create(writer, "shop-1"))[0] == 201
    assert (await api.create(full, "shop-2"))[0] == 403
    for call in (api.create(reader, "shop-1"), api.call("GET", path, writer)):
        status, problem, headers = await call
        assert status == 403
        assert problem["type"] == "https://pulse.dev/problems/insufficient-scope"
        assert 'error="insufficient_scope"' in headers["WWW-Authenticate"]


async def test_a_revoked_key_stops_working_within_the_cache_lifetime(
    start: Any, keys: ApiKeyTable
) -> None:
    api = start()  # PULSE_API_KEY_CACHE_SECONDS=0.5
    key_id, token = _key(keys, "shop-3")
    assert (await api.create(token, "shop-3"))[0] == 201
    keys.revoke(key_id, now=NOW)
    revoked_at = time.monotonic()
    while (await api.create(token, "shop-3"))[0] != 401:
        assert time.monotonic() - revoked_at < 5
        await asyncio.sleep(0.1)
    assert time.monotonic() - revoked_at < 2


async def test_each_principal_has_a_budget_and_every_answer_says_what_is_left(
    start: Any,
) -> None:
    api = start(PULSE_RATE_LIMIT_PER_SECOND="0.05", PULSE_RATE_LIMIT_BURST="3")  # 3 per 60 s
    await _early_in_a_window(60)
    token = _jwt(f"acct-{uuid.uuid4().hex[:6]}")
    answers = [
        await api.create(token, "another-account"),  # 403
        await api.call("GET", "/v1/no-such-route", token),  # the router's 404
        await api.call("GET", f"/v1/payments/{uuid.uuid4()}", token),  # no such payment
    ]
    for status, _, headers in answers:
        assert status in {403, 404}
        assert headers["RateLimit-Policy"] == '"per-principal";q=3;w=60'
    remaining = [h["RateLimit"] for _, _, h in answers]
    assert [r.split(";")[1] for r in remaining] == ["r=2", "r=1", "r=0"]
    status, problem, headers = await api.create(token, "x")
    assert status == 429
    assert problem["type"] == "https://pulse.dev/problems/rate-limited"
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert headers["RateLimit"].startswith('"per-principal";r=0;t=')
    other = _jwt("someone-else")
    assert (await api.create(other, "someone-else"))[0] == 201  # budgets are per principal
    assert 'pulse_http_throttled_total{kind="jwt"} 1.0' in await api.metrics()


async def test_guessing_credentials_from_one_address_is_slowed_down(
    start: Any, keys: ApiKeyTable
) -> None:
    api = start(PULSE_AUTH_FAILURES_PER_MINUTE="3")
    await _early_in_a_window(60)
    _, good = _key(keys, "shop-4")
    guesses = [new_api_key("shop-4", name="", now=NOW).token for _ in range(4)]
    statuses = [(await api.create(guess, "shop-4"))[0] for guess in guesses]
    assert statuses == [401, 401, 401, 429]
    status, problem, headers = await api.create(good, "shop-4")  # even a good one, for now
    assert status == 429
    assert problem["type"] == "https://pulse.dev/problems/too-many-failed-credentials"
    assert int(headers["Retry-After"]) >= 1
    assert 'pulse_http_throttled_total{kind="address"}' in await api.metrics()


async def test_without_redis_throttling_fails_open_and_credentials_still_work(
    start: Any, keys: ApiKeyTable
) -> None:
    api = start(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", PULSE_RATE_LIMIT_BURST="1")
    _, token = _key(keys, "shop-5")
    statuses = [(await api.create(token, "shop-5"))[0] for _ in range(3)]
    assert statuses == [201, 201, 201]
    assert (await api.create("psk_nope", "shop-5"))[0] == 401
    metrics = await api.metrics()
    assert 'pulse_ratelimit_unavailable_total{quota="per-principal"} 3.0' in metrics
    assert api.process.logs().count("rate limiter unavailable") == 2  # once per quota


async def test_no_credential_ever_reaches_the_logs(start: Any, keys: ApiKeyTable) -> None:
    api = start(PULSE_LOG_LEVEL="debug")
    key_id, token = _key(keys, "shop-6")
    jwt_token = _jwt("shop-6")
    await api.create(token, "shop-6")
    await api.create(jwt_token, "shop-6")
    await api.create(token[:-2] + "zz", "shop-6")
    await api.create(jwt_token + "x", "shop-6")
    keys.revoke(key_id, now=NOW)
    await asyncio.sleep(0.6)
    await api.create(token, "shop-6")
    logs = api.process.logs()
    assert key_id in logs  # the key is named by its id ...
    secret = token.split("_", 2)[2]
    for leaked in (secret, secret[:20], jwt_token, jwt_token.split(".")[2]):
        assert leaked not in logs  # ... never by its secret
