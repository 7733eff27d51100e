"""``/v1/webhook-endpoints``: account holders manage their own webhook endpoints, operators
everyone's, through the code ``pulse webhooks`` runs (:mod:`pulse.webhook_endpoints`,
:mod:`pulse.webhook_deliveries`).

- ``POST /v1/webhook-endpoints`` registers one (201, its signing secret shown only there);
  ``GET`` lists (an account its own, an operator every account's or ``?account_id=``'s);
  ``GET``, ``PATCH``, ``DELETE /v1/webhook-endpoints/{endpoint_id}``;
- ``POST …/{endpoint_id}/rotate-secret``: a new secret, shown once; the old one keeps signing
  beside it until ``previous_secret_expires_at``;
- ``POST …/{endpoint_id}/test``: a ``pulse.webhook.test`` event, queued like any delivery;
- ``POST …/{endpoint_id}/replay`` ``{since, until?}``: the account's notifications of that
  span again, with their original ids, at most ``PULSE_WEBHOOK_REPLAY_MAX_EVENTS`` a
  request (the answer's ``next_since`` goes on);
- ``GET …/{endpoint_id}/attempts?event_id=&status=&limit=&cursor=``: the attempt log, newest
  first;
- ``POST …/{endpoint_id}/recover`` ``{since}``: the events whose latest attempt since then
  was dead-lettered, queued again with their original ids (bounded like a replay).

Every route needs ``webhooks:manage`` (a JWT has it; an API key only if created with it).
Another account's endpoint is 404, as one that does not exist. A URL the SSRF policy
refuses is 422 ``webhook-url-refused`` with the reason in words.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from ingest.authz import Action, Verdict, authorize
from ingest.handling import allowed, json_response, read_body
from ingest.validation import (
    ID_PATTERN,
    JsonNumber,
    page_limit,
    parse_json,
    unknown_parameters,
)
from pulse.events import iso_timestamp, utc_now
from pulse.logging import get_logger
from pulse.problems import FieldError, Problem, bad_request, not_found, unprocessable
from pulse.webhook_attempts import STATUSES
from pulse.webhook_deliveries import WEBHOOK_TEST, recover, replay, replay_window, send_test
from pulse.webhook_endpoints import InvalidCursorError, InvalidField, InvalidFields

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ingest.settings import IngestSettings
    from pulse.credentials import Principal
    from pulse.webhook_attempts import AttemptLog
    from pulse.webhook_deliveries import DeliveryQueue
    from pulse.webhook_endpoints import WebhookEndpoint, WebhookEndpoints

__all__ = [
    "DEFAULT_ATTEMPT_LIMIT",
    "DEFAULT_ENDPOINT_LIMIT",
    "MAX_ATTEMPT_LIMIT",
    "MAX_ENDPOINT_LIMIT",
    "RFC3339_PATTERN",
    "WebhookEndpointsApi",
]

log = get_logger("ingest.webhooks")

DEFAULT_ENDPOINT_LIMIT: Final = 50
MAX_ENDPOINT_LIMIT: Final = 100
DEFAULT_ATTEMPT_LIMIT: Final = 50
MAX_ATTEMPT_LIMIT: Final = 1000
# RFC 3339 date-time, as JSON Schema's "date-time" format reads it.
RFC3339_PATTERN: Final = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
_RFC3339: Final = re.compile(RFC3339_PATTERN)
_FRACTION: Final = re.compile(r"\.[0-9]+")
_ID: Final = re.compile(ID_PATTERN)
_WHOLE: Final = re.compile(r"-?[0-9]{1,18}")
_NO_STORE: Final = {"Cache-Control": "no-store"}  # answers that carry a secret
_FIELDS: Final = frozenset({"url", "description", "event_types", "schedule", "rate_per_second"})


def _endpoint_problem(exc: InvalidFields) -> Problem:
    """422: ``webhook-url-refused`` when the SSRF policy refused the URL (its reason in
    words), ``invalid-schedule`` for a cron expression croniter refuses or whose windows are
    more than 7 days apart, else ``validation``;
    every bad field listed."""
    errors = [FieldError(field=e.field, message=e.message) for e in exc.errors]
    refused = exc.url_refused
    if refused is not None:
        return Problem(
            422,
            "webhook-url-refused",
            "Webhook URL refused",
            f"the url is refused: {refused.message}",
            errors=errors,
        )
    if {e.field for e in exc.errors} == {"schedule"}:
        return Problem(
            422, "invalid-schedule", "Invalid schedule", exc.errors[0].message, errors=errors
        )
    return unprocessable(errors)


def _number(value: Any) -> Any:
    """A JSON number as Python's: a whole one (``5``) an int, any other (``2.5``, ``1e3``)
    a float, which the fields taking whole numbers refuse; anything else as it is."""
    if not isinstance(value, JsonNumber):
        return value
    if _WHOLE.fullmatch(value.text):
        return int(value.text)
    return float(value.text)


def _object(raw: bytes) -> dict[str, Any]:
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise unprocessable([FieldError(field="(body)", message="the body must be a JSON object")])
    return {name: _number(value) for name, value in body.items()}


def _time(body: Mapping[str, Any], name: str) -> datetime | None:
    """An RFC 3339 time of the body (None if absent); 422 naming the field otherwise."""
    value = body.get(name)
    if value is None and name not in body:
        return None
    words = "must be an RFC 3339 time with its offset, such as 2026-12-04T10:00:00Z"
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise unprocessable([FieldError(field=name, message=words)])
    # Python keeps microseconds: a longer fraction is cut to six digits.
    text = _FRACTION.sub(lambda m: m.group()[:7], value.upper().replace("Z", "+00:00"))
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise unprocessable([FieldError(field=name, message=words)]) from None
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 pushed past the calendar by the offset
        raise Problem(
            422, "invalid-replay-window", "Invalid replay window", f"{name} is out of range"
        ) from None


class WebhookEndpointsApi:
    """The handlers of ``/v1/webhook-endpoints`` (see the module docstring)."""

    def __init__(
        self,
        settings: IngestSettings,
        endpoints: WebhookEndpoints,
        queue: DeliveryQueue,
        attempts: AttemptLog,
        ddb: Any,
    ) -> None:
        self._settings = settings
        self._endpoints = endpoints
        self._queue = queue
        self._attempts = attempts
        self._ddb = ddb

    def add_routes(self, app: web.Application) -> None:
        base = "/v1/webhook-endpoints"
        one = base + "/{endpoint_id}"
        app.router.add_post(base, self.create)
        app.router.add_get(base, self.list)
        app.router.add_get(one, self.get)
        app.router.add_patch(one, self.update)
        app.router.add_delete(one, self.delete)
        app.router.add_post(one + "/rotate-secret", self.rotate_secret)
        app.router.add_post(one + "/test", self.test)
        app.router.add_post(one + "/replay", self.replay)
        app.router.add_get(one + "/attempts", self.attempts)
        app.router.add_post(one + "/recover", self.recover)

    async def _body(self, request: web.Request, what: str) -> dict[str, Any]:
        return _object(await read_body(request, self._settings.max_body_bytes, what))

    async def _endpoint(self, request: web.Request) -> tuple[Principal, WebhookEndpoint]:
        """The principal and the endpoint of the path, if it may act on it; else 404."""
        principal = allowed(request, Action.MANAGE_WEBHOOKS)
        endpoint_id = request.match_info["endpoint_id"]
        owner = None if principal.is_ops else principal.account_id
        found = await asyncio.to_thread(self._endpoints.get, endpoint_id, owner)
        if found is None or (
            authorize(principal, Action.MANAGE_WEBHOOKS, found.account_id) is not Verdict.ALLOW
        ):
            raise not_found(f"no webhook endpoint {endpoint_id}")
        return principal, found

    async def create(self, request: web.Request) -> web.Response:
        """``POST /v1/webhook-endpoints``: 201 with the endpoint and its secret (only here)."""
        principal = allowed(request, Action.MANAGE_WEBHOOKS)
        body = await self._body(request, "the endpoint")
        account_id = body.pop("account_id", None)
        if account_id is None:
            account_id = principal.account_id
        elif not isinstance(account_id, str) or not _ID.fullmatch(account_id):
            message = "must be 1 to 128 letters, digits or the characters _ . @ -"
            raise unprocessable([FieldError(field="account_id", message=message)])
        if authorize(principal, Action.MANAGE_WEBHOOKS, account_id) is not Verdict.ALLOW:
            raise Problem(
                403,
                "forbidden",
                "Forbidden",
                f"this credential may not register endpoints for account {account_id}",
            )
        errors = [FieldError(field=n, message="unknown field") for n in sorted(set(body) - _FIELDS)]
        if "url" not in body:
            errors.append(FieldError(field="url", message="field required"))
        if errors:
            raise unprocessable(errors)
        try:
            made = await asyncio.to_thread(
                self._endpoints.create,
                account_id,
                body["url"],
                description=body.get("description"),
                event_types=body.get("event_types"),
                schedule=body.get("schedule"),
                rate_per_second=body.get("rate_per_second"),
                now=utc_now(),
            )
        except InvalidFields as exc:
            raise _endpoint_problem(exc) from None
        endpoint = made.endpoint
        log.info(
            "webhook endpoint registered",
            endpoint_id=endpoint.endpoint_id,
            account_id=account_id,
            principal=principal.label,
        )
        return json_response(
            {**endpoint.public(), "secret": made.secret},
            status=201,
            headers={"Location": f"/v1/webhook-endpoints/{endpoint.endpoint_id}", **_NO_STORE},
        )

    async def list(self, request: web.Request) -> web.Response:
        """``GET /v1/webhook-endpoints?account_id=&limit=&cursor=``."""
        principal = allowed(request, Action.MANAGE_WEBHOOKS)
        account_id, limit, cursor = _listing(request.query)
        if not principal.is_ops:
            if account_id not in (None, principal.account_id):
                raise Problem(
                    403,
                    "forbidden",
                    "Forbidden",
                    "an account lists only its own webhook endpoints",
                )
            account_id = principal.account_id
        try:
            page = await asyncio.to_thread(
                self._endpoints.page, account_id, limit=limit, cursor=cursor
            )
        except InvalidCursorError as exc:
            raise bad_request("invalid-cursor", "Invalid cursor", str(exc)) from None
        return json_response(
            {"items": [e.public() for e in page.items], "next_cursor": page.next_cursor}
        )

    async def get(self, request: web.Request) -> web.Response:
        """``GET /v1/webhook-endpoints/{endpoint_id}``."""
        _, endpoint = await self._endpoint(request)
        return json_response(endpoint.public())

    async def update(self, request: web.Request) -> web.Response:
        """``PATCH /v1/webhook-endpoints/{endpoint_id}``: the fields given, changed."""
        principal, endpoint = await self._endpoint(request)
        changes = await self._body(request, "the changes")
        try:
            updated = await asyncio.to_thread(
                self._endpoints.update, endpoint, changes, now=utc_now()
            )
        except InvalidFields as exc:
            raise _endpoint_problem(exc) from None
        if updated is None:
            raise not_found(f"no webhook endpoint {endpoint.endpoint_id}")
        log.info(
            "webhook endpoint changed",
            endpoint_id=endpoint.endpoint_id,
            fields=sorted(changes),
            principal=principal.label,
        )
        return json_response(updated.public())

    async def delete(self, request: web.Request) -> web.Response:
        """``DELETE /v1/webhook-endpoints/{endpoint_id}``: 204; its queued deliveries are
        dropped."""
        principal, endpoint = await self._endpoint(request)
        removed = await asyncio.to_thread(
            self._endpoints.delete, endpoint.account_id, endpoint.endpoint_id
        )
        if removed is None:
            raise not_found(f"no webhook endpoint {endpoint.endpoint_id}")
        log.info(
            "webhook endpoint removed", endpoint_id=endpoint.endpoint_id, principal=principal.label
        )
        return web.Response(status=204)

    async def rotate_secret(self, request: web.Request) -> web.Response:
        """``POST …/{endpoint_id}/rotate-secret``: the endpoint and its new secret (only
        here); the old one signs too until ``previous_secret_expires_at``."""
        principal, endpoint = await self._endpoint(request)
        rotated = await asyncio.to_thread(self._endpoints.rotate_secret, endpoint, now=utc_now())
        if rotated is None:
            raise not_found(f"no webhook endpoint {endpoint.endpoint_id}")
        log.info(
            "webhook secret rotated",
            endpoint_id=endpoint.endpoint_id,
            previous_valid_until=rotated.previous_valid_until,
            principal=principal.label,
        )
        return json_response(
            {**rotated.endpoint.public(), "secret": rotated.secret}, headers=_NO_STORE
        )

    def _sendable(self, endpoint: WebhookEndpoint) -> None:
        if endpoint.disabled:
            raise Problem(
                409,
                "endpoint-disabled",
                "Endpoint disabled",
                f"webhook endpoint {endpoint.endpoint_id} is disabled; "
                'PATCH it with {"disabled": false} first',
            )

    async def test(self, request: web.Request) -> web.Response:
        """``POST …/{endpoint_id}/test``: 202, a ``pulse.webhook.test`` event queued."""
        _, endpoint = await self._endpoint(request)
        self._sendable(endpoint)
        event = await asyncio.to_thread(send_test, self._queue, endpoint, now=utc_now())
        return json_response(
            {"endpoint_id": endpoint.endpoint_id, "event_id": event.id, "type": WEBHOOK_TEST},
            status=202,
        )

    async def replay(self, request: web.Request) -> web.Response:
        """``POST …/{endpoint_id}/replay`` ``{since, until?}``: 202, the notifications of the
        span queued again (oldest first, at most the configured number)."""
        principal, endpoint = await self._endpoint(request)
        body = await self._body(request, "the replay")
        unknown = sorted(set(body) - {"since", "until"})
        if unknown:
            raise unprocessable([FieldError(field=n, message="unknown field") for n in unknown])
        since = _time(body, "since")
        if since is None:
            raise unprocessable([FieldError(field="since", message="field required")])
        until = _time(body, "until")
        try:
            start, end = replay_window(since, until, now=utc_now())
        except InvalidField as exc:
            raise Problem(
                422, "invalid-replay-window", "Invalid replay window", exc.message
            ) from None
        self._sendable(endpoint)
        limit = self._settings.webhook_replay_max_events
        done = await asyncio.to_thread(
            replay,
            self._queue,
            self._ddb,
            self._settings.names.events_table,
            endpoint,
            since=start,
            until=end,
            limit=limit,
        )
        log.info(
            "webhook replay queued",
            endpoint_id=endpoint.endpoint_id,
            events=len(done.events),
            principal=principal.label,
        )
        return json_response(
            {
                "endpoint_id": endpoint.endpoint_id,
                "since": iso_timestamp(start),
                "until": iso_timestamp(end),
                "queued": len(done.events),
                "max_events": limit,
                "next_since": done.next_since,
            },
            status=202,
        )

    async def attempts(self, request: web.Request) -> web.Response:
        """``GET …/{endpoint_id}/attempts?event_id=&status=&limit=&cursor=``: the endpoint's
        attempts, newest first (of one event, and its tests and replays, with ``event_id``)."""
        _, endpoint = await self._endpoint(request)
        query = request.query
        errors = unknown_parameters(query, {"event_id", "status", "limit", "cursor"})
        status = query.get("status")
        if status is not None and status not in STATUSES:
            message = f"must be one of {', '.join(STATUSES)}"
            errors.append(FieldError(field="status", message=message))
        event_id = query.get("event_id")
        if event_id is not None and not event_id:
            errors.append(FieldError(field="event_id", message="must not be empty"))
        limit = page_limit(query, DEFAULT_ATTEMPT_LIMIT, MAX_ATTEMPT_LIMIT, errors)
        if errors:
            raise unprocessable(errors)
        try:
            page = await asyncio.to_thread(
                self._attempts.query,
                endpoint.endpoint_id,
                event_id=event_id,
                status=status,
                limit=limit,
                cursor=query.get("cursor") or None,
            )
        except ValueError as exc:
            raise bad_request("invalid-cursor", "Invalid cursor", str(exc)) from None
        return json_response(
            {"items": [r.to_json() for r in page.items], "next_cursor": page.next_cursor}
        )

    async def recover(self, request: web.Request) -> web.Response:
        """``POST …/{endpoint_id}/recover`` ``{since}``: 202, the events whose latest attempt
        since then was dead-lettered queued again, once each, with their original ids."""
        principal, endpoint = await self._endpoint(request)
        body = await self._body(request, "the recovery")
        unknown = sorted(set(body) - {"since"})
        if unknown:
            raise unprocessable([FieldError(field=n, message="unknown field") for n in unknown])
        since = _time(body, "since")
        if since is None:
            raise unprocessable([FieldError(field="since", message="field required")])
        self._sendable(endpoint)
        limit = self._settings.webhook_replay_max_events
        done = await asyncio.to_thread(
            recover,
            self._queue,
            self._attempts,
            self._ddb,
            self._settings.names.events_table,
            endpoint,
            since=since,
            limit=limit,
        )
        log.info(
            "webhook recovery queued",
            endpoint_id=endpoint.endpoint_id,
            failed=done.failed,
            events=len(done.events),
            missing=len(done.missing),
            principal=principal.label,
        )
        return json_response(
            {
                "endpoint_id": endpoint.endpoint_id,
                "since": iso_timestamp(since),
                "failed": done.failed,
                "queued": len(done.events),
                "event_ids": [e.id for e in done.events],
                "not_found": done.missing,
                "max_events": limit,
            },
            status=202,
        )


def _listing(query: Mapping[str, str]) -> tuple[str | None, int, str | None]:
    """``account_id``, ``limit`` and ``cursor`` of a listing; 422 naming each bad one."""
    errors = []
    account_id = query.get("account_id")
    if account_id is not None and not _ID.fullmatch(account_id):
        message = "must be 1 to 128 letters, digits or the characters _ . @ -"
        errors.append(FieldError(field="account_id", message=message))
    limit = page_limit(query, DEFAULT_ENDPOINT_LIMIT, MAX_ENDPOINT_LIMIT, errors)
    errors += unknown_parameters(query, {"account_id", "limit", "cursor"})
    if errors:
        raise unprocessable(errors)
    return account_id, limit, query.get("cursor") or None
