"""An endpoint that keeps failing is disabled, once, and its account told: real notify worker
processes, a real receiver, the AWS emulator and Redis; the threshold shortened by
``PULSE_WEBHOOK_DISABLE_AFTER_SECONDS``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
import pytest
import redis

from notify_worker.webhooks import Delivery
from pulse.channels import ChannelKeys, account_channel
from pulse.clients import aws_client
from pulse.events import NOTIFICATION, iso_timestamp, new_event, utc_now
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs, WebhookNames
from pulse.webhook_endpoint_health import (
    WEBHOOK_ENDPOINT_DISABLED,
    EndpointHealthTable,
    endpoint_disabled_event,
)
from pulse.webhook_endpoints import WebhookEndpoint, WebhookEndpoints
from pulse.webhook_targets import SsrfPolicy
from pulse_dev.testing import (
    LOCAL_WEBHOOK_RECEIVERS_ENV,
    ServiceProcess,
    eventually,
    free_port,
    payment_updated,
    stream_entries,
    updated_payment,
)
from pulse_dev.webhook_receiver import ScriptedReceiver, register_endpoint

ACCOUNT = "acct-dis"
FAST = {
    "PULSE_SQS_WAIT_TIME_SECONDS": "1",
    "PULSE_WEBHOOK_RETRY_SCHEDULE": "0",  # one attempt each, then the DLQ
    "PULSE_WEBHOOK_DISABLE_AFTER_SECONDS": "2",
    "PULSE_WEBHOOK_ENDPOINT_CACHE_SECONDS": "0",
}


@dataclass
class Stack:
    """The receiver, the endpoints' store, the queues and the account's channel."""

    settings: PulseSettings
    env: dict[str, str]
    topology: TopologyOutputs
    spawn: Any  # the service_process factory
    receiver: ScriptedReceiver
    redis_url: str

    def __post_init__(self) -> None:
        self.names = WebhookNames.from_prefix(self.settings.resource_prefix)
        self.sqs = aws_client("sqs", self.settings)
        self.ddb = aws_client("dynamodb", self.settings)
        ssm = aws_client("ssm", self.settings)
        self.store = WebhookEndpoints(self.ddb, ssm, self.names, policy=SsrfPolicy())
        self.sent = 0

    def endpoint(self, name: str) -> str:
        endpoint, self.receiver.secrets[name] = register_endpoint(
            self.env, ACCOUNT, self.receiver.url(name)
        )
        return endpoint

    def read(self, endpoint_id: str) -> WebhookEndpoint:
        found = self.store.get(endpoint_id, ACCOUNT)
        assert found is not None
        return found

    def worker(self) -> ServiceProcess:
        port = free_port()
        env = {**LOCAL_WEBHOOK_RECEIVERS_ENV, **FAST}
        process: ServiceProcess = self.spawn("notify_worker", PULSE_HTTP_PORT=str(port), **env)
        return process.start(wait_port=port)

    def post_update(self) -> None:
        """One payment update of the account on the notify queue: a notification to each
        of its endpoints."""
        self.sent += 1
        data = updated_payment(account_id=ACCOUNT, status="APPROVED", payment_id=f"p-{self.sent}")
        event = payment_updated(data, event_id=f"ev-dis-{self.sent}")
        url = self.topology.queue_urls[self.settings.names.notify_queue]
        self.sqs.send_message(QueueUrl=url, MessageBody=event.to_json().decode())

    def channel_events(self) -> list[dict[str, Any]]:
        """The account channel's history: each entry's event."""
        client = redis.Redis.from_url(self.redis_url)
        key = ChannelKeys(self.settings.redis_prefix).history(account_channel(ACCOUNT))
        entries = stream_entries(client.xrange(key))
        client.close()
        return [orjson.loads(fields[b"e"]) for _id, fields in entries]

    def announcements(self) -> list[str]:
        return [
            e["id"] for e in self.channel_events() if e.get("type") == WEBHOOK_ENDPOINT_DISABLED
        ]

    def dead_letters(self) -> list[dict[str, str]]:
        got = self.sqs.receive_message(
            QueueUrl=self.topology.queue_urls[self.names.dlq],
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            VisibilityTimeout=0,
        )
        return [
            {k: v["StringValue"] for k, v in m["MessageAttributes"].items()}
            for m in got.get("Messages", [])
        ]

    def queue_delivery(self, endpoint_id: str, name: str, event_id: str) -> None:
        """A delivery waiting on the FIFO queue for ``endpoint_id``, as the fan-out queues it."""
        event = new_event(
            type=NOTIFICATION,
            source="/test",
            data={"account_id": ACCOUNT, "payment_id": "p-w", "status": "APPROVED"},
            id=event_id,
        ).model_dump(mode="json", exclude_none=True)
        target = (endpoint_id, ACCOUNT, self.receiver.url(name))
        body = Delivery(*target, self.names.secret_parameter(endpoint_id), event)
        self.sqs.send_message(
            QueueUrl=self.topology.queue_urls[self.names.queue],
            MessageBody=body.to_json().decode(),
            MessageGroupId=endpoint_id,
            MessageDeduplicationId=event_id,
        )


@pytest.fixture
async def stack(
    topology: TopologyOutputs,
    stack_settings: PulseSettings,
    stack_env: dict[str, str],
    service_process: Any,
    redis_url: str,
) -> AsyncIterator[Stack]:
    receiver = ScriptedReceiver()  # on loopback, over http: let through by the env below
    await receiver.start()
    env = {**stack_env, **LOCAL_WEBHOOK_RECEIVERS_ENV}
    yield Stack(stack_settings, env, topology, service_process, receiver, redis_url)
    await receiver.stop()


async def test_an_endpoint_failing_past_the_threshold_is_disabled_once_and_its_account_told(
    stack: Stack,
) -> None:
    got = stack.receiver
    fixed = asyncio.Event()
    got.answer = lambda name, _id, _before: 500 if name == "down" and not fixed.is_set() else 200
    down, _other = stack.endpoint("down"), stack.endpoint("other")
    workers = [stack.worker(), stack.worker()]  # racing to disable it

    while not stack.read(down).disabled:  # an update every half second, failing at "down"
        stack.post_update()
        await asyncio.sleep(0.5)
        assert stack.sent < 60, "not disabled within 30 s"
    disabled = stack.read(down)
    shown = disabled.public()
    assert shown["failing_since"] is not None
    assert shown["disabled_reason"].startswith(
        f"failing continuously since {shown['failing_since']}"
    )

    # The account hears it once: on its channel, and at its other endpoint, signed.
    announcement = endpoint_disabled_event(disabled)
    await eventually(lambda: announcement.id in got.delivered("other"))
    await eventually(lambda: stack.announcements() == [announcement.id])
    (event,) = [e for e in stack.channel_events() if e["id"] == announcement.id]
    assert event["data"] == {
        "account_id": ACCOUNT,
        "endpoint_id": down,
        "url": got.url("down"),
        "failing_since": shown["failing_since"],
        "disabled_at": shown["updated_at"],
        "reason": shown["disabled_reason"],
    }
    assert all(h.verified for h in got.hits)
    assert announcement.id not in got.tries("down")

    # A delivery still waiting for it is not attempted: dead-lettered with the reason.
    tried = len(got.of("down"))
    stack.queue_delivery(down, "down", "ev-waiting")
    await eventually(lambda: any(d["event_id"] == "ev-waiting" for d in stack.dead_letters()))
    (waiting,) = [d for d in stack.dead_letters() if d["event_id"] == "ev-waiting"]
    assert (waiting["error"], waiting["attempts"]) == ("endpoint disabled", "0")

    # PATCH {"disabled": false} (the same call): a fresh start, and deliveries resume.
    fixed.set()
    enabled = stack.store.update(disabled, {"disabled": False}, now=utc_now())
    assert enabled is not None
    assert (enabled.disabled, enabled.disabled_reason, enabled.failing_since) == (False, None, None)
    before = len(got.delivered("down"))
    stack.post_update()
    await eventually(lambda: len(got.delivered("down")) == before + 1)
    assert len(got.of("down")) == tried + 1  # the waiting one was never sent
    assert stack.announcements() == [announcement.id]
    assert got.tries("other")[announcement.id] == 1
    logs = workers[0].logs()  # the workers share one log file
    assert logs.count("webhook endpoint disabled: failing continuously") == 1
    for worker in workers:
        assert worker.stop() == 0


async def test_a_success_in_between_resets_the_clock(stack: Stack) -> None:
    """Two failures in three, for well past the threshold: never disabled."""
    got = stack.receiver
    got.answer = lambda name, _id, _before: 200 if len(got.of(name)) % 3 == 0 else 500
    flaky = stack.endpoint("flaky")
    worker = stack.worker()
    for _ in range(12):  # six seconds: three times the threshold
        stack.post_update()
        await asyncio.sleep(0.5)
    await eventually(lambda: len(got.of("flaky")) == 12)
    statuses = [h.status for h in got.of("flaky")]
    assert statuses.count(500) == 8
    assert not stack.read(flaky).disabled
    assert stack.announcements() == []
    assert worker.stop() == 0


async def test_a_disabling_whose_announcement_was_lost_is_announced_by_the_next_worker(
    stack: Stack,
) -> None:
    """What a worker killed between disabling and announcing leaves: the endpoint disabled
    automatically, no announcement recorded. The next delivery held back for it sends the
    announcement, with the id the dead worker would have used."""
    got = stack.receiver
    down, _other = stack.endpoint("down"), stack.endpoint("other")
    table = EndpointHealthTable(stack.ddb, stack.names.table)
    now = utc_now()
    since = table.mark_failing(ACCOUNT, down, now=now - timedelta(seconds=10))
    assert since == iso_timestamp(now - timedelta(seconds=10))
    disabling = table.disable(ACCOUNT, down, since, disable_after_seconds=2, now=now)
    assert disabling.won
    assert disabling.endpoint is not None
    announcement = endpoint_disabled_event(disabling.endpoint)
    stack.queue_delivery(down, "down", "ev-held")
    worker = stack.worker()

    await eventually(lambda: announcement.id in got.delivered("other"))
    assert stack.announcements() == [announcement.id]
    await eventually(lambda: any(d["event_id"] == "ev-held" for d in stack.dead_letters()))
    assert table.pending_announcement(ACCOUNT, down) is None
    assert got.of("down") == []
    assert worker.stop() == 0
