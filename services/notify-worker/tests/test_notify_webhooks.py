"""Webhooks end to end: real notify worker processes POST to a real receiver (aiohttp),
against the AWS emulator and Redis; retry schedules shortened by their setting."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web
from click.testing import CliRunner

from notify_worker.endpoints import EndpointDirectory
from notify_worker.webhooks import Delivery, WebhookFanout
from pulse.cli import main as pulse_cli
from pulse.clients import aws_client
from pulse.events import NOTIFICATION, CloudEvent, new_event, stable_event_id
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
    LOCAL_WEBHOOK_RECEIVERS_ENV,
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


def _notification(account: str, payment: str, event_id: str | None = None) -> CloudEvent:
    data = {"payment_id": payment, "account_id": account, "status": "APPROVED"}
    return new_event(type=NOTIFICATION, source="/test", subject=payment, data=data, id=event_id)


def _start_worker(service_process: Any, **env: str) -> ServiceProcess:
    """A notify worker that waits at most a second on an empty queue, up and listening."""
    port = free_port()
    settings = {"PULSE_SQS_WAIT_TIME_SECONDS": "1", **HOP_ENV, **env}
    process: ServiceProcess = service_process(
        "notify_worker", PULSE_HTTP_PORT=str(port), **settings
    )
    return process.start(wait_port=port)


@dataclass
class Hooks:
    """A test's stack as these tests drive it: the receiver, its endpoints, the workers,
    the queues, the attempt log and what was dead-lettered (by event id)."""

    settings: PulseSettings
    env: dict[str, str]
    topology: TopologyOutputs
    spawn: Any  # the service_process factory
    receiver: ScriptedReceiver
    dead: dict[str, dict[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.names = WebhookNames.from_prefix(self.settings.resource_prefix)
        self.sqs = aws_client("sqs", self.settings)
        self.log = AttemptLog(aws_client("dynamodb", self.settings), self.names.attempts)

    def endpoint(self, name: str, account: str) -> str:
        """``pulse webhooks add`` for the receiver's URL ``name``; the endpoint id."""
        endpoint, self.receiver.secrets[name] = register_endpoint(
            self.env, account, self.receiver.url(name)
        )
        return endpoint

    def worker(self, **env: str) -> ServiceProcess:
        return _start_worker(self.spawn, **env)

    def post_updates(self, events: list[str], account: str) -> list[str]:
        """A payment update per event on the notify queue; their notification ids."""
        url = self.topology.queue_urls[self.settings.names.notify_queue]
        for start in range(0, len(events), 10):
            entries = [
                {"Id": str(i), "MessageBody": _updated(event_id, account)}
                for i, event_id in enumerate(events[start : start + 10])
            ]
            self.sqs.send_message_batch(QueueUrl=url, Entries=entries)
        return [_notification_id(e) for e in events]

    def dead_letters(self) -> dict[str, dict[str, str]]:
        """What the webhooks' dead-letter queue holds so far: attributes by event id."""
        got = self.sqs.receive_message(
            QueueUrl=self.topology.queue_urls[self.names.dlq],
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            VisibilityTimeout=0,  # looked at, not taken
        )
        for message in got.get("Messages", []):
            attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
            self.dead[attributes["event_id"]] = attributes
        return self.dead

    def outcomes(self, endpoint: str, event_id: str) -> list[tuple[int, str, str | None]]:
        """An event's attempts, first first: (number, outcome, what followed)."""
        items = self.log.query(endpoint, event_id=event_id).items
        return [(r.attempt, r.state, r.next) for r in reversed(items)]


@pytest.fixture
def stack_env(stack_env: dict[str, str]) -> dict[str, str]:
    """The test's stack, whose receivers listen on loopback over http: the CLI registers
    them and the workers deliver to them."""
    return {**stack_env, **LOCAL_WEBHOOK_RECEIVERS_ENV}


