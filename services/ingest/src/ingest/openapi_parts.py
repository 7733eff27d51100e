"""The small builders the OpenAPI document's parts share: references to component schemas,
problem and JSON answers, page parameters, and the bearer refusals and RateLimit fields of
a secured operation."""

from __future__ import annotations

from typing import Any, Final

from pulse.problems import PROBLEM_CONTENT_TYPE

__all__ = ["REF_TEMPLATE", "json_response", "page_parameters", "problem", "ref", "secured"]

REF_TEMPLATE = "#/components/schemas/{model}"


def page_parameters(maximum: int, default: int) -> list[dict[str, Any]]:
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


def ref(name: str) -> dict[str, str]:
    """A reference to the component schema ``name``."""
    return {"$ref": REF_TEMPLATE.format(model=name)}


def problem(description: str) -> dict[str, Any]:
    """An answer that is an RFC 9457 problem document."""
    return {
        "description": description,
        "content": {PROBLEM_CONTENT_TYPE: {"schema": ref("ProblemDocument")}},
    }


def json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    """An answer whose application/json body is ``schema``."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


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


def secured(operation: dict[str, Any], scope: str | None) -> dict[str, Any]:
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
        "401": problem("No bearer credential, or a malformed, expired or revoked one.")
        | {"headers": dict(_CHALLENGE)},
        "403": problem(forbidden) | {"headers": {**_CHALLENGE, **_RATELIMIT_HEADERS}},
        "429": problem(
            "Over the caller's budget, or too many refused credentials from this address."
        )
        | {"headers": {"Retry-After": {"schema": {"type": "integer"}}, **_RATELIMIT_HEADERS}},
    }
    return {**operation, "security": [{"bearer": []}], "responses": {**responses, **refusals}}
