"""``pulse dlq`` against the emulator: list, show, redrive and purge the stack's dead-letter
queues; a redrive interrupted anywhere loses nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

from pulse.cli import main
from pulse.clients import aws_client
from pulse.consumer import SqsMessage
from pulse.consumer.dead_letter import DeadLetters
from pulse.dead_letter_sqs import DeadLetterQueues
from pulse.dead_letters import dead_letter_queues, find_queue
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs, WebhookNames
from pulse_dev.testing import KilledBeforeDelete, queue_depth, until

pytestmark = pytest.mark.timeout(120)


def dlq(*args: str) -> Result:
    return CliRunner().invoke(main, ["dlq", *args], catch_exceptions=False)


def _event(payment_id: str) -> bytes:
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": f"ev-{payment_id}",
            "source": "/pulse/stream-processor",
            "type": "pulse.payment.created",
            "subject": payment_id,
            "time": "2026-03-01T12:00:00.000Z",
            "datacontenttype": "application/json",
            "data": {"payment_id": payment_id},
        }
    )


def dead_letter(
    settings: PulseSettings, topology: TopologyOutputs, bodies: list[bytes], reason: str
) -> None:
    """Put ``bodies`` through the fraud queue and dead-letter each as the consumer does."""
    sqs = aws_client("sqs", settings)
    name = settings.names.fraud_queue
    url = topology.queue_urls[name]
    for body in bodies:
        sqs.send_message(QueueUrl=url, MessageBody=body.decode())
    letters = DeadLetters(sqs, url, name)
    left = len(bodies)
    while left:
        got = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"], WaitTimeSeconds=1
        ).get("Messages", [])
        for raw in got:
            asyncio.run(letters.send(SqsMessage.from_sqs(raw), reason))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=raw["ReceiptHandle"])
        left -= len(got)


def bodies_in(sqs: Any, url: str) -> list[str]:
    """Every body a queue holds, taken out (received and deleted)."""
    out: list[str] = []
    while got := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
        "Messages", []
    ):
        out += [m["Body"] for m in got]
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)
            ],
        )
    return out


def test_list_shows_every_queue_with_depth_in_flight_and_oldest_age(
    stack_settings: PulseSettings, queue_topology: TopologyOutputs
) -> None:
    dead_letter(stack_settings, queue_topology, [_event("p1"), _event("p2")], "bad amount")
    result = dlq("list")
    assert result.exit_code == 0, result.output
    header, *rows = result.output.splitlines()
    assert header.split() == ["QUEUE", "ROLE", "REDRIVES", "TO", "DEPTH", "IN", "FLIGHT", "OLDEST"]
    table = {row.split()[0]: row.split()[1:] for row in rows}
    assert set(table) == {
        "fraud-dlq",
        "notify-dlq",
        "webhooks-dlq.fifo",
        "webhook-retries-dlq",
        "stream-failures-dlq",
        "stream-failures",
    }
    assert table["fraud-dlq"][:4] == ["dlq", "fraud", "2", "0"]
    assert table["fraud-dlq"][4].endswith("s")  # seconds old
    assert table["notify-dlq"] == ["dlq", "notify", "0", "0", "-"]
    assert table["stream-failures"][:2] == ["failures", "stream-replays"]
    # reading the oldest age left the messages where they were, visible
    sqs = aws_client("sqs", stack_settings)
    fraud_dlq = queue_topology.queue_urls[stack_settings.names.fraud_dlq]
    assert queue_depth(sqs, fraud_dlq) == 2
    rows_json = [orjson.loads(line) for line in dlq("list", "--json").output.splitlines()]
    fraud = next(r for r in rows_json if r["queue"] == "fraud-dlq")
    assert (fraud["depth"], fraud["in_flight"], fraud["redrives_to"]) == (2, 0, "fraud")
    assert fraud["oldest_age_s"] >= 0


def test_show_decodes_the_messages_with_their_error_and_leaves_them(
    stack_settings: PulseSettings, queue_topology: TopologyOutputs
) -> None:
    ids = [f"pay-{i}" for i in range(12)]
    dead_letter(stack_settings, queue_topology, [_event(p) for p in ids], "not a CloudEvent: x")
    first = dlq("show", "fraud-dlq", "--limit", "12")
    assert first.exit_code == 0, first.output
    assert first.output.count("\nmessage ") + first.output.startswith("message ") == 12
    assert "  error:    not a CloudEvent: x" in first.output
    assert f"  from:     {stack_settings.names.fraud_queue}" in first.output
    assert "  receives: 1" in first.output
    assert "  what:     pulse.payment.created ev-pay-3 (subject pay-3)" in first.output
    assert first.output.rstrip().endswith("fraud-dlq: 12 message(s) shown; they stay in the queue")
    # nothing was consumed: all visible again, and a second look shows them all again
    sqs = aws_client("sqs", stack_settings)
    url = queue_topology.queue_urls[stack_settings.names.fraud_dlq]
    counts = DeadLetterQueues(sqs).counts(find_queue(_queues(stack_settings), "fraud-dlq"))
    assert counts == (12, 0)
    again = [
        orjson.loads(line)
        for line in dlq("show", "fraud-dlq", "--json", "--limit", "50").output.splitlines()
    ]
    assert sorted(letter["body"]["subject"] for letter in again) == sorted(ids)
    assert {letter["error"] for letter in again} == {"not a CloudEvent: x"}
    assert queue_depth(sqs, url) == 12


def _queues(settings: PulseSettings) -> Any:
    return dead_letter_queues(settings.names)


def test_an_unknown_queue_is_one_line_naming_the_known_ones(
    stack_settings: PulseSettings,
) -> None:
    for command in (["show", "fraud"], ["redrive", "nope"], ["purge", "nope", "--yes"]):
        result = CliRunner().invoke(main, ["dlq", *command])
        assert result.exit_code == 1
        (line,) = result.output.splitlines()
        assert line.startswith(f"Error: unknown queue {command[1]!r}; known: fraud-dlq, ")
        assert line.endswith("stream-failures")


def test_a_missing_queue_says_to_apply_the_topology(stack_settings: PulseSettings) -> None:
    result = CliRunner().invoke(main, ["dlq", "list"])
    assert result.exit_code == 1
    (line,) = result.output.splitlines()
    assert "does not exist: apply the topology" in line


def test_purge_refuses_without_yes_saying_how_many_then_deletes(
    stack_settings: PulseSettings, queue_topology: TopologyOutputs
) -> None:
    dead_letter(stack_settings, queue_topology, [_event("a"), _event("b"), _event("c")], "x")
    refused = CliRunner().invoke(main, ["dlq", "purge", "fraud-dlq"])
    assert refused.exit_code == 1
    assert refused.output == (
        "Error: this would delete about 3 message(s) from fraud-dlq; add --yes to purge\n"
    )
    sqs = aws_client("sqs", stack_settings)
    url = queue_topology.queue_urls[stack_settings.names.fraud_dlq]
    assert queue_depth(sqs, url) == 3
    done = dlq("purge", "fraud-dlq", "--yes")
    assert done.exit_code == 0
    assert done.output == "purged fraud-dlq: about 3 message(s) deleted\n"
    assert queue_depth(sqs, url) == 0


def test_redrive_sends_back_to_the_source_and_a_fifo_queue_keeps_groups_and_order(
    stack_settings: PulseSettings, queue_topology: TopologyOutputs
) -> None:
    sqs = aws_client("sqs", stack_settings)
    hooks = WebhookNames.from_prefix(stack_settings.resource_prefix)
    dlq_url, queue_url = (
        queue_topology.queue_urls[hooks.dlq],
        queue_topology.queue_urls[hooks.queue],
    )
    sent = [(f"ep_{i % 2}", f"delivery-{i}") for i in range(14)]
    for group, body in sent:
        sqs.send_message(
            QueueUrl=dlq_url,
            MessageBody=body,
            MessageGroupId=group,
            MessageDeduplicationId=body,
            MessageAttributes={"error": {"DataType": "String", "StringValue": "HTTP 503"}},
        )
    moved = dlq("redrive", "webhooks-dlq.fifo", "--max", "3")
    assert moved.exit_code == 0, moved.output
    assert "moved 3 message(s) from webhooks-dlq.fifo to webhooks.fifo" in moved.output
    rest = dlq("redrive", "webhooks-dlq.fifo")
    assert rest.exit_code == 0, rest.output
    # the emulator has no StartMessageMoveTask: Pulse moved them itself, saying so
    assert "moved 11 message(s) from webhooks-dlq.fifo to webhooks.fifo (ten at a time)" in (
        rest.output
    )
    assert queue_depth(sqs, dlq_url) == 0
    received: list[tuple[str, str, str]] = []
    while got := sqs.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=10,
        WaitTimeSeconds=1,
        AttributeNames=["MessageGroupId"],
        MessageAttributeNames=["All"],
    ).get("Messages", []):
        for m in got:
            error = m["MessageAttributes"]["error"]["StringValue"]
            received.append((m["Attributes"]["MessageGroupId"], m["Body"], error))
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)
            ],
        )
    for group in ("ep_0", "ep_1"):
        assert [b for g, b, _ in received if g == group] == [b for g, b in sent if g == group]
    assert {e for *_, e in received} == {"HTTP 503"}


def test_a_redrive_killed_between_send_and_delete_loses_nothing(
    stack_settings: PulseSettings, queue_topology: TopologyOutputs
) -> None:
    bodies = [_event(f"p{i}") for i in range(25)]
    dead_letter(stack_settings, queue_topology, bodies, "redis down")
    sqs = aws_client("sqs", stack_settings)
    queue = find_queue(_queues(stack_settings), "fraud-dlq")
    with pytest.raises(KeyboardInterrupt):
        DeadLetterQueues(KilledBeforeDelete(sqs, die_on=2), hold_seconds=1).redrive(
            queue, max_messages=None
        )
    names = stack_settings.names
    source_url = queue_topology.queue_urls[names.fraud_queue]
    dlq_url = queue_topology.queue_urls[names.fraud_dlq]
    # batch 1 moved; batch 2 sent but still in the DLQ (hidden); 5 never touched
    assert DeadLetterQueues(sqs).counts(queue) == (5, 10)
    assert queue_depth(sqs, source_url) == 20
    time.sleep(1.5)  # the hold of the interrupted batch runs out: it shows again
    result = dlq("redrive", "fraud-dlq")
    assert result.exit_code == 0, result.output
    assert "moved 15 message(s)" in result.output
    assert queue_depth(sqs, dlq_url) == 0
    arrived = bodies_in(sqs, source_url)
    # nothing lost; the interrupted batch arrived twice (the receivers' idempotency absorbs it)
    assert sorted(set(arrived)) == sorted(b.decode() for b in bodies)
    assert len(arrived) == 35


def test_a_redrive_process_killed_midway_loses_nothing(
    stack_settings: PulseSettings, stack_env: dict[str, str], queue_topology: TopologyOutputs
) -> None:
    bodies = [_event(f"k{i}-{uuid.uuid4().hex[:4]}") for i in range(150)]
    dead_letter(stack_settings, queue_topology, bodies, "redis down")
    sqs = aws_client("sqs", stack_settings)
    names = stack_settings.names
    source_url = queue_topology.queue_urls[names.fraud_queue]
    dlq_url = queue_topology.queue_urls[names.fraud_dlq]
    process = subprocess.Popen(
        [sys.executable, "-m", "pulse.cli", "dlq", "redrive", "fraud-dlq", "--hold", "2"],
        env={**os.environ, **stack_env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    with process.stderr:
        first = process.stderr.readline()  # the first batch is through
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    assert "moved 10 of ~150" in first, first
    left = queue_depth(sqs, dlq_url)
    assert 0 < left < 150, "killed after the redrive ended: nothing was interrupted"
    until(
        lambda: (
            DeadLetterQueues(sqs).counts(find_queue(_queues(stack_settings), "fraud-dlq"))[1] == 0
        ),
        timeout=10,
    )
    result = dlq("redrive", "fraud-dlq")
    assert result.exit_code == 0, result.output
    assert queue_depth(sqs, dlq_url) == 0
    arrived = bodies_in(sqs, source_url)
    assert sorted(set(arrived)) == sorted(b.decode() for b in bodies)
    assert len(arrived) - len(bodies) <= 10  # at most the batch in flight, twice


class WithMoveTasks:
    """The emulator's SQS client with the two actions it lacks, ``StartMessageMoveTask`` and
    ``ListMessageMoveTasks``, answered as SQS answers them: the task moves every message of
    the source to the destination (for real, on the emulator), is listed RUNNING with its
    handle first, then COMPLETED without it."""

    def __init__(self, sqs: Any) -> None:
        self._sqs = sqs
        self.started: list[dict[str, str]] = []
        self._listed = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sqs, name)

    def _url(self, arn: str) -> str:
        return str(self._sqs.get_queue_url(QueueName=arn.rsplit(":", 1)[1])["QueueUrl"])

    def start_message_move_task(self, **request: str) -> dict[str, str]:
        self.started.append(request)
        return {"TaskHandle": "task-1"}

    def list_message_move_tasks(self, *, SourceArn: str, MaxResults: int) -> dict[str, Any]:  # noqa: N803 - boto3's names
        [task] = self.started
        assert SourceArn == task["SourceArn"]
        assert MaxResults >= 1
        self._listed += 1
        started = {"StartedTimestamp": int(time.time() * 1000), "SourceArn": SourceArn}
        if self._listed == 1:
            self.moved = self._move(self._url(SourceArn), self._url(task["DestinationArn"]))
            running = {"Status": "RUNNING", "TaskHandle": "task-1"}
            return {"Results": [{**started, **running, "ApproximateNumberOfMessagesMoved": 0}]}
        done = {"Status": "COMPLETED", "ApproximateNumberOfMessagesMoved": self.moved}
        return {"Results": [{**started, **done}]}

    def _move(self, source: str, destination: str) -> int:
        moved = 0
        while got := self._sqs.receive_message(
            QueueUrl=source, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        ).get("Messages", []):
            entries = [
                {
                    "Id": str(i),
                    "MessageBody": m["Body"],
                    "MessageAttributes": m.get("MessageAttributes", {}),
                }
                for i, m in enumerate(got)
            ]
            self._sqs.send_message_batch(QueueUrl=destination, Entries=entries)
            self._sqs.delete_message_batch(
                QueueUrl=source,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)
                ],
            )
            moved += len(got)
        return moved


def test_where_sqs_has_move_tasks_the_redrive_is_one_and_follows_it_to_its_end(
    stack_settings: PulseSettings, queue_topology: TopologyOutputs
) -> None:
    bodies = [_event(f"m{i}") for i in range(12)]
    dead_letter(stack_settings, queue_topology, bodies, "redis down")
    sqs = WithMoveTasks(aws_client("sqs", stack_settings))
    names = stack_settings.names
    seen: list[Any] = []
    final = DeadLetterQueues(sqs).redrive(
        find_queue(_queues(stack_settings), "fraud-dlq"), on_progress=seen.append, poll_seconds=0
    )
    # SQS was asked to move the DLQ's messages to the queue it serves, and the redrive
    # followed that task (not a batch of its own) until it completed.
    assert sqs.started == [
        {
            "SourceArn": queue_topology.queue_arns[names.fraud_dlq],
            "DestinationArn": queue_topology.queue_arns[names.fraud_queue],
        }
    ]
    assert {p.method for p in seen} == {"move-task"}
    assert (seen[0].done, final.done, final.moved) == (False, True, 12)
    assert queue_depth(sqs, queue_topology.queue_urls[names.fraud_dlq]) == 0
    arrived = bodies_in(sqs, queue_topology.queue_urls[names.fraud_queue])
    assert sorted(arrived) == sorted(b.decode() for b in bodies)
