"""The OpenAPI 3.1 document of the ingest API, built from the pydantic models it validates with."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Final

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from ingest.validation import (
    DEFAULT_LISTING_LIMIT,
    DEFAULT_MAX_AMOUNT,
    ID_PATTERN,
    IDEMPOTENCY_KEY_PATTERN,
    MAX_LISTING_LIMIT,
    PaymentRequest,
    ReviewRequest,
    amount_schema,
    whole_amount_rule,
)
from ingest.webhooks_api import (
    DEFAULT_ATTEMPT_LIMIT,
    DEFAULT_ENDPOINT_LIMIT,
    MAX_ATTEMPT_LIMIT,
    MAX_ENDPOINT_LIMIT,
    RFC3339_PATTERN,
)
from pulse.api_keys import PAYMENTS_READ, PAYMENTS_WRITE, WEBHOOKS_MANAGE
from pulse.events import CloudEvent  # noqa: TC001 - pydantic resolves field types at runtime
from pulse.payments import REVIEW, Payment
from pulse.problems import PROBLEM_BASE, PROBLEM_CONTENT_TYPE, ProblemDocument
from pulse.webhook_attempts import FAILED, NEXT_DEAD, NEXT_RETRY, SENDING, STATUSES, SUCCEEDED
from pulse.webhook_deliveries import WEBHOOK_TEST
from pulse.webhook_endpoints import (
    ENDPOINT_ID_PATTERN,
    MAX_DESCRIPTION_LENGTH,
    MAX_RATE_PER_SECOND,
    MAX_URL_LENGTH,
    WEBHOOK_EVENT_TYPES,
)

if TYPE_CHECKING:
    from decimal import Decimal

__all__ = ["PaymentEvents", "PaymentPage", "openapi_document"]

_REF = "#/components/schemas/{model}"


class PaymentEvents(BaseModel):
    """A payment's audit trail, oldest first."""

    model_config = ConfigDict(title="PaymentEvents")

    payment_id: str = Field(json_schema_extra={"format": "uuid"})
    events: list[CloudEvent]


class PaymentPage(BaseModel):
    """One page of payments in REVIEW, oldest first."""

    model_config = ConfigDict(title="PaymentPage")

    items: list[Payment]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


def _page_parameters(maximum: int, default: int) -> list[dict[str, Any]]:
    """The query parameters of a listing read a page at a time: ``limit`` and ``cursor``."""
    return [
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": maximum, "default": default},
        },
        {
            "name": "cursor",
            "in": "query",
            "required": False,
            "description": "The `next_cursor` of the previous page.",
            "schema": {"type": "string"},
        },
    ]


def _schemas() -> dict[str, Any]:
    _, top = models_json_schema(
        [
            (PaymentRequest, "validation"),
            (ReviewRequest, "validation"),
            (Payment, "serialization"),
            (PaymentEvents, "serialization"),
            (PaymentPage, "serialization"),
            (ProblemDocument, "serialization"),
        ],
        ref_template=_REF,
    )
    schemas: dict[str, Any] = top["$defs"]
    return schemas


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_CONTENT_TYPE: {"schema": _ref("ProblemDocument")}},
    }


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_PAYMENT_ID = {
    "name": "payment_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
}
_TRACEPARENT_HEADER = {
    "description": "The W3C trace context the payment travels under.",
    "schema": {"type": "string"},
}


_RATELIMIT_HEADERS: Final = {
    "RateLimit-Policy": {
        "description": "The caller's quota (draft-ietf-httpapi-ratelimit-headers): "
        '`"per-principal";q=<requests>;w=<seconds>`.',
        "schema": {"type": "string"},
    },
    "RateLimit": {
        "description": 'What is left of it: `"per-principal";r=<remaining>;t=<seconds to reset>`.',
        "schema": {"type": "string"},
    },
}
_CHALLENGE: Final = {
    "WWW-Authenticate": {
        "description": 'RFC 6750: `Bearer realm="pulse"`, with `error="invalid_token"` for a '
        'bad credential, `error="insufficient_scope"` for a missing scope.',
        "schema": {"type": "string"},
    }
}
BEARER_SCHEME: Final = {
    "type": "http",
    "scheme": "bearer",
    "description": 'A JWT (`sub` is the account; `roles: ["ops"]` an operator) or an API key '
    "(`psk_…`, from `pulse keys create`; scopes `payments:write`, `payments:read`, "
    "`webhooks:manage`).",
}


