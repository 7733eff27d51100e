"""Channel authorisation: the table of DESIGN.md "Channels"."""

from __future__ import annotations

import pytest

from pulse.auth import Claims
from ws_gateway.authz import Access, authorize_channel

OPS = Claims(sub="ops-1", roles=frozenset({"ops"}), exp=0)
ALICE = Claims(sub="alice", roles=frozenset(), exp=0)
VIEWER = Claims(sub="bob", roles=frozenset({"viewer"}), exp=0)


@pytest.mark.parametrize(
    ("claims", "channel", "access"),
    [
        (OPS, "payments", Access.ALLOWED),
        (OPS, "alerts", Access.ALLOWED),
        (OPS, "stats", Access.ALLOWED),
        (OPS, "account:alice", Access.ALLOWED),
        (ALICE, "payments", Access.FORBIDDEN),
        (ALICE, "alerts", Access.FORBIDDEN),
        (VIEWER, "payments", Access.FORBIDDEN),
        (ALICE, "stats", Access.ALLOWED),
        (ALICE, "account:alice", Access.ALLOWED),
        (ALICE, "account:bob", Access.FORBIDDEN),
        (ALICE, "account:alice2", Access.FORBIDDEN),
        (ALICE, "account:alic", Access.FORBIDDEN),
        (ALICE, "account:", Access.UNKNOWN_CHANNEL),
        (ALICE, "account:alice:x", Access.UNKNOWN_CHANNEL),
        (ALICE, "account:al ice", Access.UNKNOWN_CHANNEL),
        (OPS, "Payments", Access.UNKNOWN_CHANNEL),
        (OPS, "presence", Access.UNKNOWN_CHANNEL),
        (OPS, "", Access.UNKNOWN_CHANNEL),
        (OPS, "account:" + "x" * 129, Access.UNKNOWN_CHANNEL),
    ],
)
def test_channel_access(claims: Claims, channel: str, access: Access) -> None:
    assert authorize_channel(claims, channel) is access


def test_an_account_id_like_the_sub_but_for_another_channel_is_not_a_bypass() -> None:
    # sub "payments" must not open the ops-only channel named "payments"
    claims = Claims(sub="payments", roles=frozenset(), exp=0)
    assert authorize_channel(claims, "payments") is Access.FORBIDDEN
    assert authorize_channel(claims, "account:payments") is Access.ALLOWED
