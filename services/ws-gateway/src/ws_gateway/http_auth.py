"""Who is asking, for every HTTP route: the token, its verification and the refusals.

:func:`authenticated` wraps a route handler that takes the request and its verified
:class:`~pulse.auth.Claims`: the token comes from ``?token=`` or ``Authorization: Bearer``; a
missing, invalid or expired one is answered 401 with the RFC 6750 challenge (counted in
``pulse_ws_auth_failures_total``), unreachable token keys 503. Given an
:class:`~ws_gateway.authz.Operation`, it also authorises the route's ``{channel}`` for it
(:func:`channel_refusal`: 404 / 403) before the handler runs. Every refusal is an RFC 9457
problem document in the format of every Pulse API (:mod:`pulse.problems`).
"""

from __future__ import annotations

import functools
from http import HTTPStatus
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from aiohttp import web

from pulse.auth import InvalidTokenError, TokenExpiredError, VerifierUnavailableError
from pulse.credentials import CredentialError, CredentialReason, unauthorized
from pulse.logging import get_logger
from pulse.problems import Problem
from ws_gateway.authz import Access, authorize
from ws_gateway.metrics import AUTH_FAILURES

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from pulse.auth import Claims
    from ws_gateway.authz import Operation
    from ws_gateway.commands import Verifier

    Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
    ClaimsHandler = Callable[[web.Request, Claims], Awaitable[web.StreamResponse]]

__all__ = [
    "authenticated",
    "channel_refusal",
    "problem",
    "token_from_request",
    "verify_token",
]

log = get_logger("ws_gateway.server")  # see ws_gateway.connection


def token_from_request(query: str, headers: Mapping[str, str]) -> str | None:
    """The bearer token of a request: ``?token=`` first, then ``Authorization: Bearer``."""
    values = parse_qs(query).get("token")
    if values and values[0]:
        return values[0]
    authorization = headers.get("Authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


def problem(status: int, slug: str, detail: str) -> web.Response:
    """An RFC 9457 problem response: type ``https://pulse.dev/problems/<slug>``, the status's
    phrase as its title."""
    return Problem(status, slug, HTTPStatus(status).phrase, detail).response()


def channel_refusal(claims: Claims, op: Operation, channel: str) -> web.Response | None:
    """:func:`~ws_gateway.authz.authorize` as an HTTP answer: None when allowed."""
    access = authorize(claims, op, channel)
    if access is Access.UNKNOWN_CHANNEL:
        return problem(404, "unknown-channel", f"no such channel: {channel[:80]}")
    if access is Access.FORBIDDEN:
        return problem(403, "forbidden", f"not allowed to read {channel}")
    return None


def authenticated(
    verifier: Verifier, *, channel_op: Operation | None = None
) -> Callable[[ClaimsHandler], Handler]:
    """A route decorator: the handler runs only for a verified token (and, with
    ``channel_op``, a ``{channel}`` the token may do that to), and gets its claims."""

    def decorate(handler: ClaimsHandler) -> Handler:
        @functools.wraps(handler)
        async def checked(request: web.Request) -> web.StreamResponse:
            claims = await _verify(verifier, request)
            if isinstance(claims, web.Response):
                return claims
            if channel_op is not None:
                refusal = channel_refusal(claims, channel_op, request.match_info["channel"])
                if refusal is not None:
                    return refusal
            return await handler(request, claims)

        return checked

    return decorate


async def _verify(verifier: Verifier, request: web.Request) -> Claims | web.Response:
    """The request's claims, or the response refusing it."""
    return await verify_token(verifier, token_from_request(request.query_string, request.headers))


async def verify_token(verifier: Verifier, token: str | None) -> Claims | web.Response:
    """The claims of ``token`` (None: no token sent), or the response refusing it."""
    reason: CredentialReason = "missing"
    text = "send Authorization: Bearer <token> (or ?token=)"
    if token is not None:
        try:
            return await verifier.verify(token)
        except VerifierUnavailableError as exc:
            log.warning("token keys unavailable", error=str(exc))
            return Problem(
                503,
                "unavailable",
                "Service unavailable",
                "token keys unavailable, retry",
                headers={"Retry-After": "1"},
            ).response()
        except TokenExpiredError:
            reason, text = "expired", "the token has expired"
        except InvalidTokenError:
            reason, text = "invalid", "the token is not valid"
    AUTH_FAILURES.labels(reason).inc()
    return unauthorized(CredentialError(reason, text)).response()