def _secured(operation: dict[str, Any], scope: str | None) -> dict[str, Any]:
    """``operation`` behind the bearer credential: its refusals, and the RateLimit fields on
    every answer the principal's budget was spent on. ``scope`` None: operators only."""
    responses: dict[str, Any] = operation["responses"]
    for answer in responses.values():
        answer.setdefault("headers", {}).update(_RATELIMIT_HEADERS)
    forbidden = (
        f"The credential lacks the scope {scope}, or may not act for this account."
        if scope is not None
        else "Operators only (a JWT with role ops); an API key never may."
    )
    refusals = {
        "401": _problem("No bearer credential, or a malformed, expired or revoked one.")
        | {"headers": dict(_CHALLENGE)},
        "403": _problem(forbidden) | {"headers": {**_CHALLENGE, **_RATELIMIT_HEADERS}},
        "429": _problem(
            "Over the caller's budget, or too many refused credentials from this address."
        )
        | {"headers": {"Retry-After": {"schema": {"type": "integer"}}, **_RATELIMIT_HEADERS}},
    }
    return {**operation, "security": [{"bearer": []}], "responses": {**responses, **refusals}}


def _create_operation(max_body_bytes: int, max_amount: Decimal) -> dict[str, Any]:
    return {
        "operationId": "createPayment",
        "summary": "Create a payment",
        "description": (
            "Validates the payment and writes it once (PENDING). With an `Idempotency-Key` "
            "the same key and body answer with the payment as first created and "
            "`Idempotent-Replayed: true`; the same key with another body is refused (422, "
            f"type {PROBLEM_BASE}idempotency-key-reused). Amounts must be greater than 0 "
            f"and at most {max_amount}; bodies larger than {max_body_bytes} bytes get 413."
        ),
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 255,
                    "pattern": IDEMPOTENCY_KEY_PATTERN,
                },
            },
            {
                "name": "traceparent",
                "in": "header",
                "required": False,
                "description": "W3C trace context; a new one is started when absent or invalid.",
                "schema": {"type": "string"},
            },
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref("PaymentRequest")}},
        },
        "responses": {
            "201": {
                "description": "Created (or replayed for a repeated Idempotency-Key).",
                "headers": {
                    "Location": {"schema": {"type": "string"}},
                    "Idempotent-Replayed": {
                        "description": "Present (true) when this is a replay.",
                        "schema": {"type": "string", "enum": ["true"]},
                    },
                    "traceparent": _TRACEPARENT_HEADER,
                },
                "content": {"application/json": {"schema": _ref("Payment")}},
            },
            "400": _problem("Malformed JSON or an invalid Idempotency-Key."),
            "409": _problem("The payment changed concurrently (deleted while replayed); retry."),
            "413": _problem("The body is larger than the limit."),
            "415": _problem("The body is not application/json."),
            "422": _problem("Invalid fields, or an Idempotency-Key reused with another body."),
            "500": _problem("Unexpected error."),
            "503": _problem("DynamoDB is throttling or unreachable; retry later."),
        },
    }


_LIST_IN_REVIEW: Final = {
    "operationId": "listPaymentsInReview",
    "summary": "Payments waiting in REVIEW, oldest first",
    "description": "Payments the fraud worker held for an operator's decision, the one "
    "waiting longest first, a page at a time. Read from an index, so a payment decided a "
    "moment ago may still be listed once.",
    "parameters": [
        {
            "name": "status",
            "in": "query",
            "required": True,
            "description": "Only REVIEW can be listed.",
            "schema": {"type": "string", "enum": [REVIEW]},
        },
        *_page_parameters(MAX_LISTING_LIMIT, DEFAULT_LISTING_LIMIT),
    ],
    "responses": {
        "200": _json("A page of payments in REVIEW.", _ref("PaymentPage")),
        "400": _problem("A cursor this API did not return."),
        "422": _problem("A missing or unknown status, a limit out of range, an unknown parameter."),
        "500": _problem("Unexpected error."),
        "503": _problem("DynamoDB unavailable."),
    },
}


