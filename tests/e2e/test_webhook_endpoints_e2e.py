"""End to end: an account holder manages a webhook endpoint through ingest's API, and a real
notify worker delivers to a real receiver that verifies every request with the Standard
Webhooks library — a test event, a notification, both signatures while a rotated secret's
overlap lasts, and a replay that repeats the original ``webhook-id``s; and a notification
the receiver refused until it was dead-lettered, recovered once with its ``webhook-id``.

Ingest and the notify worker run as processes (``python -m``) on the emulator; the payment
updates reach the notify queue and the audit trail as the stream processor sends and writes
them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from pulse.auth import issue_token
from pulse.clients import aws_client
from pulse.events import iso_timestamp, stable_event_id
from pulse.settings import DEV_JWT_SECRET, PulseSettings
from pulse.topology import TopologyOutputs
from pulse_dev.testing import (
    LOCAL_WEBHOOK_RECEIVERS_ENV,
    eventually,
    free_port,
    payment_updated,
    serving,
    updated_payment,
)
from stream_processor.records import audit_item

pytestmark = pytest.mark.timeout(180)

TOKEN = issue_token(DEV_JWT_SECRET, sub="acct-e")


@dataclass
class Received:
    webhook_id: str
    type: str
    body: bytes
    headers: dict[str, str]

    def verifies_with(self, secret: str) -> bool:
        try:
            Webhook(secret).verify(self.body, self.headers)
        except WebhookVerificationError:
            return False
        return True


@dataclass
class Receiver:
    got: list[Received] = field(default_factory=list)
    answer: int = 204  # the status it answers every request with

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.got.append(
            Received(
                request.headers["webhook-id"],
                orjson.loads(body)["type"],
                body,
                dict(request.headers),
            )
        )
        return web.Response(status=self.answer)

    def ids(self) -> list[str]:
        return [r.webhook_id for r in self.got]


@dataclass
class Stack:
    ingest: str
    http: aiohttp.ClientSession
    settings: PulseSettings
    notify_queue: str
    sequence: int = 0

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with self.http.request(method, self.ingest + path, headers=headers, **kwargs) as r:
            assert r.status < 300, await r.text()
            return await r.json()

    def payment_update(self, event_id: str) -> str:
        """A payment of acct-e approved: the stream processor's audit row and its message to
        the notify queue; the id of the notification it makes."""
        event = payment_updated(
            updated_payment(account_id="acct-e", payment_id=f"p-{event_id}"), event_id=event_id
        )
        self.sequence += 1
        ddb = aws_client("dynamodb", self.settings)
        row = audit_item(event, str(self.sequence), expires_at=2**31)
        ddb.put_item(TableName=self.settings.names.events_table, Item=row)
        sqs = aws_client("sqs", self.settings)
        sqs.send_message(QueueUrl=self.notify_queue, MessageBody=event.to_json().decode())
        return stable_event_id(event_id, "notification")


@pytest.fixture
def worker_env() -> dict[str, str]:
    """More settings of the notify worker (a test parametrizes it)."""
    return {}


@pytest.fixture
async def stack(
    topology: TopologyOutputs,
    stack_settings: PulseSettings,
    service_process: Any,
    worker_env: dict[str, str],
) -> AsyncIterator[Stack]:
    ingest_port, worker_port = free_port(), free_port()
    local = {**LOCAL_WEBHOOK_RECEIVERS_ENV, "PULSE_WEBHOOK_SECRET_OVERLAP_SECONDS": "3600"}
    service_process("ingest", PULSE_HTTP_PORT=str(ingest_port), **local).start(
        wait_port=ingest_port
    )
    service_process(
        "notify_worker",
        PULSE_HTTP_PORT=str(worker_port),
        PULSE_SQS_WAIT_TIME_SECONDS="1",
        # a change (a rotated secret) is seen at the next delivery
        PULSE_WEBHOOK_SECRET_CACHE_SECONDS="0",
        PULSE_WEBHOOK_ENDPOINT_CACHE_SECONDS="0",
        **local,
        **worker_env,
    ).start(wait_port=worker_port)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
        yield Stack(
            f"http://127.0.0.1:{ingest_port}",
            http,
            stack_settings,
            topology.queue_urls[stack_settings.names.notify_queue],
        )


async def test_an_account_holders_endpoint_gets_tests_notifications_rotations_and_replays(
    stack: Stack,
) -> None:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    async with serving(app) as base:
        start = datetime.now(UTC) - timedelta(seconds=1)
        made = await stack.call("POST", "/v1/webhook-endpoints", json={"url": f"{base}/hook"})
        endpoint, first_secret = made["endpoint_id"], made["secret"]

        # a test event, from the API through the delivery queue and the worker
        test = await stack.call("POST", f"/v1/webhook-endpoints/{endpoint}/test")
        await eventually(lambda: receiver.ids() == [test["event_id"]])
        assert receiver.got[0].type == "pulse.webhook.test"
        assert receiver.got[0].verifies_with(first_secret)

        # a notification of the account
        first = stack.payment_update("ev-e1")
        await eventually(lambda: receiver.ids()[-1:] == [first])
        assert receiver.got[-1].verifies_with(first_secret)

        # a rotation: the next delivery is signed by both secrets, as the spec allows
        rotated = await stack.call("POST", f"/v1/webhook-endpoints/{endpoint}/rotate-secret")
        second_secret = rotated["secret"]
        assert second_secret != first_secret
        second = stack.payment_update("ev-e2")
        await eventually(lambda: receiver.ids()[-1:] == [second])
        during = receiver.got[-1]
        assert len(during.headers["webhook-signature"].split(" ")) == 2
        assert during.verifies_with(first_secret)
        assert during.verifies_with(second_secret)

        # a replay: both notifications again, in order, with the webhook-ids first sent
        until = iso_timestamp(datetime.now(UTC) + timedelta(seconds=1))
        replayed = await stack.call(
            "POST",
            f"/v1/webhook-endpoints/{endpoint}/replay",
            json={"since": iso_timestamp(start), "until": until},
        )
        assert replayed["queued"] == 2
        await eventually(lambda: len(receiver.got) == 5)
        assert receiver.ids() == [test["event_id"], first, second, first, second]
        assert all(r.verifies_with(second_secret) for r in receiver.got[3:])
        assert [r.type for r in receiver.got[3:]] == ["pulse.notification"] * 2


@pytest.mark.parametrize("worker_env", [{"PULSE_WEBHOOK_RETRY_SCHEDULE": "0,1s"}])
async def test_a_dead_lettered_notification_is_recovered_once_with_its_webhook_id(
    stack: Stack,
) -> None:
    receiver = Receiver(answer=500)
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    async with serving(app) as base:
        since = iso_timestamp(datetime.now(UTC) - timedelta(seconds=1))
        made = await stack.call("POST", "/v1/webhook-endpoints", json={"url": f"{base}/hook"})
        endpoint = made["endpoint_id"]
        hooks = f"/v1/webhook-endpoints/{endpoint}"

        # refused twice (the whole schedule), then dead-lettered, as the attempt log says
        failed = stack.payment_update("ev-r1")

        await eventually(lambda: len(receiver.got) == 2)
        for _ in range(200):  # the second answer recorded, with what follows it
            page = await stack.call("GET", f"{hooks}/attempts?event_id={failed}")
            outcomes = [(a["attempt"], a["next"]) for a in page["items"]]
            if outcomes == [(2, "dead"), (1, "retry")]:
                break
            await asyncio.sleep(0.1)
        assert outcomes == [(2, "dead"), (1, "retry")]
        assert receiver.ids() == [failed, failed]

        # the receiver mended: recovery sends it once more, with the same webhook-id
        receiver.answer = 204
        done = await stack.call("POST", f"{hooks}/recover", json={"since": since})
        assert (done["queued"], done["event_ids"]) == (1, [failed])
        await eventually(lambda: len(receiver.got) == 3)
        assert receiver.ids() == [failed] * 3
        assert receiver.got[-1].verifies_with(made["secret"])
        page = await stack.call("GET", f"{hooks}/attempts?status=succeeded")
        assert [a["event_id"].partition("@")[0] for a in page["items"]] == [failed]

        # recovered: asking again finds nothing left to send
        again = await stack.call("POST", f"{hooks}/recover", json={"since": since})
        assert (again["failed"], again["queued"]) == (0, 0)
        assert len(receiver.got) == 3
