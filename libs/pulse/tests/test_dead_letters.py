"""The dead-letter queues of a stack, what their messages say, and how one is sent back: the
pure parts of ``pulse dlq``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from botocore.exceptions import ClientError

from pulse.consumer import SqsMessage
from pulse.dead_letter_sqs import RedriveProgress, move_task_progress, our_move_task
from pulse.dead_letters import (
    DeadLetterQueue,
    QueueState,
    UnknownQueueError,
    dead_letter_queues,
    describe,
    find_queue,
    format_age,
    lacks_action,
    oldest_age_seconds,
    redrive_deduplication_id,
    resend_entry,
    state_table,
)
from pulse.errors import PermanentError
from pulse.settings import ResourceNames
from pulse_dev.testing import aws_client_error

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_the_queues_come_from_the_topology_with_the_queue_each_serves() -> None:
    queues = dead_letter_queues(ResourceNames("stage-"))
    assert [(q.label, q.source_label, q.role, q.fifo) for q in queues] == [
        ("fraud-dlq", "fraud", "dlq", False),
        ("notify-dlq", "notify", "dlq", False),
        ("webhooks-dlq.fifo", "webhooks.fifo", "dlq", True),
        ("webhook-retries-dlq", "webhook-retries", "dlq", False),
        ("stream-failures-dlq", "stream-failures", "dlq", False),
        # the failure queue is the replay queue's DLQ: redriven, its records are re-applied
        ("stream-failures", "stream-replays", "failures", False),
    ]
    assert queues[0].name == "stage-fraud-dlq"
    assert queues[0].source == "stage-fraud"


def test_a_queue_is_found_by_label_or_full_name_and_an_unknown_one_lists_the_known() -> None:
    queues = dead_letter_queues(ResourceNames("p-"))
    assert find_queue(queues, "notify-dlq").name == "p-notify-dlq"
    assert find_queue(queues, "p-notify-dlq").label == "notify-dlq"
    with pytest.raises(UnknownQueueError) as caught:
        find_queue(queues, "fraud")  # the source queue is not a dead-letter queue
    message = str(caught.value)
    assert "\n" not in message
    assert message == (
        "unknown queue 'fraud'; known: fraud-dlq, notify-dlq, webhooks-dlq.fifo, "
        "webhook-retries-dlq, stream-failures-dlq, stream-failures"
    )
    assert isinstance(caught.value, PermanentError)


def _client_error(code: str, status: int) -> ClientError:
    return aws_client_error(code, status, "StartMessageMoveTask")


@pytest.mark.parametrize(
    ("error", "lacking"),
    [
        (_client_error("NotImplemented", 501), True),  # the local emulator
        (_client_error("InvalidAction", 400), True),  # AWS's query protocol
        (_client_error("UnknownOperationException", 400), True),  # AWS's JSON protocol
        (_client_error("Whatever", 501), True),
        (_client_error("InternalError", 500), False),  # a fault: not a reason to fall back
        (_client_error("AccessDenied", 403), False),
        (_client_error("AWS.SimpleQueueService.UnsupportedOperation", 400), False),
        (ValueError("no response"), False),
    ],
)
def test_only_a_missing_action_lets_redrive_move_messages_itself(
    error: BaseException, *, lacking: bool
) -> None:
    assert lacks_action(error) is lacking


def _message(
    body: Any = b"{}",
    *,
    attributes: dict[str, str] | None = None,
    strings: dict[str, str] | None = None,
    message_id: str = "m-1",
    sent_at: datetime | None = NOW,
) -> SqsMessage:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return SqsMessage(
        message_id,
        "rh",
        raw,
        attributes=attributes or {},
        message_attributes={
            name: {"DataType": "String", "StringValue": value}
            for name, value in (strings or {}).items()
        },
        sent_at=sent_at,
    )


def test_a_resent_message_keeps_body_and_attributes_and_on_fifo_its_group() -> None:
    message = _message(
        b'{"a":1}',
        attributes={"MessageGroupId": "ep_1", "SentTimestamp": "1"},
        strings={"error": "HTTP 503", "type": "created"},
    )
    message.message_attributes["blob"] = {"DataType": "Binary", "BinaryValue": b"\x00"}
    standard = resend_entry(message, "m0", fifo=False)
    assert standard == {
        "Id": "m0",
        "MessageBody": '{"a":1}',
        "MessageAttributes": {
            "error": {"DataType": "String", "StringValue": "HTTP 503"},
            "type": {"DataType": "String", "StringValue": "created"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00"},
        },
    }
    fifo = resend_entry(message, "m0", fifo=True)
    assert fifo["MessageGroupId"] == "ep_1"
    # fixed by the dead-letter message's id: sent again after a kill, it is a duplicate
    assert fifo["MessageDeduplicationId"] == redrive_deduplication_id("m-1")
    assert (
        resend_entry(message, "m5", fifo=True)["MessageDeduplicationId"]
        == (fifo["MessageDeduplicationId"])
    )
    assert redrive_deduplication_id("m-2") != fifo["MessageDeduplicationId"]
    assert len(fifo["MessageDeduplicationId"]) <= 128


def test_the_oldest_age_is_the_earliest_sent_time_sampled() -> None:
    messages = [
        _message(sent_at=NOW - timedelta(minutes=3)),
        _message(sent_at=NOW - timedelta(seconds=5)),
        _message(sent_at=None),
    ]
    assert oldest_age_seconds(messages, NOW) == 180.0
    assert oldest_age_seconds([_message(sent_at=None)], NOW) is None
    assert oldest_age_seconds([], NOW) is None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0.4, "0s"),
        (42, "42s"),
        (185, "3m 05s"),
        (2 * 3600 + 7 * 60 + 3, "2h 07m"),
        (3 * 86400 + 4 * 3600, "3d 04h"),
    ],
)
def test_ages_read_as_people_say_them(seconds: float | None, text: str) -> None:
    assert format_age(seconds) == text


def test_the_list_is_an_aligned_table() -> None:
    fraud, *_rest, failures = dead_letter_queues(ResourceNames("p-"))
    lines = state_table([QueueState(fraud, 3, 0, 185.0), QueueState(failures, 12, 2, None)])
    assert lines == [
        "QUEUE            ROLE      REDRIVES TO     DEPTH  IN FLIGHT  OLDEST",
        "fraud-dlq        dlq       fraud               3          0  3m 05s",
        "stream-failures  failures  stream-replays     12          2       -",
    ]


EVENT = {
    "specversion": "1.0",
    "id": "ev-1",
    "source": "/pulse/stream-processor",
    "type": "pulse.payment.created",
    "subject": "pay_1",
    "time": "2026-03-01T11:59:00.000Z",
    "datacontenttype": "application/json",
    "data": {"payment_id": "pay_1", "amount": "12.50"},
}


def test_a_dead_lettered_event_shows_its_error_and_receives() -> None:
    letter = describe(
        _message(
            EVENT,
            strings={
                "error": "ResponseError: WRONGTYPE (receive 5, the last the queue allows)",
                "source_queue": "p-fraud",
                "receive_count": "5",
            },
            sent_at=NOW - timedelta(seconds=90),
        )
    )
    assert letter.kind == "event"
    assert letter.summary == "pulse.payment.created ev-1 (subject pay_1)"
    assert letter.error == "ResponseError: WRONGTYPE (receive 5, the last the queue allows)"
    assert (letter.source_queue, letter.receive_count, letter.first_error) == ("p-fraud", 5, None)
    lines = letter.lines(NOW)
    assert lines[:7] == [
        "message m-1",
        "  sent:     2026-03-01T11:58:30.000Z (1m 30s ago)",
        "  what:     pulse.payment.created ev-1 (subject pay_1)",
        "  error:    ResponseError: WRONGTYPE (receive 5, the last the queue allows)",
        "  from:     p-fraud",
        "  receives: 5",
        "  {",
    ]
    assert '    "subject": "pay_1",' in lines  # the event, pretty
    assert letter.to_json()["body"] == EVENT


FAILURE = {
    "reason": "retries_exhausted",
    "error": {"type": "RetryableError", "message": "redis down"},
    "attempts": 12,
    "failed_at": "2026-03-01T11:00:00.000Z",
    "stream_arn": "arn:stream",
    "shard_id": "shard-1",
    "sequence_number": "4200",
    "event_id": "ev-9",
    "record": {
        "eventID": "e9",
        "eventName": "MODIFY",
        "dynamodb": {"NewImage": {"payment_id": {"S": "pay_9"}}, "SequenceNumber": "4200"},
    },
}


def test_a_stream_failure_shows_the_record_and_the_processors_error() -> None:
    letter = describe(_message(FAILURE, strings={"reason": "retries_exhausted"}))
    assert letter.kind == "stream-failure"
    assert letter.summary == (
        "stream record MODIFY of payment pay_9 (sequence 4200, shard shard-1), "
        "retries_exhausted after 12 attempt(s)"
    )
    assert letter.error == "RetryableError: redis down (at 2026-03-01T11:00:00.000Z)"
    assert letter.first_error is None
    assert letter.receive_count is None


def test_a_replayed_record_that_failed_again_shows_both_errors() -> None:
    letter = describe(
        _message(
            FAILURE,
            strings={
                "error": "channel append: redis down (receive 5, the last the queue allows)",
                "source_queue": "p-stream-replays",
                "receive_count": "5",
            },
        )
    )
    assert letter.error == "channel append: redis down (receive 5, the last the queue allows)"
    assert letter.first_error == "RetryableError: redis down (at 2026-03-01T11:00:00.000Z)"
    assert "  first:    RetryableError: redis down (at 2026-03-01T11:00:00.000Z)" in (
        letter.lines(NOW)
    )


def test_a_record_without_its_images_says_it_cannot_be_replayed() -> None:
    truncated = {**FAILURE, "truncated": ["NewImage", "OldImage"]}
    truncated["record"] = {"eventName": "MODIFY", "dynamodb": {"Keys": FAILURE["record"]}}
    assert describe(_message(truncated)).summary.endswith(
        "images dropped (NewImage, OldImage): cannot be replayed"
    )


def test_a_body_that_is_not_json_is_shown_as_it_is() -> None:
    letter = describe(
        _message(b"this is not json", strings={"error": "not a CloudEvent: JSONDecodeError"})
    )
    assert (letter.kind, letter.body, letter.summary) == ("raw", None, "not JSON")
    assert "  body:     'this is not json'" in letter.lines(NOW)
    assert letter.to_json()["body"] == "this is not json"
    huge = describe(_message(b"x" * 10_000)).lines(NOW)[-1]
    assert huge.endswith("… (6000 more chars)'")
    moved = describe(_message(EVENT, sent_at=None)).lines(NOW)
    assert "  sent:     unknown" in moved
    assert "  error:    not recorded (moved by the queue redrive policy)" in moved
    assert "  receives: not recorded" in moved


@pytest.mark.parametrize(
    ("task", "progress"),
    [
        (
            {
                "Status": "RUNNING",
                "ApproximateNumberOfMessagesMoved": 40,
                "ApproximateNumberOfMessagesToMove": 100,
                "TaskHandle": "h",
            },
            RedriveProgress(40, 100, "move-task", done=False),
        ),
        (
            {"Status": "COMPLETED", "ApproximateNumberOfMessagesMoved": 100},
            RedriveProgress(100, None, "move-task", done=True),
        ),
    ],
)
def test_a_move_task_reports_its_progress(task: dict[str, Any], progress: RedriveProgress) -> None:
    assert move_task_progress(task) == progress


def test_a_failed_move_task_is_an_error_with_its_reason() -> None:
    with pytest.raises(
        PermanentError, match=r"ended FAILED: AWS\.SimpleQueueService\.NonExistentQueue"
    ):
        move_task_progress(
            {"Status": "FAILED", "FailureReason": "AWS.SimpleQueueService.NonExistentQueue"}
        )
    with pytest.raises(PermanentError, match="ended CANCELLED: no reason given"):
        move_task_progress({"Status": "CANCELLED"})


def test_a_dead_letter_queue_knows_its_kind() -> None:
    queue = DeadLetterQueue("p-webhooks-dlq.fifo", "webhooks-dlq.fifo", "p-webhooks.fifo", "dlq")
    assert queue.fifo
    assert queue.source_label == "webhooks.fifo"


def test_the_move_task_followed_is_the_one_just_started() -> None:
    earlier = {"Status": "COMPLETED", "StartedTimestamp": 1_000_000}
    running = {"Status": "RUNNING", "TaskHandle": "h-2", "StartedTimestamp": 5_000_000}
    ended = {"Status": "COMPLETED", "StartedTimestamp": 5_000_000}
    asked = 4_990_000
    assert our_move_task([running, earlier], "h-2", asked) is running
    # ended before it was first listed: no handle any more, but started since it was asked
    assert our_move_task([ended, earlier], "h-2", asked) is ended
    # not listed yet: an older task is not taken for it
    assert our_move_task([earlier], "h-2", asked) is None
    assert our_move_task([], "h-2", asked) is None
