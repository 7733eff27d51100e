"""Integration tests: ``python -m ingest`` as a real process against the real moto server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import jsonschema
import orjson
import pytest
from openapi_spec_validator import validate as validate_openapi

from pulse.auth import issue_token
from pulse.clients import aws_client
from pulse.settings import DEV_JWT_SECRET, PulseSettings
from pulse.topology import TopologyOutputs
from pulse_dev.testing import ServiceProcess, free_port, put_in_review

PROBLEM = "application/problem+json"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
BODY = {"account_id": "acct-1", "amount": "12.50", "currency": "EUR", "merchant_id": "m-1"}


@dataclass
class Ingest:
    url: str
    process: ServiceProcess
    ddb: Any
    settings: PulseSettings

    def items(self) -> list[dict[str, Any]]:
        table = self.settings.names.payments_table
        return list(self.ddb.scan(TableName=table, ConsistentRead=True)["Items"])


@pytest.fixture
def ingest(
    topology: TopologyOutputs, stack_settings: PulseSettings, service_process: Any
) -> Ingest:
    port = free_port()
    process = service_process("ingest", PULSE_HTTP_PORT=str(port)).start(wait_port=port)
    return Ingest(
        f"http://127.0.0.1:{port}", process, aws_client("dynamodb", stack_settings), stack_settings
    )


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client with an operator's development token (the stack's default secret): these
    tests are about payments; who may do what is tests/security/test_security_ingest.py's."""
    token = issue_token(DEV_JWT_SECRET, sub="ops-tests", roles=["ops"])
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=15), headers={"Authorization": f"Bearer {token}"}
    ) as session:
        yield session


async def _post(
    http: aiohttp.ClientSession, ingest: Ingest, body: Any, **headers: str
) -> tuple[int, Any, Any]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    headers.setdefault("Content-Type", "application/json")
    async with http.post(f"{ingest.url}/v1/payments", data=data, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None), resp.headers


def _log_lines(process: ServiceProcess) -> list[dict[str, Any]]:
    lines = []
    for line in process.logs().splitlines():
        try:
            lines.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            continue
    return lines


async def test_a_payment_is_created_and_read_back(
    ingest: Ingest, http: aiohttp.ClientSession
) -> None:
    body = {**BODY, "amount": 12.5, "country": "DE", "metadata": {"order": "42"}}
    status, payment, headers = await _post(http, ingest, body, traceparent=TRACEPARENT)
    assert status == 201
    payment_id = payment["payment_id"]
    assert uuid.UUID(payment_id).version == 4
    assert payment["amount"] == "12.50"
    assert payment["status"] == "PENDING"
    assert payment["metadata"] == {"order": "42"}
    assert payment["created_at"] == payment["updated_at"]
    assert payment["created_at"].endswith("Z")
    assert headers["Location"] == f"/v1/payments/{payment_id}"
    assert headers["traceparent"] == TRACEPARENT
    assert "Idempotent-Replayed" not in headers

    async with http.get(ingest.url + headers["Location"]) as resp:
        assert resp.status == 200
        assert await resp.json() == payment

    [item] = ingest.items()
    assert item["amount"] == {"S": "12.50"}
    assert item["traceparent"] == {"S": TRACEPARENT}
    assert len(item["request_hash"]["S"]) == 64
    assert "idempotency_key" not in item

    created = [
        line for line in _log_lines(ingest.process) if line.get("event") == "payment created"
    ]
    assert created, ingest.process.logs()
    assert created[0]["payment_id"] == payment_id
    assert created[0]["trace_id"] == TRACEPARENT.split("-")[1]

    async with http.get(f"{ingest.url}/metrics") as resp:
        assert 'pulse_payments_created_total{outcome="created"} 1.0' in await resp.text()


