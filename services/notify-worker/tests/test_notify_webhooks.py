"""Webhooks end to end: real notify worker processes POST to a real receiver (aiohttp),
against the AWS emulator and Redis; retry schedules shortened by their setting."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner

from notify_worker.endpoints import EndpointDirectory
from notify_worker.webhooks import Delivery, WebhookFanout
from pulse.cli import main as pulse_cli
from pulse.clients import aws_client
from pulse.events import NOTIFICATION, new_event, stable_event_id
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs, WebhookNames
from pulse.webhook_attempts import (
    FAILED,
    NEXT_DEAD,
    NEXT_RETRY,
    SUCCEEDED,
    AttemptLog,
    AttemptResult,
    Claim,
)
from pulse_dev.testing import (
    FAST_REDELIVERY_ENV,
    ServiceProcess,
    eventually,
    free_port,
    payment_updated,
    queue_depth,
    serving,
    updated_payment,
)
from pulse_dev.webhook_receiver import ScriptedReceiver, register_endpoint

# Retries chained through the retries queue one second at a time: hops happen in tests too.
HOP_ENV = {"PULSE_WEBHOOK_RETRY_HOP_SECONDS": "1"}


def _updated(event_id: str, account_id: str, status: str = "APPROVED") -> str:
    data = updated_payment(account_id=account_id, status=status, payment_id=f"p-{event_id}")
    return payment_updated(data, event_id=event_id).to_json().decode()


def _notification_id(event_id: str) -> str:
    return stable_event_id(event_id, "notification")


def _start_worker(service_process: Any, **env: str) -> ServiceProcess:
    """A notify worker that waits at most a second on an empty queue, up and listening."""
    port = free_port()
    settings = {"PULSE_SQS_WAIT_TIME_SECONDS": "1", **HOP_ENV, **env}
    process: ServiceProcess = service_process(
        "notify_worker", PULSE_HTTP_PORT=str(port), **settings
    )
    return process.start(wait_port=port)


def _post_updates(
    settings: PulseSettings, topology: TopologyOutputs, ids: list[str], account: str
) -> None:
    sqs = aws_client("sqs", settings)
    url = topology.queue_urls[settings.names.notify_queue]
    for start in range(0, len(ids), 10):
        entries = [
            {"Id": str(i), "MessageBody": _updated(event_id, account)}
            for i, event_id in enumerate(ids[start : start + 10])
        ]
        sqs.send_message_batch(QueueUrl=url, Entries=entries)


class DeadLetters:
    """What the webhooks' dead-letter queue received, by event id (kept as they come)."""

    def __init__(self, settings: PulseSettings, topology: TopologyOutputs) -> None:
        self._sqs = aws_client("sqs", settings)
        names = WebhookNames.from_prefix(settings.resource_prefix)
        self._url = topology.queue_urls[names.dlq]
        self.seen: dict[str, dict[str, str]] = {}

    def read(self) -> dict[str, dict[str, str]]:
        got = self._sqs.receive_message(
            QueueUrl=self._url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        )
        for message in got.get("Messages", []):
            attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
            self.seen[attributes["event_id"]] = attributes
        return self.seen


def _attempt_log(settings: PulseSettings) -> AttemptLog:
    names = WebhookNames.from_prefix(settings.resource_prefix)
    return AttemptLog(aws_client("dynamodb", settings), names.attempts)


def _outcomes(log: AttemptLog, endpoint: str, event_id: str) -> list[tuple[int, str, str | None]]:
    """An event's attempts, first first: (number, outcome, what followed)."""
    items = log.query(endpoint, event_id=event_id).items
    return [(r.attempt, r.state, r.next) for r in reversed(items)]


@pytest.fixture
async def receiver() -> Any:
    hooks = ScriptedReceiver()
    await hooks.start()
    yield hooks
    await hooks.stop()


