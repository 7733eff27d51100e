"""End to end on a stream of several shards: payments posted to ingest, decided by the fraud
worker, read by stream-processor replicas while the stream splits under them.

Real processes: the AWS emulator with a stream of four shards (iterators living two
seconds), Redis, ingest, the fraud worker and three stream-processor replicas. Payments of
eight accounts are posted with each account's bearer token while shards split five times,
one replica is killed (SIGKILL) and a fourth joins. Every payment's ``created`` and then
its ``updated`` event (the fraud decision) must be in the ``payments`` channel and its
account's channel once each and in that order; no shard read before its parent ended; the
three live replicas at most one lease apart.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from pulse.auth import issue_token
from pulse.clients import aws_client
from pulse.settings import DEV_JWT_SECRET, PulseSettings
from pulse.topology import TopologyOutputs
from pulse_dev.emulators import free_port
from pulse_dev.split_run import SplitRunHooks, run_through_splits, split_run_problems
from pulse_dev.stream_emulation import emulator_fixture, split_shards
from pulse_dev.stream_scaling import (
    ExpectedEvents,
    StreamReplicas,
    delivery_report,
    described_shards,
    lease_items,
    type_mark,
)
from pulse_dev.stream_store import StreamShape
from pulse_dev.testing import ServiceProcess, channel_history

pytestmark = pytest.mark.timeout(240)

ACCOUNTS = [f"acct-{i}" for i in range(8)]
EVENTS = ["pulse.payment.created", "pulse.payment.updated"]  # each payment's, in order


# This module's own emulator: a stream of four shards, iterators living two seconds.
aws_endpoint = emulator_fixture(StreamShape(shards=4, iterator_seconds=2.0))


class Payments:
    """Payments posted to ingest, one account's token each; what reached Redis."""

    def __init__(
        self,
        settings: PulseSettings,
        topology: TopologyOutputs,
        ingest_url: str,
        redis_url: str,
        services: list[ServiceProcess],
    ) -> None:
        self.settings = settings
        self.topology = topology
        self.services = services
        self.ingest_url = ingest_url
        self.redis = redis.Redis.from_url(redis_url)
        self.expected = ExpectedEvents()
        self.tokens = {a: issue_token(DEV_JWT_SECRET, sub=a) for a in ACCOUNTS}

    def post(self) -> None:
        """One payment for each of three accounts, then a breath (about 10 a second)."""
        for _ in range(3):
            account = ACCOUNTS[len(self.expected.marks) % len(ACCOUNTS)]
            body = {"account_id": account, "amount": "12.50", "currency": "EUR"}
            request = urllib.request.Request(  # noqa: S310 - ingest on 127.0.0.1
                f"{self.ingest_url}/v1/payments",
                data=json.dumps({**body, "merchant_id": "m-1"}).encode(),
                headers={
                    "Authorization": f"Bearer {self.tokens[account]}",
                    "Content-Type": "application/json",
                    "Idempotency-Key": uuid.uuid4().hex,
                },
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                payment = json.loads(response.read())
            self.expected.record(payment["payment_id"], account, EVENTS)
        time.sleep(0.2)

    def history(self, channel: str) -> list[dict[str, Any]]:
        return channel_history(self.redis, self.settings.redis_prefix, channel)

    def delivered(self) -> bool:
        report = delivery_report(self.history("payments"), self.expected.marks, type_mark)
        return report.delivered == report.expected


@pytest.fixture
def payments(
    stack_settings: PulseSettings,
    topology: TopologyOutputs,
    redis_url: str,
    service_process: Any,
) -> Payments:
    """Ingest (throttled far above this test's rate) and the fraud worker, running."""
    port = free_port()
    ingest: ServiceProcess = service_process(
        "ingest",
        PULSE_HTTP_PORT=str(port),
        PULSE_RATE_LIMIT_PER_SECOND="1000",
        PULSE_RATE_LIMIT_BURST="1000",
    ).start(wait_port=port)
    fraud_port = free_port()
    fraud: ServiceProcess = service_process(
        "fraud_worker", PULSE_HTTP_PORT=str(fraud_port), PULSE_SQS_WAIT_TIME_SECONDS="1"
    ).start(wait_port=fraud_port)
    return Payments(
        stack_settings, topology, f"http://127.0.0.1:{port}", redis_url, [ingest, fraud]
    )


def test_payments_cross_a_splitting_stream_once_each_in_order(
    stack_env: dict[str, str],
    stack_settings: PulseSettings,
    aws_endpoint: str,
    payments: Payments,
    tmp_path: Path,
) -> None:
    ddb = aws_client("dynamodb", stack_settings)
    streams = aws_client("dynamodbstreams", stack_settings)
    table = stack_settings.names.payments_table
    replicas = StreamReplicas(stack_env, tmp_path)

    def split() -> None:
        split_shards(aws_endpoint, table=table)

    hooks = SplitRunHooks(
        write=payments.post,
        split=split,
        shards=lambda: len(described_shards(streams, payments.topology.stream_arns[table])),
        leases=lambda: lease_items(ddb, stack_settings.names.leases_table),
        delivered=payments.delivered,
    )
    try:
        outcome = run_through_splits(replicas, hooks, seconds=15.0, settle=90.0)
        report = delivery_report(payments.history("payments"), payments.expected.marks, type_mark)
        assert report.exact, report
        assert len(payments.expected.marks) >= 50
        for account, marks in payments.expected.by_account().items():
            mine = delivery_report(payments.history(f"account:{account}"), marks, type_mark)
            assert mine.exact, (account, mine)
        decided = [e["data"] for e in payments.history("payments") if e["type"] == EVENTS[1]]
        assert {d["old_status"] for d in decided} == {"PENDING"}
        live = ["r1", "r3", "r4"]
        assert split_run_problems(outcome, first_shards=4, workers=live) == []
        assert replicas.stop() == dict.fromkeys(live, 0)
        assert [service.stop() for service in payments.services] == [0, 0]
    finally:
        replicas.close()
        payments.redis.close()
