"""The payment's states: the table of allowed moves, the one UpdateItem that makes a move,
the review queue's cursors, and the diagram in docs/design.md. Pure."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pulse.payment_states import (
    TRANSITIONS,
    IllegalTransitionError,
    InvalidCursorError,
    Transition,
    Trigger,
    decode_cursor,
    encode_cursor,
    transition,
    update_request,
)

DESIGN = Path(__file__).resolve().parents[3] / "docs" / "design.md"
STATUSES = ("PENDING", "APPROVED", "REVIEW", "DECLINED")
AT = "2026-01-01T12:00:00.000Z"


def test_the_allowed_moves_are_exactly_these() -> None:
    assert {(t.source, t.target, t.trigger) for t in TRANSITIONS} == {
        ("PENDING", "APPROVED", Trigger.FRAUD_DECISION),
        ("PENDING", "REVIEW", Trigger.FRAUD_DECISION),
        ("PENDING", "DECLINED", Trigger.FRAUD_DECISION),
        ("REVIEW", "APPROVED", Trigger.REVIEW),
        ("REVIEW", "DECLINED", Trigger.REVIEW),
        ("REVIEW", "DECLINED", Trigger.REVIEW_TIMEOUT),
    }


def test_approved_and_declined_are_final_and_nothing_returns_to_pending() -> None:
    assert not [t for t in TRANSITIONS if t.source in {"APPROVED", "DECLINED"}]
    assert not [t for t in TRANSITIONS if t.target == "PENDING"]
    assert not [t for t in TRANSITIONS if t.source == t.target]


@pytest.mark.parametrize("source", STATUSES)
@pytest.mark.parametrize("target", STATUSES)
@pytest.mark.parametrize("trigger", list(Trigger))
def test_every_other_move_is_refused(source: str, target: str, trigger: Trigger) -> None:
    allowed = {(t.source, t.target, t.trigger) for t in TRANSITIONS}
    if (source, target, trigger) in allowed:
        assert transition(source, target, trigger) == Transition(source, target, trigger)  # type: ignore[arg-type]
    else:
        with pytest.raises(IllegalTransitionError, match=f"from {source} to {target}"):
            transition(source, target, trigger)


def test_the_fraud_decision_is_conditional_on_pending_and_records_its_score() -> None:
    move = transition("PENDING", "APPROVED", Trigger.FRAUD_DECISION)
    request = update_request(
        "t-payments", "p-1", move, at=AT, record={"fraud_score": 5, "fraud_reasons": []}
    )
    assert request["ConditionExpression"] == "#status = :source"
    values = request["ExpressionAttributeValues"]
    assert values[":source"] == {"S": "PENDING"}
    assert values[":target"] == {"S": "APPROVED"}
    assert request["ExpressionAttributeNames"]["#stamp"] == "decided_at"
    assert {"N": "5"} in values.values()
    assert {"L": []} in values.values()
    assert "review_queue" not in request["UpdateExpression"]
    assert request["ReturnValuesOnConditionCheckFailure"] == "ALL_OLD"


def test_entering_review_joins_the_queue_and_leaving_it_leaves() -> None:
    held = update_request(
        "t",
        "p-1",
        transition("PENDING", "REVIEW", Trigger.FRAUD_DECISION),
        at=AT,
        record={"fraud_score": 55},
    )
    assert "review_queue = :queue, review_since = :at" in held["UpdateExpression"]
    assert held["ExpressionAttributeValues"][":queue"] == {"S": "REVIEW"}
    decided = update_request(
        "t",
        "p-1",
        transition("REVIEW", "DECLINED", Trigger.REVIEW),
        at=AT,
        record={"reviewed_by": "ops-1", "review_note": None},
    )
    assert decided["UpdateExpression"].endswith(" REMOVE review_queue, review_since")
    assert decided["ExpressionAttributeNames"]["#stamp"] == "reviewed_at"
    assert "review_note" not in decided["ExpressionAttributeNames"].values()  # None: unset
    assert {"S": "ops-1"} in decided["ExpressionAttributeValues"].values()


def test_a_trigger_records_only_its_own_fields() -> None:
    review = transition("REVIEW", "APPROVED", Trigger.REVIEW)
    with pytest.raises(IllegalTransitionError, match="fraud_score"):
        update_request("t", "p", review, at=AT, record={"fraud_score": 1})
    made_up = Transition("APPROVED", "PENDING", Trigger.REVIEW)
    with pytest.raises(IllegalTransitionError, match="not an allowed move"):
        update_request("t", "p", made_up, at=AT, record={})


def test_a_cursor_round_trips_and_a_forged_one_is_refused() -> None:
    last = {
        "payment_id": {"S": "p-1"},
        "review_queue": {"S": "REVIEW"},
        "review_since": {"S": AT},
    }
    assert decode_cursor(encode_cursor(last)) == last
    for forged in ("", "not base64!", "bm90LWpzb24", "WyJhIl0", "WzEsMl0", "e30"):
        with pytest.raises(InvalidCursorError):
            decode_cursor(forged)


def test_the_diagram_in_the_design_document_is_the_table() -> None:
    text = DESIGN.read_text()
    diagram = re.search(r"```mermaid\nstateDiagram-v2\n(.*?)```", text, re.DOTALL)
    assert diagram, "docs/design.md draws the payment states as a mermaid stateDiagram-v2"
    edges = set(re.findall(r"^\s*(\w+) --> (\w+) : (\w+)\s*$", diagram.group(1), re.MULTILINE))
    assert edges == {(t.source, t.target, str(t.trigger)) for t in TRANSITIONS}
