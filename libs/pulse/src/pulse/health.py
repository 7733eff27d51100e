"""Pipeline health, measured by the pipeline itself: one ``pulse.health`` event per process
and interval on channel ``health``, and a one-line summary in the log.

Each service that moves events runs one :class:`HealthReporter`. Every
``PULSE_HEALTH_INTERVAL_SECONDS`` (5) it reads its probes — each measures something its
service owns: the stream processor the shards it reads and its failure queue, a worker the
queues it consumes (:mod:`pulse.consumer.health`), the gateway its fan-out latency and its
connections — merges their readings into the data of one event, appends it to ``health``
and logs the same figures as one ``health`` line at info, so a console shows a calm summary
while the per-event lines stay at debug. Nothing is read from Prometheus.

The event (docs/design.md, "Pipeline health"): type ``pulse.health``, source
``/pulse/{service}/{instance}``, data ``service``, ``instance``, ``interval_seconds``,
``measured_at`` and whatever the probes give — ``shards``, ``queues`` (lists, joined),
``throughput`` (rates, added), ``e2e_ms``, ``connections``. A key no probe gives is absent.
A probe that fails (or takes longer than the interval) is left out of that one report,
logged once until it reads again; the others still report.

Every report is a new event: the latest per source is the truth, so a report lost to a
Redis hiccup is not retried (the next one follows), its once-per-event guard lives a minute,
no ``WAIT`` for replicas is spent on it, and the channel keeps only the entries of its kind's
history limit (``PULSE_HISTORY``: by default :data:`HISTORY_LENGTH`, for an hour).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import TYPE_CHECKING, Any, Final, Protocol

from prometheus_client import Counter

from pulse.channels import HEALTH as HEALTH_CHANNEL
from pulse.channels import ChannelAppend, ChannelPublisher
from pulse.events import HEALTH, iso_timestamp, new_event, utc_now
from pulse.history_limits import DEFAULT_LIMITS
from pulse.logging import get_logger
from pulse.service import sleep_unless_stopped

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from pulse.clients import RedisClient
    from pulse.events import CloudEvent
    from pulse.metrics import StageMetrics
    from pulse.settings import PulseSettings

__all__ = [
    "HISTORY_LENGTH",
    "HealthProbe",
    "HealthReporter",
    "Reading",
    "Throughput",
    "instance_name",
    "merge_readings",
    "per_second",
    "summary_fields",
]

# Entries the ``health`` channel keeps by default: a few minutes of every process's reports.
HISTORY_LENGTH: Final = DEFAULT_LIMITS["health"].size
# A report's once-per-event guard: long enough for the append's own retries, no longer.
_GUARD_TTL_SECONDS: Final = 60
# Readings merged by joining lists, by adding numbers (per key), or taken as given.
_JOINED: Final = ("shards", "queues")
_ADDED: Final = ("throughput",)

PUBLISHES: Final = Counter(
    "pulse_health_publishes_total",
    "pulse.health reports appended to channel health (ok) or lost to a failed append (failed)",
    ["outcome"],
)
for _outcome in ("ok", "failed"):
    PUBLISHES.labels(_outcome)

Reading = dict[str, Any]
"""Part of a ``pulse.health`` event's data, as one probe measured it."""

log = get_logger("pulse.health")


class HealthProbe(Protocol):
    """Something a service measures for its health report."""

    async def read(self, elapsed: float) -> Reading:
        """The reading now; ``elapsed``: seconds since the previous report (rates are per
        second over it)."""
        ...


def instance_name() -> str:
    """``hostname-pid``: this process among its service's replicas (the pod's name on
    Kubernetes)."""
    return f"{socket.gethostname()}-{os.getpid()}"


def per_second(count: float, elapsed: float) -> float:
    """``count`` over ``elapsed`` seconds (0 for no time at all)."""
    return count / elapsed if elapsed > 0 else 0.0


class Throughput:
    """Messages a stage handled per second since the previous report, and those that failed
    (retried or dead-lettered), from its :class:`~pulse.metrics.StageMetrics`."""

    def __init__(self, stage: StageMetrics) -> None:
        self._stage = stage
        self._succeeded = stage.succeeded
        self._failed = stage.failed

    async def read(self, elapsed: float) -> Reading:
        succeeded, failed = self._stage.succeeded, self._stage.failed
        done, bad = succeeded - self._succeeded, failed - self._failed
        self._succeeded, self._failed = succeeded, failed
        return {
            "throughput": {
                "messages_per_s": per_second(done, elapsed),
                "failures_per_s": per_second(bad, elapsed),
            }
        }


def merge_readings(readings: list[Reading]) -> Reading:
    """One event's data from its probes' readings: ``shards`` and ``queues`` joined in order,
    ``throughput`` added per key, any other key as the last reading gave it."""
    merged: Reading = {}
    for reading in readings:
        for key, value in reading.items():
            if key in _JOINED:
                merged.setdefault(key, []).extend(value)
            elif key in _ADDED:
                sums = merged.setdefault(key, {})
                for name, number in value.items():
                    sums[name] = sums.get(name, 0) + number
            else:
                merged[key] = value
    return merged


