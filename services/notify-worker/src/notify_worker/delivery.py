"""Webhook attempts: counted per (endpoint, event), retried on a schedule over hours.

:class:`WebhookDeliverer` handles two queues with one handler:

- ``{prefix}webhooks.fifo``: each event's first attempt, per endpoint in the order the
  fan-out queued them (the endpoint is the message group);
- ``{prefix}webhook-retries`` (standard): the later attempts, each a message carrying the
  delivery, its attempt number and its due time.

One attempt (:meth:`WebhookDeliverer.handle`):

1. A retry not yet due is sent to the retries queue again, delayed by what is left (at
   most ``PULSE_WEBHOOK_RETRY_HOP_SECONDS``, SQS allowing 15 minutes), and the copy in
   hand is deleted: waits of hours are chains of delayed messages
   (:func:`notify_worker.retry_schedule.hop_delay`). Delayed messages are not "in flight",
   so an endpoint down for hours with many events waiting meets no SQS quota.
2. The endpoint's delivery window (its ``schedule``, :mod:`pulse.webhook_windows`, read
   through the :class:`~notify_worker.endpoints.EndpointDirectory` cache). Outside it the
   delivery is held until the next opening, at most ``PULSE_WEBHOOK_WINDOW_RECHECK_SECONDS``
   at a time (a changed schedule reaches waiting events within that time), and no attempt
   is spent: a first attempt raises :class:`pulse.errors.Hold`, so the consumer hides the
   message that long; SQS FIFO hands out no later message of a group while one is in
   flight, so everything behind it waits too, in order, durably, in SQS. A retry is sent
   to the retries queue again, due at the opening (chained like any long wait). Each hold
   of a first attempt is a receive: the FIFO queue allows SQS's most, 1000
   (:data:`pulse.topology.WEBHOOK_FIFO_RECEIVES`; a 7-day closure, the longest a schedule
   may have, is 168 hourly holds), and a hold never counts as the last receive that
   dead-letters a message (:mod:`pulse.consumer.outcome`).
3. The endpoint's secrets (two during a rotation's overlap; an endpoint removed meanwhile:
   the delivery is dropped). An endpoint disabled meanwhile (by PATCH, or automatically for
   failing continuously: :mod:`notify_worker.endpoint_health`) is not attempted: the
   delivery goes to the dead-letter queue as it is, with the error ``endpoint disabled``.
4. The attempt is claimed in the attempt log (:class:`pulse.webhook_attempts.AttemptLog`):
   a conditional write of ``(endpoint, event, attempt number)``. A copy of a message that
   was already handled — a hop sent again because its worker died between sending and
   deleting, a message redelivered after a crash — finds the claim and makes no second
   attempt; it only finishes what the dead worker left undone (scheduling the next attempt,
   or the dead letter). The claim's lease is the consumer's visibility timeout, renewed on
   every heartbeat while the attempt runs, so a claim left ``sending`` by a dead worker is
   taken over about when its message comes back.
5. The endpoint's turn under its rate limit (:mod:`notify_worker.rate_limit`: its own
   ``rate_per_second``, else ``PULSE_WEBHOOK_RATE_PER_SECOND``); waiting holds the message
   and spends no attempt. So when a window opens, the events held behind it trickle out
   at the endpoint's rate, in their order.
6. The signed POST, through the SSRF guard (:mod:`pulse.webhook_targets`: the address
   checked when connecting, no redirects followed, the answer read up to a cap and its
   first KiB kept). A refused target is a failed attempt no retry can help.
7. The result recorded (status code, latency, excerpt, error), with what follows: nothing
   after a 2xx; after a 5xx, 408, 429, a timeout or a connection error the next attempt
   of the schedule (``PULSE_WEBHOOK_RETRY_SCHEDULE``) is sent to the retries queue; after
   the schedule's last attempt, or any other status or a refused target at once, the
   delivery goes to ``{prefix}webhooks-dlq.fifo`` with the attributes ``error`` (the last
   error), ``attempts`` (this event's own count), ``endpoint_id`` and ``event_id``. Its body
   is the delivery as its next attempt, due at once: ``pulse dlq redrive webhooks-dlq.fifo``
   sends it back to the FIFO queue for one more attempt, numbered on in the log.
8. The outcome kept on the endpoint (``failing_since``), which disables an endpoint failing
   for ``PULSE_WEBHOOK_DISABLE_AFTER_SECONDS`` (:mod:`notify_worker.endpoint_health`).

The attempt number lives in the message and the log, never in SQS's receive count, so an
event gets the whole schedule whatever waits ahead of it. A first attempt that fails hands
the event to the retries queue and the FIFO group moves on: the endpoint's later events do
not wait hours behind it. A failure of AWS or Redis itself (not of the endpoint) fails the
message for the consumer's backoff without spending an attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import aiohttp
import orjson
from prometheus_client import Counter, Histogram

from notify_worker.retry_schedule import hop_delay
from notify_worker.webhooks import Delivery, QueueUrls, delivery_verdict, signature_headers
from pulse.consumer import on_heartbeat
from pulse.errors import Hold, PermanentError, RetryableError
from pulse.events import CloudEvent
from pulse.health import instance_name
from pulse.ids import uuid4
from pulse.logging import event_context, get_logger
from pulse.webhook_attempts import NEXT_DEAD, NEXT_RETRY, SENDING, AttemptResult, Taken
from pulse.webhook_targets import TargetRefused, post_webhook
from pulse.webhook_windows import hold_seconds

if TYPE_CHECKING:
    from collections.abc import Sequence

    from notify_worker.endpoint_health import EndpointHealth
    from notify_worker.endpoints import EndpointDirectory, SecretStore
    from notify_worker.rate_limit import EndpointRateLimit
    from notify_worker.retry_schedule import RetrySchedule
    from pulse.consumer import SqsMessage
    from pulse.topology import WebhookNames
    from pulse.webhook_attempts import AttemptLog, AttemptRecord, Claim

__all__ = ["WebhookDeliverer", "WebhookQueues"]

log = get_logger("notify_worker.delivery")

DELIVERIES = Counter(
    "pulse_webhook_deliveries_total",
    "Webhook attempts by outcome: delivered, retry (another attempt scheduled), failed "
    "(dead-lettered), dropped (endpoint removed), disabled (dead-lettered unattempted: its "
    "endpoint is disabled)",
    ["outcome"],
)
REQUEST_DURATION = Histogram(
    "pulse_webhook_request_duration_seconds",
    "Time of one webhook POST, by status class (or 'error')",
    ["status_class"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
HOLDS = Counter(
    "pulse_webhook_window_holds_total",
    "Webhook deliveries held because their endpoint was outside its delivery window, by "
    "queue: webhooks (first attempts) or webhook_retries",
    ["queue"],
)
HOPS = Counter(
    "pulse_webhook_retry_hops_total",
    "Scheduled webhook retries sent on again because their due time was still ahead",
)

_FINISH_TRIES: Final = 3
ENDPOINT_DISABLED: Final = "endpoint disabled"


class WebhookQueues:
    """Where deliveries go next: the retries queue (delayed) and the dead-letter queue."""

    def __init__(self, sqs: Any, names: WebhookNames) -> None:
        self._sqs = sqs
        self._names = names
        self._urls = QueueUrls(sqs)

    async def schedule(self, delivery: Delivery, delay_seconds: int) -> None:
        """Put ``delivery`` on the retries queue, ``delay_seconds`` (≤ 900) from now."""
        await self._send(
            f"schedule webhook attempt {delivery.attempt}",
            QueueUrl=await self._urls.url(self._names.retries),
            MessageBody=delivery.to_json().decode(),
            DelaySeconds=delay_seconds,
        )

    async def dead_letter(self, delivery: Delivery, *, attempts: int, error: str) -> None:
        """Send ``delivery`` to the FIFO dead-letter queue, grouped by endpoint, after
        ``attempts`` attempts; a copy sent again within SQS's five-minute deduplication
        window is dropped there."""
        dedup = f"{delivery.event_id}|{delivery.endpoint_id}|dead|{attempts}".encode()
        attributes = {
            "error": {"DataType": "String", "StringValue": error[:1000] or "unknown"},
            "attempts": {"DataType": "Number", "StringValue": str(attempts)},
            "endpoint_id": {"DataType": "String", "StringValue": delivery.endpoint_id},
            "event_id": {"DataType": "String", "StringValue": delivery.event_id},
        }
        await self._send(
            "dead-letter webhook delivery",
            QueueUrl=await self._urls.url(self._names.dlq),
            MessageBody=delivery.to_json().decode(),
            MessageAttributes=attributes,
            MessageGroupId=delivery.endpoint_id,
            MessageDeduplicationId=hashlib.sha256(dedup).hexdigest(),
        )

    async def _send(self, what: str, **request: Any) -> None:
        try:
            await asyncio.to_thread(self._sqs.send_message, **request)
        except Exception as exc:
            raise RetryableError(f"{what}: {exc}") from exc


class WebhookDeliverer:
    """The handler of the FIFO queue and of the retries queue (module doc)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        secrets: SecretStore,
        *,
        rate_limit: EndpointRateLimit,
        health: EndpointHealth,
        attempts: AttemptLog,
        queues: WebhookQueues,
        schedule: RetrySchedule,
        timeout_seconds: float,
        max_hop_seconds: int,
        lease_seconds: float,
        directory: EndpointDirectory,
        window_recheck_seconds: int,
    ) -> None:
        self._session = session
        self._secrets = secrets
        self._rate_limit = rate_limit
        self._health = health
        self._attempts = attempts
        self._queues = queues
        self._schedule = schedule
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._lease = lease_seconds
        self._max_hop = max_hop_seconds
        self._directory = directory
        self._recheck = window_recheck_seconds
        self._instance = instance_name()

    async def handle(self, message: SqsMessage) -> None:
        delivery = Delivery.from_json(message.body)
        try:
            trace = CloudEvent.model_validate(delivery.event).trace_id
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise PermanentError(f"delivery without a CloudEvent: {exc}") from exc
        with event_context(
            delivery.event_id, trace, endpoint_id=delivery.endpoint_id, attempt=delivery.attempt
        ):
            await self._handle(delivery)

    async def _handle(self, delivery: Delivery) -> None:
        if delivery.due_at_ms:
            due = delivery.due_at_ms / 1000
            hop = hop_delay(due, time.time(), self._max_hop)
            if hop is not None:
                await self._queues.schedule(delivery, hop)
                HOPS.inc()
                return
            await asyncio.sleep(max(0.0, due - time.time()))
        endpoint = await self._directory.endpoint(delivery.account_id, delivery.endpoint_id)
        if endpoint is not None and await self._held(delivery, endpoint.schedule):
            return
        secrets = await self._secrets.secrets(delivery.secret_parameter)
        if not secrets:
            DELIVERIES.labels("dropped").inc()
            log.info("endpoint removed: delivery dropped")
            return
        if await self._health.disabled(endpoint):
            await self._hold_back(delivery)
            return
        claim = await asyncio.to_thread(
            self._attempts.claim,
            delivery.endpoint_id,
            delivery.series_id,
            delivery.attempt,
            account_id=delivery.account_id,
            owner=f"{self._instance}/{uuid4().hex[:12]}",
            lease_seconds=self._lease,
        )
        if isinstance(claim, Taken):
            await self._taken(delivery, claim)
            return

        async def renew() -> bool:
            return await asyncio.to_thread(self._attempts.renew, claim, self._lease)

        unregister = on_heartbeat(renew)
        try:
            rate = endpoint.rate_per_second if endpoint is not None else None
            await self._make(claim, delivery, secrets, rate)
        finally:
            if unregister is not None:
                unregister()

    async def _held(self, delivery: Delivery, schedule: str | None) -> bool:
        """Whether the delivery waits for its endpoint's window (module doc, step 2): a
        first attempt raises :class:`Hold`; a retry is sent on, due at the opening."""
        now = time.time()
        wait = hold_seconds(schedule, datetime.fromtimestamp(now, UTC), self._recheck)
        if wait is None:
            return False
        if not delivery.due_at_ms:
            HOLDS.labels("webhooks").inc()
            raise Hold(f"endpoint outside its delivery window: held {wait} s", delay=wait)
        due_ms = int((now + wait) * 1000)
        await self._queues.schedule(
            replace(delivery, due_at_ms=due_ms), hop_delay(due_ms / 1000, now, self._max_hop) or 0
        )
        HOLDS.labels("webhook_retries").inc()
        log.info("endpoint outside its delivery window: retry held", seconds=wait)
        return True

    async def _make(
        self, claim: Claim, delivery: Delivery, secrets: Sequence[str], rate: int | None
    ) -> None:
        """The claimed attempt: the endpoint's turn (at its ``rate``, None: the default),
        the POST, its record, what follows."""
        try:
            await self._rate_limit.turn(delivery.endpoint_id, rate)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._attempts.release, claim)
            raise
        result, retryable = await self._attempt(delivery, secrets)
        record = await self._finish(claim, delivery, result, retryable=retryable)
        if record is None:
            log.warning("attempt taken over by another worker meanwhile")
        elif record.next is None:
            DELIVERIES.labels("delivered").inc()
            log.debug("webhook delivered", status=record.status_code)
        else:
            await self._follow_up(delivery, record)
        if record is not None:
            await self._health.attempted(delivery, failed=record.error is not None)

    async def _hold_back(self, delivery: Delivery) -> None:
        """Not attempted, its endpoint being disabled: dead-lettered as it is (this attempt,
        due at once), so a recovery or a redrive sends it once the endpoint is enabled."""
        held = replace(delivery, due_at_ms=0)
        await self._queues.dead_letter(held, attempts=delivery.attempt - 1, error=ENDPOINT_DISABLED)
        DELIVERIES.labels("disabled").inc()
        log.info("endpoint disabled: delivery dead-lettered unattempted")

    async def _taken(self, delivery: Delivery, taken: Taken) -> None:
        """Another copy holds the attempt: wait for its lease, or finish what it left."""
        if taken.record.state == SENDING:
            raise RetryableError(
                f"attempt {delivery.attempt} is being made by {taken.record.owner or 'another'}",
                delay=taken.busy_seconds + 1.0,
            )
        log.info("attempt made before: not made again", state=taken.record.state)
        await self._follow_up(delivery, taken.record)
        # Its maker may have died before keeping the outcome on the endpoint.
        await self._health.attempted(delivery, failed=taken.record.error is not None)

    async def _attempt(
        self, delivery: Delivery, secrets: Sequence[str]
    ) -> tuple[AttemptResult, bool]:
        """The signed POST, through the SSRF guard (:mod:`pulse.webhook_targets`): what came
        of it, and whether another attempt may fare better."""
        body = orjson.dumps(delivery.event)
        headers = signature_headers(secrets, delivery.event_id, int(time.time()), body)
        start = time.perf_counter()
        try:
            response = await post_webhook(
                self._session, delivery.url, body, headers, timeout=self._timeout
            )
        except TargetRefused as exc:  # an address no retry makes acceptable
            log.warning("webhook target refused", reason=str(exc))
            return AttemptResult(None, 0, "", f"target refused: {exc}"), False
        except (aiohttp.ClientError, TimeoutError) as exc:
            elapsed = time.perf_counter() - start
            REQUEST_DURATION.labels("error").observe(elapsed)
            error = f"{type(exc).__name__}: {exc}".rstrip(": ")
            return AttemptResult(None, round(elapsed * 1000), "", error), True
        REQUEST_DURATION.labels(f"{response.status // 100}xx").observe(response.latency_seconds)
        verdict = delivery_verdict(response.status)
        result = AttemptResult(
            response.status,
            round(response.latency_seconds * 1000),
            response.excerpt,
            None if verdict == "delivered" else f"HTTP {response.status}",
        )
        return result, verdict == "retry"

    def _next_step(
        self, delivery: Delivery, result: AttemptResult, *, retryable: bool
    ) -> tuple[str | None, int | None]:
        """What follows ``result``: (None, None) after a 2xx; ``retry`` and when; ``dead``."""
        if result.error is None:
            return None, None
        wait = self._schedule.after_failure(delivery.attempt) if retryable else None
        if wait is None:
            return NEXT_DEAD, None
        return NEXT_RETRY, int((time.time() + wait) * 1000)

    async def _finish(
        self, claim: Claim, delivery: Delivery, result: AttemptResult, *, retryable: bool
    ) -> AttemptRecord | None:
        """Record the attempt (a few tries: the request went out, its outcome must not be
        lost to a passing AWS error); None if the claim was taken over meanwhile."""
        next_step, next_at = self._next_step(delivery, result, retryable=retryable)
        tries = 0
        while True:
            try:
                return await asyncio.to_thread(
                    self._attempts.finish, claim, result, next_step=next_step, next_at_ms=next_at
                )
            except RetryableError:
                tries += 1
                if tries >= _FINISH_TRIES:
                    raise
                await asyncio.sleep(1.0)

    async def _follow_up(self, delivery: Delivery, record: AttemptRecord) -> None:
        """After a failed attempt: schedule the next, or dead-letter the delivery (unless
        that was done already)."""
        if record.followed_up:
            return
        if record.next == NEXT_RETRY:
            due_ms = record.next_at_ms or int(time.time() * 1000)
            follow = replace(delivery, attempt=record.attempt + 1, due_at_ms=due_ms)
            hop = hop_delay(due_ms / 1000, time.time(), self._max_hop)
            await self._queues.schedule(follow, hop or 0)
            DELIVERIES.labels("retry").inc()
            log.info("webhook attempt failed: retry scheduled", error=record.error)
        else:
            error = record.error or "failed"
            # As its next attempt, due at once: `pulse dlq redrive` gives it one more.
            failed = replace(delivery, attempt=record.attempt + 1, due_at_ms=0)
            await self._queues.dead_letter(failed, attempts=record.attempt, error=error)
            DELIVERIES.labels("failed").inc()
            log.warning("webhook dead-lettered", attempts=record.attempt, error=error)
        await asyncio.to_thread(self._attempts.followed_up, record)
