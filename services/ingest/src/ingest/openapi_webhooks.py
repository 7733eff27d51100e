"""The paths of the ingest API's webhook endpoints (``/v1/webhook-endpoints`` and the
operations on one endpoint), each behind the scope webhooks:manage with its common refusals;
their schemas are in :mod:`ingest.openapi_webhook_schemas`."""

from __future__ import annotations

from typing import Any, Final

from ingest.openapi_parts import json_response, page_parameters, problem, ref, secured
from ingest.validation import ID_PATTERN
from ingest.webhooks_api import (
    DEFAULT_ATTEMPT_LIMIT,
    DEFAULT_ENDPOINT_LIMIT,
    MAX_ATTEMPT_LIMIT,
    MAX_ENDPOINT_LIMIT,
)
from pulse.api_keys import WEBHOOKS_MANAGE
from pulse.problems import PROBLEM_BASE
from pulse.webhook_attempts import STATUSES
from pulse.webhook_deliveries import WEBHOOK_TEST
from pulse.webhook_endpoints import ENDPOINT_ID_PATTERN

__all__ = ["webhook_paths"]

_ENDPOINT_ID: Final = {
    "name": "endpoint_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": ENDPOINT_ID_PATTERN},
}
_ENDPOINT_NOT_FOUND: Final = "No such endpoint, or one of another account (they look the same)."


def _body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": ref(name)}}}


def _webhook_operation(
    operation_id: str,
    summary: str,
    description: str,
    answers: dict[str, Any],
    *,
    body: str | None = None,
    path_id: bool = True,
) -> dict[str, Any]:
    """An operation of /v1/webhook-endpoints: its own answers, the common refusals, and the
    scope webhooks:manage."""
    responses: dict[str, Any] = dict(answers)
    if path_id:
        responses["404"] = problem(_ENDPOINT_NOT_FOUND)
    if body is not None:
        responses.setdefault("422", problem("Invalid fields (each named in `errors`)."))
        responses["400"] = problem("Malformed JSON.")
        responses["413"] = problem("The body is larger than the limit.")
        responses["415"] = problem("The body is not application/json.")
    responses["500"] = problem("Unexpected error.")
    responses["503"] = problem("DynamoDB, SSM or SQS unavailable; retry later.")
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "description": description,
        "parameters": [_ENDPOINT_ID] if path_id else [],
        "responses": responses,
    }
    if body is not None:
        operation["requestBody"] = _body(body)
    return secured(operation, WEBHOOKS_MANAGE)


