"""Workers: the SQS consumer runtime's messages/s vs. a bare receive + batch delete loop.

One queue (fresh name under a unique prefix, deleted afterwards) on a private emulator.
Before each phase MESSAGES messages are sent with SendMessageBatch from SENDERS threads.
Runtime: :class:`pulse.consumer.SqsConsumer` in this process (default settings: 10 in
flight, batching window 0.1 s, 1 s poll) with a no-op async handler, timed from start until
every message was handled and its delete flushed; CPU is this process's CPU time over that
span (sending excluded; the emulator is another process). Bare: one thread of ReceiveMessage
(10, 1 s wait) + DeleteMessageBatch until MESSAGES were deleted. ROUNDS rounds of both
loops, the order alternating from round to round; the ratio is the median of the per-round
ratios (as in bench_ingest), so a slow spell of the shared machine or drift in the emulator
hits both sides of one round and cancels out, instead of a lucky best-of pairing.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pulse.clients import aws_client
from pulse.consumer import SqsConsumer, SqsConsumerSettings, SqsMessage
from pulse.metrics import StageMetrics
from pulse.settings import PulseSettings
from pulse_dev.emulators import AWS_TEST_CREDENTIALS, free_port, start_moto, stop_process
from pulse_dev.testing import queue_depth

MESSAGES = 1_000
SENDERS = 8
ROUNDS = 5
WAIT_SECONDS = 1
TIMEOUT = 90.0


def _fill(sqs: Any, url: str) -> None:
    # A leftover from the last phase would skew the next (PurgeQueue allows one a minute).
    while got := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
        "Messages"
    ):
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)]
        sqs.delete_message_batch(QueueUrl=url, Entries=entries)
    body = '{"specversion":"1.0","type":"bench","id":"%s"}'

    def send(start: int) -> None:
        for base in range(start, MESSAGES, 10 * SENDERS):
            entries = [
                {"Id": str(i), "MessageBody": body % uuid.uuid4()}
                for i in range(min(10, MESSAGES - base))
            ]
            sqs.send_message_batch(QueueUrl=url, Entries=entries)

    with ThreadPoolExecutor(SENDERS) as pool:
        list(pool.map(send, range(0, MESSAGES, 10)[:SENDERS]))


def _bare(sqs: Any, url: str) -> float:
    done = 0
    start = time.perf_counter()
    while done < MESSAGES and time.perf_counter() - start < TIMEOUT:
        got = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=WAIT_SECONDS
        ).get("Messages", [])
        if not got:
            continue
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)
            ],
        )
        done += len(got)
    return done / (time.perf_counter() - start)


def _runtime(sqs: Any, url: str, settings: SqsConsumerSettings) -> tuple[float, float]:
    async def main() -> tuple[float, float]:
        stopping = asyncio.Event()
        handled = 0

        async def handler(_message: SqsMessage) -> None:
            nonlocal handled
            handled += 1
            if handled >= MESSAGES:
                stopping.set()

        consumer = SqsConsumer(
            sqs,
            url,
            handler,
            StageMetrics("bench"),
            max_in_flight=settings.sqs_max_in_flight,
            wait_time_seconds=WAIT_SECONDS,
            visibility_timeout=settings.sqs_visibility_timeout,
            batch_window_seconds=settings.sqs_batch_window_seconds,
            depth_poll_seconds=settings.sqs_depth_poll_seconds,
        )
        cpu0 = time.process_time()
        start = time.perf_counter()
        await asyncio.wait_for(consumer.run(stopping), TIMEOUT)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu0
        return handled / elapsed, cpu / max(handled, 1) * 1e6

    return asyncio.run(main())


def bench_workers() -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="pulse-bench-"))
    port = free_port()
    moto = start_moto(port, work / "moto.log")
    prefix = f"bw{uuid.uuid4().hex[:8]}-"
    os.environ.update(
        {
            **AWS_TEST_CREDENTIALS,
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "PULSE_RESOURCE_PREFIX": prefix,
            "PULSE_LOG_LEVEL": "warning",
        }
    )
    settings = SqsConsumerSettings()
    sqs = aws_client("sqs", PulseSettings())
    url = ""
    try:
        url = sqs.create_queue(QueueName=f"{prefix}bench")["QueueUrl"]
        print(
            f"setup: moto server, queue {prefix}bench; {MESSAGES} messages sent beforehand by "
            f"{SENDERS} threads; runtime = SqsConsumer in this process (no-op handler, "
            f"max_in_flight {settings.sqs_max_in_flight}, batch window "
            f"{settings.sqs_batch_window_seconds:g} s, wait {WAIT_SECONDS} s) vs. bare "
            f"ReceiveMessage(10) + DeleteMessageBatch in one thread; {ROUNDS} rounds of both "
            "(order alternating); ratio = median of the per-round ratios, CPU = median",
            flush=True,
        )
        runtime, bare, cpu = [], [], []

        def measure_runtime(rnd: int) -> None:
            _fill(sqs, url)
            rate, cpu_us = _runtime(sqs, url, settings)
            print(f"round {rnd}: runtime {rate:.0f} msgs/s, {cpu_us:.0f} us CPU/msg", flush=True)
            runtime.append(rate)
            cpu.append(cpu_us)

        def measure_bare(rnd: int) -> None:
            _fill(sqs, url)
            rate = _bare(sqs, url)
            print(
                f"round {rnd}: bare {rate:.0f} msgs/s (depth left {queue_depth(sqs, url)})",
                flush=True,
            )
            bare.append(rate)

        for rnd in range(ROUNDS):
            phases = (measure_runtime, measure_bare)
            for phase in phases if rnd % 2 == 0 else reversed(phases):
                phase(rnd + 1)
        figures = {
            "worker.runtime_msgs_per_s": statistics.median(runtime),
            "worker.bare_msgs_per_s": statistics.median(bare),
            "worker.ratio": statistics.median(r / b for r, b in zip(runtime, bare, strict=True)),
            "worker.cpu_us_per_msg": statistics.median(cpu),
        }
        for name, value in figures.items():
            print(f"{name}: {value:.3f}")
        return figures
    finally:
        if url:
            try:
                sqs.delete_queue(QueueUrl=url)
            except Exception as exc:  # the emulator goes away anyway
                print(f"could not delete queue: {exc}")
        stop_process(moto)