def _review_operation(max_body_bytes: int, not_found: dict[str, Any]) -> dict[str, Any]:
    return {
        "operationId": "reviewPayment",
        "summary": "Approve or decline a payment held in REVIEW",
        "description": "An operator's decision on a payment in REVIEW, made once: a payment "
        "not in REVIEW (already decided, by an operator or the review timeout) is 409 and "
        "keeps its decision. The payment records who decided (`reviewed_by`: the token's "
        "subject), why (`review_note`) and when (`reviewed_at`), and its update flows as "
        f"`pulse.payment.updated`. Bodies larger than {max_body_bytes} bytes get 413.",
        "parameters": [_PAYMENT_ID],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref("ReviewRequest")}},
        },
        "responses": {
            "200": _json("The payment, decided.", _ref("Payment")),
            "400": _problem("Malformed JSON."),
            "404": not_found,
            "409": _problem("The payment is not in REVIEW: it keeps the decision it has."),
            "413": _problem("The body is larger than the limit."),
            "415": _problem("The body is not application/json."),
            "422": _problem("A decision other than APPROVED or DECLINED, or a bad note."),
            "500": _problem("Unexpected error."),
            "503": _problem("DynamoDB unavailable."),
        },
    }


# -- webhook endpoints -----------------------------------------------------------------
def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


