"""Problem documents (RFC 9457): what every error response of Pulse carries."""

from __future__ import annotations

import orjson

from pulse.problems import FieldError, Problem, unprocessable


def test_validation_problem_document() -> None:
    problem = unprocessable([FieldError(field="amount", message="amount must be greater than 0")])
    assert orjson.loads(problem.body()) == {
        "type": "https://pulse.dev/problems/validation",
        "title": "Invalid request",
        "status": 422,
        "detail": "the request has invalid fields: amount",
        "errors": [{"field": "amount", "message": "amount must be greater than 0"}],
    }


def test_problems_without_detail_or_errors_leave_them_out() -> None:
    doc = Problem(500, "internal", "Internal server error").document()
    assert doc == {
        "type": "https://pulse.dev/problems/internal",
        "title": "Internal server error",
        "status": 500,
    }


def test_generic_problems_from_http_statuses() -> None:
    assert Problem.from_status(404).document() == {
        "type": "https://pulse.dev/problems/not-found",
        "title": "Not Found",
        "status": 404,
    }
    assert Problem.from_status(405).slug == "method-not-allowed"