@pytest.fixture
async def hooks(
    topology: TopologyOutputs,
    stack_settings: PulseSettings,
    stack_env: dict[str, str],
    service_process: Any,
) -> AsyncIterator[Hooks]:
    receiver = ScriptedReceiver()
    await receiver.start()
    yield Hooks(stack_settings, stack_env, topology, service_process, receiver)
    await receiver.stop()


async def test_signed_deliveries_a_retried_event_and_a_refused_one(hooks: Hooks) -> None:
    got = hooks.receiver
    ids = [_notification_id(f"ev-{i}") for i in range(3)]
    flaky, _steady = hooks.endpoint("flaky", "acct-w"), hooks.endpoint("steady", "acct-w")
    gone = hooks.endpoint("gone", "acct-x")
    listed = CliRunner().invoke(
        pulse_cli, ["webhooks", "list", "--account", "acct-w"], env=hooks.env
    )
    assert sorted(line.rsplit("/", 1)[-1] for line in listed.output.splitlines()) == [
        "flaky",
        "steady",
    ]

    def answer(name: str, webhook_id: str, before: int) -> int:
        if name == "gone":
            return 410
        return 500 if name == "flaky" and webhook_id == ids[0] and before < 2 else 200

    got.answer = answer
    worker = hooks.worker(PULSE_WEBHOOK_RETRY_SCHEDULE="0,1s,1s")
    for i in range(3):  # one at a time, so the deliveries are queued in this order
        hooks.post_updates([f"ev-{i}"], "acct-w")

        def steady_delivered(count: int = i + 1) -> bool:
            return len(got.delivered("steady")) == count

        await eventually(steady_delivered)
    x_id = hooks.post_updates(["ev-x"], "acct-x")[0]

    await eventually(lambda: len(got.delivered("flaky")) == 3)
    assert got.delivered("steady") == ids
    # 500, 500, then 200 for the first event; every event tried first in its queued order.
    assert got.first_tries("flaky") == ids
    assert [h.status for h in got.of("flaky") if h.webhook_id == ids[0]] == [500, 500, 200]
    assert got.tries("flaky") == {ids[0]: 3, ids[1]: 1, ids[2]: 1}
    assert all(h.verified for h in got.hits)
    assert hooks.outcomes(flaky, ids[0]) == [
        (1, FAILED, NEXT_RETRY),
        (2, FAILED, NEXT_RETRY),
        (3, SUCCEEDED, None),
    ]

    # A 410 is not retried: one attempt, then the DLQ with the reason and the count.
    await eventually(lambda: x_id in hooks.dead_letters())
    assert "HTTP 410" in hooks.dead[x_id]["error"]
    assert hooks.dead[x_id]["attempts"] == "1"
    assert hooks.dead[x_id]["endpoint_id"] == gone
    assert [h.status for h in got.of("gone")] == [410]
    assert worker.stop() == 0


async def test_three_events_behind_a_failing_head_each_get_the_whole_schedule(
    hooks: Hooks,
) -> None:
    """The defect's reproducer: the receiver always answers 500. Each of three events for
    one endpoint gets all four attempts and is dead-lettered with its own count."""
    got = hooks.receiver
    got.answer = lambda *_: 500
    endpoint = hooks.endpoint("down", "acct-d")
    worker = hooks.worker(PULSE_WEBHOOK_RETRY_SCHEDULE="0,1s,2s,3s")
    ids = hooks.post_updates([f"ev-d{i}" for i in range(3)], "acct-d")

    await eventually(lambda: len(hooks.dead_letters()) == 3, timeout=60)
    assert sorted(hooks.dead) == sorted(ids)
    for event_id in ids:
        assert hooks.dead[event_id]["attempts"] == "4"
        assert hooks.dead[event_id]["error"] == "HTTP 500"
    assert got.tries("down") == dict.fromkeys(ids, 4)
    for event_id in ids:
        assert hooks.outcomes(endpoint, event_id) == [
            (1, FAILED, NEXT_RETRY),
            (2, FAILED, NEXT_RETRY),
            (3, FAILED, NEXT_RETRY),
            (4, FAILED, NEXT_DEAD),
        ]
    shown = CliRunner().invoke(
        pulse_cli, ["webhooks", "attempts", endpoint, "--event", ids[1]], env=hooks.env
    )
    assert [line.split()[2:5] for line in shown.output.splitlines()] == [
        ["#4", "failed", "500"],
        ["#3", "failed", "500"],
        ["#2", "failed", "500"],
        ["#1", "failed", "500"],
    ]

    # The receiver fixed, the dead letters sent back: one more attempt each, numbered on.
    got.answer = lambda *_: 200
    redriven = CliRunner().invoke(pulse_cli, ["dlq", "redrive", "webhooks-dlq.fifo"], env=hooks.env)
    assert redriven.exit_code == 0, redriven.output
    await eventually(lambda: sorted(got.delivered("down")) == sorted(ids), timeout=30)
    for event_id in ids:
        assert hooks.outcomes(endpoint, event_id)[-1] == (5, SUCCEEDED, None)
    assert got.tries("down") == dict.fromkeys(ids, 5)
    assert worker.stop() == 0