async def test_without_a_valid_traceparent_a_new_trace_starts(
    ingest: Ingest, http: aiohttp.ClientSession
) -> None:
    _, first, h1 = await _post(http, ingest, BODY, traceparent="garbage")
    _, second, h2 = await _post(http, ingest, BODY)
    assert first["payment_id"] != second["payment_id"]
    assert h1["traceparent"] != h2["traceparent"]
    for headers in (h1, h2):
        version, trace, parent, _flags = headers["traceparent"].split("-")
        assert (version, len(trace), len(parent)) == ("00", 32, 16)
    stored = {i["payment_id"]["S"]: i["traceparent"]["S"] for i in ingest.items()}
    assert stored == {
        first["payment_id"]: h1["traceparent"],
        second["payment_id"]: h2["traceparent"],
    }


async def test_idempotent_replay_and_key_reuse(ingest: Ingest, http: aiohttp.ClientSession) -> None:
    status, first, h1 = await _post(http, ingest, BODY, **{"Idempotency-Key": "order-42"})
    assert status == 201
    assert "Idempotent-Replayed" not in h1

    # the same payment written differently (12.5 as a number, keys reordered) is a replay
    same = {"merchant_id": "m-1", "currency": "EUR", "amount": 12.5, "account_id": "acct-1"}
    status, again, h2 = await _post(
        http, ingest, same, **{"Idempotency-Key": "order-42", "traceparent": TRACEPARENT}
    )
    assert status == 201
    assert again == first
    assert h2["Idempotent-Replayed"] == "true"
    assert h2["Location"] == h1["Location"]
    assert h2["traceparent"] == h1["traceparent"]  # the trace the payment travels under

    # a replay answers with the payment as first created, even after it changed
    ingest.ddb.update_item(
        TableName=ingest.settings.names.payments_table,
        Key={"payment_id": {"S": first["payment_id"]}},
        UpdateExpression="SET #s = :s, updated_at = :u",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={
            ":s": {"S": "APPROVED"},
            ":u": {"S": "2099-01-01T00:00:00.000Z"},
        },
    )
    status, later, _ = await _post(http, ingest, BODY, **{"Idempotency-Key": "order-42"})
    assert (status, later) == (201, first)

    status, problem, headers = await _post(
        http, ingest, {**BODY, "amount": "99.00"}, **{"Idempotency-Key": "order-42"}
    )
    assert status == 422
    assert headers["Content-Type"] == PROBLEM
    assert problem["type"] == "https://pulse.dev/problems/idempotency-key-reused"

    # concurrent first requests with one key create one payment
    results = await asyncio.gather(
        *(_post(http, ingest, BODY, **{"Idempotency-Key": "burst"}) for _ in range(8))
    )
    assert {status for status, _, _ in results} == {201}
    assert len({p["payment_id"] for _, p, _ in results}) == 1
    assert sum("Idempotent-Replayed" not in h for _, _, h in results) == 1

    items = ingest.items()
    assert len(items) == 2
    assert {i["idempotency_key"]["S"] for i in items} == {"order-42", "burst"}
    async with http.get(f"{ingest.url}/metrics") as resp:
        metrics = await resp.text()
    assert 'pulse_payments_created_total{outcome="replayed"} 9.0' in metrics
    assert 'pulse_payments_created_total{outcome="conflict"} 1.0' in metrics