async def test_signed_deliveries_a_retried_event_and_a_refused_one(
    topology: TopologyOutputs,
    stack_settings: PulseSettings,
    stack_env: dict[str, str],
    service_process: Any,
    receiver: ScriptedReceiver,
) -> None:
    hooks = receiver
    ids = [_notification_id(f"ev-{i}") for i in range(3)]
    endpoints = {}
    for name, account in (("flaky", "acct-w"), ("steady", "acct-w"), ("gone", "acct-x")):
        endpoints[name], hooks.secrets[name] = register_endpoint(
            stack_env, account, hooks.url(name)
        )
    listed = CliRunner().invoke(
        pulse_cli, ["webhooks", "list", "--account", "acct-w"], env=stack_env
    )
    assert sorted(line.rsplit("/", 1)[-1] for line in listed.output.splitlines()) == [
        "flaky",
        "steady",
    ]

    def answer(name: str, webhook_id: str, before: int) -> int:
        if name == "gone":
            return 410
        return 500 if name == "flaky" and webhook_id == ids[0] and before < 2 else 200

    hooks.answer = answer
    worker = _start_worker(service_process, PULSE_WEBHOOK_RETRY_SCHEDULE="0,1s,1s")
    sqs = aws_client("sqs", stack_settings)
    notify_url = topology.queue_urls[stack_settings.names.notify_queue]
    for i in range(3):  # one at a time, so the deliveries are queued in this order
        sqs.send_message(QueueUrl=notify_url, MessageBody=_updated(f"ev-{i}", "acct-w"))

        def steady_delivered(count: int = i + 1) -> bool:
            return len(hooks.delivered("steady")) == count

        await eventually(steady_delivered)
    sqs.send_message(QueueUrl=notify_url, MessageBody=_updated("ev-x", "acct-x", "DECLINED"))

    await eventually(lambda: len(hooks.delivered("flaky")) == 3)
    assert hooks.delivered("steady") == ids
    # 500, 500, then 200 for the first event; every event tried first in its queued order.
    assert hooks.first_tries("flaky") == ids
    assert [h.status for h in hooks.of("flaky") if h.webhook_id == ids[0]] == [500, 500, 200]
    assert hooks.tries("flaky") == {ids[0]: 3, ids[1]: 1, ids[2]: 1}
    assert all(h.verified for h in hooks.hits)
    log = _attempt_log(stack_settings)
    assert _outcomes(log, endpoints["flaky"], ids[0]) == [
        (1, FAILED, NEXT_RETRY),
        (2, FAILED, NEXT_RETRY),
        (3, SUCCEEDED, None),
    ]

    # A 410 is not retried: one attempt, then the DLQ with the reason and the count.
    dead = DeadLetters(stack_settings, topology)
    x_id = _notification_id("ev-x")
    await eventually(lambda: x_id in dead.read())
    assert "HTTP 410" in dead.seen[x_id]["error"]
    assert dead.seen[x_id]["attempts"] == "1"
    assert dead.seen[x_id]["endpoint_id"] == endpoints["gone"]
    assert [h.status for h in hooks.of("gone")] == [410]
    assert worker.stop() == 0


async def test_three_events_behind_a_failing_head_each_get_the_whole_schedule(
    topology: TopologyOutputs,
    stack_settings: PulseSettings,
    stack_env: dict[str, str],
    service_process: Any,
    receiver: ScriptedReceiver,
) -> None:
    """The defect's reproducer: the receiver always answers 500. Each of three events for
    one endpoint gets all four attempts and is dead-lettered with its own count."""
    hooks = receiver
    hooks.answer = lambda *_: 500
    endpoint, hooks.secrets["down"] = register_endpoint(stack_env, "acct-d", hooks.url("down"))
    worker = _start_worker(service_process, PULSE_WEBHOOK_RETRY_SCHEDULE="0,1s,2s,3s")
    ids = [_notification_id(f"ev-d{i}") for i in range(3)]
    _post_updates(stack_settings, topology, [f"ev-d{i}" for i in range(3)], "acct-d")

    dead = DeadLetters(stack_settings, topology)
    await eventually(lambda: len(dead.read()) == 3, timeout=60)
    assert sorted(dead.seen) == sorted(ids)
    for event_id in ids:
        assert dead.seen[event_id]["attempts"] == "4"
        assert dead.seen[event_id]["error"] == "HTTP 500"
    assert hooks.tries("down") == dict.fromkeys(ids, 4)
    log = _attempt_log(stack_settings)
    for event_id in ids:
        assert _outcomes(log, endpoint, event_id) == [
            (1, FAILED, NEXT_RETRY),
            (2, FAILED, NEXT_RETRY),
            (3, FAILED, NEXT_RETRY),
            (4, FAILED, NEXT_DEAD),
        ]
    shown = CliRunner().invoke(
        pulse_cli, ["webhooks", "attempts", endpoint, "--event", ids[1]], env=stack_env
    )
    assert [line.split()[2:5] for line in shown.output.splitlines()] == [
        ["#4", "failed", "500"],
        ["#3", "failed", "500"],
        ["#2", "failed", "500"],
        ["#1", "failed", "500"],
    ]
    assert worker.stop() == 0


