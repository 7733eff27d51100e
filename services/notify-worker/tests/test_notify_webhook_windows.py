"""Window delivery end to end: a real notify worker, the AWS emulator, Redis and a real
receiver. An endpoint whose schedule opens only in a coming minute (cron has minute
resolution, so the test waits for it: under 80 s) is sent nothing before; its events wait
in SQS, in order, spending no attempt, and come out when the window opens, in their order,
at no more than the endpoint's own rate. A retry that falls due outside the window waits
too, until a changed schedule lets it go."""

from __future__ import annotations

import itertools
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from notify_worker.endpoints import EndpointDirectory
from notify_worker.webhooks import WebhookFanout
from pulse.clients import aws_client
from pulse.events import NOTIFICATION, CloudEvent, iso_timestamp, new_event
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs, WebhookNames
from pulse.webhook_attempts import FAILED, NEXT_RETRY, SUCCEEDED, AttemptLog
from pulse.webhook_endpoints import WebhookEndpoints
from pulse.webhook_targets import SsrfPolicy
from pulse_dev.testing import LOCAL_WEBHOOK_RECEIVERS_ENV, eventually, free_port
from pulse_dev.webhook_receiver import ScriptedReceiver, register_endpoint

RATE = 2
EVENTS = 6
# The window opens at least this long after it is chosen: time to register the endpoint,
# queue the events and see the worker hold them.
LEAD = timedelta(seconds=20)


@pytest.fixture
def stack_env(stack_env: dict[str, str]) -> dict[str, str]:
    """The test's stack, whose receivers listen on loopback over http."""
    return {**stack_env, **LOCAL_WEBHOOK_RECEIVERS_ENV}


@pytest.fixture
async def receiver() -> AsyncIterator[ScriptedReceiver]:
    got = ScriptedReceiver()
    await got.start()
    yield got
    await got.stop()


def _coming_minute(now: datetime) -> datetime:
    """The first whole minute (UTC) at least :data:`LEAD` after ``now``."""
    minute = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return minute if minute - now >= LEAD else minute + timedelta(minutes=1)


