"""Schemathesis checks for the ingest API, loaded by the CLI through ``SCHEMATHESIS_HOOKS``.

The built-in ``positive_data_acceptance`` treats every 4xx to a schema-valid request as a bug.
One refusal of a schema-valid ``POST /v1/payments`` is state, not schema: an
``Idempotency-Key`` already used with another body gets 422 ``idempotency-key-reused``, as
the spec documents. The generator reuses short keys (``"0"``) across bodies all the time, so
this check runs the built-in one and lets that single documented refusal through; any other
refusal of valid data still fails the run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import schemathesis
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.specs.openapi.checks import positive_data_acceptance

if TYPE_CHECKING:
    from schemathesis import Case, CheckContext, Response

KEY_REUSED = "https://pulse.dev/problems/idempotency-key-reused"


@schemathesis.check
def positive_data_accepted_unless_key_reused(
    ctx: CheckContext, response: Response, case: Case[Any]
) -> bool | None:
    try:
        return positive_data_acceptance(ctx, response, case)
    except RejectedPositiveData:
        if response.status_code == 422 and _problem_type(response) == KEY_REUSED:
            return None
        raise


def _problem_type(response: Response) -> object:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("type") if isinstance(body, dict) else None
