"""The blocklists kept by ``pulse fraud block|unblock`` decline payments in a running worker."""

from __future__ import annotations

from typing import Any

from click.testing import CliRunner

from pulse.cli import main as pulse_cli
from pulse.clients import aws_client
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs
from pulse_dev.testing import free_port, payment_created, pending_payment, put_payment, until


def test_blocked_accounts_and_merchants_are_declined_until_unblocked(
    topology: TopologyOutputs,
    stack_settings: PulseSettings,
    stack_env: dict[str, str],
    service_process: Any,
) -> None:
    names = stack_settings.names
    ddb = aws_client("dynamodb", stack_settings)
    sqs = aws_client("sqs", stack_settings)
    queue_url = topology.queue_urls[names.fraud_queue]

    def pay(account: str, merchant: str) -> str:
        payment = pending_payment(account_id=account, merchant_id=merchant)
        put_payment(ddb, names.payments_table, payment)
        sqs.send_message(
            QueueUrl=queue_url, MessageBody=payment_created(payment).to_json().decode()
        )
        return payment["payment_id"]

    def decided(payment_id: str) -> tuple[str, list[str]] | None:
        item = ddb.get_item(
            TableName=names.payments_table,
            Key={"payment_id": {"S": payment_id}},
            ConsistentRead=True,
        )["Item"]
        if item["status"]["S"] == "PENDING":
            return None
        return item["status"]["S"], [r["S"] for r in item["fraud_reasons"]["L"]]

    cli = CliRunner()
    blocked = cli.invoke(
        pulse_cli, ["fraud", "block", "--account", "acct-bad", "--merchant", "m-bad"], env=stack_env
    )
    assert blocked.exit_code == 0, blocked.output
    port = free_port()
    worker = service_process(
        "fraud_worker", PULSE_HTTP_PORT=str(port), PULSE_SQS_WAIT_TIME_SECONDS="1"
    ).start(wait_port=port)

    by_account = pay("acct-bad", "m-1")
    by_merchant = pay("acct-ok", "m-bad")
    assert until(lambda: decided(by_account)) == ("DECLINED", ["blocked_account"])
    assert until(lambda: decided(by_merchant)) == ("DECLINED", ["blocked_merchant"])

    unblocked = cli.invoke(pulse_cli, ["fraud", "unblock", "--account", "acct-bad"], env=stack_env)
    assert unblocked.exit_code == 0, unblocked.output
    after = pay("acct-bad", "m-1")
    assert until(lambda: decided(after)) == ("APPROVED", [])
    assert worker.stop() == 0
