"""Channel authorisation: the table of docs/design.md, "Channels", for every operation."""

from __future__ import annotations

import pytest

from pulse.auth import Claims
from ws_gateway.authz import Access, Operation, authorize, require
from ws_gateway.protocol import ErrorCode, FrameError

OPS = Claims(sub="ops-1", roles=frozenset({"ops"}), exp=0)
ALICE = Claims(sub="alice", roles=frozenset(), exp=0)
VIEWER = Claims(sub="bob", roles=frozenset({"viewer"}), exp=0)

READS = (Operation.SUBSCRIBE, Operation.READ_HISTORY, Operation.READ_PRESENCE)
ALLOWED, FORBIDDEN, UNKNOWN = Access.ALLOWED, Access.FORBIDDEN, Access.UNKNOWN_CHANNEL

# Who may read (subscribe, history, presence) and who may publish. Publishing is only to
# account channels the token may read: the system feeds carry what the pipeline appends.
TABLE = [
    # claims, channel, read, publish
    (OPS, "payments", ALLOWED, FORBIDDEN),
    (OPS, "alerts", ALLOWED, FORBIDDEN),
    (OPS, "stats", ALLOWED, FORBIDDEN),
    (OPS, "health", ALLOWED, FORBIDDEN),
    (OPS, "account:alice", ALLOWED, ALLOWED),
    (ALICE, "payments", FORBIDDEN, FORBIDDEN),
    (ALICE, "alerts", FORBIDDEN, FORBIDDEN),
    (ALICE, "health", FORBIDDEN, FORBIDDEN),
    (VIEWER, "payments", FORBIDDEN, FORBIDDEN),
    (ALICE, "stats", ALLOWED, FORBIDDEN),
    (ALICE, "account:alice", ALLOWED, ALLOWED),
    (ALICE, "account:bob", FORBIDDEN, FORBIDDEN),
    (ALICE, "account:alice2", FORBIDDEN, FORBIDDEN),
    (ALICE, "account:alic", FORBIDDEN, FORBIDDEN),
    (ALICE, "account:", UNKNOWN, UNKNOWN),
    (ALICE, "account:alice:x", UNKNOWN, UNKNOWN),
    (ALICE, "account:al ice", UNKNOWN, UNKNOWN),
    (OPS, "Payments", UNKNOWN, UNKNOWN),
    (OPS, "presence", UNKNOWN, UNKNOWN),
    (OPS, "", UNKNOWN, UNKNOWN),
    (OPS, "nope", UNKNOWN, UNKNOWN),
    (OPS, "account:" + "x" * 129, UNKNOWN, UNKNOWN),
]


@pytest.mark.parametrize("op", READS)
@pytest.mark.parametrize(("claims", "channel", "read", "publish"), TABLE)
def test_reading_a_channel(
    claims: Claims, channel: str, read: Access, publish: Access, op: Operation
) -> None:
    assert authorize(claims, op, channel) is read


@pytest.mark.parametrize(("claims", "channel", "read", "publish"), TABLE)
def test_publishing_to_a_channel(
    claims: Claims, channel: str, read: Access, publish: Access
) -> None:
    assert authorize(claims, Operation.PUBLISH, channel) is publish


def test_an_account_id_like_the_sub_but_for_another_channel_is_not_a_bypass() -> None:
    # sub "payments" must not open the ops-only channel named "payments", nor "health" its own
    for name in ("payments", "health"):
        claims = Claims(sub=name, roles=frozenset(), exp=0)
        assert authorize(claims, Operation.SUBSCRIBE, name) is Access.FORBIDDEN
        assert authorize(claims, Operation.SUBSCRIBE, f"account:{name}") is Access.ALLOWED


@pytest.mark.parametrize(
    ("op", "channel", "code", "message"),
    [
        (Operation.SUBSCRIBE, "payments", ErrorCode.FORBIDDEN, "not allowed to subscribe"),
        (Operation.PUBLISH, "stats", ErrorCode.FORBIDDEN, "not allowed to publish"),
        (Operation.SUBSCRIBE, "nope", ErrorCode.UNKNOWN_CHANNEL, "no such channel"),
        (Operation.PUBLISH, "nope", ErrorCode.UNKNOWN_CHANNEL, "no such channel"),
    ],
)
def test_a_refusal_is_an_error_frame_naming_the_channel(
    op: Operation, channel: str, code: ErrorCode, message: str
) -> None:
    with pytest.raises(FrameError) as info:
        require(ALICE, op, channel)
    assert (info.value.code, info.value.message, info.value.channel) == (code, message, channel)


def test_an_allowed_operation_passes() -> None:
    require(ALICE, Operation.PUBLISH, "account:alice")
    require(ALICE, Operation.SUBSCRIBE, "stats")