def _holds(port: int, queue: str = "webhooks") -> float:
    """``pulse_webhook_window_holds_total{queue=…}`` as the worker on ``port`` exposes it."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    prefix = f'pulse_webhook_window_holds_total{{queue="{queue}"}} '
    return sum(
        float(line.removeprefix(prefix)) for line in text.splitlines() if line.startswith(prefix)
    )


def _notification(account: str, payment: str) -> CloudEvent:
    data = {"payment_id": payment, "account_id": account, "status": "APPROVED"}
    return new_event(type=NOTIFICATION, source="/test", subject=payment, data=data)


@pytest.mark.timeout(180)
async def test_window_delivery_holds_events_in_order_and_trickles_them_out_at_the_rate(
    topology: TopologyOutputs,
    stack_settings: PulseSettings,
    stack_env: dict[str, str],
    service_process: Any,
    receiver: ScriptedReceiver,
) -> None:
    port = free_port()
    worker = service_process(
        "notify_worker",
        PULSE_HTTP_PORT=str(port),
        PULSE_SQS_WAIT_TIME_SECONDS="1",
        PULSE_WEBHOOK_WINDOW_RECHECK_SECONDS="10",  # held ones look at the window again
    ).start(wait_port=port)
    opening = _coming_minute(datetime.now(UTC))
    schedule = f"{opening.minute} {opening.hour} * * *"  # open that one minute a day
    endpoint, receiver.secrets["win"] = register_endpoint(
        stack_env, "acct-win", receiver.url("win"), "--schedule", schedule, "--rate", str(RATE)
    )
    names = WebhookNames.from_prefix(stack_settings.resource_prefix)
    sqs = aws_client("sqs", stack_settings)
    directory = EndpointDirectory(
        aws_client("dynamodb", stack_settings), names.table, cache_seconds=0
    )
    fanout = WebhookFanout(sqs, names.queue, directory)
    events = [_notification("acct-win", f"p-w{i}") for i in range(EVENTS)]
    for event in events:  # queued one after the other, as the notify worker does
        assert await fanout.notify(event)
    ids = [e.id for e in events]

    # Closed: the worker takes the first event and holds it; nothing is sent or attempted.
    await eventually(lambda: _holds(port) >= 1)
    assert datetime.now(UTC) < opening, "the window opened before the test could look"
    attempts = AttemptLog(aws_client("dynamodb", stack_settings), names.attempts)
    assert receiver.hits == []
    assert attempts.query(endpoint).items == []

    # Open: everything, in the order queued, at no more than the rate.
    wait = (opening - datetime.now(UTC)).total_seconds()
    await eventually(lambda: len(receiver.delivered("win")) == EVENTS, timeout=wait + 40)
    assert receiver.delivered("win") == ids
    assert receiver.first_tries("win") == ids
    assert all(h.verified for h in receiver.hits)
    times = sorted(h.at for h in receiver.of("win"))
    busiest = max(sum(1 for u in times if t <= u < t + 1.0) for t in times)
    gaps = [round(b - a, 4) for a, b in itertools.pairwise(times)]
    assert busiest <= RATE, f"{busiest} requests within one second: {gaps}"
    # One attempt each, every one made in the window: holding spent none.
    records = attempts.query(endpoint, limit=50).items
    assert sorted(r.event_id for r in records) == sorted(ids)
    assert {(r.attempt, r.state) for r in records} == {(1, SUCCEEDED)}
    stamp = iso_timestamp(opening)
    assert all(r.attempted_at >= stamp for r in records), [r.attempted_at for r in records]
    assert worker.stop() == 0


async def test_a_retry_outside_the_window_waits_and_a_changed_schedule_lets_it_go(
    topology: TopologyOutputs,
    stack_settings: PulseSettings,
    stack_env: dict[str, str],
    service_process: Any,
    receiver: ScriptedReceiver,
) -> None:
    """An event's first attempt fails; its endpoint's window closes before the retry is due:
    the retry waits on the retries queue without an attempt. A PATCH that opens the
    endpoint reaches it within PULSE_WEBHOOK_WINDOW_RECHECK_SECONDS, and it is delivered."""
    receiver.answer = lambda _name, _id, before: 500 if before == 0 else 200
    port = free_port()
    worker = service_process(
        "notify_worker",
        PULSE_HTTP_PORT=str(port),
        PULSE_SQS_WAIT_TIME_SECONDS="1",
        PULSE_WEBHOOK_RETRY_SCHEDULE="0,5s",
        PULSE_WEBHOOK_RETRY_HOP_SECONDS="1",
        PULSE_WEBHOOK_ENDPOINT_CACHE_SECONDS="0",
        PULSE_WEBHOOK_WINDOW_RECHECK_SECONDS="2",
    ).start(wait_port=port)
    endpoint_id, receiver.secrets["late"] = register_endpoint(
        stack_env, "acct-late", receiver.url("late"), "--rate", str(RATE)
    )
    names = WebhookNames.from_prefix(stack_settings.resource_prefix)
    ddb = aws_client("dynamodb", stack_settings)
    endpoints = WebhookEndpoints(ddb, aws_client("ssm", stack_settings), names, policy=SsrfPolicy())
    directory = EndpointDirectory(ddb, names.table, cache_seconds=0)
    event = _notification("acct-late", "p-late")
    assert await WebhookFanout(aws_client("sqs", stack_settings), names.queue, directory).notify(
        event
    )
    attempts = AttemptLog(ddb, names.attempts)

    def outcomes() -> list[tuple[int, str, str | None]]:
        return sorted((r.attempt, r.state, r.next) for r in attempts.query(endpoint_id).items)

    await eventually(lambda: outcomes() == [(1, FAILED, NEXT_RETRY)])
    # Closed for the next half hour: one minute an hour, thirty minutes away.
    closed_minute = (datetime.now(UTC).minute + 30) % 60
    endpoint = endpoints.get(endpoint_id, "acct-late")
    assert endpoint is not None
    now = datetime.now(UTC)
    assert endpoints.update(endpoint, {"schedule": f"{closed_minute} * * * *"}, now=now)

    await eventually(lambda: _holds(port, "webhook_retries") >= 2)  # held, and held again
    assert outcomes() == [(1, FAILED, NEXT_RETRY)]  # no attempt while closed
    assert receiver.tries("late") == {event.id: 1}

    assert endpoints.update(endpoint, {"schedule": None}, now=datetime.now(UTC))
    await eventually(lambda: receiver.delivered("late") == [event.id])
    assert outcomes() == [(1, FAILED, NEXT_RETRY), (2, SUCCEEDED, None)]
    assert worker.stop() == 0
