"""End-to-end latency: POST -> created / updated at a WebSocket client, at a steady rate,
and where that time goes, stage by stage.

The stages are measured with the times each event carries to the client, all taken from
this one machine's clock:

- the client's clock just before the POST, and when the client read the frame;
- ``data.created_at``: ingest's clock as it builds the payment, before its PutItem;
- ``time``: the stream record's ``ApproximateCreationDateTime``, when the emulator recorded
  the change (milliseconds here; on AWS it is rounded down to the second, so there the two
  stages around it cannot be told apart);
- the frame's ``offset``: a Redis stream entry id whose first part is Redis' clock, in
  milliseconds, when the stream processor's append script ran;
- ``data.decided_at`` (the updated payment): the fraud worker's clock just before its
  conditional update.

What happens between two of these times without a time of its own is shown from the
services' histograms over the run (``/metrics``, estimated inside their buckets, per batch
or message rather than per event): the processor's share of "stream poll + processor", and
the fraud worker's SQS wait and handling inside "processor -> SNS -> SQS -> fraud worker".
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import orjson
from websockets.asyncio.client import connect

from pulse.auth import issue_token
from pulse.events import PAYMENT_CREATED, PAYMENT_UPDATED
from pulse.settings import DEV_JWT_SECRET
from pulse_dev.devstack import DevStackProcess
from pulse_dev.load import AccountTokens, LoadResult, percentile, run_load
from service_metrics import MetricsReading, histogram_quantile, read_metrics

if TYPE_CHECKING:
    from collections.abc import Callable

RATE = 20.0
DURATION = 20.0
SETTLE = 10.0


@dataclass(frozen=True)
class Seen:
    """One event frame as the client read it, with the times it carries (epoch seconds)."""

    read: float
    recorded: float  # the event's time: the stream record's creation
    appended: float  # the channel offset's milliseconds: the Redis append
    created_at: float
    decided_at: float | None

    @classmethod
    def of_frame(cls, frame: dict[str, Any], read: float) -> Seen:
        event = frame["event"]
        data = event["data"]
        decided = data.get("decided_at")
        return cls(
            read=read,
            recorded=_epoch(event["time"]),
            appended=int(frame["offset"].split("-")[0]) / 1000,
            created_at=_epoch(data["created_at"]),
            decided_at=_epoch(decided) if decided else None,
        )

    @property
    def decided(self) -> float:
        if self.decided_at is None:
            raise ValueError("the frame carries no decided_at")
        return self.decided_at


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


@dataclass(frozen=True)
class Histogram:
    """A service's histogram covering part of a stage: what it measures, and where."""

    what: str
    service: str
    metric: str
    labels: dict[str, str]


PROCESSOR = Histogram(
    "of which processor: GetRecords answer -> appended (per batch)",
    "stream-processor",
    "pulse_stream_live_publish_duration_seconds",
    {},
)
SQS_WAIT = Histogram(
    "of which SQS sent -> fraud worker received (per message)",
    "fraud-worker",
    "pulse_message_age_seconds",
    {"stage": "fraud"},
)
FRAUD_HANDLING = Histogram(
    "fraud worker: received -> handled, decision written (per message)",
    "fraud-worker",
    "pulse_message_processing_duration_seconds",
    {"stage": "fraud", "outcome": "success"},
)


@dataclass(frozen=True)
class Trip:
    """One payment's way: the client's clock before its POST, and its two frames."""

    posted: float
    created: Seen
    updated: Seen


@dataclass(frozen=True)
class Stage:
    """From one time a payment's events carry to the next: ``duration`` (seconds) of a
    trip; ``inside``: histograms of parts of it."""

    name: str
    duration: Callable[[Trip], float]
    inside: tuple[Histogram, ...] = ()


def _to_the_client(event: str, seen: Callable[[Trip], Seen]) -> tuple[Stage, ...]:
    """The stages every event goes through once its stream record exists: the stream poll
    and the processor, the gateway, the client; and the whole way from the POST."""
    return (
        Stage(
            "stream poll + processor -> Redis append (offset)",
            lambda p: seen(p).appended - seen(p).recorded,
            (PROCESSOR,),
        ),
        Stage(
            "Redis pub/sub -> gateway fan-out -> client read",
            lambda p: seen(p).read - seen(p).appended,
        ),
        Stage(f"POST -> {event} at the client", lambda p: seen(p).read - p.posted),
    )


CREATED_STAGES: Final = (
    Stage(
        "POST -> ingest stamps the payment (created_at)", lambda p: p.created.created_at - p.posted
    ),
    Stage(
        "DynamoDB PutItem -> stream record (time)",
        lambda p: p.created.recorded - p.created.created_at,
    ),
    *_to_the_client("created", lambda p: p.created),
)
UPDATED_STAGES: Final = (
    Stage(
        "created appended -> SNS -> SQS -> fraud worker decides (decided_at)",
        lambda p: p.updated.decided - p.created.appended,
        (SQS_WAIT, FRAUD_HANDLING),
    ),
    Stage(
        "conditional UpdateItem -> stream record (time)",
        lambda p: p.updated.recorded - p.updated.decided,
    ),
    *_to_the_client("updated", lambda p: p.updated),
)
_NAME_WIDTH: Final = 68


