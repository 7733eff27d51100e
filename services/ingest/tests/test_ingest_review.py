"""Integration: operators decide and list payments in REVIEW through ``python -m ingest`` (a
real process, real moto, real Redis); once decided, a payment keeps its decision."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiohttp
import pytest

from pulse.api_keys import ApiKeyTable, new_api_key
from pulse.auth import issue_token
from pulse.clients import aws_client
from pulse.events import utc_now
from pulse.settings import DEV_JWT_SECRET, PulseSettings
from pulse.topology import TopologyOutputs
from pulse_dev.testing import free_port, pending_payment, put_in_review, put_payment

OPS = issue_token(DEV_JWT_SECRET, sub="ops-ana", roles=["ops"])
PROBLEMS = "https://pulse.dev/problems/"


@dataclass
class Api:
    url: str
    http: aiohttp.ClientSession
    ddb: Any
    table: str

    async def call(
        self, method: str, path: str, token: str = OPS, **kwargs: Any
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
        async with self.http.request(method, self.url + path, headers=headers, **kwargs) as resp:
            return resp.status, await resp.json(content_type=None)

    async def review(self, payment_id: str, token: str = OPS, **body: Any) -> tuple[int, Any]:
        return await self.call("POST", f"/v1/payments/{payment_id}/review", token, json=body)

    def in_review(self, *, minutes_ago: float = 0, account_id: str = "acct-1") -> str:
        entered = utc_now() - timedelta(minutes=minutes_ago)
        return put_in_review(self.ddb, self.table, entered=entered, account_id=account_id)

    def item(self, payment_id: str) -> dict[str, Any]:
        key = {"payment_id": {"S": payment_id}}
        return dict(self.ddb.get_item(TableName=self.table, Key=key, ConsistentRead=True)["Item"])


@pytest.fixture
async def api(
    topology: TopologyOutputs, stack_settings: PulseSettings, service_process: Any
) -> AsyncIterator[Api]:
    port = free_port()
    service_process("ingest", PULSE_HTTP_PORT=str(port)).start(wait_port=port)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
        yield Api(
            f"http://127.0.0.1:{port}",
            http,
            aws_client("dynamodb", stack_settings),
            stack_settings.names.payments_table,
        )


async def test_an_operator_decides_once_and_a_second_decision_is_refused(api: Api) -> None:
    payment_id = api.in_review()
    status, payment = await api.review(payment_id, decision="APPROVED", note="known customer")
    assert status == 200, payment
    assert payment["status"] == "APPROVED"
    assert payment["reviewed_by"] == "ops-ana"
    assert payment["review_note"] == "known customer"
    assert payment["reviewed_at"] == payment["updated_at"]
    assert payment["fraud_reasons"] == ["amount_above_review_limit"]  # the fraud decision stays
    assert "review_queue" not in api.item(payment_id)

    status, problem = await api.review(payment_id, decision="DECLINED", note="second thoughts")
    assert status == 409
    assert problem["type"] == PROBLEMS + "not-in-review"
    assert "APPROVED (decided by ops-ana" in problem["detail"]
    item = api.item(payment_id)
    assert item["status"]["S"] == "APPROVED"
    assert item["review_note"]["S"] == "known customer"


async def test_only_a_payment_in_review_can_be_reviewed(api: Api) -> None:
    pending = put_payment(api.ddb, api.table, pending_payment())["payment_id"]
    status, problem = await api.review(pending, decision="APPROVED")
    assert status == 409
    assert "is PENDING" in problem["detail"]
    assert api.item(pending)["status"]["S"] == "PENDING"

    status, problem = await api.review(str(uuid.uuid4()), decision="APPROVED")
    assert status == 404
    assert problem["type"] == PROBLEMS + "not-found"
    status, _ = await api.review("not-a-uuid", decision="APPROVED")
    assert status == 404


@pytest.mark.parametrize(
    ("body", "status", "field", "message"),
    [
        ({"decision": "MAYBE"}, 422, "decision", "decision must be APPROVED or DECLINED"),
        ({"decision": "REVIEW"}, 422, "decision", "decision must be APPROVED or DECLINED"),
        ({}, 422, "decision", "field required"),
        ({"decision": "APPROVED", "why": "x"}, 422, "why", "unknown field"),
        ({"decision": "APPROVED", "note": "x" * 1001}, 422, "note", "at most 1000 characters"),
        ({"decision": "APPROVED", "note": 5}, 422, "note", "valid string"),
    ],
)
async def test_a_bad_decision_is_refused_with_the_field_named(
    api: Api, body: dict[str, Any], status: int, field: str, message: str
) -> None:
    payment_id = api.in_review()
    got, problem = await api.review(payment_id, **body)
    assert got == status
    assert [e["field"] for e in problem["errors"]] == [field]
    assert message in problem["errors"][0]["message"]
    assert api.item(payment_id)["status"]["S"] == "REVIEW"


async def test_malformed_and_non_json_bodies_are_refused(api: Api) -> None:
    payment_id = api.in_review()
    path = f"/v1/payments/{payment_id}/review"
    json_type = {"Content-Type": "application/json"}
    status, problem = await api.call("POST", path, data=b"{", headers=json_type)
    assert (status, problem["type"]) == (400, PROBLEMS + "malformed-json")
    status, _ = await api.call("POST", path, data=b"decision=APPROVED")
    assert status == 415


async def test_accounts_and_api_keys_may_not_review_or_list(
    api: Api, stack_settings: PulseSettings
) -> None:
    payment_id = api.in_review(account_id="acct-1")
    own_account = issue_token(DEV_JWT_SECRET, sub="acct-1")
    made = new_api_key("acct-1", name="backend", now="2026-12-04T10:00:00Z")
    ApiKeyTable(api.ddb, stack_settings.names.api_keys_table).put(made.key)
    for credential in (own_account, made.token):
        status, problem = await api.review(payment_id, credential, decision="APPROVED")
        assert status == 403
        assert problem["type"] == PROBLEMS + "forbidden"
        status, _ = await api.call("GET", "/v1/payments?status=REVIEW", credential)
        assert status == 403
    assert api.item(payment_id)["status"]["S"] == "REVIEW"


async def test_the_review_queue_lists_oldest_first_a_page_at_a_time(api: Api) -> None:
    ids = [api.in_review(minutes_ago=m) for m in (30, 20, 10)]
    decided = api.in_review(minutes_ago=40)
    assert (await api.review(decided, decision="DECLINED"))[0] == 200
    put_payment(api.ddb, api.table, pending_payment())  # never in the queue

    status, page = await api.call("GET", "/v1/payments?status=REVIEW&limit=2")
    assert status == 200, page
    assert [p["payment_id"] for p in page["items"]] == ids[:2]
    assert all(p["status"] == "REVIEW" for p in page["items"])
    assert page["items"][0]["fraud_reasons"] == ["amount_above_review_limit"]
    assert isinstance(page["next_cursor"], str)
    status, rest = await api.call(
        "GET", "/v1/payments", params={"status": "REVIEW", "cursor": page["next_cursor"]}
    )
    assert status == 200
    assert [p["payment_id"] for p in rest["items"]] == ids[2:]
    assert rest["next_cursor"] is None


@pytest.mark.parametrize(
    ("query", "status", "what"),
    [
        ("", 422, "status"),
        ("?status=APPROVED", 422, "status"),
        ("?status=REVIEW&limit=0", 422, "limit"),
        ("?status=REVIEW&limit=101", 422, "limit"),
        ("?status=REVIEW&limit=ten", 422, "limit"),
        ("?status=REVIEW&sort=asc", 422, "sort"),
        ("?status=REVIEW&cursor=bm90LWEtY3Vyc29y", 400, "invalid-cursor"),
    ],
)
async def test_a_bad_listing_query_is_refused(api: Api, query: str, status: int, what: str) -> None:
    got, problem = await api.call("GET", f"/v1/payments{query}")
    assert got == status
    if status == 422:
        assert what in [e["field"] for e in problem["errors"]]
        assert "^" not in problem["detail"] + str(problem["errors"])  # no raw pattern
    else:
        assert problem["type"] == PROBLEMS + what
