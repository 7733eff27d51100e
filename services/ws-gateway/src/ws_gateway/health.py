"""What the gateway measures for the health report (:mod:`pulse.health`): end-to-end
latency and its connections. Pure, but for the clock a report reads.

``connections``: the WebSocket and SSE connections this process holds (:class:`Connections`).

A payment event's ``time`` is when its change happened in DynamoDB: the stream processor
stamps each event with its stream record's ``ApproximateCreationDateTime``
(:func:`stream_processor.records.event_from_record`). The moment the gateway fans the live
frame out to the channel's subscribers, minus that time, is the event's end-to-end latency:
write → stream → processor → Redis → gateway. One sample per payment event and channel
fanned out live (history replays and gap fills are not live, and are not sampled). On AWS
the record's time is rounded down to the second, so each sample may be up to a second
longer than the truth there; clocks of different hosts add their skew (a negative sample
counts as 0).

:class:`LatencyWindow` keeps the last ``window`` seconds as a ring of per-second histograms
with buckets 5 % wide, so p50 and p99 come out within about 2.5 % in fixed memory (60 by 256
counters), whatever the rate; a sample costs a logarithm and an increment.

:func:`payment_event_time` finds the ``type`` and ``time`` in the frame's text without
parsing it: the frame is ``{"op":"event","channel":…,"offset":…,"event":E}`` with ``E`` as
:meth:`pulse.events.CloudEvent.to_json` writes it — ``specversion``, ``id``, ``source``,
``type``, ``subject``, ``time``, … in that order, all strings before ``data`` — so the first
``"type":"`` and the ``"time":"`` after it are the envelope's (a quote inside a JSON string
is escaped, so no string value can hold either).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Collection

    from pulse.health import Reading

__all__ = ["Connections", "E2eLatency", "LatencySummary", "LatencyWindow", "payment_event_time"]

_EVENT_FRAME: Final = '{"op":"event",'
_TYPE: Final = '"type":"'
_PAYMENT: Final = "pulse.payment."
_TIME: Final = '"time":"'

_GROWTH: Final = 1.05  # each bucket 5 % wider than the one before
_BUCKETS: Final = 256  # bucket 0: under 1 ms; the last: from about 4.4 minutes on
_LOG_GROWTH: Final = math.log(_GROWTH)


def payment_event_time(frame: str) -> float | None:
    """The ``time`` (epoch seconds) of the payment event in a live event frame; None for
    any other frame (another event type, presence, a client's message) or a time that does
    not parse."""
    if not frame.startswith(_EVENT_FRAME):
        return None
    at = frame.find(_TYPE)
    if at < 0 or not frame.startswith(_PAYMENT, at + len(_TYPE)):
        return None
    start = frame.find(_TIME, at)
    if start < 0:
        return None
    start += len(_TIME)
    end = frame.find('"', start)
    try:
        return datetime.fromisoformat(frame[start:end]).timestamp()
    except ValueError:
        return None


def _bucket(ms: float) -> int:
    if ms < 1.0:
        return 0
    return min(1 + int(math.log(ms) / _LOG_GROWTH), _BUCKETS - 1)


def _bucket_value(index: int) -> float:
    """The middle (geometric) of a bucket's range, in milliseconds."""
    if index == 0:
        return 0.5
    return float(_GROWTH ** (index - 0.5))


@dataclass(frozen=True)
class LatencySummary:
    p50: float | None  # milliseconds; None without samples
    p99: float | None
    samples: int


class LatencyWindow:
    """Latencies of the last ``window`` seconds: a ring of per-second histograms."""

    def __init__(self, window: int = 60) -> None:
        self.window = window
        self._seconds = [-1] * window  # the epoch second each slot counts
        self._counts = [[0] * _BUCKETS for _ in range(window)]
        self._zeros = [0] * _BUCKETS

    def record(self, latency_ms: float, now: float) -> None:
        """One sample of ``latency_ms`` taken at ``now`` (epoch seconds)."""
        second = int(now)
        slot = second % self.window
        counts = self._counts[slot]
        if self._seconds[slot] != second:  # a second a window ago: start it afresh
            self._seconds[slot] = second
            counts[:] = self._zeros
        counts[_bucket(latency_ms)] += 1

    def summary(self, now: float) -> LatencySummary:
        """p50 and p99 (nearest rank, each within about 2.5 %) of the samples of the
        ``window`` seconds up to ``now``, and how many there were."""
        second = int(now)
        merged = [0] * _BUCKETS
        for slot_second, counts in zip(self._seconds, self._counts, strict=True):
            if second - self.window < slot_second <= second:
                merged = [a + b for a, b in zip(merged, counts, strict=True)]
        total = sum(merged)
        if not total:
            return LatencySummary(None, None, 0)
        return LatencySummary(_rank(merged, total, 0.50), _rank(merged, total, 0.99), total)


def _rank(counts: list[int], total: int, quantile: float) -> float:
    """The value of the sample at ``quantile``'s nearest rank, from bucket counts."""
    rank = max(math.ceil(quantile * total), 1)
    seen = 0
    for index, count in enumerate(counts):
        seen += count
        if seen >= rank:
            return round(_bucket_value(index), 1)
    return round(_bucket_value(len(counts) - 1), 1)  # pragma: no cover - rank <= total


class E2eLatency:
    """The gateway's health probe of end-to-end latency (module doc): :meth:`fanned_out`
    samples live frames; a report gives ``e2e_ms`` over the window."""

    def __init__(self, window: LatencyWindow | None = None) -> None:
        self.window = window or LatencyWindow()

    def fanned_out(self, frames: list[str], now: float) -> None:
        """``frames`` went out live at ``now`` (epoch seconds): sample their payment events."""
        for frame in frames:
            at = payment_event_time(frame)
            if at is not None:
                self.window.record(max(now - at, 0.0) * 1000, now)

    async def read(self, elapsed: float) -> Reading:  # noqa: ARG002 - a probe's signature
        summary = self.window.summary(time.time())
        return {
            "e2e_ms": {
                "p50": summary.p50,
                "p99": summary.p99,
                "samples": summary.samples,
                "window_s": self.window.window,
            }
        }


class Connections:
    """The gateway's health probe of its connections (WebSocket and SSE alike)."""

    def __init__(self, clients: Collection[object]) -> None:
        self._clients = clients

    async def read(self, elapsed: float) -> Reading:  # noqa: ARG002 - a probe's signature
        return {"connections": len(self._clients)}
