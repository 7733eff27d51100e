"""Stream processor: lag at a steady write rate, and draining a backlog vs. a bare loop.

Lag: PutItem of payment-shaped items straight into the payments table at RATE/s, paced by a
timetable; a Redis subscriber on the live channel ``payments`` times PutItem -> publish.
Drain: a BACKLOG of records written while the processor is stopped, then the processor is
started and timed until every created event was published; against a bare GetRecords (the
processor's batch size) + PublishBatch (ten per call) loop over the same stream and topic.
The whole group (15 s of lag, 10,000 records drained twice) takes about a minute.

On a machine whose cores are busy, the drain ratio is a ratio of CPU per record (printed
for both sides, the emulator's apart): the processor also writes the audit rows, appends to
Redis, checkpoints and sends SNS messages with five attributes rather than two. On a busy
2-core machine the processor spends about 0.35 ms per record and the emulator 0.5 ms on its
behalf, against 0.34 + 0.39 ms for the bare loop: the emulator's extra share is the
processor's extra work (audit rows about 0.1 ms a record, the extra attributes and the
checkpoints about 0.05 ms), and the ratio is near 0.9.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import redis

from pulse.channels import ChannelKeys
from pulse.clients import aws_client
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs
from pulse.topology_apply import apply_topology
from pulse_dev.emulators import (
    AWS_TEST_CREDENTIALS,
    free_port,
    local_redis,
    start_moto,
    stop_process,
)
from pulse_dev.load import percentile, random_payment_item
from pulse_dev.testing import ServiceProcess

if TYPE_CHECKING:
    from collections.abc import Callable

RATE = 200.0
# Sizes can be scaled down while iterating: PULSE_BENCH_STREAM_SECONDS (lag phase length),
# PULSE_BENCH_STREAM_BACKLOG (records drained; the figure is 10,000), and
# PULSE_BENCH_STREAM_PHASES ("lag", "drain" or "lag,drain").
DURATION = float(os.environ.get("PULSE_BENCH_STREAM_SECONDS", "15"))
SETTLE = 10.0
BACKLOG = int(os.environ.get("PULSE_BENCH_STREAM_BACKLOG", "10000"))
PHASES = frozenset(os.environ.get("PULSE_BENCH_STREAM_PHASES", "lag,drain").split(","))
WRITERS = 8
BATCH_SIZE = 100  # the processor's PULSE_BATCH_SIZE default
DRAIN_TIMEOUT = 600.0  # the full backlog at the emulator's SNS fan-out rate takes minutes


class _Subscriber:
    """Records the first arrival time of each payment's created event on a live channel."""

    def __init__(self, url: str, channel_key: str) -> None:
        self.arrivals: dict[str, float] = {}
        self._pubsub = redis.Redis.from_url(url).pubsub(ignore_subscribe_messages=True)
        self._pubsub.ssubscribe(channel_key)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self._pubsub.get_message(timeout=0.2)
            if msg is None or msg["type"] != "smessage":
                continue
            now = time.time()
            frame = orjson.loads(msg["data"])
            event = frame.get("event", {})
            if frame.get("op") != "event" or event.get("type") != "pulse.payment.created":
                continue
            self.arrivals.setdefault(event["data"]["payment_id"], now)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._pubsub.close()


class _QueueDrainer:
    """Keeps the worker queues empty while no worker runs: receive + batch delete, and purge.

    The emulator allows one PurgeQueue per queue every 60 s, so purging waits for that.
    """

    def __init__(self, settings: PulseSettings, urls: list[str]) -> None:
        self._sqs = aws_client("sqs", settings, max_pool=8)
        self._urls = urls
        self._purged_at = 0.0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(u,), daemon=True) for u in urls]
        for thread in self._threads:
            thread.start()

    def purge(self) -> None:
        wait = self._purged_at + 61.0 - time.monotonic()
        if wait > 0:
            print(f"waiting {wait:.0f} s to purge the queues again")
            time.sleep(wait)
        for url in self._urls:
            self._sqs.purge_queue(QueueUrl=url)
        self._purged_at = time.monotonic()

    def _run(self, url: str) -> None:
        while not self._stop.is_set():
            msgs = self._sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            ).get("Messages", [])
            if msgs:
                self._sqs.delete_message_batch(
                    QueueUrl=url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(msgs)
                    ],
                )

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)


