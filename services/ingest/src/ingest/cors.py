"""Cross-origin calls from the browser origins of ``PULSE_CORS_ORIGINS`` (the Fetch standard's
CORS protocol), so the console served by the gateway can call the API.

- A preflight (``OPTIONS`` with ``Access-Control-Request-Method``) from a listed origin is
  answered here, ``204``, before the credential is asked for (browsers send none with it):
  the methods and the request headers the API reads (``Authorization``, ``Content-Type``,
  ``Idempotency-Key``, ``traceparent``), cached by the browser for ten minutes.
- Every other answer to a listed origin — successes and problems alike, 401 and 429
  included, so the page can read why — carries ``Access-Control-Allow-Origin`` with that
  origin and exposes the headers a client acts on (``Location``, ``Retry-After``, the
  ``RateLimit`` fields, …).
- An origin not listed gets no CORS header at all: the browser keeps the answer from the
  page. The credential, not the origin, is what protects the API; CORS only lets pages of
  the listed origins read what their own credential may read.

Answers vary by ``Origin`` (``Vary: Origin``), so a shared cache never hands one origin's
answer to another.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from aiohttp import hdrs, web

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

__all__ = ["ALLOWED_HEADERS", "EXPOSED_HEADERS", "Cors"]

# Every method the API answers to: PATCH and DELETE manage webhook endpoints.
ALLOWED_METHODS: Final = "GET, POST, PATCH, DELETE, OPTIONS"
ALLOWED_HEADERS: Final = "Authorization, Content-Type, Idempotency-Key, traceparent"
EXPOSED_HEADERS: Final = (
    "Location, Idempotent-Replayed, traceparent, Retry-After, RateLimit, RateLimit-Policy, "
    "WWW-Authenticate"
)
PREFLIGHT_MAX_AGE: Final = "600"


class Cors:
    """The aiohttp middleware answering CORS for ``origins`` (module docstring)."""

    def __init__(self, origins: Iterable[str]) -> None:
        self._origins = frozenset(origins)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None or origin not in self._origins:
            return await handler(request)
        if (
            request.method == hdrs.METH_OPTIONS
            and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
        ):
            preflight = web.Response(status=204)
            preflight.headers.update(
                {
                    hdrs.ACCESS_CONTROL_ALLOW_METHODS: ALLOWED_METHODS,
                    hdrs.ACCESS_CONTROL_ALLOW_HEADERS: ALLOWED_HEADERS,
                    hdrs.ACCESS_CONTROL_MAX_AGE: PREFLIGHT_MAX_AGE,
                }
            )
            return _allow(preflight, origin)
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # a redirect or an error not rendered below
            _allow(exc, origin)
            raise
        response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = EXPOSED_HEADERS
        return _allow(response, origin)


def _allow(response: web.StreamResponse, origin: str) -> web.StreamResponse:
    response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
    vary = response.headers.get(hdrs.VARY)
    if vary is None:
        response.headers[hdrs.VARY] = hdrs.ORIGIN
    elif hdrs.ORIGIN.lower() not in vary.lower():
        response.headers[hdrs.VARY] = f"{vary}, {hdrs.ORIGIN}"
    return response
