"""Window delivery end to end: a real notify worker, the AWS emulator, Redis and a real
receiver. An endpoint whose schedule opens only in a coming minute (cron has minute
resolution, so the test waits for it: under 80 s) is sent nothing before; its events wait
in SQS, in order, spending no attempt, and come out when the window opens, in their order,
at no more than the endpoint's own rate."""

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
from pulse.webhook_attempts import SUCCEEDED, AttemptLog
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


def _holds(metrics_url: str) -> float:
    """``pulse_webhook_window_holds_total{queue="webhooks"}`` as the worker exposes it."""
    with urllib.request.urlopen(metrics_url, timeout=5) as response:  # noqa: S310 - local
        text = response.read().decode()
    prefix = 'pulse_webhook_window_holds_total{queue="webhooks"} '
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
    await eventually(lambda: _holds(f"http://127.0.0.1:{port}/metrics") >= 1)
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