_TIME: Final = {"type": "string", "format": "date-time"}
_EVENT_TYPES: Final = {
    "type": "array",
    "minItems": 1,
    "items": {"type": "string", "enum": sorted(WEBHOOK_EVENT_TYPES)},
    "description": "Send only events of these types; null (or left out): every type. "
    + "; ".join(f"`{t}`: {what}" for t, what in sorted(WEBHOOK_EVENT_TYPES.items())),
}
_URL: Final = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_URL_LENGTH,
    "description": "The receiver's https:// URL. Refused (422, type "
    f"{PROBLEM_BASE}webhook-url-refused, the reason in words): another scheme, a URL that "
    "is not printable ASCII, and a literal internal address (loopback, private, "
    "link-local and the cloud metadata address, CGNAT, multicast, unspecified, reserved) "
    "or `localhost`. Names are resolved, and refused the same way, at each delivery.",
    "examples": ["https://hooks.example.com/pulse"],
}
_DESCRIPTION: Final = _nullable({"type": "string", "maxLength": MAX_DESCRIPTION_LENGTH})
_SCHEDULE: Final = _nullable(
    {
        "type": "string",
        "maxLength": MAX_DESCRIPTION_LENGTH,
        "description": "Delivery windows: a five-field cron expression (minute hour "
        "day-of-month month day-of-week), read by croniter. The endpoint is sent events "
        "during every minute (UTC) it matches: `*/5 * * * *` the minutes :00, :05, …; "
        "`* 9-17 * * 1-5` business hours. Outside a window its events wait, in order, and "
        "go out at its rate when the window opens. Null (or left out): always. One croniter "
        "refuses, or whose windows are more than 7 days apart, is 422 "
        f"{PROBLEM_BASE}invalid-schedule.",
        "examples": ["*/5 * * * *", "* 9-17 * * 1-5"],
    }
)
_RATE: Final = _nullable(
    {
        "type": "integer",
        "minimum": 1,
        "maximum": MAX_RATE_PER_SECOND,
        "description": "Requests a second to the endpoint at most (in any one-second "
        "window); null (or left out): the notify worker's PULSE_WEBHOOK_RATE_PER_SECOND.",
        "examples": [5],
    }
)
_WEBHOOK_SCHEMAS: Final = {
    "WebhookEndpoint": {
        "title": "WebhookEndpoint",
        "type": "object",
        "required": [
            "endpoint_id",
            "account_id",
            "url",
            "description",
            "event_types",
            "disabled",
            "disabled_reason",
            "schedule",
            "rate_per_second",
            "created_at",
            "updated_at",
            "secret_rotated_at",
            "previous_secret_expires_at",
            "failing_since",
        ],
        "properties": {
            "endpoint_id": {"type": "string", "pattern": ENDPOINT_ID_PATTERN},
            "account_id": {"type": "string"},
            "url": {"type": "string"},
            "description": _nullable({"type": "string"}),
            "event_types": _nullable({"type": "array", "items": {"type": "string"}}),
            "disabled": {"type": "boolean"},
            "disabled_reason": _nullable({"type": "string"}),
            "schedule": _nullable({"type": "string"}),
            "rate_per_second": _nullable({"type": "integer"}),
            "created_at": _TIME,
            "updated_at": _TIME,
            "secret_rotated_at": _nullable(_TIME),
            "previous_secret_expires_at": _nullable(
                {
                    **_TIME,
                    "description": "Until when the secret a rotation replaced still signs "
                    "deliveries, beside the current one.",
                }
            ),
            "failing_since": _nullable(
                {
                    **_TIME,
                    "description": "Since when every delivery attempt to the endpoint failed "
                    "(null: the last one succeeded). Failing for "
                    "PULSE_WEBHOOK_DISABLE_AFTER_SECONDS disables the endpoint; "
                    'PATCH {"disabled": false} clears it.',
                }
            ),
        },
    },
    "WebhookEndpointWithSecret": {
        "title": "WebhookEndpointWithSecret",
        "allOf": [
            {"$ref": _REF.format(model="WebhookEndpoint")},
            {
                "type": "object",
                "required": ["secret"],
                "properties": {
                    "secret": {
                        "type": "string",
                        "pattern": "^whsec_[A-Za-z0-9+/]+=*$",
                        "description": "The Standard Webhooks signing secret, shown only in "
                        "this answer.",
                    }
                },
            },
        ],
    },
    "WebhookEndpointRequest": {
        "title": "WebhookEndpointRequest",
        "type": "object",
        "additionalProperties": False,
        "required": ["url"],
        "properties": {
            "url": _URL,
            "description": _DESCRIPTION,
            "event_types": _nullable(_EVENT_TYPES),
            "schedule": _SCHEDULE,
            "rate_per_second": _RATE,
            "account_id": {
                "type": "string",
                "pattern": ID_PATTERN,
                "description": "Whose endpoint (default: the caller's account); only "
                "operators name another account.",
            },
        },
    },
    "WebhookEndpointChanges": {
        "title": "WebhookEndpointChanges",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "url": _URL,
            "description": _DESCRIPTION,
            "event_types": _nullable(_EVENT_TYPES),
            "schedule": _SCHEDULE,
            "rate_per_second": _RATE,
            "disabled": {
                "type": "boolean",
                "description": "true: nothing is sent to it; false sends again.",
            },
        },
    },
    "WebhookEndpointPage": {
        "title": "WebhookEndpointPage",
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {
            "items": {"type": "array", "items": {"$ref": _REF.format(model="WebhookEndpoint")}},
            "next_cursor": _nullable({"type": "string"}),
        },
    },
    "WebhookTestQueued": {
        "title": "WebhookTestQueued",
        "type": "object",
        "required": ["endpoint_id", "event_id", "type"],
        "properties": {
            "endpoint_id": {"type": "string"},
            "event_id": {"type": "string", "description": "Its `webhook-id`."},
            "type": {"type": "string", "enum": [WEBHOOK_TEST]},
        },
    },
    "WebhookReplayRequest": {
        "title": "WebhookReplayRequest",
        "type": "object",
        "additionalProperties": False,
        "required": ["since"],
        "properties": {
            "since": {**_TIME, "pattern": RFC3339_PATTERN},
            "until": {
                **_TIME,
                "pattern": RFC3339_PATTERN,
                "description": "Default: now. Both ends are included.",
            },
        },
    },
    "WebhookReplayQueued": {
        "title": "WebhookReplayQueued",
        "type": "object",
        "required": ["endpoint_id", "since", "until", "queued", "max_events", "next_since"],
        "properties": {
            "endpoint_id": {"type": "string"},
            "since": _TIME,
            "until": _TIME,
            "queued": {"type": "integer", "minimum": 0},
            "max_events": {"type": "integer", "minimum": 1},
            "next_since": _nullable(
                {
                    **_TIME,
                    "description": "More events were left: replay again from this time.",
                }
            ),
        },
    },
    "WebhookAttempt": {
        "title": "WebhookAttempt",
        "type": "object",
        "required": [
            "endpoint_id",
            "event_id",
            "attempt",
            "status",
            "attempted_at",
            "status_code",
            "latency_ms",
            "response",
            "error",
            "next",
            "next_at",
        ],
        "properties": {
            "endpoint_id": {"type": "string"},
            "event_id": {
                "type": "string",
                "description": "The event's id (its `webhook-id`); a test's or replay's "
                "attempts are `{event id}@{request id}`.",
            },
            "attempt": {"type": "integer", "minimum": 1},
            "status": {
                "type": "string",
                "enum": [SENDING, SUCCEEDED, FAILED],
                "description": "`sending` while the request is out.",
            },
            "attempted_at": _TIME,
            "status_code": _nullable({"type": "integer"}),
            "latency_ms": _nullable({"type": "integer", "minimum": 0}),
            "response": _nullable(
                {"type": "string", "description": "The start of the answer's body (capped)."}
            ),
            "error": _nullable({"type": "string"}),
            "next": _nullable(
                {
                    "type": "string",
                    "enum": [NEXT_RETRY, NEXT_DEAD],
                    "description": "After a failure: retried at `next_at`, or dead-lettered.",
                }
            ),
            "next_at": _nullable(_TIME),
        },
    },
    "WebhookAttemptPage": {
        "title": "WebhookAttemptPage",
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {
            "items": {"type": "array", "items": {"$ref": _REF.format(model="WebhookAttempt")}},
            "next_cursor": _nullable({"type": "string"}),
        },
    },
    "WebhookRecoverRequest": {
        "title": "WebhookRecoverRequest",
        "type": "object",
        "additionalProperties": False,
        "required": ["since"],
        "properties": {"since": {**_TIME, "pattern": RFC3339_PATTERN}},
    },
    "WebhookRecoverQueued": {
        "title": "WebhookRecoverQueued",
        "type": "object",
        "required": [
            "endpoint_id",
            "since",
            "failed",
            "queued",
            "event_ids",
            "not_found",
            "max_events",
        ],
        "properties": {
            "endpoint_id": {"type": "string"},
            "since": _TIME,
            "failed": {
                "type": "integer",
                "minimum": 0,
                "description": "Events whose latest attempt since `since` was dead-lettered; "
                "more than `max_events`: recover again once these were attempted.",
            },
            "queued": {"type": "integer", "minimum": 0},
            "event_ids": {
                "type": "array",
                "items": {"type": "string"},
                "description": "The events queued, oldest first (their `webhook-id`s).",
            },
            "not_found": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Failed events the audit trail cannot rebuild (test events, "
                "or events older than it keeps): not queued.",
            },
            "max_events": {"type": "integer", "minimum": 1},
        },
    },
}
_ENDPOINT_ID: Final = {
    "name": "endpoint_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": ENDPOINT_ID_PATTERN},
}
_ENDPOINT_NOT_FOUND: Final = "No such endpoint, or one of another account (they look the same)."