async def test_a_receiver_down_then_up_mid_schedule_gets_everything_once(hooks: Hooks) -> None:
    got = hooks.receiver
    await got.stop()  # not listening: connections are refused
    endpoint = hooks.endpoint("later", "acct-u")
    worker = hooks.worker(PULSE_WEBHOOK_RETRY_SCHEDULE="0,1s,2s,4s,8s,16s")
    ids = hooks.post_updates([f"ev-u{i}" for i in range(3)], "acct-u")

    def failed_twice() -> bool:
        failed = hooks.log.query(endpoint, status="failed").items
        return all(sum(r.event_id == i for r in failed) >= 2 for i in ids)

    await eventually(failed_twice, timeout=30)
    await got.start()
    await eventually(lambda: len(got.delivered("later")) == 3, timeout=40)
    await asyncio.sleep(3)  # a second delivery would come now
    assert got.tries("later") == dict.fromkeys(ids, 1)  # every request it saw, once each
    for event_id in ids:
        outcomes = hooks.outcomes(endpoint, event_id)
        assert outcomes[-1][1:] == (SUCCEEDED, None)
        assert all(o[1:] == (FAILED, NEXT_RETRY) for o in outcomes[:-1])
        assert [o[0] for o in outcomes] == list(range(1, len(outcomes) + 1))
    refused = hooks.log.query(endpoint, event_id=ids[0], status="failed").items
    assert all("ClientConnectorError" in (r.error or "") for r in refused)
    assert not hooks.dead_letters()
    assert worker.stop() == 0


async def test_first_attempts_keep_the_endpoints_order_and_a_failed_one_holds_none_back(
    hooks: Hooks,
) -> None:
    """The guarantee per endpoint (docs/design.md, "Webhooks"): first attempts in the order
    the fan-out queued the events, one at a time; an event that fails leaves that order for
    its retry schedule and the later events go on without it."""
    got = hooks.receiver
    hooks.endpoint("a", "acct-o")
    hooks.endpoint("b", "acct-o")
    events = [_notification("acct-o", f"p-{i}") for i in range(8)]
    ids = [e.id for e in events]
    got.answer = lambda name, webhook_id, before: (
        500 if name == "a" and webhook_id == ids[3] and before == 0 else 200
    )
    workers = [hooks.worker(PULSE_WEBHOOK_RETRY_SCHEDULE="0,5s") for _ in range(2)]
    directory = EndpointDirectory(
        aws_client("dynamodb", hooks.settings), hooks.names.table, cache_seconds=0
    )
    fanout = WebhookFanout(hooks.sqs, hooks.names.queue, directory)
    for event in events:  # queued one after the other, as the notify worker does
        assert await fanout.notify(event)

    await eventually(lambda: len(got.delivered("a")) == 8 and len(got.delivered("b")) == 8)
    assert got.first_tries("a") == ids
    assert got.first_tries("b") == ids
    assert got.delivered("b") == ids
    a_ids = [h.webhook_id for h in got.of("a")]
    assert a_ids == [*ids, ids[3]]  # its retry came after every later event's first attempt
    assert all(h.verified for h in got.hits)
    for worker in workers:
        assert worker.stop() == 0