def webhook_paths() -> dict[str, Any]:
    """The paths of /v1/webhook-endpoints and of the operations on one endpoint."""
    refused = problem(
        f"Invalid fields (each named in `errors`); type {PROBLEM_BASE}webhook-url-refused for "
        f"a URL the SSRF guard refuses (the reason in words), {PROBLEM_BASE}invalid-schedule "
        "for a cron expression croniter refuses or whose windows are more than 7 days apart."
    )
    disabled = problem(f"The endpoint is disabled (type {PROBLEM_BASE}endpoint-disabled).")
    base = "/v1/webhook-endpoints"
    one = base + "/{endpoint_id}"
    return {
        base: {
            "post": _webhook_operation(
                "createWebhookEndpoint",
                "Register a webhook endpoint",
                "The account's events are POSTed to it, signed per the Standard Webhooks "
                "spec. The answer carries the signing secret; it is never shown again.",
                {
                    "201": {
                        "description": "Registered.",
                        "headers": {"Location": {"schema": {"type": "string"}}},
                        "content": {
                            "application/json": {"schema": ref("WebhookEndpointWithSecret")}
                        },
                    },
                    "422": refused,
                },
                body="WebhookEndpointRequest",
                path_id=False,
            ),
            "get": _webhook_operation(
                "listWebhookEndpoints",
                "List webhook endpoints",
                "An account's own; an operator's every account's (or `account_id`'s), a "
                "page at a time.",
                {
                    "200": json_response("A page of endpoints.", ref("WebhookEndpointPage")),
                    "400": problem("A cursor this API did not return."),
                    "422": problem("A bad account id, a limit out of range, an unknown parameter."),
                },
                path_id=False,
            )
            | {
                "parameters": [
                    {
                        "name": "account_id",
                        "in": "query",
                        "required": False,
                        "description": "Operators: only this account's. Accounts: their own.",
                        "schema": {"type": "string", "pattern": ID_PATTERN},
                    },
                    *page_parameters(MAX_ENDPOINT_LIMIT, DEFAULT_ENDPOINT_LIMIT),
                ]
            },
        },
        one: {
            "get": _webhook_operation(
                "getWebhookEndpoint",
                "Read a webhook endpoint",
                "Everything but its secret.",
                {"200": json_response("The endpoint.", ref("WebhookEndpoint"))},
            ),
            "patch": _webhook_operation(
                "updateWebhookEndpoint",
                "Change a webhook endpoint",
                "The fields given change (a URL is checked again); null clears "
                "`description`, `event_types` (every type again), `schedule` (always open) and "
                "`rate_per_second` (the default rate); "
                "`disabled: false` sends to a disabled endpoint again.",
                {
                    "200": json_response("The endpoint, changed.", ref("WebhookEndpoint")),
                    "422": refused,
                },
                body="WebhookEndpointChanges",
            ),
            "delete": _webhook_operation(
                "deleteWebhookEndpoint",
                "Remove a webhook endpoint",
                "With its secrets; deliveries already queued for it are dropped.",
                {"204": {"description": "Removed."}},
            ),
        },
        one + "/rotate-secret": {
            "post": _webhook_operation(
                "rotateWebhookSecret",
                "Rotate a webhook endpoint's signing secret",
                "A new secret, shown only in this answer. The old one keeps signing "
                "deliveries beside the new one until `previous_secret_expires_at` "
                "(PULSE_WEBHOOK_SECRET_OVERLAP_SECONDS, a day by default): `webhook-signature` "
                "carries both, space-separated, so the receiver can switch to the new secret "
                "at any time meanwhile.",
                {
                    "200": json_response(
                        "The endpoint and its new secret.", ref("WebhookEndpointWithSecret")
                    )
                },
            )
        },
        one + "/test": {
            "post": _webhook_operation(
                "testWebhookEndpoint",
                "Send a test event",
                f"Queues a `{WEBHOOK_TEST}` event for this endpoint alone, delivered like "
                "any other (signed, retried, in order).",
                {
                    "202": json_response("Queued.", ref("WebhookTestQueued")),
                    "409": disabled,
                },
            )
        },
        one + "/replay": {
            "post": _webhook_operation(
                "replayWebhookEvents",
                "Send past events again",
                "Queues the account's notifications from `since` to `until` (the audit "
                "trail's payment updates) for this endpoint again, oldest first, with their "
                "original ids (so `webhook-id` repeats and a receiver that drops duplicates "
                "drops them), at most PULSE_WEBHOOK_REPLAY_MAX_EVENTS (1000) a request: "
                "`next_since` says where to go on. `since` after `until` is 422 "
                f"{PROBLEM_BASE}invalid-replay-window.",
                {
                    "202": json_response("Queued.", ref("WebhookReplayQueued")),
                    "409": disabled,
                    "422": problem(
                        f"Invalid fields, or {PROBLEM_BASE}invalid-replay-window: `since` "
                        "not before `until` (or now)."
                    ),
                },
                body="WebhookReplayRequest",
            )
        },
        one + "/attempts": {
            "get": _webhook_operation(
                "listWebhookAttempts",
                "Read an endpoint's delivery attempts",
                "The attempt log, newest first: each attempt's time, outcome, status code, "
                "latency, the start of the answer and the error; with `event_id`, that "
                "event's attempts and those of its tests and replays. Kept "
                "PULSE_WEBHOOK_ATTEMPT_TTL_SECONDS (30 days).",
                {
                    "200": json_response("A page of attempts.", ref("WebhookAttemptPage")),
                    "400": problem("A cursor this API did not return."),
                    "422": problem(
                        "An unknown status, a limit out of range, an unknown parameter."
                    ),
                },
            )
            | {
                "parameters": [
                    _ENDPOINT_ID,
                    {
                        "name": "event_id",
                        "in": "query",
                        "required": False,
                        "description": "Only this event's attempts.",
                        "schema": {"type": "string", "minLength": 1},
                    },
                    {
                        "name": "status",
                        "in": "query",
                        "required": False,
                        "description": "Only the attempts that succeeded, or that failed.",
                        "schema": {"type": "string", "enum": list(STATUSES)},
                    },
                    *page_parameters(MAX_ATTEMPT_LIMIT, DEFAULT_ATTEMPT_LIMIT),
                ]
            },
        },
        one + "/recover": {
            "post": _webhook_operation(
                "recoverWebhookEvents",
                "Send the failed events again",
                "Queues again, once each and with their original ids, the events whose "
                "latest attempt since `since` was dead-lettered (the attempt log, read by "
                "time), rebuilt from the audit trail as a replay is; oldest first, at most "
                "PULSE_WEBHOOK_REPLAY_MAX_EVENTS (1000) a request.",
                {
                    "202": json_response("Queued.", ref("WebhookRecoverQueued")),
                    "409": disabled,
                },
                body="WebhookRecoverRequest",
            )
        },
    }
