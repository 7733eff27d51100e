"""Prometheus metrics shared by every service, named as docs/design.md ("Metrics") says.

One prefix (``pulse_``), base units in the name, ``_total`` counters, histograms for latency,
and only bounded labels (service, stage, queue, event_type, outcome, status class).

Importing this module (every service does, before it serves) turns off prometheus_client's
``*_created`` series for the process.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = [
    "BUILD_INFO",
    "HTTP_REQUEST_DURATION",
    "MESSAGE_AGE",
    "MESSAGE_PROCESSING_DURATION",
    "StageMetrics",
    "http_metrics_middleware",
    "metrics_handler",
]

# Every counter, histogram and summary would also expose a `<name>_created` gauge (when the
# series was created): some 35 families (pulse_payments_created_created, ...) that no
# dashboard or alert reads and Prometheus stores all the same. Off, before any scrape.
disable_created_metrics()  # type: ignore[no-untyped-call] # prometheus_client leaves it bare

BUILD_INFO = Info("pulse_build", "Pulse build information")

HTTP_REQUEST_DURATION = Histogram(
    "pulse_http_request_duration_seconds",
    "HTTP request latency",
    ["service", "method", "route", "status_class"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
MESSAGE_PROCESSING_DURATION = Histogram(
    "pulse_message_processing_duration_seconds",
    "Time to handle one message or record, by stage and outcome",
    ["stage", "outcome"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
MESSAGE_AGE = Histogram(
    "pulse_message_age_seconds",
    "Age of a message when a stage received it",
    ["stage"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)
_RECEIVED = Counter("pulse_stage_received_total", "Messages or records received", ["stage"])
_IN_PROGRESS = Gauge("pulse_stage_in_progress", "Messages or records being handled", ["stage"])
_PROCESSED = Counter(
    "pulse_stage_processed_total", "Messages or records handled, by outcome", ["stage", "outcome"]
)
_LAST_PROCESSED = Gauge(
    "pulse_stage_last_processed_timestamp_seconds",
    "Unix time of the last message or record handled successfully",
    ["stage"],
)


class StageMetrics:
    """The RED metrics of one pipeline stage (``stream``, ``fraud``, ``notify`` …).

    The labelled series are looked up once, here: ``labels()`` takes a lock and a dict
    lookup on every call, and a stage records several series per message.

    ``succeeded`` and ``failed`` (retried or dead-lettered) count the messages this process
    handled, as plain integers the health report reads (:class:`pulse.health.Throughput`).
    """

    OUTCOMES = ("success", "retry", "dlq")

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.succeeded = 0
        self.failed = 0
        self.received = _RECEIVED.labels(stage)
        self.in_progress = _IN_PROGRESS.labels(stage)
        self._last = _LAST_PROCESSED.labels(stage)
        self._age = MESSAGE_AGE.labels(stage)
        self._processed = {outcome: _PROCESSED.labels(stage, outcome) for outcome in self.OUTCOMES}
        self._durations = {
            outcome: MESSAGE_PROCESSING_DURATION.labels(stage, outcome) for outcome in self.OUTCOMES
        }

    def observe(self, outcome: str, seconds: float, count: int = 1) -> None:
        """Record ``count`` messages handled with ``outcome`` (success, retry or dlq), each
        in ``seconds``."""
        processed = self._processed.get(outcome) or _PROCESSED.labels(self.stage, outcome)
        duration = self._durations.get(outcome) or MESSAGE_PROCESSING_DURATION.labels(
            self.stage, outcome
        )
        processed.inc(count)
        for _ in range(count):
            duration.observe(seconds)
        if outcome != "success":
            self.failed += count
        elif count:
            self.succeeded += count
            self._last.set(time.time())

    def observe_age(self, seconds: float) -> None:
        self._age.observe(max(seconds, 0.0))


async def metrics_handler(_request: web.Request) -> web.Response:
    body = generate_latest()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def http_metrics_middleware(service: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    """aiohttp middleware timing every request by route template (never the raw path)."""

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        start = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            HTTP_REQUEST_DURATION.labels(
                service, request.method, route, f"{status // 100}xx"
            ).observe(time.perf_counter() - start)
        return response

    return middleware
