"""RFC 9457 problem details: every error Pulse's HTTP APIs return, as data.

A handler raises (or returns) a :class:`Problem`; :meth:`Problem.response` renders it as
``application/problem+json`` with its headers. Problems never carry a stack trace. Each
kind has a ``type`` URI under ``https://pulse.dev/problems/`` ending in its slug.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, Final

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "PROBLEM_BASE",
    "PROBLEM_CONTENT_TYPE",
    "FieldError",
    "Problem",
    "ProblemDocument",
    "bad_request",
    "not_found",
    "unprocessable",
]

PROBLEM_BASE: Final = "https://pulse.dev/problems/"
PROBLEM_CONTENT_TYPE: Final = "application/problem+json"
# aiohttp sets these itself from the body.
_BODY_HEADERS: Final = frozenset({"content-type", "content-length"})


class FieldError(BaseModel):
    """One bad field of a request."""

    model_config = ConfigDict(frozen=True)

    field: str = Field(description="Dotted path of the field, e.g. metadata.colour.")
    message: str


class ProblemDocument(BaseModel):
    """The JSON body of every error response (RFC 9457)."""

    model_config = ConfigDict(title="Problem")

    type: str = Field(description="A URI naming the kind of problem.")
    title: str
    status: int = Field(ge=400, le=599)
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = Field(
        default=None, description="Field-level details of a validation problem."
    )


class Problem(Exception):  # noqa: N818 - it is a problem document, raised
    """An error response: ``slug`` names it (``type`` is PROBLEM_BASE + slug)."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str | None = None,
        *,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}

    @property
    def type(self) -> str:
        return PROBLEM_BASE + self.slug

    def document(self, instance: str | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": self.type, "title": self.title, "status": self.status}
        if self.detail is not None:
            doc["detail"] = self.detail
        if instance is not None:
            doc["instance"] = instance
        if self.errors is not None:
            doc["errors"] = [e.model_dump() for e in self.errors]
        return doc

    def body(self, instance: str | None = None) -> bytes:
        return orjson.dumps(self.document(instance))

    def response(self) -> web.Response:
        """The problem as an aiohttp response, with its headers."""
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _BODY_HEADERS}
        return web.Response(
            body=self.body(),
            status=self.status,
            content_type=PROBLEM_CONTENT_TYPE,
            headers=headers,
        )

    @classmethod
    def from_status(cls, status: int, detail: str | None = None) -> Problem:
        """A generic problem for an HTTP status (404 for an unknown route, 405, …)."""
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
        slug = phrase.lower().replace(" ", "-").replace("'", "")
        return cls(status, slug, phrase, detail)


def bad_request(slug: str, title: str, detail: str) -> Problem:
    return Problem(400, slug, title, detail)


def not_found(detail: str) -> Problem:
    return Problem(404, "not-found", "Not found", detail)


def unprocessable(errors: list[FieldError]) -> Problem:
    """The 422 validation problem listing every bad field."""
    fields = ", ".join(sorted({e.field for e in errors}))
    return Problem(
        422,
        "validation",
        "Invalid request",
        f"the request has invalid fields: {fields}",
        errors=errors,
    )
