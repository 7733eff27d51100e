"""The automatic disabling of a webhook endpoint that keeps failing: what its row records,
the one conditional write that disables it, and the event that tells its account.

On the endpoint's row of ``{prefix}webhooks`` (:mod:`pulse.webhook_endpoints`):

- ``failing_since`` (ISO time): since when every attempt to the endpoint failed. A failed
  attempt sets it unless set (``SET failing_since = if_not_exists(failing_since, :now)``,
  :meth:`EndpointHealthTable.mark_failing`); a successful one removes it (condition
  ``attribute_exists(failing_since)``: nothing to remove is no write,
  :meth:`EndpointHealthTable.clear_failing`). PATCH ``{"disabled": false}`` removes it too,
  so a re-enabled endpoint starts afresh. The API and the CLI show it.
- Once ``failing_since`` is at least ``PULSE_WEBHOOK_DISABLE_AFTER_SECONDS`` old (five days
  by default; 0: never), the next failed attempt disables the endpoint with one conditional
  UpdateItem (:meth:`EndpointHealthTable.disable`): ``SET disabled = true, disabled_reason,
  updated_at`` if ``failing_since = :seen AND failing_since <= :cutoff AND
  (attribute_not_exists(disabled) OR disabled = false)`` (``:seen``: the ``failing_since``
  the worker holds, so the reason names the very period it ends). Of every worker process
  racing to do it, exactly one wins; a success that cleared ``failing_since`` meanwhile
  makes the condition fail, so an endpoint that recovered is never disabled on stale
  evidence.
- ``disabled_announced`` (the ``failing_since`` whose disabling was announced): written
  after the announcement (:meth:`EndpointHealthTable.mark_announced`). The announcement is
  a :data:`~pulse.events.WEBHOOK_ENDPOINT_DISABLED` CloudEvent (:func:`endpoint_disabled_event`)
  whose id is determined by the endpoint and its ``failing_since``, so whoever sends it,
  however often, sends the same event: the account channel keeps one per id and the webhook
  fan-out's deduplication id is the event id's. A worker that dies between the disabling and
  the announcement loses nothing: whoever next finds the endpoint disabled automatically
  with no announcement recorded for its ``failing_since`` — the copy of the message the dead
  worker held, or any delivery held back for the endpoint — sends it
  (:meth:`EndpointHealthTable.pending_announcement`).

Every call is blocking (boto3); an AWS failure is Pulse's error of its kind
(:mod:`pulse.aws_errors`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from pulse.aws_errors import AWS_ERRORS, AwsErrorKind, as_pulse_error, classify_aws_error
from pulse.events import WEBHOOK_ENDPOINT_DISABLED, iso_timestamp, new_event, stable_event_id
from pulse.webhook_endpoints import WebhookEndpoint

if TYPE_CHECKING:
    from pulse.events import CloudEvent

__all__ = [
    "DISABLED_SOURCE",
    "WEBHOOK_ENDPOINT_DISABLED",
    "Disabling",
    "EndpointHealthTable",
    "disable_reason",
    "disabled_automatically",
    "due_for_disabling",
    "endpoint_disabled_event",
    "failing_cutoff",
]

DISABLED_SOURCE: Final = "/pulse/webhooks"
ANNOUNCED: Final = "disabled_announced"
_REASON_PREFIX: Final = "failing continuously since "


def failing_cutoff(now: datetime, disable_after_seconds: int) -> str:
    """The latest ``failing_since`` that disables an endpoint at ``now``."""
    return iso_timestamp(now - timedelta(seconds=disable_after_seconds))


def due_for_disabling(failing_since: str | None, now: datetime, disable_after_seconds: int) -> bool:
    """Whether an endpoint failing since ``failing_since`` (None: not failing) has failed
    long enough to be disabled at ``now``; never when ``disable_after_seconds`` is 0. Pure
    (ISO times of :func:`~pulse.events.iso_timestamp` compare as strings)."""
    if disable_after_seconds <= 0 or failing_since is None:
        return False
    return failing_since <= failing_cutoff(now, disable_after_seconds)


def disable_reason(failing_since: str, disable_after_seconds: int) -> str:
    """The ``disabled_reason`` of an endpoint disabled automatically."""
    return (
        f"{_REASON_PREFIX}{failing_since} (every attempt for over {disable_after_seconds} s); "
        'PATCH {"disabled": false} to send to it again'
    )


def disabled_automatically(endpoint: WebhookEndpoint) -> bool:
    """Whether ``endpoint`` is disabled because it kept failing (not by an operator)."""
    return (
        endpoint.disabled
        and endpoint.failing_since is not None
        and (endpoint.disabled_reason or "").startswith(_REASON_PREFIX + endpoint.failing_since)
    )


def endpoint_disabled_event(endpoint: WebhookEndpoint) -> CloudEvent:
    """The announcement that ``endpoint`` (disabled automatically) was disabled; its id is
    the same for every call about the same failing period."""
    failing_since = endpoint.failing_since or ""
    disabled_at = endpoint.updated_at or endpoint.created_at
    return new_event(
        type=WEBHOOK_ENDPOINT_DISABLED,
        source=DISABLED_SOURCE,
        subject=endpoint.endpoint_id,
        id=stable_event_id(endpoint.endpoint_id, failing_since, "endpoint_disabled"),
        time=datetime.fromisoformat(disabled_at),
        data={
            "account_id": endpoint.account_id,
            "endpoint_id": endpoint.endpoint_id,
            "url": endpoint.url,
            "failing_since": failing_since,
            "disabled_at": disabled_at,
            "reason": endpoint.disabled_reason or "",
        },
    )


@dataclass(frozen=True)
class Disabling:
    """What came of :meth:`EndpointHealthTable.disable`: the endpoint as it stands (None:
    removed), whether this call disabled it, and whether its announcement is still due."""

    endpoint: WebhookEndpoint | None
    won: bool
    announce: bool


class EndpointHealthTable:
    """The writes of the automatic disabling on the webhooks table (module doc)."""

    def __init__(self, ddb: Any, table: str) -> None:
        self._ddb = ddb
        self._table = table

    def mark_failing(self, account_id: str, endpoint_id: str, *, now: datetime) -> str | None:
        """Record a failed attempt: ``failing_since`` as it now stands (``now`` unless it was
        set before); None if the endpoint was removed."""
        try:
            got = self._ddb.update_item(
                TableName=self._table,
                Key=_key(account_id, endpoint_id),
                UpdateExpression="SET failing_since = if_not_exists(failing_since, :now)",
                ConditionExpression="attribute_exists(endpoint_id)",
                ExpressionAttributeValues={":now": {"S": iso_timestamp(now)}},
                # ALL_NEW: UPDATED_NEW may leave out a value if_not_exists kept.
                ReturnValues="ALL_NEW",
            )
        except AWS_ERRORS as exc:
            if classify_aws_error(exc) is AwsErrorKind.CONDITION_FAILED:
                return None
            raise as_pulse_error(exc, f"mark webhook endpoint {endpoint_id} failing") from exc
        return str(got["Attributes"]["failing_since"]["S"])

    def clear_failing(self, account_id: str, endpoint_id: str) -> bool:
        """Record a successful attempt: remove ``failing_since``; False if it was not set."""
        try:
            self._ddb.update_item(
                TableName=self._table,
                Key=_key(account_id, endpoint_id),
                UpdateExpression="REMOVE failing_since",
                ConditionExpression="attribute_exists(failing_since)",
            )
        except AWS_ERRORS as exc:
            if classify_aws_error(exc) is AwsErrorKind.CONDITION_FAILED:
                return False
            raise as_pulse_error(exc, f"clear webhook endpoint {endpoint_id} failing") from exc
        return True

    def disable(
        self,
        account_id: str,
        endpoint_id: str,
        failing_since: str,
        *,
        disable_after_seconds: int,
        now: datetime,
    ) -> Disabling:
        """Disable the endpoint, failing since ``failing_since``, if that is at least
        ``disable_after_seconds`` ago and it is not disabled yet: one conditional write,
        which one caller wins. A caller that loses reads the endpoint: if it was failing
        since another time (a stale ``failing_since`` in hand) long enough, it tries once
        more with that one; if it was disabled automatically with no announcement recorded
        (its winner may have died before announcing), it is told to announce."""
        cutoff = failing_cutoff(now, disable_after_seconds)
        try:
            got = self._ddb.update_item(
                TableName=self._table,
                Key=_key(account_id, endpoint_id),
                UpdateExpression="SET disabled = :true, disabled_reason = :reason, "
                "updated_at = :now",
                ConditionExpression="failing_since = :since AND failing_since <= :cutoff AND "
                "(attribute_not_exists(disabled) OR disabled = :false)",
                ExpressionAttributeValues={
                    ":true": {"BOOL": True},
                    ":false": {"BOOL": False},
                    ":since": {"S": failing_since},
                    ":cutoff": {"S": cutoff},
                    ":reason": {"S": disable_reason(failing_since, disable_after_seconds)},
                    ":now": {"S": iso_timestamp(now)},
                },
                ReturnValues="ALL_NEW",
            )
        except AWS_ERRORS as exc:
            if classify_aws_error(exc) is not AwsErrorKind.CONDITION_FAILED:
                raise as_pulse_error(exc, f"disable webhook endpoint {endpoint_id}") from exc
            read = self._read(account_id, endpoint_id)
            return self._lost(read, failing_since, disable_after_seconds, now)
        return Disabling(WebhookEndpoint.from_item(got["Attributes"]), won=True, announce=True)

    def _lost(
        self,
        read: tuple[WebhookEndpoint, str] | None,
        failing_since: str,
        disable_after_seconds: int,
        now: datetime,
    ) -> Disabling:
        """After a lost disabling write: the endpoint as read, and what is left to do."""
        if read is None:
            return Disabling(None, won=False, announce=False)
        endpoint, announced = read
        since = endpoint.failing_since
        if (
            not endpoint.disabled
            and since is not None
            and since != failing_since
            and due_for_disabling(since, now, disable_after_seconds)
        ):
            return self.disable(
                endpoint.account_id,
                endpoint.endpoint_id,
                since,
                disable_after_seconds=disable_after_seconds,
                now=now,
            )
        return Disabling(endpoint, won=False, announce=_unannounced(endpoint, announced))

    def pending_announcement(self, account_id: str, endpoint_id: str) -> WebhookEndpoint | None:
        """The endpoint, if it was disabled automatically and its announcement is not
        recorded (consistent read); None otherwise."""
        read = self._read(account_id, endpoint_id)
        return read[0] if read is not None and _unannounced(*read) else None

    def mark_announced(self, endpoint: WebhookEndpoint) -> None:
        """Record that the disabling of ``endpoint`` (for its ``failing_since``) was
        announced; nothing if it has been re-enabled meanwhile."""
        try:
            self._ddb.update_item(
                TableName=self._table,
                Key=_key(endpoint.account_id, endpoint.endpoint_id),
                UpdateExpression=f"SET {ANNOUNCED} = :since",
                ConditionExpression="failing_since = :since",
                ExpressionAttributeValues={":since": {"S": endpoint.failing_since or ""}},
            )
        except AWS_ERRORS as exc:
            if classify_aws_error(exc) is not AwsErrorKind.CONDITION_FAILED:
                what = f"record webhook endpoint {endpoint.endpoint_id} disabled"
                raise as_pulse_error(exc, what) from exc

    def _read(self, account_id: str, endpoint_id: str) -> tuple[WebhookEndpoint, str] | None:
        """The endpoint (consistent read) and the ``failing_since`` whose disabling was
        announced ("" if none); None if there is no such endpoint."""
        try:
            got = self._ddb.get_item(
                TableName=self._table, Key=_key(account_id, endpoint_id), ConsistentRead=True
            )
        except AWS_ERRORS as exc:
            raise as_pulse_error(exc, f"read webhook endpoint {endpoint_id}") from exc
        item = got.get("Item")
        if not item:
            return None
        return WebhookEndpoint.from_item(item), str(item.get(ANNOUNCED, {}).get("S", ""))


def _unannounced(endpoint: WebhookEndpoint, announced: str) -> bool:
    return disabled_automatically(endpoint) and announced != endpoint.failing_since


def _key(account_id: str, endpoint_id: str) -> dict[str, Any]:
    return {"account_id": {"S": account_id}, "endpoint_id": {"S": endpoint_id}}
