"""The OpenAPI 3.1 document of the ingest API, built from the pydantic models it validates with.

The payment operations, their models and the open routes are here; the webhook endpoints'
paths come from :mod:`ingest.openapi_webhooks`, their schemas from
:mod:`ingest.openapi_webhook_schemas`, and the builders both share from
:mod:`ingest.openapi_parts`.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Final

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from ingest.amounts import DEFAULT_MAX_AMOUNT, amount_schema, whole_amount_rule
from ingest.openapi_parts import (
    REF_TEMPLATE,
    json_response,
    page_parameters,
    problem,
    ref,
    secured,
)
from ingest.openapi_webhook_schemas import WEBHOOK_SCHEMAS
from ingest.openapi_webhooks import webhook_paths
from ingest.request_ids import IDEMPOTENCY_KEY_PATTERN
from ingest.validation import (
    DEFAULT_LISTING_LIMIT,
    MAX_LISTING_LIMIT,
    PaymentRequest,
    ReviewRequest,
)
from pulse.api_keys import PAYMENTS_READ, PAYMENTS_WRITE
from pulse.events import CloudEvent  # noqa: TC001 - pydantic resolves field types at runtime
from pulse.payments import REVIEW, Payment
from pulse.problems import PROBLEM_BASE, ProblemDocument

if TYPE_CHECKING:
    from decimal import Decimal

__all__ = ["PaymentEvents", "PaymentPage", "openapi_document"]


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
        ref_template=REF_TEMPLATE,
    )
    schemas: dict[str, Any] = top["$defs"]
    return schemas


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


BEARER_SCHEME: Final = {
    "type": "http",
    "scheme": "bearer",
    "description": 'A JWT (`sub` is the account; `roles: ["ops"]` an operator) or an API key '
    "(`psk_…`, from `pulse keys create`; scopes `payments:write`, `payments:read`, "
    "`webhooks:manage`).",
}


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
            "content": {"application/json": {"schema": ref("PaymentRequest")}},
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
                "content": {"application/json": {"schema": ref("Payment")}},
            },
            "400": problem("Malformed JSON or an invalid Idempotency-Key."),
            "409": problem("The payment changed concurrently (deleted while replayed); retry."),
            "413": problem("The body is larger than the limit."),
            "415": problem("The body is not application/json."),
            "422": problem("Invalid fields, or an Idempotency-Key reused with another body."),
            "500": problem("Unexpected error."),
            "503": problem("DynamoDB is throttling or unreachable; retry later."),
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
        *page_parameters(MAX_LISTING_LIMIT, DEFAULT_LISTING_LIMIT),
    ],
    "responses": {
        "200": json_response("A page of payments in REVIEW.", ref("PaymentPage")),
        "400": problem("A cursor this API did not return."),
        "422": problem("A missing or unknown status, a limit out of range, an unknown parameter."),
        "500": problem("Unexpected error."),
        "503": problem("DynamoDB unavailable."),
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
            "content": {"application/json": {"schema": ref("ReviewRequest")}},
        },
        "responses": {
            "200": json_response("The payment, decided.", ref("Payment")),
            "400": problem("Malformed JSON."),
            "404": not_found,
            "409": problem("The payment is not in REVIEW: it keeps the decision it has."),
            "413": problem("The body is larger than the limit."),
            "415": problem("The body is not application/json."),
            "422": problem("A decision other than APPROVED or DECLINED, or a bad note."),
            "500": problem("Unexpected error."),
            "503": problem("DynamoDB unavailable."),
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
    not_found = problem(
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
                "post": secured(_create_operation(max_body_bytes, max_amount), PAYMENTS_WRITE),
                "get": secured(copy.deepcopy(_LIST_IN_REVIEW), None),
            },
            "/v1/payments/{payment_id}": {
                "get": secured(
                    {
                        "operationId": "getPayment",
                        "summary": "Read a payment",
                        "parameters": [_PAYMENT_ID],
                        "responses": {
                            "200": json_response("The payment.", ref("Payment")),
                            "404": not_found,
                            "500": problem("Unexpected error."),
                            "503": problem("DynamoDB unavailable."),
                        },
                    },
                    PAYMENTS_READ,
                )
            },
            "/v1/payments/{payment_id}/events": {
                "get": secured(
                    {
                        "operationId": "getPaymentEvents",
                        "summary": "A payment's audit trail, oldest first",
                        "parameters": [_PAYMENT_ID],
                        "responses": {
                            "200": json_response(
                                "The payment's CloudEvents.", ref("PaymentEvents")
                            ),
                            "404": not_found,
                            "500": problem("Unexpected error."),
                            "503": problem("DynamoDB unavailable."),
                        },
                    },
                    PAYMENTS_READ,
                )
            },
            "/v1/payments/{payment_id}/review": {
                "post": secured(_review_operation(max_body_bytes, not_found), None)
            },
            "/openapi.json": {
                "get": {
                    "operationId": "getOpenApi",
                    "summary": "This document",
                    "responses": {"200": json_response("OpenAPI 3.1", {"type": "object"})},
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "getHealth",
                    "summary": "Liveness (checks no dependency)",
                    "responses": {"200": json_response("Alive.", ref("Status"))},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "getReadiness",
                    "summary": "Readiness (DynamoDB tables reachable and ACTIVE)",
                    "responses": {
                        "200": json_response("Ready.", ref("Status")),
                        "503": json_response("Not ready.", ref("Status")),
                    },
                }
            },
            **webhook_paths(),
            **({"/metrics": _METRICS_PATH} if metrics else {}),
        },
        "components": {
            "securitySchemes": {"bearer": BEARER_SCHEME},
            "schemas": {
                **schemas,
                **copy.deepcopy(WEBHOOK_SCHEMAS),
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