def _lag_phase(settings: PulseSettings, sub: _Subscriber) -> dict[str, float]:
    ddb = aws_client("dynamodb", settings, max_pool=WRITERS * 2)
    table = settings.names.payments_table
    written: dict[str, float] = {}

    def put(item: dict[str, Any]) -> None:
        written[item["payment_id"]["S"]] = time.time()
        ddb.put_item(TableName=table, Item=item)

    total = int(RATE * DURATION)
    late = 0
    with ThreadPoolExecutor(WRITERS) as pool:
        start = time.perf_counter()
        for i in range(total):
            due = start + i / RATE
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            elif delay < -0.05:
                late += 1
            pool.submit(put, random_payment_item())
        elapsed = time.perf_counter() - start
    deadline = time.monotonic() + SETTLE
    while time.monotonic() < deadline and any(p not in sub.arrivals for p in written):
        time.sleep(0.2)
    lags = [(sub.arrivals[p] - t) * 1000 for p, t in written.items() if p in sub.arrivals]
    missing = len(written) - len(lags)
    print(
        f"lag: wrote {len(written)} in {elapsed:.1f} s ({len(written) / elapsed:.0f}/s, "
        f"{late} writes >50 ms behind the timetable), published {len(lags)}, missing {missing}"
    )
    return {
        "stream.lag_p50_ms": percentile(lags, 50),
        "stream.lag_p99_ms": percentile(lags, 99),
        "stream.lag_missing": float(missing),
    }


def _write_backlog(settings: PulseSettings, n: int) -> set[str]:
    ddb = aws_client("dynamodb", settings, max_pool=WRITERS * 2)
    table = settings.names.payments_table
    items = [random_payment_item() for _ in range(n)]

    def write(chunk: list[dict[str, Any]]) -> None:
        requests: list[Any] = [{"PutRequest": {"Item": it}} for it in chunk]
        while requests:
            resp = ddb.batch_write_item(RequestItems={table: requests})
            requests = resp.get("UnprocessedItems", {}).get(table, [])

    chunks = [items[i : i + 25] for i in range(0, n, 25)]
    start = time.perf_counter()
    with ThreadPoolExecutor(WRITERS) as pool:
        list(pool.map(write, chunks))
    print(f"backlog: {n} items written in {time.perf_counter() - start:.1f} s")
    return {it["payment_id"]["S"] for it in items}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _bare_drain(settings: PulseSettings, out: TopologyOutputs, n: int) -> tuple[float, int]:
    """GetRecords from TRIM_HORIZON + PublishBatch of every record: (seconds, records)."""
    streams = aws_client("dynamodbstreams", settings)
    sns = aws_client("sns", settings, max_pool=20)
    arn = out.stream_arns[settings.names.payments_table]
    shards = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    shard_id = shards[0]["ShardId"]

    def publish(records: list[dict[str, Any]]) -> None:
        entries = [
            {
                "Id": str(i),
                "Message": orjson.dumps(r["dynamodb"], default=str).decode(),
                "MessageAttributes": {
                    "type": {"DataType": "String", "StringValue": "created"},
                    "event_id": {"DataType": "String", "StringValue": r["eventID"]},
                },
            }
            for i, r in enumerate(records)
        ]
        sns.publish_batch(TopicArn=out.topic_arn, PublishBatchRequestEntries=entries)

    count = 0
    start = time.perf_counter()
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    deadline = time.monotonic() + DRAIN_TIMEOUT
    with ThreadPoolExecutor(10) as pool:
        while iterator and count < n and time.monotonic() < deadline:
            resp = streams.get_records(ShardIterator=iterator, Limit=BATCH_SIZE)
            records = resp["Records"]
            if not records:
                break
            list(pool.map(publish, [records[i : i + 10] for i in range(0, len(records), 10)]))
            count += len(records)
            iterator = resp.get("NextShardIterator")
    elapsed = time.perf_counter() - start
    print(f"bare: {count} records in {elapsed:.1f} s")
    return elapsed, count


