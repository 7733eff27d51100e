"""Schemathesis checks for the ingest API, loaded by the CLI through ``SCHEMATHESIS_HOOKS``.

The built-in ``positive_data_acceptance`` treats every 4xx to a schema-valid request as a bug.
Some refusals of schema-valid requests are state or policy, not schema, as the spec
documents: an ``Idempotency-Key`` already used with another body gets 422
``idempotency-key-reused`` (the generator reuses short keys such as ``"0"`` across bodies all
the time), a listing ``cursor`` the API did not return gets 400 ``invalid-cursor`` (a cursor
is opaque: any string fits its schema), and a webhook endpoint's URL the SSRF guard refuses,
a schedule croniter refuses or a replay window that ends before it starts get 422 of their
own types. This check runs the built-in one and lets those documented refusals through; any
other refusal of valid data still fails the run.

The built-in ``negative_data_rejection`` counts a string's length in UTF-16 code units (the
generator builds astral characters as two surrogates), JSON Schema in code points: a body
made "one character too long" out of a surrogate pair arrives as a valid JSON string of the
allowed length, which the API rightly accepts. The check here runs the built-in one and
forgives exactly that: an accepted "negative" body whose JSON, as sent, holds a character
beyond U+FFFF.

Loading this module also serialises ``compile`` in the schemathesis process: CPython 3.11
keeps the AST conversion's recursion-depth bookkeeping in state shared by threads, so two
workers whose generators describe a filter lambda at once (hypothesis parses its source
with ``ast.parse``) can fail with ``SystemError: AST constructor recursion depth mismatch``
— a crash of the tool, not a finding about the API. Query parameters with a type other than
string (the review listing's ``limit``) make such filters.
"""

from __future__ import annotations

import builtins
import functools
import json
import threading
from typing import TYPE_CHECKING, Any

import schemathesis
from schemathesis.core.failures import AcceptedNegativeData
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

if TYPE_CHECKING:
    from schemathesis import Case, CheckContext, Response

PROBLEMS = "https://pulse.dev/problems/"
KEY_REUSED = PROBLEMS + "idempotency-key-reused"
INVALID_CURSOR = PROBLEMS + "invalid-cursor"
STATEFUL_REFUSALS = {
    (422, KEY_REUSED),
    (400, INVALID_CURSOR),
    # Webhook endpoints: what a JSON Schema cannot say, as the spec documents. A URL the
    # SSRF guard refuses (another scheme, a literal internal address: the generator's URLs
    # are mostly those), a cron expression croniter refuses, a replay whose since is not
    # before its until (or now).
    (422, PROBLEMS + "webhook-url-refused"),
    (422, PROBLEMS + "invalid-schedule"),
    (422, PROBLEMS + "invalid-replay-window"),
}

_COMPILING = threading.RLock()
_compile = builtins.compile


@functools.wraps(_compile)
def _compile_alone(*args: Any, **kwargs: Any) -> Any:
    with _COMPILING:
        return _compile(*args, **kwargs)


builtins.compile = _compile_alone


@schemathesis.check
def positive_data_accepted_unless_key_reused(
    ctx: CheckContext, response: Response, case: Case[Any]
) -> bool | None:
    try:
        return positive_data_acceptance(ctx, response, case)
    except RejectedPositiveData:
        if (response.status_code, _problem_type(response)) in STATEFUL_REFUSALS:
            return None
        raise


@schemathesis.check
def negative_data_rejected_as_sent(
    ctx: CheckContext, response: Response, case: Case[Any]
) -> bool | None:
    try:
        return negative_data_rejection(ctx, response, case)
    except AcceptedNegativeData:
        if _sent_astral_character(response):
            return None
        raise


def _sent_astral_character(response: Response) -> bool:
    """Whether the request's JSON body, decoded as the API decodes it, holds a character
    beyond U+FFFF (one code point, where the generator counted two surrogates)."""
    body = response.request.body
    if not isinstance(body, str | bytes) or not body:
        return False
    try:
        text = json.dumps(json.loads(body), ensure_ascii=False)
    except (ValueError, TypeError):
        return False
    return any(ord(char) > 0xFFFF for char in text)


def _problem_type(response: Response) -> object:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("type") if isinstance(body, dict) else None