async def test_a_receiver_down_then_up_mid_schedule_gets_everything_once(
    topology: TopologyOutputs,
    stack_settings: PulseSettings,
    stack_env: dict[str, str],
    service_process: Any,
) -> None:
    hooks = ScriptedReceiver()  # not listening yet: connections are refused
    endpoint, hooks.secrets["later"] = register_endpoint(stack_env, "acct-u", hooks.url("later"))
    worker = _start_worker(service_process, PULSE_WEBHOOK_RETRY_SCHEDULE="0,1s,2s,4s,8s,16s")
    events = [f"ev-u{i}" for i in range(3)]
    ids = [_notification_id(e) for e in events]
    _post_updates(stack_settings, topology, events, "acct-u")
    log = _attempt_log(stack_settings)

    def failed_twice() -> bool:
        failed = log.query(endpoint, status="failed").items
        return all(sum(r.event_id == i for r in failed) >= 2 for i in ids)

    await eventually(failed_twice, timeout=30)
    await hooks.start()
    try:
        await eventually(lambda: len(hooks.delivered("later")) == 3, timeout=40)
        await asyncio.sleep(3)  # a second delivery would come now
    finally:
        await hooks.stop()
    assert hooks.tries("later") == dict.fromkeys(ids, 1)  # every request it saw, once each
    for event_id in ids:
        outcomes = _outcomes(log, endpoint, event_id)
        assert outcomes[-1][1:] == (SUCCEEDED, None)
        assert all(o[1:] == (FAILED, NEXT_RETRY) for o in outcomes[:-1])
        assert [o[0] for o in outcomes] == list(range(1, len(outcomes) + 1))
    refused = log.query(endpoint, event_id=ids[0], status="failed").items
    assert all("ClientConnectorError" in (r.error or "") for r in refused)
    assert not DeadLetters(stack_settings, topology).read()
    assert worker.stop() == 0


async def test_first_attempts_keep_the_endpoints_order_and_a_failed_one_holds_none_back(
    topology: TopologyOutputs,
    stack_settings: PulseSettings,
    stack_env: dict[str, str],
    service_process: Any,
    receiver: ScriptedReceiver,
) -> None:
    """The guarantee per endpoint (docs/design.md, "Webhooks"): first attempts in the order
    the fan-out queued the events, one at a time; an event that fails leaves that order for
    its retry schedule and the later events go on without it."""
    hooks = receiver
    for name in ("a", "b"):
        _endpoint, hooks.secrets[name] = register_endpoint(stack_env, "acct-o", hooks.url(name))
    events = [
        new_event(
            type=NOTIFICATION,
            source="/test",
            subject=f"p-{i}",
            data={"payment_id": f"p-{i}", "account_id": "acct-o", "status": "APPROVED"},
        )
        for i in range(8)
    ]
    ids = [e.id for e in events]
    hooks.answer = lambda name, webhook_id, before: (
        500 if name == "a" and webhook_id == ids[3] and before == 0 else 200
    )
    workers = [
        _start_worker(service_process, PULSE_WEBHOOK_RETRY_SCHEDULE="0,5s") for _ in range(2)
    ]
    names = WebhookNames.from_prefix(stack_settings.resource_prefix)
    directory = EndpointDirectory(
        aws_client("dynamodb", stack_settings), names.table, cache_seconds=0
    )
    fanout = WebhookFanout(aws_client("sqs", stack_settings), names.queue, directory)
    for event in events:  # queued one after the other, as the notify worker does
        assert await fanout.notify(event)

    await eventually(lambda: len(hooks.delivered("a")) == 8 and len(hooks.delivered("b")) == 8)
    assert hooks.first_tries("a") == ids
    assert hooks.first_tries("b") == ids
    assert hooks.delivered("b") == ids
    a_ids = [h.webhook_id for h in hooks.of("a")]
    assert a_ids == [*ids, ids[3]]  # its retry came after every later event's first attempt
    assert all(h.verified for h in hooks.hits)
    for worker in workers:
        assert worker.stop() == 0


