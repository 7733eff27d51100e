"""Ingest's one authorization decision, as a table."""

from __future__ import annotations

import pytest

from ingest.authz import Action, Verdict, authorize
from pulse.api_keys import DEFAULT_SCOPES, PAYMENTS_READ, PAYMENTS_WRITE, SCOPES
from pulse.credentials import Principal

ALICE_JWT = Principal("jwt", "alice", SCOPES)
OPS_JWT = Principal("jwt", "ops-1", SCOPES, frozenset({"ops"}))
ALICE_KEY = Principal("api_key", "alice", SCOPES, key_id="k1")
ALICE_READ_KEY = Principal("api_key", "alice", frozenset({PAYMENTS_READ}), key_id="k2")
ALICE_WRITE_KEY = Principal("api_key", "alice", frozenset({PAYMENTS_WRITE}), key_id="k3")
ALICE_PAYMENTS_KEY = Principal("api_key", "alice", DEFAULT_SCOPES, key_id="k4")


@pytest.mark.parametrize(
    ("principal", "action", "account", "verdict"),
    [
        # own account, every scope
        (ALICE_JWT, Action.CREATE, "alice", Verdict.ALLOW),
        (ALICE_JWT, Action.READ, "alice", Verdict.ALLOW),
        (ALICE_KEY, Action.CREATE, "alice", Verdict.ALLOW),
        (ALICE_KEY, Action.READ, "alice", Verdict.ALLOW),
        # another account: creating is refused, reading looks like nothing is there
        (ALICE_JWT, Action.CREATE, "bob", Verdict.FORBIDDEN),
        (ALICE_JWT, Action.READ, "bob", Verdict.NOT_FOUND),
        (ALICE_KEY, Action.CREATE, "bob", Verdict.FORBIDDEN),
        (ALICE_KEY, Action.READ, "bob", Verdict.NOT_FOUND),
        # scopes limit keys, before any payment is looked at
        (ALICE_READ_KEY, Action.READ, "alice", Verdict.ALLOW),
        (ALICE_READ_KEY, Action.CREATE, "alice", Verdict.MISSING_SCOPE),
        (ALICE_READ_KEY, Action.CREATE, None, Verdict.MISSING_SCOPE),
        (ALICE_WRITE_KEY, Action.CREATE, "alice", Verdict.ALLOW),
        (ALICE_WRITE_KEY, Action.READ, "alice", Verdict.MISSING_SCOPE),
        (ALICE_WRITE_KEY, Action.READ, None, Verdict.MISSING_SCOPE),
        (ALICE_WRITE_KEY, Action.READ, "bob", Verdict.MISSING_SCOPE),
        # before the payment is read: the scope alone
        (ALICE_JWT, Action.READ, None, Verdict.ALLOW),
        (ALICE_READ_KEY, Action.READ, None, Verdict.ALLOW),
        # ops may do everything, for every account
        (OPS_JWT, Action.CREATE, "bob", Verdict.ALLOW),
        (OPS_JWT, Action.READ, "bob", Verdict.ALLOW),
        (OPS_JWT, Action.READ, None, Verdict.ALLOW),
        # reviewing is for operators only: no account, no key, whatever its scopes
        (OPS_JWT, Action.REVIEW, None, Verdict.ALLOW),
        (OPS_JWT, Action.REVIEW, "bob", Verdict.ALLOW),
        (ALICE_JWT, Action.REVIEW, None, Verdict.FORBIDDEN),
        (ALICE_JWT, Action.REVIEW, "alice", Verdict.FORBIDDEN),
        (ALICE_KEY, Action.REVIEW, None, Verdict.FORBIDDEN),
        (ALICE_KEY, Action.REVIEW, "alice", Verdict.FORBIDDEN),
        # webhook endpoints: the account's own with webhooks:manage (a JWT has it), another
        # account's look absent, a key with the payment scopes alone may not
        (ALICE_JWT, Action.MANAGE_WEBHOOKS, "alice", Verdict.ALLOW),
        (ALICE_KEY, Action.MANAGE_WEBHOOKS, "alice", Verdict.ALLOW),
        (ALICE_JWT, Action.MANAGE_WEBHOOKS, "bob", Verdict.NOT_FOUND),
        (ALICE_PAYMENTS_KEY, Action.MANAGE_WEBHOOKS, "alice", Verdict.MISSING_SCOPE),
        (ALICE_PAYMENTS_KEY, Action.MANAGE_WEBHOOKS, None, Verdict.MISSING_SCOPE),
        (OPS_JWT, Action.MANAGE_WEBHOOKS, "bob", Verdict.ALLOW),
    ],
)
def test_who_may_do_what(
    principal: Principal, action: Action, account: str | None, verdict: Verdict
) -> None:
    assert authorize(principal, action, account) is verdict


def test_every_scope_grants_an_action_and_reviewing_none() -> None:
    assert {a.scope for a in Action} == {*SCOPES, None}
    assert Action.REVIEW.scope is None