BAD_REQUESTS: list[tuple[str, bytes, dict[str, str], int, str]] = [
    ("malformed json", b'{"account_id": ', {}, 400, "malformed-json"),
    ("not utf-8", b"\xff\xfe{}", {}, 400, "malformed-json"),
    ("empty body", b"", {}, 400, "malformed-json"),
    (
        "text/plain",
        orjson.dumps(BODY),
        {"Content-Type": "text/plain"},
        415,
        "unsupported-media-type",
    ),
    (
        "form",
        b"a=1",
        {"Content-Type": "application/x-www-form-urlencoded"},
        415,
        "unsupported-media-type",
    ),
    ("array", b"[]", {}, 422, "validation"),
    ("negative", orjson.dumps({**BODY, "amount": "-1.00"}), {}, 422, "validation"),
    ("zero", orjson.dumps({**BODY, "amount": 0}), {}, 422, "validation"),
    ("huge", orjson.dumps({**BODY, "amount": "1000000000"}), {}, 422, "validation"),
    (
        "3 decimals",
        b'{"account_id":"a","amount":1.005,"currency":"EUR","merchant_id":"m"}',
        {},
        422,
        "validation",
    ),
    ("exponent", orjson.dumps({**BODY, "amount": "1e3"}), {}, 422, "validation"),
    ("boolean", orjson.dumps({**BODY, "amount": True}), {}, 422, "validation"),
    ("currency", orjson.dumps({**BODY, "currency": "ABC"}), {}, 422, "validation"),
    ("country", orjson.dumps({**BODY, "country": "XX"}), {}, 422, "validation"),
    ("missing", orjson.dumps({"amount": "1.00"}), {}, 422, "validation"),
    ("wrong type", orjson.dumps({**BODY, "account_id": 7}), {}, 422, "validation"),
    ("unsafe id", orjson.dumps({**BODY, "account_id": "a:b"}), {}, 422, "validation"),
    ("unknown field", orjson.dumps({**BODY, "ammount": "1"}), {}, 422, "validation"),
    (
        "metadata",
        orjson.dumps({**BODY, "metadata": {str(i): "v" for i in range(21)}}),
        {},
        422,
        "validation",
    ),
    (
        "idempotency key",
        orjson.dumps(BODY),
        {"Idempotency-Key": "x" * 256},
        400,
        "invalid-idempotency-key",
    ),
]


