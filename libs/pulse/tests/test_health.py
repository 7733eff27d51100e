"""The health reporter: readings merged into one ``pulse.health`` event on channel ``health``
(against the real Redis), rates since the previous report, the one-line summary."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from pulse.channels import ChannelKeys
from pulse.events import HEALTH
from pulse.health import (
    HISTORY_LENGTH,
    HealthReporter,
    Reading,
    Throughput,
    merge_readings,
    summary_fields,
)
from pulse.metrics import StageMetrics
from pulse.settings import PulseSettings
from pulse_dev.testing import stream_entries


class Fixed:
    def __init__(self, reading: Reading) -> None:
        self.reading = reading
        self.elapsed: list[float] = []

    async def read(self, elapsed: float) -> Reading:
        self.elapsed.append(elapsed)
        return self.reading


class Broken:
    async def read(self, _elapsed: float) -> Reading:
        raise RuntimeError("queue unreachable")


def _queue(name: str, role: str, depth: int, in_flight: int = 0, oldest: float | None = 0.0) -> Any:
    return {
        "name": name,
        "role": role,
        "depth": depth,
        "in_flight": in_flight,
        "oldest_age_s": oldest,
    }


def test_readings_join_lists_add_rates_and_keep_the_rest() -> None:
    merged = merge_readings(
        [
            {"queues": [_queue("notify", "queue", 1)], "throughput": {"messages_per_s": 2.0}},
            {
                "queues": [_queue("webhooks.fifo", "queue", 3)],
                "throughput": {"messages_per_s": 0.5, "failures_per_s": 1.0},
            },
            {"connections": 7},
            {},
        ]
    )
    assert merged == {
        "queues": [_queue("notify", "queue", 1), _queue("webhooks.fifo", "queue", 3)],
        "throughput": {"messages_per_s": 2.5, "failures_per_s": 1.0},
        "connections": 7,
    }


async def test_throughput_is_per_second_since_the_previous_report() -> None:
    stage = StageMetrics("health-test")
    stage.observe("success", 0.0, 5)  # before the probe: not counted
    throughput = Throughput(stage)
    stage.observe("success", 0.01, 8)
    stage.observe("retry", 0.01)
    stage.observe("dlq", 0.0)
    assert await throughput.read(2.0) == {
        "throughput": {"messages_per_s": 4.0, "failures_per_s": 1.0}
    }
    stage.observe("success", 0.01, 3)
    assert await throughput.read(3.0) == {
        "throughput": {"messages_per_s": 1.0, "failures_per_s": 0.0}
    }
    assert await throughput.read(0.0) == {
        "throughput": {"messages_per_s": 0.0, "failures_per_s": 0.0}
    }


def test_the_summary_names_what_the_service_measures() -> None:
    worker = {
        "throughput": {"messages_per_s": 4.06, "failures_per_s": 0.0},
        "queues": [
            _queue("fraud", "queue", 2, in_flight=3, oldest=1.25),
            _queue("fraud-dlq", "dlq", 5, oldest=61.0),
        ],
    }
    assert summary_fields(worker, {"processed": 123, "failures": 1}) == {
        "processed": 123,
        "msg_per_s": 4.1,
        "failures": 1,
        "queue": 2,
        "in_flight": 3,
        "dlq": 5,
        "oldest_s": 61.0,
    }
    processor = {
        "shards": [
            {"shard_id": "a", "iterator_age_ms": 120, "records_per_s": 1.0},
            {"shard_id": "b", "iterator_age_ms": 0, "records_per_s": 0.0},
        ],
        "queues": [_queue("stream-failures", "failures", 1, oldest=None), _queue("d", "dlq", 0)],
    }
    fields = summary_fields(processor, {})
    assert (fields["shards"], fields["age_ms"], fields["queue"], fields["dlq"]) == (2, 120, 1, 0)
    assert fields["oldest_s"] == 0.0
    gateway = {"e2e_ms": {"p50": 12.5, "p99": None, "samples": 3, "window_s": 60}, "connections": 2}
    assert summary_fields(gateway, {}) == {
        "e2e_p50_ms": 12.5,
        "e2e_p99_ms": None,
        "samples": 3,
        "connections": 2,
    }
    assert summary_fields({}, {}) == {}


@pytest.fixture
def settings(stack_prefix: str) -> PulseSettings:
    return PulseSettings(
        service_name="fraud-worker",
        redis_prefix=f"pulse:{stack_prefix}",
        health_interval_seconds=5,
    )


async def _health_history(redis: aioredis.Redis, prefix: str) -> list[dict[str, Any]]:
    entries = stream_entries(await redis.xrange(ChannelKeys(prefix).history("health")))
    return [orjson.loads(fields[b"e"]) for _id, fields in entries]


async def test_a_report_is_one_health_event_and_one_summary_line(
    async_redis: aioredis.Redis, settings: PulseSettings
) -> None:
    reporter = HealthReporter.of(async_redis, settings)
    stage = StageMetrics("health-report-test")
    queues = Fixed({"queues": [_queue("fraud", "queue", 0), _queue("fraud-dlq", "dlq", 5, 0, 9.5)]})
    reporter.add(queues, Broken(), Throughput(stage))
    stage.observe("success", 0.01, 4)

    with capture_logs() as logs:
        first = await reporter.report()
        second = await reporter.report()

    events = await _health_history(async_redis, settings.redis_prefix)
    assert [e["id"] for e in events] == [first.id, second.id]  # each report a new event
    event = events[0]
    assert event["type"] == HEALTH
    assert event["source"] == f"/pulse/fraud-worker/{reporter.instance}"
    data = event["data"]
    assert data["service"] == "fraud-worker"
    assert data["instance"] == reporter.instance
    assert data["interval_seconds"] == 5
    assert data["measured_at"] == event["time"]
    assert data["measured_at"].endswith("Z")
    assert data["queues"] == queues.reading["queues"]  # the failing probe is left out
    assert set(data["throughput"]) == {"messages_per_s", "failures_per_s"}
    for absent in ("shards", "e2e_ms", "connections"):
        assert absent not in data
    assert queues.elapsed[0] == 0.0  # no report before: no time to count rates over

    lines = [line for line in logs if line["event"] == "health"]
    assert len(lines) == 2
    assert lines[0]["log_level"] == "info"
    assert (lines[0]["processed"], lines[0]["dlq"], lines[0]["oldest_s"]) == (0, 5, 9.5)
    failures = [line for line in logs if line["event"] == "health probe failed"]
    assert len(failures) == 1  # said once, not at every report
    assert failures[0]["probe"] == "Broken"


async def test_the_totals_of_the_summary_add_up_the_rates(
    async_redis: aioredis.Redis, settings: PulseSettings
) -> None:
    reporter = HealthReporter.of(async_redis, settings)
    stage = StageMetrics("health-totals-test")
    reporter.add(Throughput(stage))
    await reporter.report()
    with capture_logs() as logs:
        for count in (3, 0, 7):
            stage.observe("success", 0.0, count)
            stage.observe("retry", 0.0)
            await reporter.report()
    assert [(line["processed"], line["failures"]) for line in logs] == [(3, 1), (3, 2), (10, 3)]


async def test_the_channel_keeps_a_bounded_history(
    async_redis: aioredis.Redis, settings: PulseSettings
) -> None:
    reporter = HealthReporter.of(async_redis, settings)
    for _ in range(3):
        await reporter.report()
    keys = ChannelKeys(settings.redis_prefix)
    assert await async_redis.xlen(keys.history("health")) == 3
    # The call a report makes trims the stream to HISTORY_LENGTH entries (XADD MAXLEN ~).
    (call,) = reporter.publisher.script_calls([reporter.appending(reporter.event([], 5.0))])
    assert keys.history("health") in call.keys
    assert call.args[1] == HISTORY_LENGTH


async def test_a_report_redis_refuses_is_counted_and_said_once(settings: PulseSettings) -> None:
    unreachable = aioredis.Redis.from_url("redis://127.0.0.1:1/0")  # nothing listens there
    reporter = HealthReporter.of(unreachable, settings)
    before = REGISTRY.get_sample_value("pulse_health_publishes_total", {"outcome": "failed"})
    with capture_logs() as logs:
        for _ in range(3):
            event = await reporter.report()  # never raises: the next report follows
            assert event.type == HEALTH
    after = REGISTRY.get_sample_value("pulse_health_publishes_total", {"outcome": "failed"})
    assert (after or 0) - (before or 0) == 3
    refusals = [line for line in logs if line["event"] == "health report not published"]
    assert [line["log_level"] for line in refusals] == ["warning", "debug", "debug"]
    assert [line["event"] for line in logs].count("health") == 3  # the summary all the same
    await unreachable.aclose()