def _drain_phase(
    settings: PulseSettings,
    out: TopologyOutputs,
    drainer: _QueueDrainer,
    redis_url: str,
    start_processor: Callable[[str], ServiceProcess],
    *,
    emulator_pid: int,
) -> dict[str, float]:
    """The processor drains a BACKLOG written while it was stopped; then the bare loop.

    Beside the rates, the CPU each side spent per record (the emulator's separately): on
    busy cores the ratio follows CPU per record, so this says where a change helps.
    """
    backlog = _write_backlog(settings, BACKLOG)
    live = ChannelKeys(settings.redis_prefix).live("payments")
    sub = _Subscriber(redis_url, live)
    processor: ServiceProcess | None = None
    try:
        start = time.perf_counter()
        processor = start_processor("stream-processor-drain.log")
        ready = time.perf_counter()
        assert processor.proc is not None
        cpu_start = _cpu_seconds(processor.proc.pid)
        emulator_start = _cpu_seconds(emulator_pid)
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while time.monotonic() < deadline and sum(p in sub.arrivals for p in backlog) < BACKLOG:
            time.sleep(0.25)
        done = time.perf_counter()
        seen = sum(p in sub.arrivals for p in backlog)
        # The SNS and audit writes of the last batches are still running: wait for them.
        time.sleep(2.0)
        processor_cpu = _cpu_seconds(processor.proc.pid) - cpu_start
        emulator_cpu = _cpu_seconds(emulator_pid) - emulator_start
    finally:
        if processor is not None:
            processor.stop()
        sub.close()
    drain_rate = seen / (done - ready)
    print(
        f"processor: {seen}/{BACKLOG} created events published {done - ready:.1f} s after "
        f"its port answered ({done - start:.1f} s after spawn)"
    )
    drainer.purge()
    bare_cpu_start = time.process_time()
    bare_emulator_start = _cpu_seconds(emulator_pid)
    bare_seconds, bare_count = _bare_drain(settings, out, BACKLOG)
    bare_cpu = time.process_time() - bare_cpu_start
    bare_emulator_cpu = _cpu_seconds(emulator_pid) - bare_emulator_start
    bare_rate = bare_count / bare_seconds
    per_record = 1000 / max(seen, 1)
    bare_per_record = 1000 / max(bare_count, 1)
    print(
        f"cpu per record: processor {processor_cpu * per_record:.2f} ms "
        f"(+ emulator {emulator_cpu * per_record:.2f} ms); bare loop "
        f"{bare_cpu * bare_per_record:.2f} ms (+ emulator {bare_emulator_cpu * bare_per_record:.2f}"
        f" ms); load average {os.getloadavg()[0]:.1f}"
    )
    return {
        "stream.drain_cpu_ms_per_record": processor_cpu * per_record,
        "stream.bare_cpu_ms_per_record": bare_cpu * bare_per_record,
        "stream.drain_records_per_s": drain_rate,
        "stream.bare_records_per_s": bare_rate,
        "stream.drain_ratio": drain_rate / bare_rate,
    }


def _delete_keys(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    batch = []
    for key in client.scan_iter(f"{prefix}*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            client.delete(*batch)
            batch = []
    if batch:
        client.delete(*batch)
    client.close()


def bench_stream() -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="pulse-bench-"))
    port = free_port()
    moto = start_moto(port, work / "moto.log")
    redis_url, own_redis = local_redis(work)
    prefix = f"bs{uuid.uuid4().hex[:8]}-"
    env = {
        **AWS_TEST_CREDENTIALS,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "REDIS_URL": redis_url,
        "PULSE_RESOURCE_PREFIX": prefix,
        "PULSE_REDIS_PREFIX": f"pulse:{prefix}",
        "PULSE_LOG_LEVEL": "warning",
    }
    os.environ.update(env)
    settings = PulseSettings()
    names = settings.names
    print(
        f"setup: moto server, Redis, stream processor only; lag at {RATE:g} PutItem/s for "
        f"{DURATION:g} s; drain of {BACKLOG} records vs. bare GetRecords(Limit {BATCH_SIZE}) "
        "+ PublishBatch(10)"
    )
    processor: ServiceProcess | None = None
    sub: _Subscriber | None = None
    drainer: _QueueDrainer | None = None
    figures: dict[str, float] = {}
    try:
        out = apply_topology(settings)
        queue_urls = [out.queue_urls[q] for q in (names.fraud_queue, names.notify_queue)]
        drainer = _QueueDrainer(settings, queue_urls)
        live = ChannelKeys(f"pulse:{prefix}").live("payments")

        def start_processor(log: str) -> ServiceProcess:
            http_port = free_port()
            return ServiceProcess(
                "stream_processor", {**env, "PULSE_HTTP_PORT": str(http_port)}, work / log
            ).start(wait_port=http_port)

        if "lag" in PHASES:
            sub = _Subscriber(redis_url, live)
            processor = start_processor("stream-processor-lag.log")
            figures.update(_lag_phase(settings, sub))
            processor.stop()
            processor = None
            sub.close()
            sub = None
        drainer.stop()  # only purges from here on: receiving would load the emulator
        if "drain" in PHASES:
            figures.update(
                _drain_phase(
                    settings, out, drainer, redis_url, start_processor, emulator_pid=moto.pid
                )
            )
    finally:
        if processor is not None:
            processor.stop()
        if sub is not None:
            sub.close()
        if drainer is not None:
            drainer.stop()  # no purge: the emulator goes with everything in it
        stop_process(moto)
        _delete_keys(redis_url, f"pulse:{prefix}")
        if own_redis is not None:
            stop_process(own_redis)
    for name, value in figures.items():
        print(f"{name}: {value:.3f}")
    return figures