async def test_an_endpoint_gets_no_more_than_its_rate_in_any_second(hooks: Hooks) -> None:
    """GCRA: every first attempt fails, so each event's retry runs at once on the retries
    queue, many at a time in two processes, beside first attempts: only the limit spaces
    them. Waiting spends no attempt: two attempts each are all the schedule allows."""
    got = hooks.receiver
    got.answer = lambda _name, _id, before: 503 if before == 0 else 200
    hooks.endpoint("busy", "acct-r")
    workers = [
        hooks.worker(PULSE_WEBHOOK_RATE_PER_SECOND="4", PULSE_WEBHOOK_RETRY_SCHEDULE="0,0")
        for _ in range(2)
    ]
    ids = hooks.post_updates([f"ev-r{i}" for i in range(12)], "acct-r")
    await eventually(lambda: len(got.delivered("busy")) == 12, timeout=60)
    assert got.tries("busy") == dict.fromkeys(ids, 2)
    times = sorted(h.at for h in got.of("busy"))
    busiest = max(sum(1 for u in times if t <= u < t + 1.0) for t in times)
    gaps = [round(b - a, 4) for a, b in itertools.pairwise(times)]
    assert busiest <= 4, f"{busiest} requests within one second: {gaps}"
    assert not hooks.dead_letters()
    for worker in workers:
        assert worker.stop() == 0


async def test_kill_9_of_a_worker_mid_schedule_loses_and_doubles_nothing(hooks: Hooks) -> None:
    """Two workers; the receiver fails until a worker was killed and replaced; then it
    takes everything. Each event is delivered once; each attempt number is made once (a
    POST in flight at the kill may be sent again: at most one request more in all)."""
    got = hooks.receiver
    up = asyncio.Event()
    got.answer = lambda *_: 200 if up.is_set() else 500
    endpoint = hooks.endpoint("k", "acct-k")
    env = {**FAST_REDELIVERY_ENV, "PULSE_WEBHOOK_RETRY_SCHEDULE": "0,1s,1s,2s,2s,3s,3s,4s,5s,8s"}
    first, second = hooks.worker(**env), hooks.worker(**env)
    ids = hooks.post_updates([f"ev-k{i}" for i in range(6)], "acct-k")
    await eventually(lambda: len(hooks.log.query(endpoint, status="failed").items) >= 12)
    first.kill()
    replacement = hooks.worker(**env)
    await asyncio.sleep(2.0)
    up.set()
    await eventually(lambda: len(set(got.delivered("k"))) == 6, timeout=60)
    await asyncio.sleep(4.0)  # past the visibility timeout: a copy left behind would come now

    assert sorted(got.delivered("k")) == sorted(ids)  # each once
    records = 0
    for event_id in ids:
        outcomes = hooks.outcomes(endpoint, event_id)
        assert [o[0] for o in outcomes] == list(range(1, len(outcomes) + 1))
        assert outcomes[-1][1] == SUCCEEDED
        assert all(o[1] == FAILED for o in outcomes[:-1])
        records += len(outcomes)
    assert records <= len(got.hits) <= records + 1
    assert not hooks.dead_letters()
    assert queue_depth(hooks.sqs, hooks.topology.queue_urls[hooks.names.retries]) == 0
    assert second.stop() == 0
    assert replacement.stop() == 0