def _metrics_urls(stack: DevStackProcess) -> dict[str, str]:
    ops = stack.ops_port_base
    return {
        "stream-processor": f"http://127.0.0.1:{ops}/metrics",
        "fraud-worker": f"http://127.0.0.1:{ops + 1}/metrics",
    }


def _histogram_row(
    histogram: Histogram, before: dict[str, MetricsReading], after: dict[str, MetricsReading]
) -> str:
    readings = before[histogram.service], after[histogram.service]
    p50 = histogram_quantile(*readings, 0.5, histogram.metric, histogram.labels)
    p99 = histogram_quantile(*readings, 0.99, histogram.metric, histogram.labels)
    if p50 is None or p99 is None:
        return f"    {histogram.what:<{_NAME_WIDTH - 2}} (nothing observed)"
    return (
        f"    {histogram.what:<{_NAME_WIDTH - 2}} {p50[0] * 1000:7.1f} {p99[0] * 1000:7.1f}"
        f"  (n={p50[1]}, {histogram.metric}, bucketed)"
    )


def _print_breakdown(
    result: LoadResult,
    arrivals: dict[str, dict[str, Seen]],
    before: dict[str, MetricsReading],
    after: dict[str, MetricsReading],
) -> None:
    """Per stage, p50 and p99 in ms over the payments seen whole at the client."""
    whole = [
        Trip(sent_at, seen[PAYMENT_CREATED], seen[PAYMENT_UPDATED])
        for pid, sent_at in result.payments
        if PAYMENT_CREATED in (seen := arrivals.get(pid, {})) and PAYMENT_UPDATED in seen
    ]
    paths = (
        ("created path (the times the created event carries)", CREATED_STAGES, whole),
        (
            "decision path (the times the updated event carries)",
            UPDATED_STAGES,
            [trip for trip in whole if trip.updated.decided_at is not None],
        ),
    )
    print(f"stage breakdown, ms{'p50':>{_NAME_WIDTH - 11}}     p99")
    for title, stages, payments in paths:
        print(title)
        for stage in stages:
            values = [stage.duration(trip) * 1000 for trip in payments]
            print(
                f"  {stage.name:<{_NAME_WIDTH}} {percentile(values, 50):7.1f}"
                f" {percentile(values, 99):7.1f}  (n={len(values)})"
            )
            for histogram in stage.inside:
                print(_histogram_row(histogram, before, after))


async def _measure(stack: DevStackProcess) -> dict[str, float]:
    token = issue_token(DEV_JWT_SECRET, sub="bench", roles=["ops"])
    arrivals: dict[str, dict[str, Seen]] = {}
    urls = _metrics_urls(stack)

    async with connect(f"{stack.gateway_url}?token={token}", max_size=2**22) as ws:
        await ws.send('{"op":"subscribe","channel":"payments"}')
        await ws.recv()

        async def listen() -> None:
            async for raw in ws:
                read = time.time()
                frame = orjson.loads(raw)
                if frame.get("op") != "event":
                    continue
                event = frame["event"]
                seen = arrivals.setdefault(event.get("subject"), {})
                if event["type"] not in seen:
                    seen[event["type"]] = Seen.of_frame(frame, read)

        listener = asyncio.create_task(listen())
        before = {service: read_metrics(url) for service, url in urls.items()}
        result = await run_load(
            stack.ingest_url,
            tokens=AccountTokens(DEV_JWT_SECRET),
            rate=RATE,
            duration=DURATION,
            seed=1,
            progress=sys.stdout.isatty(),
        )
        deadline = time.monotonic() + SETTLE
        pending = {pid for pid, _ in result.payments}
        while time.monotonic() < deadline and any(
            PAYMENT_UPDATED not in arrivals.get(p, {}) for p in pending
        ):
            await asyncio.sleep(0.2)
        listener.cancel()
        after = {service: read_metrics(url) for service, url in urls.items()}

    created, updated, missing = [], [], 0
    for pid, sent_at in result.payments:
        seen = arrivals.get(pid, {})
        if PAYMENT_CREATED not in seen or PAYMENT_UPDATED not in seen:
            missing += 1
            continue
        created.append((seen[PAYMENT_CREATED].read - sent_at) * 1000)
        updated.append((seen[PAYMENT_UPDATED].read - sent_at) * 1000)
    print(
        f"sent {result.sent}, accepted {len(result.payments)}, "
        f"complete at the client {len(created)}, missing {missing}"
    )
    _print_breakdown(result, arrivals, before, after)
    return {
        "e2e.created_p50_ms": percentile(created, 50),
        "e2e.created_p99_ms": percentile(created, 99),
        "e2e.updated_p50_ms": percentile(updated, 50),
        "e2e.updated_p99_ms": percentile(updated, 99),
        "e2e.missing": float(missing),
    }


def bench_e2e() -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="pulse-bench-"))
    stack = DevStackProcess(work / "pulse-dev.log", prefix="benche2e-")
    print(
        f"setup: pulse dev (moto, Redis, five services), {RATE:g} payments/s for "
        f"{DURATION:g} s, one ops WebSocket client on `payments`; the stage breakdown is "
        "taken from the times each event carries (one clock: this machine's)"
    )
    stack.start(extra_args=["--log-level", "warning"])
    try:
        figures = asyncio.run(_measure(stack))
    finally:
        stack.stop()
    for name, value in figures.items():
        print(f"{name}: {value:.1f}")
    return figures