async def test_an_endpoint_gets_no_more_than_its_rate_in_any_second(
    topology: TopologyOutputs,
    stack_settings: PulseSettings,
    stack_env: dict[str, str],
    service_process: Any,
    receiver: ScriptedReceiver,
) -> None:
    """GCRA: every first attempt fails, so each event's retry runs at once on the retries
    queue, many at a time in two processes, beside first attempts: only the limit spaces
    them. Waiting spends no attempt: two attempts each are all the schedule allows."""
    hooks = receiver
    hooks.answer = lambda _name, _id, before: 503 if before == 0 else 200
    _endpoint, hooks.secrets["busy"] = register_endpoint(stack_env, "acct-r", hooks.url("busy"))
    workers = [
        _start_worker(
            service_process, PULSE_WEBHOOK_RATE_PER_SECOND="4", PULSE_WEBHOOK_RETRY_SCHEDULE="0,0"
        )
        for _ in range(2)
    ]
    events = [f"ev-r{i}" for i in range(12)]
    _post_updates(stack_settings, topology, events, "acct-r")
    await eventually(lambda: len(hooks.delivered("busy")) == 12, timeout=60)
    ids = [_notification_id(e) for e in events]
    assert hooks.tries("busy") == dict.fromkeys(ids, 2)
    times = sorted(h.at for h in hooks.of("busy"))
    busiest = max(sum(1 for u in times if t <= u < t + 1.0) for t in times)
    gaps = [round(b - a, 4) for a, b in itertools.pairwise(times)]
    assert busiest <= 4, f"{busiest} requests within one second: {gaps}"
    assert not DeadLetters(stack_settings, topology).read()
    for worker in workers:
        assert worker.stop() == 0


async def test_kill_9_of_a_worker_mid_schedule_loses_and_doubles_nothing(
    topology: TopologyOutputs,
    stack_settings: PulseSettings,
    stack_env: dict[str, str],
    service_process: Any,
    receiver: ScriptedReceiver,
) -> None:
    """Two workers; the receiver fails until a worker was killed and replaced; then it
    takes everything. Each event is delivered once; each attempt number is made once (a
    POST in flight at the kill may be sent again: at most one request more in all)."""
    hooks = receiver
    up = asyncio.Event()
    hooks.answer = lambda *_: 200 if up.is_set() else 500
    endpoint, hooks.secrets["k"] = register_endpoint(stack_env, "acct-k", hooks.url("k"))
    env = {**FAST_REDELIVERY_ENV, "PULSE_WEBHOOK_RETRY_SCHEDULE": "0,1s,1s,2s,2s,3s,3s,4s,5s,8s"}
    first, second = (_start_worker(service_process, **env) for _ in range(2))
    events = [f"ev-k{i}" for i in range(6)]
    ids = [_notification_id(e) for e in events]
    _post_updates(stack_settings, topology, events, "acct-k")
    log = _attempt_log(stack_settings)
    await eventually(lambda: len(log.query(endpoint, status="failed").items) >= 12, timeout=30)
    first.kill()
    replacement = _start_worker(service_process, **env)
    await asyncio.sleep(2.0)
    up.set()
    await eventually(lambda: len(set(hooks.delivered("k"))) == 6, timeout=60)
    await asyncio.sleep(4.0)  # past the visibility timeout: a copy left behind would come now

    assert sorted(hooks.delivered("k")) == sorted(ids)  # each once
    records = 0
    for event_id in ids:
        outcomes = _outcomes(log, endpoint, event_id)
        assert [o[0] for o in outcomes] == list(range(1, len(outcomes) + 1))
        assert outcomes[-1][1] == SUCCEEDED
        assert all(o[1] == FAILED for o in outcomes[:-1])
        records += len(outcomes)
    assert records <= len(hooks.hits) <= records + 1
    assert not DeadLetters(stack_settings, topology).read()
    names = WebhookNames.from_prefix(stack_settings.resource_prefix)
    sqs = aws_client("sqs", stack_settings)
    assert queue_depth(sqs, topology.queue_urls[names.retries]) == 0
    assert second.stop() == 0
    assert replacement.stop() == 0


