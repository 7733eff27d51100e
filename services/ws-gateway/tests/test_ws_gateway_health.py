"""What the gateway measures for the health report: the windowed latency percentiles and the
event time read from a live frame (pure), and the probes' readings."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pulse.events import (
    FRAUD_DECISION,
    NOTIFICATION,
    PAYMENT_CREATED,
    PAYMENT_DELETED,
    PAYMENT_UPDATED,
    new_event,
)
from ws_gateway.health import (
    Connections,
    E2eLatency,
    LatencySummary,
    LatencyWindow,
    payment_event_time,
)
from ws_gateway.offsets import ZERO
from ws_gateway.protocol import event_frame, message_frame, subscribed_frame

T0 = 1_750_000_000.0  # an epoch second
WHEN = datetime(2025, 6, 15, 12, 0, 0, 250_000, tzinfo=UTC)


def _frame(event_type: str, **data: object) -> str:
    event = new_event(type=event_type, source="/pulse/stream-processor", data=data, time=WHEN)
    return event_frame("payments", "1750000000000-0", event.to_json().decode())


def _close(value: float | None, expected: float) -> bool:
    """Within the 2.5 % a bucket's middle may be off by."""
    return value is not None and abs(value - expected) <= 0.026 * expected


@pytest.mark.parametrize("event_type", [PAYMENT_CREATED, PAYMENT_UPDATED, PAYMENT_DELETED])
def test_a_payment_event_frame_gives_the_event_time(event_type: str) -> None:
    frame = _frame(event_type, payment_id="p-1", status="APPROVED")
    assert payment_event_time(frame) == WHEN.timestamp()


def test_other_frames_give_no_time() -> None:
    assert payment_event_time(_frame(FRAUD_DECISION, decision="REVIEW")) is None
    assert payment_event_time(_frame(NOTIFICATION, title="x")) is None
    assert payment_event_time(subscribed_frame("payments", ZERO, recovered=True)) is None
    # A client's ephemeral message may carry anything in its data: it is not an event.
    forged = '{"type":"pulse.payment.created","time":"2000-01-01T00:00:00.000Z"}'
    assert payment_event_time(message_frame("account:a", "a", forged)) is None


def test_a_payment_whose_data_names_a_time_still_gives_the_event_time() -> None:
    frame = _frame(PAYMENT_CREATED, payment_id="p", time="1999-01-01T00:00:00.000Z", type="x")
    assert payment_event_time(frame) == WHEN.timestamp()


def test_a_time_that_does_not_parse_gives_none() -> None:
    frame = _frame(PAYMENT_CREATED, payment_id="p").replace("2025-06-15T12", "yesterday")
    assert payment_event_time(frame) is None


def test_percentiles_of_the_window_by_nearest_rank() -> None:
    window = LatencyWindow(60)
    assert window.summary(T0) == LatencySummary(None, None, 0)
    for ms in range(1, 101):  # 1 … 100 ms, one each
        window.record(float(ms), T0 + ms % 7)
    summary = window.summary(T0 + 10)
    assert summary.samples == 100
    assert _close(summary.p50, 50.0)
    assert _close(summary.p99, 99.0)


def test_samples_leave_the_window_after_its_length() -> None:
    window = LatencyWindow(60)
    window.record(1000.0, T0)  # a slow one, long ago
    for second in range(1, 60):
        window.record(10.0, T0 + second)
    assert window.summary(T0 + 59).samples == 60
    assert _close(window.summary(T0 + 59).p99, 1000.0)
    after = window.summary(T0 + 60)  # T0's second is out
    assert after.samples == 59
    assert _close(after.p99, 10.0)
    # A slot used again a window later starts from nothing.
    window.record(20.0, T0 + 60)
    assert window.summary(T0 + 60).samples == 60
    assert window.summary(T0 + 200) == LatencySummary(None, None, 0)


def test_extremes_land_in_the_first_and_last_buckets() -> None:
    window = LatencyWindow(60)
    window.record(0.0, T0)
    window.record(0.4, T0)
    assert window.summary(T0).p99 == 0.5
    window.record(3_600_000.0, T0)  # an hour: beyond the last bucket's start
    top = window.summary(T0).p99
    assert top is not None
    assert top > 200_000


async def test_the_probe_samples_live_payment_frames_only() -> None:
    latency = E2eLatency()
    sent = WHEN.timestamp()
    frames = [
        _frame(PAYMENT_CREATED, payment_id="p"),
        _frame(FRAUD_DECISION, decision="DECLINED"),
        _frame(PAYMENT_UPDATED, payment_id="p"),
    ]
    latency.fanned_out(frames, sent + 0.120)
    latency.fanned_out([_frame(PAYMENT_UPDATED, payment_id="q")], sent - 5)  # skewed clock
    summary = latency.window.summary(sent + 1)
    assert summary.samples == 3
    assert _close(summary.p99, 120.0)
    assert _close(summary.p50, 120.0)  # the skewed one counts as 0: the lowest of three
    reading = await latency.read(5.0)
    assert set(reading["e2e_ms"]) == {"p50", "p99", "samples", "window_s"}
    assert reading["e2e_ms"]["window_s"] == 60


async def test_connections_are_counted_as_they_are_held() -> None:
    clients: set[object] = set()
    probe = Connections(clients)
    assert await probe.read(5.0) == {"connections": 0}
    clients.update({object(), object()})
    assert await probe.read(5.0) == {"connections": 2}