async def test_copies_of_an_attempt_make_it_once_and_finish_what_a_dead_worker_left(
    hooks: Hooks,
) -> None:
    """What kill -9 can leave behind, made on purpose: copies of one attempt (a worker killed
    between sending a message and deleting the one it replaces, or before deleting a message
    it handled), and an attempt recorded as failed whose next attempt was never scheduled
    (killed between the two). Each attempt is made once, and the schedule goes on."""
    got = hooks.receiver
    endpoint = hooks.endpoint("c", "acct-c")
    names, urls = hooks.names, hooks.topology.queue_urls

    def delivery(name: str, attempt: int = 1, due_at_ms: int = 0) -> str:
        event = _notification("acct-c", "p-c", name).model_dump(mode="json", exclude_none=True)
        target = (endpoint, "acct-c", got.url("c"), names.secret_parameter(endpoint))
        made = Delivery(*target, event, attempt=attempt, due_at_ms=due_at_ms)
        return made.to_json().decode()

    def first_attempt(name: str, copy: int) -> None:
        hooks.sqs.send_message(
            QueueUrl=urls[names.queue],
            MessageBody=delivery(name),
            MessageGroupId=endpoint,
            MessageDeduplicationId=f"{name}-{copy}",
        )

    # "left": its first attempt failed and was recorded; the worker died before the next
    # was scheduled, so the message comes back.
    claim = hooks.log.claim(endpoint, "left", 1, account_id="acct-c", owner="dead", lease_seconds=5)
    assert isinstance(claim, Claim)
    failed = AttemptResult(503, 3, "", "HTTP 503")
    now_ms = int(time.time() * 1000)
    assert hooks.log.finish(claim, failed, next_step=NEXT_RETRY, next_at_ms=now_ms)
    first_attempt("left", 0)
    # "twice": a retry due in 2.5 s (each copy is chained once more), three copies;
    # "once": a first attempt, two copies.
    for _ in range(3):
        hooks.sqs.send_message(
            QueueUrl=urls[names.retries],
            MessageBody=delivery("twice", attempt=2, due_at_ms=now_ms + 2500),
        )
    for copy in range(2):
        first_attempt("once", copy)
    worker = hooks.worker()

    await eventually(lambda: set(got.delivered("c")) == {"left", "twice", "once"})
    await asyncio.sleep(3.0)
    assert got.tries("c") == {"left": 1, "twice": 1, "once": 1}
    assert hooks.outcomes(endpoint, "left") == [(1, FAILED, NEXT_RETRY), (2, SUCCEEDED, None)]
    assert hooks.outcomes(endpoint, "twice") == [(2, SUCCEEDED, None)]
    assert hooks.outcomes(endpoint, "once") == [(1, SUCCEEDED, None)]
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


async def test_an_internal_target_is_refused_at_delivery_and_dead_lettered_at_once(
    hooks: Hooks,
) -> None:
    """Registered where loopback was allowed, delivered by a worker where it is not: the
    delivery is refused before any connection, dead-lettered with the reason after its one
    attempt (a refusal is not retried)."""
    got = hooks.receiver
    url = got.url("inside").replace("127.0.0.1", "localhost")
    endpoint, got.secrets["inside"] = register_endpoint(hooks.env, "acct-i", url)
    worker = hooks.worker(PULSE_WEBHOOK_ALLOWED_NETWORKS="")
    (event_id,) = hooks.post_updates(["ev-i"], "acct-i")

    await eventually(lambda: event_id in hooks.dead_letters())
    error = hooks.dead[event_id]["error"]
    assert "127.0.0.1 is loopback" in error
    assert "PULSE_WEBHOOK_ALLOWED_NETWORKS" in error
    assert hooks.dead[event_id]["attempts"] == "1"
    assert hooks.outcomes(endpoint, event_id) == [(1, FAILED, NEXT_DEAD)]
    fifo = hooks.topology.queue_urls[hooks.names.queue]
    await eventually(lambda: queue_depth(hooks.sqs, fifo) == 0)
    assert worker.stop() == 0
    refusals = [
        line
        for line in worker.logs().splitlines()
        if line.startswith("{") and orjson.loads(line).get("event") == "webhook target refused"
    ]
    assert len(refusals) == 1
    assert got.of("inside") == []