async def test_copies_of_an_attempt_make_it_once_and_finish_what_a_dead_worker_left(
    topology: TopologyOutputs,
    stack_settings: PulseSettings,
    stack_env: dict[str, str],
    service_process: Any,
    receiver: ScriptedReceiver,
) -> None:
    """What kill -9 can leave behind, made on purpose: copies of one attempt (a worker killed
    between sending a message and deleting the one it replaces, or before deleting a message
    it handled), and an attempt recorded as failed whose next attempt was never scheduled
    (killed between the two). Each attempt is made once, and the schedule goes on."""
    hooks = receiver
    endpoint, hooks.secrets["c"] = register_endpoint(stack_env, "acct-c", hooks.url("c"))
    names = WebhookNames.from_prefix(stack_settings.resource_prefix)
    sqs = aws_client("sqs", stack_settings)
    log = _attempt_log(stack_settings)

    def delivery(name: str, **fields: int) -> str:
        event = new_event(
            type=NOTIFICATION,
            source="/test",
            subject="p-c",
            data={"payment_id": "p-c", "account_id": "acct-c", "status": "APPROVED"},
            id=name,
        ).model_dump(mode="json", exclude_none=True)
        made = Delivery(
            endpoint, "acct-c", hooks.url("c"), names.secret_parameter(endpoint), event, **fields
        )
        return made.to_json().decode()

    def first_attempt(name: str, copy: int) -> None:
        sqs.send_message(
            QueueUrl=topology.queue_urls[names.queue],
            MessageBody=delivery(name),
            MessageGroupId=endpoint,
            MessageDeduplicationId=f"{name}-{copy}",
        )

    # "left": its first attempt failed and was recorded; the worker died before the next
    # was scheduled, so the message comes back.
    claim = log.claim(endpoint, "left", 1, account_id="acct-c", owner="dead", lease_seconds=5)
    assert isinstance(claim, Claim)
    failed = AttemptResult(503, 3, "", "HTTP 503")
    assert log.finish(claim, failed, next_step=NEXT_RETRY, next_at_ms=int(time.time() * 1000))
    first_attempt("left", 0)
    # "twice": a retry due in 2.5 s (each copy is chained once more), three copies;
    # "once": a first attempt, two copies.
    due = int(time.time() * 1000) + 2500
    for _ in range(3):
        sqs.send_message(
            QueueUrl=topology.queue_urls[names.retries],
            MessageBody=delivery("twice", attempt=2, due_at_ms=due),
        )
    for copy in range(2):
        first_attempt("once", copy)
    worker = _start_worker(service_process)

    await eventually(lambda: set(hooks.delivered("c")) == {"left", "twice", "once"})
    await asyncio.sleep(3.0)
    assert hooks.tries("c") == {"left": 1, "twice": 1, "once": 1}
    assert _outcomes(log, endpoint, "left") == [(1, FAILED, NEXT_RETRY), (2, SUCCEEDED, None)]
    assert _outcomes(log, endpoint, "twice") == [(2, SUCCEEDED, None)]
    assert _outcomes(log, endpoint, "once") == [(1, SUCCEEDED, None)]
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
            register_endpoint(stack_env, "acct-k", f"{base}/hook")
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
