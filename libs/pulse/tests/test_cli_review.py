"""``pulse review`` through click's CliRunner against the real emulator: the same moves as
the API's review, recorded as ``cli:<user>``."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner

from pulse.cli import main
from pulse.clients import aws_client
from pulse.dead_letters import format_age
from pulse.events import utc_now
from pulse_dev.testing import pending_payment, put_in_review, put_payment

if TYPE_CHECKING:
    from pulse.settings import PulseSettings
    from pulse.topology import TopologyOutputs


@pytest.fixture
def ddb(topology: TopologyOutputs, stack_settings: PulseSettings) -> Any:
    return aws_client("dynamodb", stack_settings)


def _status(ddb: Any, table: str, payment_id: str) -> dict[str, Any]:
    key = {"payment_id": {"S": payment_id}}
    return dict(ddb.get_item(TableName=table, Key=key, ConsistentRead=True)["Item"])


def test_list_shows_the_waiting_payments_oldest_first_as_a_table(
    ddb: Any, stack_settings: PulseSettings, stack_env: dict[str, str]
) -> None:
    table = stack_settings.names.payments_table
    runner = CliRunner()
    empty = runner.invoke(main, ["review", "list"], env=stack_env)
    assert empty.exit_code == 0, empty.output
    assert empty.output == "no payment is waiting for review\n"

    old = put_in_review(
        ddb,
        table,
        entered=utc_now() - timedelta(hours=3, minutes=20),
        account_id="acct-9",
        amount="7500.00",
        reasons=("amount_above_review_limit", "country_mismatch"),
    )
    new = put_in_review(ddb, table, entered=utc_now() - timedelta(minutes=5), currency="USD")
    listed = runner.invoke(main, ["review", "list"], env=stack_env)
    assert listed.exit_code == 0, listed.output
    header, first, second = listed.output.splitlines()
    assert header.split() == ["PAYMENT", "ACCOUNT", "AMOUNT", "WAITING", "REASONS"]
    assert first.split(maxsplit=7) == [
        old,
        "acct-9",
        "7500.00",
        "EUR",
        "3h",
        "20m",
        "amount_above_review_limit,",
        "country_mismatch",
    ]
    assert second.startswith(new)
    assert "12.50 USD" in second
    assert second.index("12.50") == first.index("7500.00")  # columns line up

    one = runner.invoke(main, ["review", "list", "--limit", "1"], env=stack_env)
    assert one.exit_code == 0
    assert len(one.stdout.splitlines()) == 2
    assert "more are waiting" in one.stderr


def test_approve_and_decline_decide_once_as_the_cli_user(
    ddb: Any, stack_settings: PulseSettings, stack_env: dict[str, str]
) -> None:
    table = stack_settings.names.payments_table
    env = {**stack_env, "USER": "rita", "LOGNAME": "rita"}
    runner = CliRunner()
    payment_id = put_in_review(ddb, table)
    approved = runner.invoke(
        main, ["review", "approve", payment_id, "--note", "called the customer"], env=env
    )
    assert approved.exit_code == 0, approved.output
    assert approved.output == f"{payment_id} APPROVED by cli:rita\n"
    item = _status(ddb, table, payment_id)
    assert item["status"]["S"] == "APPROVED"
    assert item["reviewed_by"]["S"] == "cli:rita"
    assert item["review_note"]["S"] == "called the customer"
    assert "review_queue" not in item

    again = runner.invoke(main, ["review", "decline", payment_id], env=env)
    assert again.exit_code == 1
    assert f"payment {payment_id} is APPROVED (decided by cli:rita at" in again.output
    assert _status(ddb, table, payment_id)["status"]["S"] == "APPROVED"

    declined_id = put_in_review(ddb, table)
    declined = runner.invoke(main, ["review", "decline", declined_id], env=env)
    assert declined.exit_code == 0, declined.output
    declined_item = _status(ddb, table, declined_id)
    assert declined_item["status"]["S"] == "DECLINED"
    assert "review_note" not in declined_item  # no --note, no note

    pending = put_payment(ddb, table, pending_payment())["payment_id"]
    refused = runner.invoke(main, ["review", "approve", pending], env=env)
    assert refused.exit_code == 1
    assert "is PENDING; only a payment in REVIEW can be reviewed" in refused.output
    unknown = runner.invoke(main, ["review", "approve", "no-such-payment"], env=env)
    assert unknown.exit_code == 1
    assert "no payment no-such-payment" in unknown.output
    assert "Traceback" not in refused.output + unknown.output


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (45.9, "45s"), (725, "12m 05s"), (12000, "3h 20m"), (187200, "2d 04h"), (-3, "0s")],
)
def test_waits_read_as_a_person_says_them(seconds: float, text: str) -> None:
    assert format_age(seconds) == text
