"""Webhooks end to end: a real notify worker process POSTs to a real aiohttp receiver."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web
from click.testing import CliRunner

from notify_worker.webhooks import sign
from pulse.cli import main as pulse_cli
from pulse.clients import aws_client
from pulse.events import stable_event_id
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs, WebhookNames
from pulse_dev.testing import (
    FAST_REDELIVERY_ENV,
    LOCAL_WEBHOOK_RECEIVERS_ENV,
    ServiceProcess,
    eventually,
    free_port,
    payment_updated,
    queue_depth,
    serving,
    updated_payment,
)


@dataclass
class Hit:
    webhook_id: str
    status: int
    verified: bool
    at: float


@dataclass
class Receiver:
    """Answers per endpoint path; ``script[path]`` lists statuses to return first (then 200)."""

    secrets: dict[str, str] = field(default_factory=dict)
    script: dict[str, list[int]] = field(default_factory=dict)
    hits: dict[str, list[Hit]] = field(default_factory=lambda: defaultdict(list))

    async def handle(self, request: web.Request) -> web.Response:
        path = request.match_info["name"]
        body = await request.read()
        headers = request.headers
        expected = sign(
            self.secrets[path],
            headers["webhook-id"],
            int(headers["webhook-timestamp"]),
            body,
        )
        verified = headers["webhook-signature"] == expected and (
            orjson.loads(body)["id"] == headers["webhook-id"]
        )
        queued = self.script.get(path) or []
        status = queued.pop(0) if queued else 200
        self.hits[path].append(Hit(headers["webhook-id"], status, verified, time.monotonic()))
        return web.Response(status=status)

    def delivered(self, path: str) -> list[str]:
        return [h.webhook_id for h in self.hits[path] if h.status == 200]


def _updated(event_id: str, account_id: str, status: str) -> str:
    data = updated_payment(account_id=account_id, status=status, payment_id=f"p-{event_id}")
    return payment_updated(data, event_id=event_id).to_json().decode()


def _start_worker(service_process: Any, **env: str) -> ServiceProcess:
    """A notify worker that waits at most a second on an empty queue, up and listening."""
    port = free_port()
    settings = {"PULSE_SQS_WAIT_TIME_SECONDS": "1", **env}
    process: ServiceProcess = service_process(
        "notify_worker", PULSE_HTTP_PORT=str(port), **settings
    )
    return process.start(wait_port=port)


def _add_endpoint(env: dict[str, str], account: str, url: str) -> tuple[str, str]:
    result = CliRunner().invoke(
        pulse_cli, ["webhooks", "add", "--account", account, "--url", url], env=env
    )
    assert result.exit_code == 0, result.output
    lines = dict(line.split(": ", 1) for line in result.output.splitlines())
    return lines["endpoint"], lines["secret"]


@pytest.fixture
def stack_env(stack_env: dict[str, str]) -> dict[str, str]:
    """The test's stack, whose receivers listen on loopback over http: the CLI registers
    them and the workers deliver to them."""
    return {**stack_env, **LOCAL_WEBHOOK_RECEIVERS_ENV}


@pytest.fixture
async def receiver() -> Any:
    state = Receiver()
    app = web.Application()
    app.router.add_post("/hooks/{name}", state.handle)
    async with serving(app) as base:
        yield state, f"{base}/hooks"


async def test_signed_deliveries_in_order_per_endpoint_with_retries_and_a_dlq(
    topology: TopologyOutputs,
    stack_settings: PulseSettings,
    stack_env: dict[str, str],
    service_process: Any,
    receiver: tuple[Receiver, str],
) -> None:
    hooks, base = receiver
    sqs = aws_client("sqs", stack_settings)
    names = WebhookNames.from_prefix(stack_settings.resource_prefix)
    for path, account in (("flaky", "acct-w"), ("steady", "acct-w"), ("gone", "acct-x")):
        _endpoint, secret = _add_endpoint(stack_env, account, f"{base}/{path}")
        hooks.secrets[path] = secret
    listed = CliRunner().invoke(
        pulse_cli, ["webhooks", "list", "--account", "acct-w"], env=stack_env
    )
    assert sorted(line.rsplit("/", 1)[-1] for line in listed.output.splitlines()) == [
        "flaky",
        "steady",
    ]
    hooks.script = {"flaky": [500, 500], "gone": [410]}

    worker = _start_worker(service_process, PULSE_SQS_MAX_BACKOFF_SECONDS="1")
    notify_url = topology.queue_urls[stack_settings.names.notify_queue]
    ids = [stable_event_id(f"ev-{i}", "notification") for i in range(3)]
    for i in range(3):  # one at a time, so the deliveries are queued in this order
        sqs.send_message(QueueUrl=notify_url, MessageBody=_updated(f"ev-{i}", "acct-w", "APPROVED"))

        def steady_delivered(count: int = i + 1) -> bool:
            return len(hooks.delivered("steady")) == count

        await eventually(steady_delivered)
    sqs.send_message(QueueUrl=notify_url, MessageBody=_updated("ev-x", "acct-x", "DECLINED"))

    await eventually(lambda: len(hooks.delivered("flaky")) == 3)
    assert hooks.delivered("steady") == ids
    # 500, 500, then 200 for the first event: delivered once, and the others after it.
    assert [(h.webhook_id, h.status) for h in hooks.hits["flaky"]] == [
        (ids[0], 500),
        (ids[0], 500),
        (ids[0], 200),
        (ids[1], 200),
        (ids[2], 200),
    ]
    assert all(h.verified for hits in hooks.hits.values() for h in hits)

    # A 410 is not retried: one attempt, then the DLQ with the reason.
    dlq_url = topology.queue_urls[names.dlq]

    def dead() -> list[dict[str, Any]]:
        got = sqs.receive_message(QueueUrl=dlq_url, MessageAttributeNames=["All"])
        return list(got.get("Messages", []))

    dead_letters = await eventually(dead)
    assert "HTTP 410" in dead_letters[0]["MessageAttributes"]["error"]["StringValue"]
    assert [h.status for h in hooks.hits["gone"]] == [410]
    assert worker.stop() == 0


async def test_an_endpoint_is_sent_no_more_than_its_rate(
    topology: TopologyOutputs,
    stack_settings: PulseSettings,
    stack_env: dict[str, str],
    service_process: Any,
    receiver: tuple[Receiver, str],
) -> None:
    hooks, base = receiver
    _endpoint, hooks.secrets["busy"] = _add_endpoint(stack_env, "acct-r", f"{base}/busy")
    worker = _start_worker(service_process, PULSE_WEBHOOK_RATE_PER_SECOND="1")
    sqs = aws_client("sqs", stack_settings)
    notify_url = topology.queue_urls[stack_settings.names.notify_queue]
    sqs.send_message_batch(
        QueueUrl=notify_url,
        Entries=[
            {"Id": str(i), "MessageBody": _updated(f"ev-r{i}", "acct-r", "APPROVED")}
            for i in range(4)
        ],
    )
    await eventually(lambda: len(hooks.delivered("busy")) == 4)
    times = [h.at for h in hooks.hits["busy"]]
    # Four at one a second fall in four one-second windows: over two seconds from first to
    # last (unlimited, they arrive within about 0.7 s).
    assert times[-1] - times[0] > 2.0
    assert all(h.verified and h.status == 200 for h in hooks.hits["busy"])
    assert len(set(hooks.delivered("busy"))) == 4
    assert worker.stop() == 0


async def test_a_worker_killed_mid_delivery_is_replaced_and_the_webhook_id_repeats(
    topology: TopologyOutputs,
    stack_settings: PulseSettings,
    stack_env: dict[str, str],
    service_process: Any,
    redis_url: str,
) -> None:
    import redis  # noqa: PLC0415

    from pulse.channels import ChannelKeys, account_channel  # noqa: PLC0415

    hits: list[str] = []
    first_arrived = asyncio.Event()
    release = asyncio.Event()

    async def slow_first(request: web.Request) -> web.Response:
        hits.append(request.headers["webhook-id"])
        if len(hits) == 1:
            first_arrived.set()
            await release.wait()  # the worker dies while waiting for this answer
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", slow_first)
    async with serving(app) as base:
        try:
            _add_endpoint(stack_env, "acct-k", f"{base}/hook")
            first = _start_worker(service_process, **FAST_REDELIVERY_ENV)
            sqs = aws_client("sqs", stack_settings)
            sqs.send_message(
                QueueUrl=topology.queue_urls[stack_settings.names.notify_queue],
                MessageBody=_updated("ev-k", "acct-k", "APPROVED"),
            )
            await asyncio.wait_for(first_arrived.wait(), 20)
            first.kill()

            second = _start_worker(service_process, **FAST_REDELIVERY_ENV)
            await eventually(lambda: len(hits) == 2)
            notification_id = stable_event_id("ev-k", "notification")
            # The same webhook-id again: a receiver that drops duplicates applies it once.
            assert hits == [notification_id, notification_id]
            client = redis.Redis.from_url(redis_url)
            key = ChannelKeys(stack_settings.redis_prefix).history(account_channel("acct-k"))
            assert client.xlen(key) == 1  # and the account was notified once
            client.close()
            hooks = WebhookNames.from_prefix(stack_settings.resource_prefix)
            await asyncio.sleep(0.5)
            assert queue_depth(sqs, topology.queue_urls[hooks.queue]) == 0
            assert second.stop() == 0
        finally:
            release.set()


async def test_an_internal_target_is_refused_at_delivery_and_dead_lettered_at_once(
    topology: TopologyOutputs,
    stack_settings: PulseSettings,
    stack_env: dict[str, str],
    service_process: Any,
    receiver: tuple[Receiver, str],
) -> None:
    """Registered where loopback was allowed, delivered by a worker where it is not: the
    delivery is refused before any connection, dead-lettered with the reason, not retried."""
    hooks, base = receiver
    url = f"{base}/inside".replace("127.0.0.1", "localhost")
    _endpoint, hooks.secrets["inside"] = _add_endpoint(stack_env, "acct-i", url)
    worker = _start_worker(service_process, PULSE_WEBHOOK_ALLOWED_NETWORKS="")
    sqs = aws_client("sqs", stack_settings)
    names = WebhookNames.from_prefix(stack_settings.resource_prefix)
    sqs.send_message(
        QueueUrl=topology.queue_urls[stack_settings.names.notify_queue],
        MessageBody=_updated("ev-i", "acct-i", "APPROVED"),
    )

    def dead() -> list[dict[str, Any]]:
        got = sqs.receive_message(
            QueueUrl=topology.queue_urls[names.dlq], MessageAttributeNames=["All"]
        )
        return list(got.get("Messages", []))

    (dead_letter,) = await eventually(dead)
    error = dead_letter["MessageAttributes"]["error"]["StringValue"]
    assert "127.0.0.1 is loopback" in error
    assert "PULSE_WEBHOOK_ALLOWED_NETWORKS" in error
    await eventually(lambda: queue_depth(sqs, topology.queue_urls[names.queue]) == 0)
    assert worker.stop() == 0
    refusals = [
        line
        for line in worker.logs().splitlines()
        if line.startswith("{") and orjson.loads(line).get("event") == "webhook target refused"
    ]
    assert len(refusals) == 1  # one attempt: a refusal is not retried
    assert hooks.hits["inside"] == []
