"""The webhook attempt log: one DynamoDB item per attempt of one event to one endpoint.

The table ``{prefix}webhook-attempts`` (:class:`pulse.topology.WebhookNames`) has the hash key
``endpoint_id`` and the range key ``attempt_key`` = ``{event id}#{attempt:03d}``, so an
event's attempts sit together in order (a test or a replay of the event numbers its own
attempts under ``{event id}@{request}``, which is the ``event_id`` its items carry); the
index ``by-time`` (``endpoint_id``, ``attempted_at``) lists an endpoint's attempts newest
first. Each item expires with the TTL attribute ``expires_at``
(``PULSE_WEBHOOK_ATTEMPT_TTL_SECONDS`` after the attempt).

An item is first the attempt's *claim*, then its record:

- :meth:`AttemptLog.claim` writes it with ``state`` ``sending``, an ``owner`` and a lease
  (``lease_until``), on condition that no item of that (endpoint, event, attempt number)
  exists — or that one exists still ``sending`` with its lease run out (its worker died). So
  however many copies of one scheduled attempt a queue hands out, one worker makes it;
  the others get :class:`Taken` (what the item says, or how long its lease still runs).
- :meth:`AttemptLog.finish` records the answer (``succeeded`` or ``failed``: time, status
  code, latency, a capped excerpt of the body, the error) and what follows a failure
  (``next``: ``retry`` at ``next_at``, or ``dead``), on condition that the claim is still
  the caller's. :meth:`AttemptLog.followed_up` notes that the follow-up (the next attempt
  scheduled, or the dead letter sent) was done, so a copy of the message arriving later
  does nothing at all.

:meth:`AttemptLog.query` is the log as a user reads it (``pulse webhooks attempts``, the
endpoints API): an endpoint's attempts, newest first, optionally of one event or of one
outcome, a page at a time; :meth:`AttemptLog.since` every attempt from a time on, which
recovery reads. The class wraps a blocking boto3 client; async callers run it in
a thread.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import orjson

from pulse.aws_errors import AWS_ERRORS, AwsErrorKind, as_pulse_error, classify_aws_error
from pulse.events import iso_timestamp

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "BY_TIME_INDEX",
    "FAILED",
    "NEXT_DEAD",
    "NEXT_RETRY",
    "SENDING",
    "STATUSES",
    "SUCCEEDED",
    "AttemptLog",
    "AttemptPage",
    "AttemptRecord",
    "AttemptResult",
    "Claim",
    "Taken",
    "attempt_key",
]

SENDING: Final = "sending"
SUCCEEDED: Final = "succeeded"
FAILED: Final = "failed"
STATUSES: Final = (SUCCEEDED, FAILED)  # what a reader may filter on
NEXT_RETRY: Final = "retry"
NEXT_DEAD: Final = "dead"
BY_TIME_INDEX: Final = "by-time"
RESPONSE_EXCERPT_CHARS: Final = 1_024
_ERROR_CHARS: Final = 1_000
_MAX_PAGE: Final = 1_000


def attempt_key(event_id: str, attempt: int) -> str:
    """The range key of an event's attempt: ``{event id}#{attempt:03d}`` (sorts in order)."""
    return f"{event_id}#{attempt:03d}"