def _largest(values: list[Any]) -> Any:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def summary_fields(data: Mapping[str, Any], totals: Mapping[str, int]) -> dict[str, Any]:
    """The figures of the one-line summary: from a report's ``data`` and the messages
    handled and failed since start (``totals``: ``processed``, ``failures``)."""
    fields: dict[str, Any] = {}
    throughput = data.get("throughput")
    if throughput is not None:
        fields["processed"] = totals.get("processed", 0)
        fields["msg_per_s"] = round(throughput["messages_per_s"], 1)
        fields["failures"] = totals.get("failures", 0)
    queues = data.get("queues")
    if queues is not None:
        fields["queue"] = sum(q["depth"] for q in queues if q["role"] != "dlq")
        fields["in_flight"] = sum(q["in_flight"] for q in queues if q["role"] != "dlq")
        fields["dlq"] = sum(q["depth"] for q in queues if q["role"] == "dlq")
        oldest = _largest([q["oldest_age_s"] for q in queues])
        if oldest is not None:
            fields["oldest_s"] = round(oldest, 1)
    shards = data.get("shards")
    if shards is not None:
        fields["shards"] = len(shards)
        fields["age_ms"] = max((s["iterator_age_ms"] for s in shards), default=0)
    e2e = data.get("e2e_ms")
    if e2e is not None:
        fields["e2e_p50_ms"] = e2e["p50"]
        fields["e2e_p99_ms"] = e2e["p99"]
        fields["samples"] = e2e["samples"]
    if "connections" in data:
        fields["connections"] = data["connections"]
    return fields


class HealthReporter:
    """Reads a service's probes every ``interval`` seconds and reports them (module doc)."""

    def __init__(
        self,
        publisher: ChannelPublisher,
        *,
        service: str,
        interval: float,
        instance: str | None = None,
    ) -> None:
        self.publisher = publisher
        self.service = service
        self.instance = instance or instance_name()
        self.source = f"/pulse/{service}/{self.instance}"
        self.interval = interval
        self._probes: list[HealthProbe] = []
        self._failing: set[int] = set()  # probes whose last read failed (logged once)
        self._unpublished = False  # the last append failed (logged once)
        self._last_read: float | None = None
        self._totals = {"processed": 0.0, "failures": 0.0}

    @classmethod
    def of(cls, redis: RedisClient, settings: PulseSettings) -> HealthReporter:
        """The reporter of a service: its name, Redis prefix and
        ``PULSE_HEALTH_INTERVAL_SECONDS``."""
        publisher = ChannelPublisher(
            redis,
            settings.redis_prefix,
            history=settings.history,
            guard_ttl_seconds=_GUARD_TTL_SECONDS,
        )
        return cls(
            publisher, service=settings.service_name, interval=settings.health_interval_seconds
        )

    def add(self, *probes: HealthProbe) -> None:
        """Report what ``probes`` measure from the next report on."""
        self._probes.extend(probes)

    def event(self, readings: list[Reading], elapsed: float) -> CloudEvent:
        """The ``pulse.health`` event of ``readings``, taken ``elapsed`` seconds after the
        previous one (rates rounded to the thousandth)."""
        now = utc_now()
        merged = merge_readings(readings)
        throughput = merged.get("throughput")
        if throughput is not None:
            self._totals["processed"] += throughput.get("messages_per_s", 0) * elapsed
            self._totals["failures"] += throughput.get("failures_per_s", 0) * elapsed
            merged["throughput"] = {k: round(v, 3) for k, v in throughput.items()}
        interval = self.interval
        data = {
            "service": self.service,
            "instance": self.instance,
            "interval_seconds": int(interval) if float(interval).is_integer() else interval,
            "measured_at": iso_timestamp(now),
            **merged,
        }
        return new_event(type=HEALTH, source=self.source, data=data, time=now)

    def appending(self, event: CloudEvent) -> ChannelAppend:
        """What a report appends: ``event`` to channel ``health``."""
        return ChannelAppend(event, [HEALTH_CHANNEL])

    async def report(self) -> CloudEvent:
        """Read every probe, append the event to ``health`` and log the summary line; the
        event (appended or not: a failed append is counted and logged, never raised)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        elapsed = now - (self._last_read if self._last_read is not None else now)
        self._last_read = now
        readings = await asyncio.gather(
            *(self._read(index, probe, elapsed) for index, probe in enumerate(self._probes))
        )
        event = self.event(list(readings), elapsed)
        try:
            await self.publisher.append_many([self.appending(event)])
        except Exception as exc:
            PUBLISHES.labels("failed").inc()
            # Said once per run of failures (Redis down for a while is not news each time).
            (log.debug if self._unpublished else log.warning)(
                "health report not published", error=f"{type(exc).__name__}: {exc}"
            )
            self._unpublished = True
        else:
            PUBLISHES.labels("ok").inc()
            self._unpublished = False
        totals = {name: round(value) for name, value in self._totals.items()}
        log.info("health", **summary_fields(event.data, totals))
        return event

    async def _read(self, index: int, probe: HealthProbe, elapsed: float) -> Reading:
        try:
            reading = await asyncio.wait_for(probe.read(elapsed), max(self.interval, 2.0))
        except Exception as exc:
            if index not in self._failing:
                self._failing.add(index)
                log.warning(
                    "health probe failed",
                    probe=type(probe).__name__,
                    error=f"{type(exc).__name__}: {exc}",
                )
            return {}
        self._failing.discard(index)
        return reading

    async def run(self, stopping: asyncio.Event) -> None:
        """Report every interval until ``stopping`` (at once if the interval is 0: off)."""
        if self.interval <= 0:
            return
        self._last_read = asyncio.get_running_loop().time()
        while not stopping.is_set():
            await sleep_unless_stopped(stopping, self.interval)
            if stopping.is_set():
                break
            try:
                await self.report()
            except Exception:
                log.exception("health report failed")

    @contextlib.asynccontextmanager
    async def running(self, stopping: asyncio.Event) -> AsyncIterator[None]:
        """:meth:`run` in the background for the block."""
        task = asyncio.create_task(self.run(stopping), name="health")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