async def test_bad_input_gets_a_problem_and_writes_nothing(
    ingest: Ingest, http: aiohttp.ClientSession
) -> None:
    for name, raw, extra, want_status, want_type in BAD_REQUESTS:
        headers = {"Content-Type": "application/json", **extra}
        async with http.post(f"{ingest.url}/v1/payments", data=raw, headers=headers) as resp:
            text = await resp.text()
            assert resp.status == want_status, (name, text)
            assert resp.headers["Content-Type"] == PROBLEM, name
        problem = orjson.loads(text)
        assert problem["type"] == f"https://pulse.dev/problems/{want_type}", name
        assert problem["status"] == want_status, name
        assert "Traceback" not in text, name
        if want_status == 422:
            assert problem["errors"], name
            assert all({"field", "message"} <= set(e) for e in problem["errors"]), name

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b" " * 1024

    oversized = orjson.dumps({**BODY, "metadata": {"k": "v" * 200}}) + b" " * 17_000
    async with http.post(
        f"{ingest.url}/v1/payments", data=oversized, headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 413
        assert resp.headers["Content-Type"] == PROBLEM
        assert (await resp.json(content_type=None))["type"].endswith("/payload-too-large")
    async with http.post(  # no Content-Length: the limit is enforced while reading
        f"{ingest.url}/v1/payments", data=chunks(), headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 413
        assert resp.headers["Content-Type"] == PROBLEM

    assert ingest.items() == []
    async with http.get(f"{ingest.url}/metrics") as resp:
        metrics = await resp.text()
    assert 'pulse_payments_rejected_total{reason="validation"} 14.0' in metrics
    assert 'pulse_payments_rejected_total{reason="payload-too-large"} 2.0' in metrics


async def test_unknown_payments_and_routes_are_404_problems(
    ingest: Ingest, http: aiohttp.ClientSession
) -> None:
    for path in (
        f"/v1/payments/{uuid.uuid4()}",
        "/v1/payments/not-a-uuid",
        f"/v1/payments/{uuid.uuid4()}/events",
        "/v1/payments/not-a-uuid/events",
        "/no/such/route",
    ):
        async with http.get(ingest.url + path) as resp:
            assert resp.status == 404, path
            assert resp.headers["Content-Type"] == PROBLEM
            assert (await resp.json(content_type=None))["status"] == 404
    async with http.delete(f"{ingest.url}/v1/payments") as resp:
        assert resp.status == 405
        assert resp.headers["Content-Type"] == PROBLEM
        assert "POST" in resp.headers["Allow"]


async def test_audit_trail_is_returned_oldest_first(
    ingest: Ingest, http: aiohttp.ClientSession
) -> None:
    _, payment, _ = await _post(http, ingest, BODY)
    payment_id = payment["payment_id"]
    async with http.get(f"{ingest.url}/v1/payments/{payment_id}/events") as resp:
        assert resp.status == 200
        assert await resp.json() == {"payment_id": payment_id, "events": []}

    table = ingest.settings.names.events_table
    # written out of order; the sort key (zero-padded sequence number) decides the order
    for seq, kind in (
        (300, "pulse.payment.updated"),
        (100, "pulse.payment.created"),
        (2000, "x.third"),
    ):
        event = {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "/pulse/stream-processor",
            "type": kind,
            "subject": payment_id,
            "time": "2026-01-01T00:00:00.000Z",
            "datacontenttype": "application/json",
            "data": {"payment_id": payment_id, "seq": seq},
        }
        ingest.ddb.put_item(
            TableName=table,
            Item={
                "payment_id": {"S": payment_id},
                "sk": {"S": str(seq).zfill(40)},
                "event_id": {"S": event["id"]},
                "type": {"S": kind},
                "time": {"S": event["time"]},
                "event": {"S": orjson.dumps(event).decode()},
                "expires_at": {"N": "4102444800"},
            },
        )
    async with http.get(f"{ingest.url}/v1/payments/{payment_id}/events") as resp:
        assert resp.status == 200
        trail = await resp.json()
    assert [e["data"]["seq"] for e in trail["events"]] == [100, 300, 2000]
    assert trail["events"][0]["type"] == "pulse.payment.created"

    # the trail outlives a deleted payment
    ingest.ddb.delete_item(
        TableName=ingest.settings.names.payments_table, Key={"payment_id": {"S": payment_id}}
    )
    async with http.get(f"{ingest.url}/v1/payments/{payment_id}/events") as resp:
        assert resp.status == 200
        assert len((await resp.json())["events"]) == 3


def _resolver_schema(spec: dict[str, Any], name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}


async def test_openapi_describes_the_api_and_responses_conform(
    ingest: Ingest, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{ingest.url}/openapi.json") as resp:
        assert resp.status == 200
        spec = await resp.json()
    validate_openapi(spec)
    assert spec["openapi"].startswith("3.1")
    assert set(spec["paths"]) == {
        "/v1/payments",
        "/v1/payments/{payment_id}",
        "/v1/payments/{payment_id}/events",
        "/v1/payments/{payment_id}/review",
        "/v1/webhook-endpoints",
        "/v1/webhook-endpoints/{endpoint_id}",
        "/v1/webhook-endpoints/{endpoint_id}/rotate-secret",
        "/v1/webhook-endpoints/{endpoint_id}/test",
        "/v1/webhook-endpoints/{endpoint_id}/replay",
        "/v1/webhook-endpoints/{endpoint_id}/attempts",
        "/v1/webhook-endpoints/{endpoint_id}/recover",
        "/openapi.json",
        "/healthz",
        "/readyz",
        "/metrics",
    }
    post = spec["paths"]["/v1/payments"]["post"]
    assert {"201", "400", "413", "415", "422"} <= set(post["responses"])

    _, payment, _ = await _post(http, ingest, {**BODY, "country": "FR", "metadata": {"a": "b"}})
    jsonschema.validate(payment, _resolver_schema(spec, "Payment"))
    async with http.get(f"{ingest.url}/v1/payments/{payment['payment_id']}/events") as resp:
        jsonschema.validate(await resp.json(), _resolver_schema(spec, "PaymentEvents"))
    _, problem, _ = await _post(http, ingest, {**BODY, "amount": "-1"})
    jsonschema.validate(problem, _resolver_schema(spec, "ProblemDocument"))
    # the review desk's answers: a page of the queue, a decided payment
    table = ingest.settings.names.payments_table
    in_review = put_in_review(ingest.ddb, table)
    async with http.get(f"{ingest.url}/v1/payments?status=REVIEW") as resp:
        page = await resp.json()
    assert [p["payment_id"] for p in page["items"]] == [in_review]
    jsonschema.validate(page, _resolver_schema(spec, "PaymentPage"))
    review = {"decision": "DECLINED", "note": "card reported stolen"}
    jsonschema.validate(review, _resolver_schema(spec, "ReviewRequest"))
    async with http.post(f"{ingest.url}/v1/payments/{in_review}/review", json=review) as resp:
        jsonschema.validate(await resp.json(), _resolver_schema(spec, "Payment"))
    # the published request schema accepts what the server accepts, and refuses what it refuses
    request_schema = _resolver_schema(spec, "PaymentRequest")
    jsonschema.validate(BODY, request_schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**BODY, "amount": "-1"}, request_schema)

    for path in ("/healthz", "/readyz"):
        async with http.get(ingest.url + path) as resp:
            assert resp.status == 200, await resp.text()
    async with http.get(f"{ingest.url}/metrics") as resp:
        text = await resp.text()
    assert "pulse_http_request_duration_seconds_bucket" in text
    assert 'route="/v1/payments/{payment_id}/events"' in text


async def test_not_ready_without_its_tables(
    stack_env: dict[str, str], service_process: Any, http: aiohttp.ClientSession
) -> None:
    port = free_port()
    process = service_process("ingest", PULSE_HTTP_PORT=str(port)).start(wait_port=port)
    async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
        assert resp.status == 503
        assert "dynamodb" in (await resp.json())["checks"]
    async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
        assert resp.status == 200
    # A missing table is a dependency not there yet (the topology is being applied): retry.
    ingest = Ingest(f"http://127.0.0.1:{port}", process, None, None)  # type: ignore[arg-type]
    status, problem, headers = await _post(http, ingest, BODY)
    assert status == 503
    assert problem["type"] == "https://pulse.dev/problems/unavailable"
    assert headers["Retry-After"] == "1"
    assert "ResourceNotFoundException" in process.logs()
    assert process.stop() == 0


async def test_a_request_aws_refuses_is_a_500_logged_but_never_shown(
    stack_env: dict[str, str],
    stack_settings: PulseSettings,
    service_process: Any,
    http: aiohttp.ClientSession,
) -> None:
    # A payments table whose key is not payment_id: DynamoDB refuses every write to it.
    names = stack_settings.names
    ddb = aws_client("dynamodb", stack_settings)
    for table in (names.payments_table, names.events_table):
        ddb.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    port = free_port()
    process = service_process("ingest", PULSE_HTTP_PORT=str(port)).start(wait_port=port)
    # _post reads only the url: this ingest has no settings to give
    ingest = Ingest(f"http://127.0.0.1:{port}", process, None, None)  # type: ignore[arg-type]
    status, problem, _ = await _post(http, ingest, BODY)
    assert status == 500
    assert problem == {
        "type": "https://pulse.dev/problems/internal",
        "title": "Internal server error",
        "status": 500,
    }
    assert "ValidationException" in process.logs()
    assert "Traceback" in process.logs()  # logged for operators, never sent to the client
    assert process.stop() == 0


async def test_sigterm_finishes_in_flight_requests_and_exits_0(
    ingest: Ingest, http: aiohttp.ClientSession
) -> None:
    pending = [asyncio.create_task(_post(http, ingest, BODY)) for _ in range(10)]
    await asyncio.sleep(0.05)
    code = await asyncio.to_thread(ingest.process.stop)
    results = await asyncio.gather(*pending, return_exceptions=True)
    assert code == 0
    answered = [r for r in results if not isinstance(r, BaseException)]
    # every request the server took is answered in full; none is cut off half-way
    assert all(status == 201 for status, _, _ in answered)
    assert len(ingest.items()) == len(answered)
    assert any(
        line.get("event") == "stopping: finishing in-flight requests"
        for line in _log_lines(ingest.process)
    )
