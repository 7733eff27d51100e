"""DynamoDB access of the ingest service: the thin I/O edge.

boto3 is synchronous; every call runs in the event loop's default executor
(``asyncio.to_thread``), which :func:`ingest.server.serve` bounds to
``aws_concurrency`` threads — the same size as the client's connection pool. The PutItem
of every payment goes through :class:`ingest.conditional_put.ConditionalPut` (its body
built here, the rest botocore's); the other calls through the client's methods.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final

import orjson

from ingest.conditional_put import ConditionalPut
from pulse.aws_errors import AWS_ERRORS, as_pulse_error
from pulse.errors import ConditionFailedError
from pulse.logging import get_logger
from pulse.payment_states import PaymentTransitions
from pulse.payments import item_from_image

if TYPE_CHECKING:
    from collections.abc import Callable

    from pulse.payment_states import Reviewer, ReviewPage, TransitionResult
    from pulse.settings import ResourceNames

__all__ = ["PaymentStore"]


log = get_logger("ingest.store")

NEW_PAYMENT: Final = "attribute_not_exists(payment_id)"


class PaymentStore:
    """Payments, their audit trail and their review in DynamoDB."""

    def __init__(self, ddb: Any, names: ResourceNames) -> None:
        self._ddb = ddb
        self._payments = names.payments_table
        self._events = names.events_table
        self._put_new = ConditionalPut(ddb, self._payments, NEW_PAYMENT)
        self._transitions = PaymentTransitions(ddb, self._payments)

    async def _call(self, method: str, **kwargs: Any) -> Any:
        """One DynamoDB call of the client's ``method``."""
        return await self._run(method, getattr(self._ddb, method), **kwargs)

    @staticmethod
    async def _run(what: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``call`` in the executor; a failure as Pulse's error of its kind
        (:mod:`pulse.aws_errors`): throttling, an unreachable endpoint or a missing table is
        a :class:`RetryableError` (the API answers 503), a failed condition a
        :class:`ConditionFailedError`."""
        try:
            return await asyncio.to_thread(call, *args, **kwargs)
        except AWS_ERRORS as exc:
            raise as_pulse_error(exc, f"DynamoDB {what}") from exc

    async def put_new(self, item: dict[str, Any]) -> bool:
        """Write ``item`` unless its payment id exists; ``False`` if it does (nothing written).

        Raises :class:`RetryableError` when DynamoDB is throttling or unreachable.
        """
        try:
            await self._run("put_item", self._put_new, item)
        except ConditionFailedError:
            return False
        return True

    async def get(self, payment_id: str) -> dict[str, Any] | None:
        """The deserialised payment item (consistent read), or ``None``."""
        response = await self._call(
            "get_item",
            TableName=self._payments,
            Key={"payment_id": {"S": payment_id}},
            ConsistentRead=True,
        )
        item = response.get("Item")
        return item_from_image(item) if item else None

    async def events(self, payment_id: str, limit: int) -> list[dict[str, Any]]:
        """The payment's audit trail, oldest first (ascending sort key), at most ``limit``."""
        events: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self._events,
            "KeyConditionExpression": "payment_id = :p",
            "ExpressionAttributeValues": {":p": {"S": payment_id}},
            "ScanIndexForward": True,
            "ConsistentRead": True,
        }
        while len(events) < limit:
            page = await self._call("query", Limit=min(limit - len(events), 500), **kwargs)
            for row in page.get("Items", []):
                event = _row_event(row)
                if event is not None:
                    events.append(event)
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return events[:limit]

    async def review(
        self, payment_id: str, decision: str, reviewer: Reviewer, note: str | None
    ) -> TransitionResult:
        """Decide a payment in REVIEW, once (:meth:`PaymentTransitions.review`)."""
        return await asyncio.to_thread(
            self._transitions.review, payment_id, decision, reviewer, note
        )

    async def review_queue(self, limit: int, cursor: str | None) -> ReviewPage:
        """Payments in REVIEW, oldest first (:meth:`PaymentTransitions.review_queue`)."""
        return await asyncio.to_thread(self._transitions.review_queue, limit=limit, cursor=cursor)

    async def check_tables(self) -> None:
        """Readiness: both tables exist and are ACTIVE; raises otherwise."""
        for table in (self._payments, self._events):
            described = await self._call("describe_table", TableName=table)
            status = described["Table"]["TableStatus"]
            if status != "ACTIVE":
                raise RuntimeError(f"table {table} is {status}")


def _row_event(row: dict[str, Any]) -> dict[str, Any] | None:
    raw = row.get("event", {}).get("S")
    try:
        event = orjson.loads(raw) if raw is not None else None
    except orjson.JSONDecodeError:
        event = None
    if not isinstance(event, dict):
        log.warning(
            "skipping unreadable audit row",
            payment_id=row.get("payment_id", {}).get("S"),
            sk=row.get("sk", {}).get("S"),
        )
        return None
    return event
