"""What is queued for webhook delivery: one :class:`Delivery` per (event, endpoint) on the
FIFO queue ``{prefix}webhooks.fifo``, however it came to be sent.

- the notify worker's fan-out queues each notification for every endpoint of its account
  that wants it (:meth:`WebhookEndpoint.accepts`);
- ``POST /v1/webhook-endpoints/{id}/test`` (and ``pulse webhooks test``) queues a
  :data:`WEBHOOK_TEST` event (:func:`test_event`) for one endpoint;
- a replay queues an account's past notifications again for one endpoint
  (:func:`replay_notifications`), rebuilt from the audit trail (the events table, by its
  index :data:`~pulse.topology.AUDIT_ACCOUNT_INDEX`: ``account_id``, ``time``) with their
  original ids, so ``webhook-id`` is the one the receiver saw the first time.

Every message is grouped by endpoint (``MessageGroupId``: the endpoint's events in order).
Its deduplication id is a hash of the event and endpoint ids, so a notification handled
twice is queued once; a test or replay adds its request's id, so asking again sends again
(SQS would otherwise drop a repeat within five minutes).

A recovery (:func:`recover`) queues the events whose latest attempt the attempt log says
was dead-lettered again, rebuilt from the audit trail like a replay, through
:meth:`DeliveryQueue.redeliver`.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Protocol

import orjson

from pulse.aws_errors import AWS_ERRORS, as_pulse_error
from pulse.errors import PermanentError, RetryableError
from pulse.events import PAYMENT_UPDATED, CloudEvent, iso_timestamp, new_event
from pulse.logging import get_logger
from pulse.notifications import notification_event
from pulse.topology import AUDIT_ACCOUNT_INDEX
from pulse.webhook_attempts import FAILED, NEXT_DEAD
from pulse.webhook_endpoints import InvalidField, accepts

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from pulse.webhook_attempts import AttemptLog, AttemptRecord
    from pulse.webhook_endpoints import WebhookEndpoint

__all__ = [
    "AUDIT_LAG",
    "WEBHOOK_TEST",
    "Delivery",
    "DeliveryQueue",
    "Recovery",
    "Replay",
    "dead_lettered",
    "delivery_entry",
    "recover",
    "replay",
    "replay_notifications",
    "replay_window",
    "send_test",
    "test_event",
]

log = get_logger("pulse.webhook_deliveries")

WEBHOOK_TEST: Final = "pulse.webhook.test"
TEST_SOURCE: Final = "/pulse/webhooks"
_MAX_BATCH: Final = 10
_QUERY_PAGE: Final = 500
# How long before its first delivery attempt an event can have reached the audit trail: a
# stream record is read within the stream's 24 hours, and its message waits on the notify
# queue at most SQS's longest retention, 14 days.
AUDIT_LAG: Final = timedelta(days=15)
# The audit row's time is AWS's (the stream record's), an attempt's the worker's clock.
_CLOCK_SKEW: Final = timedelta(minutes=5)


class _Target(Protocol):
    @property
    def endpoint_id(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def secret_parameter(self) -> str: ...


@dataclass(frozen=True)
class Delivery:
    """One event for one endpoint, and which attempt it is: the body of a message on the
    FIFO queue (attempt 1, due at once) or on the retries queue (a later attempt, due at
    ``due_at_ms``, Unix milliseconds). ``request`` is the id of the test or replay that
    asked for it ("" for the event's own delivery): a replay is a new series of attempts in
    the attempt log, not a copy of the first one."""

    endpoint_id: str
    account_id: str
    url: str
    secret_parameter: str
    event: dict[str, Any]
    attempt: int = 1
    due_at_ms: int = 0
    request: str = ""

    @property
    def event_id(self) -> str:
        return str(self.event.get("id", ""))

    @property
    def series_id(self) -> str:
        """Whose attempts these are in the attempt log: the event id, and for a test or a
        replay ``{event id}@{request}`` (its own numbering, from attempt 1)."""
        return f"{self.event_id}@{self.request}" if self.request else self.event_id

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes) -> Delivery:
        try:
            data = orjson.loads(raw)
            delivery = cls(
                endpoint_id=str(data["endpoint_id"]),
                account_id=str(data["account_id"]),
                url=str(data["url"]),
                secret_parameter=str(data["secret_parameter"]),
                event=dict(data["event"]),
                attempt=int(data.get("attempt", 1)),
                due_at_ms=int(data.get("due_at_ms", 0)),
                request=str(data.get("request", "")),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise PermanentError(f"not a webhook delivery: {type(exc).__name__}") from exc
        if delivery.attempt < 1 or not delivery.event_id:
            raise PermanentError("not a webhook delivery: no event id, or attempt below 1")
        return delivery


def delivery_entry(
    endpoint: _Target, account_id: str, event: dict[str, Any], *, entry_id: str, request: str = ""
) -> dict[str, Any]:
    """The ``SendMessageBatch`` entry queuing ``event`` (a CloudEvent as JSON data) for
    ``endpoint``; ``request`` (a test's or replay's id) makes it a new message for SQS."""
    dedup = f"{event['id']}|{endpoint.endpoint_id}" + (f"|{request}" if request else "")
    target = (endpoint.endpoint_id, account_id, endpoint.url, endpoint.secret_parameter)
    body = Delivery(*target, event, request=request)
    return {
        "Id": entry_id,
        "MessageBody": body.to_json().decode(),
        "MessageGroupId": endpoint.endpoint_id,
        "MessageDeduplicationId": hashlib.sha256(dedup.encode()).hexdigest(),
    }


class DeliveryQueue:
    """The FIFO delivery queue, over a blocking boto3 SQS client."""

    def __init__(self, sqs: Any, queue_name: str) -> None:
        self._sqs = sqs
        self._queue_name = queue_name
        self._queue_url: str | None = None

    def _url(self) -> str:
        if self._queue_url is None:
            try:
                got = self._sqs.get_queue_url(QueueName=self._queue_name)
            except AWS_ERRORS as exc:
                raise as_pulse_error(exc, f"webhook queue {self._queue_name}", delay=2) from exc
            self._queue_url = str(got["QueueUrl"])
        return self._queue_url

    def send(self, entries: Sequence[dict[str, Any]]) -> None:
        """Queue the entries, in order (ten per call); :class:`RetryableError` if any was not
        queued (sending them all again queues none twice: their deduplication ids)."""
        if not entries:
            return
        url = self._url()
        for start in range(0, len(entries), _MAX_BATCH):
            chunk = list(entries[start : start + _MAX_BATCH])
            try:
                response = self._sqs.send_message_batch(QueueUrl=url, Entries=chunk)
            except AWS_ERRORS as exc:
                raise as_pulse_error(exc, "queue webhook deliveries", delay=2) from exc
            if response.get("Failed"):
                raise RetryableError(f"queue webhook deliveries: {response['Failed'][:1]}")

    def redeliver(
        self, endpoint: WebhookEndpoint, events: Iterable[CloudEvent], *, request: str
    ) -> int:
        """Queue ``events`` (in this order) for ``endpoint`` again, with their own ids, as
        request ``request``; how many were queued."""
        entries = [
            delivery_entry(
                endpoint,
                endpoint.account_id,
                event.model_dump(mode="json", exclude_none=True),
                entry_id=str(i),
                request=request,
            )
            for i, event in enumerate(events)
        ]
        self.send(entries)
        return len(entries)


def test_event(endpoint: WebhookEndpoint, *, now: datetime) -> CloudEvent:
    """A :data:`WEBHOOK_TEST` event for ``endpoint`` (a new id each time)."""
    return new_event(
        type=WEBHOOK_TEST,
        source=TEST_SOURCE,
        subject=endpoint.endpoint_id,
        time=now,
        data={
            "account_id": endpoint.account_id,
            "endpoint_id": endpoint.endpoint_id,
            "message": "A test event from Pulse: this endpoint receives and verifies webhooks.",
        },
    )


@dataclass(frozen=True)
class Replay:
    """The notifications a replay sends, oldest first, and the ``since`` to ask from for the
    rest (None: there is none)."""

    events: list[CloudEvent]
    next_since: str | None


def replay_notifications(
    ddb: Any,
    events_table: str,
    endpoint: WebhookEndpoint,
    *,
    since: datetime,
    until: datetime,
    limit: int,
) -> Replay:
    """The notifications ``endpoint`` would have been sent for its account's payment updates
    from ``since`` to ``until`` (both included), rebuilt from the audit trail with their
    original ids; at most ``limit``, the oldest first."""
    found: list[CloudEvent] = []
    for at, notification in _audit_notifications(ddb, events_table, endpoint, since, until):
        if len(found) == limit:
            return Replay(found, at)
        found.append(notification)
    return Replay(found, None)


def _audit_notifications(
    ddb: Any,
    events_table: str,
    endpoint: WebhookEndpoint,
    since: datetime,
    until: datetime,
    *,
    newest_first: bool = False,
) -> Iterator[tuple[str, CloudEvent]]:
    """Each notification ``endpoint`` accepts that its account's payment updates from
    ``since`` to ``until`` made, once, with the time of its audit row (the audit trail read
    by :data:`~pulse.topology.AUDIT_ACCOUNT_INDEX`)."""
    kwargs: dict[str, Any] = {
        "TableName": events_table,
        "IndexName": AUDIT_ACCOUNT_INDEX,
        "KeyConditionExpression": "account_id = :a AND #t BETWEEN :s AND :u",
        "FilterExpression": "#y = :updated",
        "ExpressionAttributeNames": {"#t": "time", "#y": "type"},
        "ExpressionAttributeValues": {
            ":a": {"S": endpoint.account_id},
            ":s": {"S": iso_timestamp(since)},
            ":u": {"S": iso_timestamp(until)},
            ":updated": {"S": PAYMENT_UPDATED},
        },
        "ScanIndexForward": not newest_first,
        "Limit": _QUERY_PAGE,
    }
    seen: set[str] = set()
    while True:
        try:
            page = ddb.query(**kwargs)
        except AWS_ERRORS as exc:
            raise as_pulse_error(exc, "read the audit trail", delay=1.0) from exc
        for row in page.get("Items", []):
            notification = _notification(row)
            if notification is None or notification.id in seen:
                continue
            if not accepts(endpoint.event_types, notification.type):
                continue
            seen.add(notification.id)
            yield str(row["time"]["S"]), notification
        if "LastEvaluatedKey" not in page:
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _notification(row: dict[str, Any]) -> CloudEvent | None:
    """The notification an audit row's payment update made (None: it made none, or the row
    cannot be read)."""
    try:
        event = CloudEvent.from_json(row["event"]["S"])
        return notification_event(event)
    except (KeyError, ValueError, PermanentError) as exc:
        log.warning("skipping unreadable audit row", error=f"{type(exc).__name__}: {exc}")
        return None


def send_test(queue: DeliveryQueue, endpoint: WebhookEndpoint, *, now: datetime) -> CloudEvent:
    """Queue a :data:`WEBHOOK_TEST` event for ``endpoint`` alone; the event queued."""
    event = test_event(endpoint, now=now)
    queue.redeliver(endpoint, [event], request=uuid.uuid4().hex)
    return event


def replay_window(
    since: datetime, until: datetime | None, *, now: datetime
) -> tuple[datetime, datetime]:
    """The replay's window, in UTC (``until`` defaults to ``now``); :class:`InvalidField`
    unless ``since`` comes before ``until``. A time without a zone is taken as UTC."""
    start = _utc(since)
    end = _utc(until) if until is not None else now.astimezone(UTC)
    if start >= end:
        raise InvalidField("since", "must be before until (or before now, without until)")
    return start, end


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def replay(
    queue: DeliveryQueue,
    ddb: Any,
    events_table: str,
    endpoint: WebhookEndpoint,
    *,
    since: datetime,
    until: datetime,
    limit: int,
) -> Replay:
    """Queue ``endpoint``'s notifications from ``since`` to ``until`` again
    (:func:`replay_notifications`, at most ``limit``), in order, with their original ids;
    what was queued, and where to go on from."""
    found = replay_notifications(ddb, events_table, endpoint, since=since, until=until, limit=limit)
    queue.redeliver(endpoint, found.events, request=uuid.uuid4().hex)
    return found


@dataclass(frozen=True)
class Recovery:
    """What a recovery found and queued: ``failed``, the events whose latest attempt since
    the given time was dead-lettered; ``events``, those queued again (oldest first, at most
    the limit); ``missing``, those among the first ``limit`` the audit trail cannot rebuild
    (test events, or events older than the audit trail keeps)."""

    failed: int
    events: list[CloudEvent]
    missing: list[str]


def dead_lettered(attempts: Iterable[AttemptRecord]) -> dict[str, str]:
    """Of an endpoint's attempts, newest first: the events whose latest attempt failed for
    good (``next`` ``dead``), each with the time of its earliest attempt among these. An
    event's tests and replays count as its attempts (``{event id}@{request}``), so an event
    re-sent since with success is not among them."""
    latest: dict[str, AttemptRecord] = {}
    earliest: dict[str, str] = {}
    for record in attempts:
        event_id = record.event_id.partition("@")[0]
        latest.setdefault(event_id, record)
        earliest[event_id] = min(earliest.get(event_id, record.attempted_at), record.attempted_at)
    return {
        event_id: earliest[event_id]
        for event_id, record in latest.items()
        if record.state == FAILED and record.next == NEXT_DEAD
    }


def recover(
    queue: DeliveryQueue,
    attempts: AttemptLog,
    ddb: Any,
    events_table: str,
    endpoint: WebhookEndpoint,
    *,
    since: datetime,
    limit: int,
) -> Recovery:
    """Queue again, once each and with their original ids, ``endpoint``'s events whose
    latest attempt since ``since`` was dead-lettered (:func:`dead_lettered`, from the
    attempt log by time), at most ``limit``, oldest first.

    The attempt log keeps no event bodies: they are rebuilt from the audit trail, as a
    replay does. An event's audit row comes no later than its first attempt (the log's
    attempt 1 of the event, else the earliest attempt seen) and no earlier than
    :data:`AUDIT_LAG` before it (give or take a few minutes of the clocks' skew), so the
    trail is read newest first over that span and stops as soon as every event is found."""
    failed = dead_lettered(attempts.since(endpoint.endpoint_id, iso_timestamp(_utc(since))))
    first: dict[str, str] = {}
    for event_id, seen_at in failed.items():
        own = attempts.get(endpoint.endpoint_id, event_id, 1)
        first[event_id] = min(own.attempted_at, seen_at) if own is not None else seen_at
    chosen = sorted(first, key=lambda event_id: (first[event_id], event_id))[:limit]
    if not chosen:
        return Recovery(len(failed), [], [])
    wanted = set(chosen)
    found: dict[str, CloudEvent] = {}
    until = datetime.fromisoformat(max(first[e] for e in chosen)) + _CLOCK_SKEW
    start = datetime.fromisoformat(min(first[e] for e in chosen)) - AUDIT_LAG
    rows = _audit_notifications(ddb, events_table, endpoint, start, until, newest_first=True)
    for _, notification in rows:
        if notification.id in wanted:
            found[notification.id] = notification
            if len(found) == len(wanted):
                break
    events = [found[e] for e in chosen if e in found]
    queue.redeliver(endpoint, events, request=uuid.uuid4().hex)
    return Recovery(len(failed), events, [e for e in chosen if e not in found])
