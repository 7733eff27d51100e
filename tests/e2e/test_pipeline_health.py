"""The pipeline reports its own health: a stream processor, both workers and a gateway, each a
real process, append ``pulse.health`` events to channel ``health``, read by an operator
over a WebSocket; the numbers move with what happens to the pipeline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from pulse.auth import issue_token
from pulse.clients import aws_client
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs, WebhookNames
from pulse_dev.testing import (
    GATEWAY_SECRET,
    ServiceProcess,
    free_port,
    pending_payment,
    put_payment,
    send_frame,
)

pytestmark = pytest.mark.timeout(240)

SERVICES = ("stream-processor", "fraud-worker", "notify-worker", "ws-gateway")
HEALTH_ENV = {"PULSE_HEALTH_INTERVAL_SECONDS": "0.5"}


@dataclass
class Pipeline:
    gateway_port: int
    processes: dict[str, ServiceProcess]

    def ws_url(self, sub: str, roles: list[str]) -> str:
        token = issue_token(GATEWAY_SECRET, sub=sub, roles=roles)
        return f"ws://127.0.0.1:{self.gateway_port}/ws?token={token}"


@pytest.fixture
def pipeline(topology: TopologyOutputs, service_process: Any) -> Pipeline:
    del topology  # applied: the services find their table, stream and queues
    processes: dict[str, ServiceProcess] = {}
    ports = {name: free_port() for name in SERVICES}
    extra = {
        "stream-processor": {"PULSE_POLL_INTERVAL_SECONDS": "0.05"},
        "fraud-worker": {"PULSE_SQS_WAIT_TIME_SECONDS": "1"},
        "notify-worker": {"PULSE_SQS_WAIT_TIME_SECONDS": "1"},
        "ws-gateway": {"PULSE_JWT_SECRET": GATEWAY_SECRET},
    }
    for name in SERVICES:
        processes[name] = service_process(
            name.replace("-", "_"),
            PULSE_HTTP_PORT=str(ports[name]),
            **HEALTH_ENV,
            **extra[name],
        ).start(wait_port=ports[name])
    return Pipeline(ports["ws-gateway"], processes)


@dataclass
class Reports:
    """The latest ``pulse.health`` data per service, and the largest rates seen."""

    ws: ClientConnection
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    peak_rate: dict[str, float] = field(default_factory=dict)
    sources: set[str] = field(default_factory=set)

    async def until(
        self, condition: Callable[[Reports], bool], what: str, timeout: float = 60.0
    ) -> None:
        deadline = time.monotonic() + timeout
        while not condition(self):
            left = deadline - time.monotonic()
            assert left > 0, f"{what}: not reported in time; latest {self.latest}"
            frame = orjson.loads(await asyncio.wait_for(self.ws.recv(), left))
            if frame.get("op") != "event" or frame.get("channel") != "health":
                continue
            event = frame["event"]
            assert event["type"] == "pulse.health"
            data = event["data"]
            assert event["source"] == f"/pulse/{data['service']}/{data['instance']}"
            self.sources.add(event["source"])
            self.latest[data["service"]] = data
            rate = data.get("throughput", {}).get("messages_per_s", 0.0)
            self.peak_rate[data["service"]] = max(self.peak_rate.get(data["service"], 0.0), rate)

    def queue(self, service: str, name: str) -> dict[str, Any] | None:
        queues = self.latest.get(service, {}).get("queues", [])
        return next((q for q in queues if q["name"] == name), None)


async def test_the_pipeline_reports_its_own_health(
    pipeline: Pipeline, stack_settings: PulseSettings, topology: TopologyOutputs
) -> None:
    names = stack_settings.names
    hooks = WebhookNames.from_prefix(stack_settings.resource_prefix)
    async with (
        connect(pipeline.ws_url("ops-1", ["ops"])) as ops,
        connect(pipeline.ws_url("alice", [])) as alice,
    ):
        refused = await send_frame(alice, op="subscribe", channel="health")
        assert (refused["op"], refused["code"]) == ("error", "forbidden")
        assert (await send_frame(ops, op="subscribe", channel="payments"))["op"] == "subscribed"
        assert (await send_frame(ops, op="subscribe", channel="health"))["op"] == "subscribed"
        reports = Reports(ops)

        def everyone_with_their_queues(r: Reports) -> bool:
            return set(SERVICES) <= set(r.latest) and all(
                r.queue(service, queue) is not None
                for service, queue in [
                    ("fraud-worker", names.fraud_dlq),
                    ("notify-worker", hooks.dlq),
                    ("notify-worker", hooks.retries_dlq),
                    ("stream-processor", f"{names.prefix}stream-failures-dlq"),
                ]
            )

        await reports.until(everyone_with_their_queues, "every service and its queues")
        assert len(reports.sources) == len(SERVICES)  # one source per process
        assert {q["name"]: q["role"] for q in reports.latest["notify-worker"]["queues"]} == {
            names.notify_queue: "queue",
            names.notify_dlq: "dlq",
            hooks.queue: "queue",
            hooks.dlq: "dlq",
            hooks.retries: "queue",
            hooks.retries_dlq: "dlq",
        }
        failures = reports.queue("stream-processor", f"{names.prefix}stream-failures")
        assert failures is not None
        assert (failures["role"], failures["depth"], failures["oldest_age_s"]) == (
            "failures",
            0,
            0.0,
        )
        gateway = reports.latest["ws-gateway"]
        assert gateway["connections"] == 2  # the operator and alice
        assert gateway["interval_seconds"] == 0.5

        # Five messages in the fraud worker's DLQ: its next report says so, with their age.
        sqs = aws_client("sqs", stack_settings)
        for n in range(5):
            sqs.send_message(QueueUrl=topology.queue_urls[names.fraud_dlq], MessageBody=f"x{n}")

        def five_dead_letters(r: Reports) -> bool:
            dlq = r.queue("fraud-worker", names.fraud_dlq)
            return dlq is not None and dlq["depth"] == 5 and (dlq["oldest_age_s"] or 0) > 0

        await reports.until(five_dead_letters, "the fraud DLQ's five messages")

        # Payments flow: the gateway measures their end-to-end latency, the processor its
        # shard's lag, and the processor and the fraud worker their throughput.
        ddb = aws_client("dynamodb", stack_settings)
        for n in range(5):
            put_payment(ddb, names.payments_table, pending_payment(account_id=f"acct-{n}"))

        def payments_measured(r: Reports) -> bool:
            e2e = r.latest["ws-gateway"]["e2e_ms"]
            shards = r.latest["stream-processor"].get("shards", [])
            return (
                e2e["samples"] > 0
                and bool(shards)
                and r.peak_rate.get("stream-processor", 0) > 0
                and r.peak_rate.get("fraud-worker", 0) > 0
            )

        await reports.until(payments_measured, "the payments' latency, lag and throughput")
        e2e = reports.latest["ws-gateway"]["e2e_ms"]
        assert e2e["p50"] is not None
        assert e2e["p99"] is not None
        assert e2e["p50"] <= e2e["p99"]
        assert e2e["window_s"] == 60
        for shard in reports.latest["stream-processor"]["shards"]:
            assert isinstance(shard["iterator_age_ms"], int)
            assert shard["iterator_age_ms"] >= 0
        assert reports.latest["fraud-worker"]["throughput"]["failures_per_s"] == 0

    # Each service said the same, once per interval, as one line at info.
    for name, process in pipeline.processes.items():
        lines = [orjson.loads(line) for line in process.logs().splitlines() if line[:1] == "{"]
        summaries = [line for line in lines if line.get("event") == "health"]
        assert summaries, name
        assert {line["level"] for line in summaries} == {"info"}
        assert process.stop() == 0, process.logs()[-3000:]
