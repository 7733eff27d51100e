"""Integration: webhook endpoints through ``python -m ingest`` (a real process, real moto):
an account manages its own, an operator everyone's; a secret is shown once; another
account's endpoint is 404; internal URLs are 422 with the reason; API keys need
``webhooks:manage``; replays are bounded and keep the original ids; the attempt log reads
by page and filter; recovery sends the dead-lettered events again, once, with their ids."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import jsonschema
import pytest

from pulse.api_keys import DEFAULT_SCOPES, WEBHOOKS_MANAGE, ApiKeyTable, new_api_key
from pulse.auth import issue_token
from pulse.clients import aws_client
from pulse.events import iso_timestamp, stable_event_id
from pulse.settings import DEV_JWT_SECRET, PulseSettings
from pulse.topology import TopologyOutputs, WebhookNames
from pulse.webhook_attempts import AttemptLog, AttemptResult, Claim
from pulse.webhook_deliveries import Delivery
from pulse.webhook_endpoint_health import EndpointHealthTable
from pulse.webhook_endpoints import read_signing_secrets
from pulse_dev.testing import free_port, payment_updated, updated_payment
from stream_processor.records import audit_item

OPS = issue_token(DEV_JWT_SECRET, sub="ops-ana", roles=["ops"])
ALICE = issue_token(DEV_JWT_SECRET, sub="alice")
BOB = issue_token(DEV_JWT_SECRET, sub="bob")
PROBLEMS = "https://pulse.dev/problems/"
URL = "https://hooks.example.com/pulse"
BASE = "/v1/webhook-endpoints"
REPLAY_MAX = 2


@dataclass
class Api:
    url: str
    http: aiohttp.ClientSession
    settings: PulseSettings
    spec: dict[str, Any]

    async def call(
        self, method: str, path: str, token: str = OPS, **kwargs: Any
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"}
        async with self.http.request(method, self.url + path, headers=headers, **kwargs) as resp:
            body = await resp.json(content_type=None) if resp.status != 204 else None
            return resp.status, body

    async def create(self, token: str, **body: Any) -> dict[str, Any]:
        status, made = await self.call("POST", BASE, token, json={"url": URL, **body})
        assert status == 201, made
        return dict(made)

    def conforms(self, document: Any, schema: str) -> None:
        ref = {"$ref": f"#/components/schemas/{schema}", "components": self.spec["components"]}
        jsonschema.validate(document, ref)


@pytest.fixture
async def api(
    topology: TopologyOutputs, stack_settings: PulseSettings, service_process: Any
) -> AsyncIterator[Api]:
    port = free_port()
    service_process(
        "ingest",
        PULSE_HTTP_PORT=str(port),
        PULSE_WEBHOOK_SECRET_OVERLAP_SECONDS="3600",
        PULSE_WEBHOOK_REPLAY_MAX_EVENTS=str(REPLAY_MAX),
    ).start(wait_port=port)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
        async with http.get(f"http://127.0.0.1:{port}/openapi.json") as resp:
            spec = await resp.json()
        yield Api(f"http://127.0.0.1:{port}", http, stack_settings, spec)


async def test_an_account_registers_an_endpoint_and_its_secret_is_shown_once(api: Api) -> None:
    status, made = await api.call(
        "POST",
        BASE,
        ALICE,
        json={"url": URL, "description": "orders", "event_types": ["pulse.notification"]},
    )
    assert status == 201, made
    api.conforms(made, "WebhookEndpointWithSecret")
    endpoint_id = made["endpoint_id"]
    assert made["account_id"] == "alice"
    assert made["secret"].startswith("whsec_")
    assert (made["url"], made["description"]) == (URL, "orders")
    assert made["event_types"] == ["pulse.notification"]
    assert made["disabled"] is False
    # the secret is the one deliveries are signed with
    ssm = aws_client("ssm", api.settings)
    parameter = WebhookNames.from_prefix(api.settings.resource_prefix).secret_parameter(endpoint_id)
    secrets = read_signing_secrets(ssm, parameter)
    assert secrets is not None
    assert secrets.current == made["secret"]

    status, read = await api.call("GET", f"{BASE}/{endpoint_id}", ALICE)
    assert status == 200
    api.conforms(read, "WebhookEndpoint")
    assert "secret" not in read
    assert read == {k: v for k, v in made.items() if k != "secret"}
    status, listed = await api.call("GET", BASE, ALICE)
    assert status == 200
    api.conforms(listed, "WebhookEndpointPage")
    assert [e["endpoint_id"] for e in listed["items"]] == [endpoint_id]
    assert all("secret" not in e for e in listed["items"])

    status, changed = await api.call(
        "PATCH",
        f"{BASE}/{endpoint_id}",
        ALICE,
        json={"description": None, "event_types": None, "schedule": "*/5 * * * *"},
    )
    assert status == 200, changed
    assert (changed["description"], changed["event_types"]) == (None, None)
    assert changed["schedule"] == "*/5 * * * *"

    status, rotated = await api.call("POST", f"{BASE}/{endpoint_id}/rotate-secret", ALICE)
    assert status == 200, rotated
    api.conforms(rotated, "WebhookEndpointWithSecret")
    assert rotated["secret"].startswith("whsec_")
    assert rotated["secret"] != made["secret"]
    until = datetime.fromisoformat(rotated["previous_secret_expires_at"])
    rotated_at = datetime.fromisoformat(rotated["secret_rotated_at"])
    assert until - rotated_at == timedelta(hours=1)  # PULSE_WEBHOOK_SECRET_OVERLAP_SECONDS
    secrets = read_signing_secrets(ssm, parameter)
    assert secrets is not None
    assert secrets.valid(rotated_at.timestamp()) == (rotated["secret"], made["secret"])

    status, _ = await api.call("DELETE", f"{BASE}/{endpoint_id}", ALICE)
    assert status == 204
    status, problem = await api.call("GET", f"{BASE}/{endpoint_id}", ALICE)
    assert (status, problem["type"]) == (404, PROBLEMS + "not-found")
    assert read_signing_secrets(ssm, parameter) is None


async def test_another_accounts_endpoint_is_404_and_an_operator_sees_every_account(
    api: Api,
) -> None:
    alices = (await api.create(ALICE))["endpoint_id"]
    bobs = (await api.create(BOB))["endpoint_id"]
    path = f"{BASE}/{alices}"
    for method, suffix, body in (
        ("GET", "", None),
        ("PATCH", "", {"disabled": True}),
        ("DELETE", "", None),
        ("POST", "/rotate-secret", None),
        ("POST", "/test", None),
        ("POST", "/replay", {"since": "2026-01-01T00:00:00Z"}),
    ):
        status, problem = await api.call(method, path + suffix, BOB, json=body)
        assert (status, problem["type"]) == (404, PROBLEMS + "not-found"), (method, suffix)
    status, listed = await api.call("GET", BASE, BOB)
    assert [e["endpoint_id"] for e in listed["items"]] == [bobs]
    status, problem = await api.call("GET", f"{BASE}?account_id=alice", BOB)
    assert (status, problem["type"]) == (403, PROBLEMS + "forbidden")
    status, problem = await api.call("POST", BASE, BOB, json={"url": URL, "account_id": "alice"})
    assert status == 403
    # nothing of Alice's changed
    status, read = await api.call("GET", path, ALICE)
    assert (status, read["disabled"]) == (200, False)

    # an operator: every account's, one account's, any endpoint by its id alone
    status, everyone = await api.call("GET", BASE)
    assert {e["endpoint_id"] for e in everyone["items"]} == {alices, bobs}
    status, only = await api.call("GET", f"{BASE}?account_id=alice")
    assert [e["endpoint_id"] for e in only["items"]] == [alices]
    status, read = await api.call("GET", path)
    assert (status, read["account_id"]) == (200, "alice")
    status, made = await api.call("POST", BASE, json={"url": URL, "account_id": "carol"})
    assert (status, made["account_id"]) == (201, "carol")
    seen, cursor = [], None
    while True:
        query = f"?limit=1&cursor={cursor}" if cursor else "?limit=1"
        status, page = await api.call("GET", BASE + query)
        assert status == 200, page
        seen += [e["endpoint_id"] for e in page["items"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert sorted(seen) == sorted({alices, bobs, made["endpoint_id"]})


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("https://169.254.169.254/latest/meta-data/", "the cloud metadata service"),
        ("https://10.1.2.3/hook", "private (RFC 1918)"),
        ("https://127.0.0.1:9000/hook", "loopback"),
        ("https://localhost/hook", "loopback"),
        ("http://hooks.example.com/hook", "http:// is refused"),
        ("ftp://hooks.example.com/hook", "https:// URLs only"),
    ],
)
async def test_an_internal_or_plain_url_is_422_with_the_reason(
    api: Api, url: str, words: str
) -> None:
    status, problem = await api.call("POST", BASE, ALICE, json={"url": url})
    assert status == 422
    api.conforms(problem, "ProblemDocument")
    assert problem["type"] == PROBLEMS + "webhook-url-refused"
    assert words in problem["detail"]
    assert [e["field"] for e in problem["errors"]] == ["url"]
    assert "^" not in problem["detail"]  # words, not a pattern
    status, listed = await api.call("GET", BASE, ALICE)
    assert listed["items"] == []
    # a change to such a URL is refused the same way
    endpoint_id = (await api.create(ALICE))["endpoint_id"]
    status, problem = await api.call("PATCH", f"{BASE}/{endpoint_id}", ALICE, json={"url": url})
    assert (status, problem["type"]) == (422, PROBLEMS + "webhook-url-refused")


async def test_delivery_windows_and_a_rate_are_set_shown_and_refused_when_bad(api: Api) -> None:
    """Window delivery: a schedule (business hours) and a rate at registration, shown in the
    endpoint's JSON, changed and cleared by PATCH; a schedule whose windows are a month
    apart is refused with the reason, the endpoint left as it was."""
    made = await api.create(ALICE, schedule="* 9-17 * * 1-5", rate_per_second=5)
    api.conforms(made, "WebhookEndpointWithSecret")
    assert (made["schedule"], made["rate_per_second"]) == ("* 9-17 * * 1-5", 5)
    path = f"{BASE}/{made['endpoint_id']}"
    status, read = await api.call("GET", path, ALICE)
    assert (status, read["schedule"], read["rate_per_second"]) == (200, "* 9-17 * * 1-5", 5)

    status, problem = await api.call("PATCH", path, ALICE, json={"schedule": "0 0 1 * *"})
    assert (status, problem["type"]) == (422, PROBLEMS + "invalid-schedule"), problem
    assert "31.0 days apart" in problem["detail"]
    assert "at most 7 days" in problem["detail"]
    status, problem = await api.call("PATCH", path, ALICE, json={"rate_per_second": "fast"})
    assert (status, [e["field"] for e in problem["errors"]]) == (422, ["rate_per_second"])
    status, read = await api.call("GET", path, ALICE)
    assert (read["schedule"], read["rate_per_second"]) == ("* 9-17 * * 1-5", 5)

    changes = {"schedule": "*/5 * * * *", "rate_per_second": 100}
    status, changed = await api.call("PATCH", path, ALICE, json=changes)
    assert status == 200, changed
    api.conforms(changed, "WebhookEndpoint")
    assert (changed["schedule"], changed["rate_per_second"]) == ("*/5 * * * *", 100)
    status, cleared = await api.call(
        "PATCH", path, ALICE, json={"schedule": None, "rate_per_second": None}
    )
    assert (status, cleared["schedule"], cleared["rate_per_second"]) == (200, None, None)


@pytest.mark.parametrize(
    ("body", "kind", "fields"),
    [
        ({"url": URL, "event_types": ["pulse.payment.deleted"]}, "validation", ["event_types"]),
        ({"url": URL, "event_types": []}, "validation", ["event_types"]),
        ({"url": URL, "schedule": "every monday"}, "invalid-schedule", ["schedule"]),
        ({"url": URL, "schedule": "0 0 1 * *"}, "invalid-schedule", ["schedule"]),
        ({"url": URL, "rate_per_second": 0}, "validation", ["rate_per_second"]),
        ({"url": URL, "rate_per_second": 2.5}, "validation", ["rate_per_second"]),
        ({"url": URL, "rate_per_second": 10_001}, "validation", ["rate_per_second"]),
        ({"url": URL, "secret": "whsec_mine"}, "validation", ["secret"]),
        ({"description": "no url"}, "validation", ["url"]),
        ({"url": 5}, "validation", ["url"]),
        ({"url": "https://hooks.exämple.com/h"}, "webhook-url-refused", ["url"]),
    ],
)
async def test_bad_fields_are_named(
    api: Api, body: dict[str, Any], kind: str, fields: list[str]
) -> None:
    status, problem = await api.call("POST", BASE, ALICE, json=body)
    assert (status, problem["type"]) == (422, PROBLEMS + kind), problem
    assert [e["field"] for e in problem["errors"]] == fields


async def test_api_keys_need_the_webhooks_scope(api: Api) -> None:
    keys = ApiKeyTable(aws_client("dynamodb", api.settings), api.settings.names.api_keys_table)
    payments = new_api_key("alice", name="backend", scopes=DEFAULT_SCOPES, now="t")
    hooks = new_api_key("alice", name="hooks", scopes=frozenset({WEBHOOKS_MANAGE}), now="t")
    keys.put(payments.key)
    keys.put(hooks.key)
    for method, body in (("POST", {"url": URL}), ("GET", None)):
        status, problem = await api.call(method, BASE, payments.token, json=body)
        assert (status, problem["type"]) == (403, PROBLEMS + "insufficient-scope")
        assert "webhooks:manage" in problem["detail"]
    status, made = await api.call("POST", BASE, hooks.token, json={"url": URL})
    assert (status, made["account_id"]) == (201, "alice")
    status, _ = await api.call("GET", f"{BASE}/{made['endpoint_id']}", hooks.token)
    assert status == 200


async def test_an_endpoint_disabled_for_failing_shows_why_and_patch_starts_it_afresh(
    api: Api,
) -> None:
    endpoint_id = (await api.create(ALICE))["endpoint_id"]
    table = EndpointHealthTable(
        aws_client("dynamodb", api.settings),
        WebhookNames.from_prefix(api.settings.resource_prefix).table,
    )
    now = datetime.now(UTC)
    since = table.mark_failing("alice", endpoint_id, now=now - timedelta(days=6))
    assert since is not None
    assert table.disable("alice", endpoint_id, since, disable_after_seconds=432_000, now=now).won

    status, shown = await api.call("GET", f"{BASE}/{endpoint_id}", ALICE)
    assert status == 200
    api.conforms(shown, "WebhookEndpoint")
    assert (shown["disabled"], shown["failing_since"]) == (True, since)
    assert shown["disabled_reason"].startswith(f"failing continuously since {since}")

    status, patched = await api.call(
        "PATCH", f"{BASE}/{endpoint_id}", ALICE, json={"disabled": False}
    )
    assert status == 200, patched
    assert (patched["disabled"], patched["disabled_reason"], patched["failing_since"]) == (
        False,
        None,
        None,
    )


async def test_a_test_event_is_queued_for_that_endpoint_unless_disabled(
    api: Api, topology: TopologyOutputs
) -> None:
    endpoint_id = (await api.create(ALICE))["endpoint_id"]
    status, queued = await api.call("POST", f"{BASE}/{endpoint_id}/test", ALICE)
    assert status == 202, queued
    api.conforms(queued, "WebhookTestQueued")
    (delivery,) = _deliveries(api, topology)
    assert delivery.endpoint_id == endpoint_id
    assert delivery.event["id"] == queued["event_id"]
    assert delivery.event["type"] == "pulse.webhook.test"

    await api.call("PATCH", f"{BASE}/{endpoint_id}", ALICE, json={"disabled": True})
    since = {"since": "2026-01-01T00:00:00Z"}
    for suffix, body in (("/test", None), ("/replay", since), ("/recover", since)):
        status, problem = await api.call("POST", f"{BASE}/{endpoint_id}{suffix}", ALICE, json=body)
        assert (status, problem["type"]) == (409, PROBLEMS + "endpoint-disabled")


async def test_a_replay_sends_the_original_ids_a_bounded_number_at_a_time(
    api: Api, topology: TopologyOutputs
) -> None:
    ddb = aws_client("dynamodb", api.settings)
    start = datetime.now(UTC) - timedelta(hours=1)
    ids = []
    for i in range(3):
        data = updated_payment(account_id="alice", payment_id=f"p-{i}")
        event = payment_updated(data, event_id=f"ev-replay-{i}")
        at = iso_timestamp(start + timedelta(minutes=i))
        row = audit_item(event.model_copy(update={"time": at}), str(i + 1), expires_at=2**31)
        ddb.put_item(TableName=api.settings.names.events_table, Item=row)
        ids.append(stable_event_id(event.id, "notification"))
    endpoint_id = (await api.create(ALICE))["endpoint_id"]
    since = iso_timestamp(start)

    path = f"{BASE}/{endpoint_id}/replay"
    status, done = await api.call("POST", path, ALICE, json={"since": since})
    assert status == 202, done
    api.conforms(done, "WebhookReplayQueued")
    assert (done["queued"], done["max_events"]) == (REPLAY_MAX, REPLAY_MAX)
    assert done["next_since"] == iso_timestamp(start + timedelta(minutes=2))
    status, rest = await api.call("POST", path, ALICE, json={"since": done["next_since"]})
    assert (status, rest["queued"], rest["next_since"]) == (202, 1, None)
    assert [d.event["id"] for d in _deliveries(api, topology)] == ids

    for body, kind in (
        ({"since": since, "until": since}, "invalid-replay-window"),
        ({"since": "2999-01-01T00:00:00Z"}, "invalid-replay-window"),
        ({"since": "yesterday"}, "validation"),
        ({"since": "2026-01-01T00:00:00"}, "validation"),  # no offset
        ({"until": since}, "validation"),
        ({"since": since, "limit": 5}, "validation"),
    ):
        status, problem = await api.call("POST", path, ALICE, json=body)
        assert (status, problem["type"]) == (422, PROBLEMS + kind), body


def _deliveries(api: Api, topology: TopologyOutputs) -> list[Delivery]:
    sqs = aws_client("sqs", api.settings)
    url = topology.queue_urls[WebhookNames.from_prefix(api.settings.resource_prefix).queue]
    got: list[Delivery] = []
    while True:
        batch = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60, WaitTimeSeconds=1
        )
        messages = batch.get("Messages", [])
        if not messages:
            return got
        got += [Delivery.from_json(m["Body"].encode()) for m in messages]


def _attempt(
    api: Api,
    endpoint_id: str,
    series: str,
    attempt: int,
    at: datetime,
    *,
    status: int,
    next_step: str | None = None,
) -> None:
    """One attempt in the attempt log, written as the notify worker writes it (claim, then
    the answer)."""
    log = AttemptLog(
        aws_client("dynamodb", api.settings),
        WebhookNames.from_prefix(api.settings.resource_prefix).attempts,
    )
    claim = log.claim(
        endpoint_id,
        series,
        attempt,
        account_id="alice",
        owner="test",
        lease_seconds=30,
        now_ms=int(at.timestamp() * 1000),
    )
    assert isinstance(claim, Claim)
    error = None if status < 300 else f"HTTP {status}"
    log.finish(claim, AttemptResult(status, 12, f"answer {status}", error), next_step=next_step)


async def test_an_endpoints_attempts_are_read_newest_first_filtered_and_by_page(
    api: Api,
) -> None:
    endpoint_id = (await api.create(ALICE))["endpoint_id"]
    start = datetime.now(UTC) - timedelta(minutes=10)
    _attempt(api, endpoint_id, "ev-a", 1, start, status=503, next_step="retry")
    _attempt(api, endpoint_id, "ev-a", 2, start + timedelta(minutes=1), status=200)
    _attempt(
        api, endpoint_id, "ev-b", 1, start + timedelta(minutes=2), status=410, next_step="dead"
    )
    path = f"{BASE}/{endpoint_id}/attempts"

    status, page = await api.call("GET", path, ALICE)
    assert status == 200, page
    api.conforms(page, "WebhookAttemptPage")
    seen = [(a["event_id"], a["attempt"], a["status"], a["next"]) for a in page["items"]]
    assert seen == [
        ("ev-b", 1, "failed", "dead"),
        ("ev-a", 2, "succeeded", None),
        ("ev-a", 1, "failed", "retry"),
    ]
    assert page["next_cursor"] is None
    assert (page["items"][0]["status_code"], page["items"][0]["error"]) == (410, "HTTP 410")

    status, failed = await api.call("GET", path + "?status=failed", ALICE)
    assert [a["event_id"] for a in failed["items"]] == ["ev-b", "ev-a"]
    status, of_a = await api.call("GET", path + "?event_id=ev-a", ALICE)
    assert [(a["event_id"], a["attempt"]) for a in of_a["items"]] == [("ev-a", 2), ("ev-a", 1)]

    status, first = await api.call("GET", path + "?limit=2", ALICE)
    assert [(a["event_id"], a["attempt"]) for a in first["items"]] == [("ev-b", 1), ("ev-a", 2)]
    assert first["next_cursor"]
    status, rest = await api.call("GET", path, ALICE, params={"cursor": first["next_cursor"]})
    assert [(a["event_id"], a["attempt"]) for a in rest["items"]] == [("ev-a", 1)]

    # another account's endpoint does not exist for it; an operator reads it
    status, problem = await api.call("GET", path, BOB)
    assert (status, problem["type"]) == (404, PROBLEMS + "not-found")
    status, _ = await api.call("GET", path, OPS)
    assert status == 200

    for query, field in (("status=lost", "status"), ("limit=0", "limit"), ("since=x", "since")):
        status, problem = await api.call("GET", f"{path}?{query}", ALICE)
        assert (status, problem["type"]) == (422, PROBLEMS + "validation"), query
        assert [e["field"] for e in problem["errors"]] == [field]
        assert problem["errors"][0]["message"]
    status, problem = await api.call("GET", path + "?cursor=nope", ALICE)
    assert (status, problem["type"]) == (400, PROBLEMS + "invalid-cursor")


async def test_recover_sends_the_dead_lettered_events_again_once_with_their_ids(
    api: Api, topology: TopologyOutputs
) -> None:
    ddb = aws_client("dynamodb", api.settings)
    endpoint_id = (await api.create(ALICE))["endpoint_id"]
    start = datetime.now(UTC) - timedelta(hours=2)
    notification = {}
    for i, name in enumerate(("old", "dead", "later", "replayed", "fine")):
        data = updated_payment(account_id="alice", payment_id=f"p-rec-{name}")
        event = payment_updated(data, event_id=f"ev-rec-{name}")
        at = iso_timestamp(start + timedelta(minutes=i))
        row = audit_item(event.model_copy(update={"time": at}), str(i + 1), expires_at=2**31)
        ddb.put_item(TableName=api.settings.names.events_table, Item=row)
        notification[name] = stable_event_id(event.id, "notification")
    since = start + timedelta(hours=1)
    before, after = since - timedelta(minutes=30), since + timedelta(minutes=5)
    # dead-lettered before `since`: not asked for
    _attempt(api, endpoint_id, notification["old"], 1, before, status=500, next_step="dead")
    # first tried before `since`, dead-lettered after it (twice in the log: sent once)
    _attempt(api, endpoint_id, notification["dead"], 1, before, status=500, next_step="retry")
    _attempt(api, endpoint_id, notification["dead"], 2, after, status=500, next_step="dead")
    _attempt(api, endpoint_id, notification["later"], 1, after, status=503, next_step="dead")
    # dead-lettered, then replayed with success: nothing to recover
    _attempt(api, endpoint_id, notification["replayed"], 1, after, status=500, next_step="dead")
    replayed = f"{notification['replayed']}@r1"
    _attempt(api, endpoint_id, replayed, 1, after + timedelta(minutes=1), status=204)
    _attempt(api, endpoint_id, notification["fine"], 1, after, status=200)
    # a test event dead-lettered: the audit trail cannot rebuild it
    _attempt(
        api,
        endpoint_id,
        "ev-test@t1",
        1,
        after + timedelta(minutes=2),
        status=500,
        next_step="dead",
    )

    path = f"{BASE}/{endpoint_id}/recover"
    status, done = await api.call("POST", path, ALICE, json={"since": iso_timestamp(since)})
    assert status == 202, done
    api.conforms(done, "WebhookRecoverQueued")
    assert (done["failed"], done["queued"], done["max_events"]) == (3, 2, REPLAY_MAX)
    assert done["event_ids"] == [notification["dead"], notification["later"]]
    assert done["not_found"] == []  # the test event is the newest: past the limit of two
    deliveries = _deliveries(api, topology)
    assert [d.event["id"] for d in deliveries] == [notification["dead"], notification["later"]]
    assert all(d.request and d.event["type"] == "pulse.notification" for d in deliveries)

    status, problem = await api.call("POST", path, BOB, json={"since": iso_timestamp(since)})
    assert (status, problem["type"]) == (404, PROBLEMS + "not-found")
    for body in ({}, {"since": "yesterday"}, {"since": iso_timestamp(since), "until": "x"}):
        status, problem = await api.call("POST", path, ALICE, json=body)
        assert (status, problem["type"]) == (422, PROBLEMS + "validation"), body
