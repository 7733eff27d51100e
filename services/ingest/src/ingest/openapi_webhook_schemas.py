"""The component schemas of the ingest API's webhook-endpoint operations: an endpoint (with
and without its secret), its create and change bodies, the replay, recover and test answers,
and the delivery attempt log, with pages of endpoints and of attempts."""

from __future__ import annotations

from typing import Any, Final

from ingest.openapi_parts import ref
from ingest.validation import ID_PATTERN
from ingest.webhooks_api import RFC3339_PATTERN
from pulse.problems import PROBLEM_BASE
from pulse.webhook_attempts import FAILED, NEXT_DEAD, NEXT_RETRY, SENDING, SUCCEEDED
from pulse.webhook_deliveries import WEBHOOK_TEST
from pulse.webhook_endpoints import (
    ENDPOINT_ID_PATTERN,
    MAX_DESCRIPTION_LENGTH,
    MAX_RATE_PER_SECOND,
    MAX_URL_LENGTH,
    WEBHOOK_EVENT_TYPES,
)

__all__ = ["WEBHOOK_SCHEMAS"]


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _page(title: str, item: str) -> dict[str, Any]:
    """A page of ``item`` objects, and the cursor of the next page (null on the last)."""
    return {
        "title": title,
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {
            "items": {"type": "array", "items": ref(item)},
            "next_cursor": _nullable({"type": "string"}),
        },
    }


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
# The fields an endpoint is registered with and may change.
_ENDPOINT_FIELDS: Final = {
    "url": _URL,
    "description": _DESCRIPTION,
    "event_types": _nullable(_EVENT_TYPES),
    "schedule": _SCHEDULE,
    "rate_per_second": _RATE,
}
WEBHOOK_SCHEMAS: Final = {
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
            ref("WebhookEndpoint"),
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
            **_ENDPOINT_FIELDS,
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
            **_ENDPOINT_FIELDS,
            "disabled": {
                "type": "boolean",
                "description": "true: nothing is sent to it; false sends again.",
            },
        },
    },
    "WebhookEndpointPage": _page("WebhookEndpointPage", "WebhookEndpoint"),
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
    "WebhookAttemptPage": _page("WebhookAttemptPage", "WebhookAttempt"),
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
