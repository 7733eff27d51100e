"""What every handler of the ingest API does alike: ask whether the principal may act, read
a JSON body within the size limit, answer JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from ingest.access import PRINCIPAL
from ingest.authz import Action, Verdict, authorize
from pulse.credentials import insufficient_scope
from pulse.problems import Problem

if TYPE_CHECKING:
    from pulse.credentials import Principal

__all__ = ["allowed", "json_response", "read_body", "too_large"]


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(payload),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def too_large(detail: str) -> Problem:
    return Problem(413, "payload-too-large", "Payload too large", detail)


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


async def read_body(request: web.Request, limit: int, what: str) -> bytes:
    """The raw JSON body: 415 if it is not JSON (``what`` says what to send), 413 if it is
    larger than ``limit`` bytes."""
    if not _is_json(request.content_type):
        raise Problem(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            f"send {what} as application/json",
            headers={"Accept-Post": "application/json"},
        )
    length = request.content_length
    if length is not None and length > limit:
        raise too_large(f"the body is {length} bytes; at most {limit} are accepted")
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large(f"the body is larger than {limit} bytes") from None


def allowed(request: web.Request, action: Action) -> Principal:
    """The request's principal, if it may do ``action`` at all; else 403 (the scope a key
    lacks, or an operators' action)."""
    principal: Principal = request[PRINCIPAL]
    verdict = authorize(principal, action)
    if verdict is Verdict.MISSING_SCOPE and action.scope is not None:
        raise insufficient_scope(action.scope)
    if verdict is not Verdict.ALLOW:
        raise Problem(
            403, "forbidden", "Forbidden", "only operators (role ops) may list and review payments"
        )
    return principal