def _body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


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
        responses["404"] = _problem(_ENDPOINT_NOT_FOUND)
    if body is not None:
        responses.setdefault("422", _problem("Invalid fields (each named in `errors`)."))
        responses["400"] = _problem("Malformed JSON.")
        responses["413"] = _problem("The body is larger than the limit.")
        responses["415"] = _problem("The body is not application/json.")
    responses["500"] = _problem("Unexpected error.")
    responses["503"] = _problem("DynamoDB, SSM or SQS unavailable; retry later.")
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "description": description,
        "parameters": [_ENDPOINT_ID] if path_id else [],
        "responses": responses,
    }
    if body is not None:
        operation["requestBody"] = _body(body)
    return _secured(operation, WEBHOOKS_MANAGE)


def _webhook_paths() -> dict[str, Any]:
    refused = _problem(
        f"Invalid fields (each named in `errors`); type {PROBLEM_BASE}webhook-url-refused for "
        f"a URL the SSRF guard refuses (the reason in words), {PROBLEM_BASE}invalid-schedule "
        "for a cron expression croniter refuses or whose windows are more than 7 days apart."
    )
    disabled = _problem(f"The endpoint is disabled (type {PROBLEM_BASE}endpoint-disabled).")
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
                            "application/json": {"schema": _ref("WebhookEndpointWithSecret")}
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
                    "200": _json("A page of endpoints.", _ref("WebhookEndpointPage")),
                    "400": _problem("A cursor this API did not return."),
                    "422": _problem(
                        "A bad account id, a limit out of range, an unknown parameter."
                    ),
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
                    *_page_parameters(MAX_ENDPOINT_LIMIT, DEFAULT_ENDPOINT_LIMIT),
                ]
            },
        },
        one: {
            "get": _webhook_operation(
                "getWebhookEndpoint",
                "Read a webhook endpoint",
                "Everything but its secret.",
                {"200": _json("The endpoint.", _ref("WebhookEndpoint"))},
            ),
            "patch": _webhook_operation(
                "updateWebhookEndpoint",
                "Change a webhook endpoint",
                "The fields given change (a URL is checked again); null clears "
                "`description`, `event_types` (every type again), `schedule` (always open) and "
                "`rate_per_second` (the default rate); "
                "`disabled: false` sends to a disabled endpoint again.",
                {"200": _json("The endpoint, changed.", _ref("WebhookEndpoint")), "422": refused},
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
                    "200": _json(
                        "The endpoint and its new secret.", _ref("WebhookEndpointWithSecret")
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
                    "202": _json("Queued.", _ref("WebhookTestQueued")),
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
                    "202": _json("Queued.", _ref("WebhookReplayQueued")),
                    "409": disabled,
                    "422": _problem(
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
                    "200": _json("A page of attempts.", _ref("WebhookAttemptPage")),
                    "400": _problem("A cursor this API did not return."),
                    "422": _problem(
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
                    *_page_parameters(MAX_ATTEMPT_LIMIT, DEFAULT_ATTEMPT_LIMIT),
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
                    "202": _json("Queued.", _ref("WebhookRecoverQueued")),
                    "409": disabled,
                },
                body="WebhookRecoverRequest",
            )
        },
    }


_METRICS_PATH: Final = {
    "get": {
        "operationId": "getMetrics",
        "summary": "Prometheus metrics",
        "responses": {
            "200": {
                "description": "Prometheus text format.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    }
}


def openapi_document(
    *,
    max_body_bytes: int = 16 * 1024,
    max_amount: Decimal = DEFAULT_MAX_AMOUNT,
    metrics: bool = True,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document, with the limits of this deployment.

    ``metrics``: whether this port serves ``/metrics`` (not when ``PULSE_OPS_PORT`` moves it
    to the internal ops port), so the document never promises a path the port lacks.
    """
    schemas = _schemas()
    request = schemas["PaymentRequest"]
    request["properties"]["amount"].update(amount_schema(max_amount))
    request["allOf"] = [whole_amount_rule(max_amount)]
    not_found = _problem(
        "No such payment, one of another account (they look the same), or an id that is not a UUID."
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Pulse ingest API",
            "version": "1.0.0",
            "description": "Create and read payments, read a payment's audit trail, "
            "(operators) list and decide payments held in REVIEW, and manage webhook "
            "endpoints. Every /v1/ operation needs `Authorization: Bearer <JWT or API key>`; "
            "an account acts only on its own payments and endpoints. Errors are RFC 9457 "
            "problem details (application/problem+json).",
        },
        "paths": {
            "/v1/payments": {
                "post": _secured(_create_operation(max_body_bytes, max_amount), PAYMENTS_WRITE),
                "get": _secured(copy.deepcopy(_LIST_IN_REVIEW), None),
            },
            "/v1/payments/{payment_id}": {
                "get": _secured(
                    {
                        "operationId": "getPayment",
                        "summary": "Read a payment",
                        "parameters": [_PAYMENT_ID],
                        "responses": {
                            "200": _json("The payment.", _ref("Payment")),
                            "404": not_found,
                            "500": _problem("Unexpected error."),
                            "503": _problem("DynamoDB unavailable."),
                        },
                    },
                    PAYMENTS_READ,
                )
            },
            "/v1/payments/{payment_id}/events": {
                "get": _secured(
                    {
                        "operationId": "getPaymentEvents",
                        "summary": "A payment's audit trail, oldest first",
                        "parameters": [_PAYMENT_ID],
                        "responses": {
                            "200": _json("The payment's CloudEvents.", _ref("PaymentEvents")),
                            "404": not_found,
                            "500": _problem("Unexpected error."),
                            "503": _problem("DynamoDB unavailable."),
                        },
                    },
                    PAYMENTS_READ,
                )
            },
            "/v1/payments/{payment_id}/review": {
                "post": _secured(_review_operation(max_body_bytes, not_found), None)
            },
            "/openapi.json": {
                "get": {
                    "operationId": "getOpenApi",
                    "summary": "This document",
                    "responses": {"200": _json("OpenAPI 3.1", {"type": "object"})},
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "getHealth",
                    "summary": "Liveness (checks no dependency)",
                    "responses": {"200": _json("Alive.", _ref("Status"))},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "getReadiness",
                    "summary": "Readiness (DynamoDB tables reachable and ACTIVE)",
                    "responses": {
                        "200": _json("Ready.", _ref("Status")),
                        "503": _json("Not ready.", _ref("Status")),
                    },
                }
            },
            **_webhook_paths(),
            **({"/metrics": _METRICS_PATH} if metrics else {}),
        },
        "components": {
            "securitySchemes": {"bearer": BEARER_SCHEME},
            "schemas": {
                **schemas,
                **copy.deepcopy(_WEBHOOK_SCHEMAS),
                "Status": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {
                        "status": {"type": "string"},
                        "checks": {"type": "object", "additionalProperties": {"type": "string"}},
                    },
                },
            },
        },
    }