@dataclass(frozen=True)
class AttemptResult:
    """What one POST gave: a status code (None when no answer came), the time it took, the
    start of the body, and the error (``HTTP 500``, ``ClientConnectorError: …``; None for a
    2xx)."""

    status_code: int | None
    latency_ms: int
    response: str = ""
    error: str | None = None


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt as the log holds it."""

    endpoint_id: str
    event_id: str
    attempt: int
    state: str  # sending, succeeded, failed
    attempted_at: str  # ISO-8601 UTC, milliseconds
    account_id: str = ""
    status_code: int | None = None
    latency_ms: int | None = None
    response: str | None = None
    error: str | None = None
    next: str | None = None  # after a failure: retry or dead
    next_at_ms: int | None = None  # when the next attempt is due (next == retry)
    followed_up: bool = False
    owner: str = ""
    lease_until_ms: int = 0

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> AttemptRecord:
        def text(name: str) -> str | None:
            value = item.get(name)
            return str(value["S"]) if value and "S" in value else None

        def number(name: str) -> int | None:
            value = item.get(name)
            return int(value["N"]) if value and "N" in value else None

        return cls(
            endpoint_id=str(item["endpoint_id"]["S"]),
            event_id=text("event_id") or "",
            attempt=number("attempt") or 0,
            state=text("state") or SENDING,
            attempted_at=text("attempted_at") or "",
            account_id=text("account_id") or "",
            status_code=number("status_code"),
            latency_ms=number("latency_ms"),
            response=text("response"),
            error=text("error"),
            next=text("next"),
            next_at_ms=number("next_at"),
            followed_up=bool(item.get("followed_up", {}).get("BOOL", False)),
            owner=text("owner") or "",
            lease_until_ms=number("lease_until") or 0,
        )

    def to_json(self) -> dict[str, Any]:
        """The record as a reader sees it (the claim's owner and lease left out)."""
        return {
            "endpoint_id": self.endpoint_id,
            "event_id": self.event_id,
            "attempt": self.attempt,
            "status": self.state,
            "attempted_at": self.attempted_at,
            "status_code": self.status_code,
            "latency_ms": self.latency_ms,
            "response": self.response,
            "error": self.error,
            "next": self.next,
            "next_at": _iso_ms(self.next_at_ms) if self.next_at_ms is not None else None,
        }


@dataclass(frozen=True)
class Claim:
    """The caller owns the attempt: it makes it, then :meth:`AttemptLog.finish` es it."""

    record: AttemptRecord


@dataclass(frozen=True)
class Taken:
    """Another claim holds the attempt: finished (``record.state`` not ``sending``: only its
    follow-up may be left to do), or still ``sending`` for ``busy_seconds`` more."""

    record: AttemptRecord
    busy_seconds: float = 0.0


@dataclass(frozen=True)
class AttemptPage:
    """A page of the log, newest first; ``next_cursor`` reads the next (None: no more)."""

    items: list[AttemptRecord]
    next_cursor: str | None


# The condition of every change to a claim: still sending, still the caller's.
_CLAIMED: Final = "#state = :sending AND #owner = :owner"
_CLAIM_NAMES: Final = {"#state": "state", "#owner": "owner"}


def _claim_values(record: AttemptRecord) -> dict[str, Any]:
    return {":sending": {"S": SENDING}, ":owner": {"S": record.owner}}


def _iso_ms(ms: int) -> str:
    return iso_timestamp(datetime.fromtimestamp(ms / 1000, UTC))


def _now_ms() -> int:
    return int(time.time() * 1000)


class AttemptLog:
    """The attempts table, over a blocking boto3 DynamoDB client (module doc)."""

    def __init__(self, ddb: Any, table: str, *, ttl_seconds: int = 30 * 86_400) -> None:
        self._ddb = ddb
        self.table = table
        self._ttl = ttl_seconds

    # -- the deliverer's side ----------------------------------------------------------
    def claim(
        self,
        endpoint_id: str,
        event_id: str,
        attempt: int,
        *,
        account_id: str,
        owner: str,
        lease_seconds: float,
        now_ms: int | None = None,
    ) -> Claim | Taken:
        """Claim attempt ``attempt`` of ``event_id`` to ``endpoint_id`` (module doc)."""
        now = _now_ms() if now_ms is None else now_ms
        record = AttemptRecord(
            endpoint_id=endpoint_id,
            event_id=event_id,
            attempt=attempt,
            state=SENDING,
            attempted_at=_iso_ms(now),
            account_id=account_id,
            owner=owner,
            lease_until_ms=now + int(lease_seconds * 1000),
        )
        item = {
            "endpoint_id": {"S": endpoint_id},
            "attempt_key": {"S": attempt_key(event_id, attempt)},
            "event_id": {"S": event_id},
            "account_id": {"S": account_id},
            "attempt": {"N": str(attempt)},
            "state": {"S": SENDING},
            "owner": {"S": owner},
            "lease_until": {"N": str(record.lease_until_ms)},
            "attempted_at": {"S": record.attempted_at},
            "expires_at": {"N": str(now // 1000 + self._ttl)},
        }
        try:
            self._ddb.put_item(
                TableName=self.table,
                Item=item,
                ConditionExpression=(
                    "attribute_not_exists(attempt_key) OR (#state = :sending AND #lease < :now)"
                ),
                ExpressionAttributeNames={"#state": "state", "#lease": "lease_until"},
                ExpressionAttributeValues={":sending": {"S": SENDING}, ":now": {"N": str(now)}},
            )
        except AWS_ERRORS as exc:
            if classify_aws_error(exc) is not AwsErrorKind.CONDITION_FAILED:
                raise as_pulse_error(exc, f"claim webhook attempt {attempt}", delay=2.0) from exc
            held = self.get(endpoint_id, event_id, attempt)
            if held is None:  # gone meanwhile (released, or expired): claim again later
                return Taken(record, busy_seconds=1.0)
            busy = (held.lease_until_ms - now) / 1000 if held.state == SENDING else 0.0
            return Taken(held, busy_seconds=max(busy, 0.0))
        return Claim(record)

    def renew(self, claim: Claim, lease_seconds: float) -> bool:
        """Extend the claim's lease to ``lease_seconds`` from now; False if it is no longer
        the caller's (it ran out and another worker took the attempt over)."""
        r = claim.record
        until = _now_ms() + int(lease_seconds * 1000)
        try:
            self._ddb.update_item(
                TableName=self.table,
                Key=self._key(r.endpoint_id, r.event_id, r.attempt),
                UpdateExpression="SET #lease = :until",
                ConditionExpression=_CLAIMED,
                ExpressionAttributeNames={"#lease": "lease_until", **_CLAIM_NAMES},
                ExpressionAttributeValues={":until": {"N": str(until)}, **_claim_values(r)},
            )
        except AWS_ERRORS as exc:
            if classify_aws_error(exc) is AwsErrorKind.CONDITION_FAILED:
                return False
            raise as_pulse_error(exc, "renew webhook attempt lease", delay=1.0) from exc
        return True

    def release(self, claim: Claim) -> None:
        """Give up a claim before its request went out (the attempt is free again at once)."""
        r = claim.record
        try:
            self._ddb.delete_item(
                TableName=self.table,
                Key=self._key(r.endpoint_id, r.event_id, r.attempt),
                ConditionExpression=_CLAIMED,
                ExpressionAttributeNames=_CLAIM_NAMES,
                ExpressionAttributeValues=_claim_values(r),
            )
        except AWS_ERRORS as exc:
            if classify_aws_error(exc) is not AwsErrorKind.CONDITION_FAILED:
                raise as_pulse_error(exc, "release webhook attempt", delay=2.0) from exc

    def finish(
        self,
        claim: Claim,
        result: AttemptResult,
        *,
        next_step: str | None = None,
        next_at_ms: int | None = None,
    ) -> AttemptRecord | None:
        """Record ``result`` for the claimed attempt (``succeeded`` for a 2xx, else
        ``failed`` with ``next_step`` ``retry`` at ``next_at_ms`` or ``dead``). The record;
        None when the claim is no longer the caller's (another worker took it over)."""
        r = claim.record
        state = SUCCEEDED if result.error is None else FAILED
        fields: dict[str, tuple[str, Any]] = {
            "state": ("S", state),
            "latency_ms": ("N", result.latency_ms),
            "response": ("S", result.response[:RESPONSE_EXCERPT_CHARS]),
            "followed_up": ("BOOL", next_step is None),
            "status_code": ("N", result.status_code),
            "error": ("S", result.error[:_ERROR_CHARS] if result.error else None),
            "next": ("S", next_step),
            "next_at": ("N", next_at_ms),
        }
        present = {name: field for name, field in fields.items() if field[1] is not None}
        sets = ", ".join(f"#{name} = :{name}" for name in present)
        names = {f"#{name}": name for name in [*present, "owner", "lease_until"]}
        values: dict[str, Any] = {
            f":{name}": {kind: value if kind == "BOOL" else str(value)}
            for name, (kind, value) in present.items()
        }
        values |= _claim_values(r)
        try:
            self._ddb.update_item(
                TableName=self.table,
                Key=self._key(r.endpoint_id, r.event_id, r.attempt),
                UpdateExpression=f"SET {sets} REMOVE #lease_until",
                ConditionExpression=_CLAIMED,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except AWS_ERRORS as exc:
            if classify_aws_error(exc) is AwsErrorKind.CONDITION_FAILED:
                return None
            raise as_pulse_error(exc, f"record webhook attempt {r.attempt}", delay=2.0) from exc
        return replace(
            r,
            state=state,
            status_code=result.status_code,
            latency_ms=result.latency_ms,
            response=result.response[:RESPONSE_EXCERPT_CHARS],
            error=result.error,
            next=next_step,
            next_at_ms=next_at_ms,
            followed_up=next_step is None,
            lease_until_ms=0,
        )

    def followed_up(self, record: AttemptRecord) -> None:
        """Note that what follows the failed attempt (the next one scheduled, or the dead
        letter) is done."""
        try:
            self._ddb.update_item(
                TableName=self.table,
                Key=self._key(record.endpoint_id, record.event_id, record.attempt),
                UpdateExpression="SET #followed_up = :yes",
                ConditionExpression="attribute_exists(attempt_key)",
                ExpressionAttributeNames={"#followed_up": "followed_up"},
                ExpressionAttributeValues={":yes": {"BOOL": True}},
            )
        except AWS_ERRORS as exc:
            if classify_aws_error(exc) is not AwsErrorKind.CONDITION_FAILED:
                raise as_pulse_error(exc, "record webhook follow-up", delay=2.0) from exc

    def get(self, endpoint_id: str, event_id: str, attempt: int) -> AttemptRecord | None:
        try:
            got = self._ddb.get_item(
                TableName=self.table,
                Key=self._key(endpoint_id, event_id, attempt),
                ConsistentRead=True,
            )
        except AWS_ERRORS as exc:
            raise as_pulse_error(exc, f"read webhook attempt {attempt}", delay=2.0) from exc
        item = got.get("Item")
        return AttemptRecord.from_item(item) if item else None

    @staticmethod
    def _key(endpoint_id: str, event_id: str, attempt: int) -> dict[str, Any]:
        return {
            "endpoint_id": {"S": endpoint_id},
            "attempt_key": {"S": attempt_key(event_id, attempt)},
        }

    # -- the reader's side -------------------------------------------------------------
    def query(
        self,
        endpoint_id: str,
        *,
        event_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> AttemptPage:
        """An endpoint's attempts, newest first (of one event: the last attempt first),
        only those that ``succeeded`` or ``failed`` when ``status`` says so; at most
        ``limit`` (1 to 1000), after the page ``cursor`` ended. ``ValueError`` for a cursor
        this method did not return, a limit out of range or an unknown status."""
        if not 1 <= limit <= _MAX_PAGE:
            raise ValueError(f"limit must be 1 to {_MAX_PAGE}")
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "ScanIndexForward": False,
            "ExpressionAttributeValues": {":e": {"S": endpoint_id}},
        }
        if event_id is None:
            kwargs["IndexName"] = BY_TIME_INDEX
            kwargs["KeyConditionExpression"] = "endpoint_id = :e"
        else:
            kwargs["KeyConditionExpression"] = "endpoint_id = :e AND begins_with(attempt_key, :k)"
            # The event's own attempts ({id}#NNN) and those of its tests and replays ({id}@…).
            kwargs["ExpressionAttributeValues"][":k"] = {"S": event_id}
            kwargs["ConsistentRead"] = True
        if status is not None:
            kwargs["FilterExpression"] = "#state = :status"
            kwargs["ExpressionAttributeNames"] = {"#state": "state"}
            kwargs["ExpressionAttributeValues"][":status"] = {"S": status}
        if cursor is not None:
            kwargs["ExclusiveStartKey"] = _start_key(cursor, endpoint_id, by_time=event_id is None)
        items: list[dict[str, Any]] = []
        more = False
        try:
            while True:
                page = self._ddb.query(**kwargs, Limit=limit - len(items) + 1)
                items += page.get("Items", [])
                if len(items) > limit:
                    more = True
                    break
                start = page.get("LastEvaluatedKey")
                if not start:
                    break
                kwargs["ExclusiveStartKey"] = start
        except AWS_ERRORS as exc:
            raise as_pulse_error(exc, f"read the attempts of {endpoint_id}") from exc
        records = [AttemptRecord.from_item(i) for i in items[:limit]]
        next_cursor = _cursor(items[limit - 1], by_time=event_id is None) if more else None
        return AttemptPage(records, next_cursor)

    def since(self, endpoint_id: str, since: str) -> Iterator[AttemptRecord]:
        """Every attempt to ``endpoint_id`` made at ``since`` (ISO-8601 UTC, as the log
        writes ``attempted_at``) or later, newest first, read by the index ``by-time``."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": BY_TIME_INDEX,
            "KeyConditionExpression": "endpoint_id = :e AND attempted_at >= :s",
            "ExpressionAttributeValues": {":e": {"S": endpoint_id}, ":s": {"S": since}},
            "ScanIndexForward": False,
            "Limit": _MAX_PAGE,
        }
        while True:
            try:
                page = self._ddb.query(**kwargs)
            except AWS_ERRORS as exc:
                raise as_pulse_error(exc, f"read the attempts of {endpoint_id}") from exc
            yield from (AttemptRecord.from_item(i) for i in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _cursor(item: dict[str, Any], *, by_time: bool) -> str:
    """The page's last item's keys, as an opaque text."""
    keys = {"k": item["attempt_key"]["S"]}
    if by_time:
        keys["t"] = item["attempted_at"]["S"]
    return base64.urlsafe_b64encode(orjson.dumps(keys)).decode().rstrip("=")


def _start_key(cursor: str, endpoint_id: str, *, by_time: bool) -> dict[str, Any]:
    try:
        keys = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        key: dict[str, Any] = {
            "endpoint_id": {"S": endpoint_id},
            "attempt_key": {"S": str(keys["k"])},
        }
        if by_time:
            key["attempted_at"] = {"S": str(keys["t"])}
    except (binascii.Error, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError("not a cursor of this listing") from exc
    return key
