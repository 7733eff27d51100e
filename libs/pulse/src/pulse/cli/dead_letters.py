"""``pulse dlq``: the stack's dead-letter queues — list, read, redrive, purge.

The queues come from the topology (:mod:`pulse.dead_letters`), the SQS calls from
:mod:`pulse.dead_letter_sqs`; what reading, the oldest age and a redrive mean is written
there and in each command's help.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

import click
import orjson

from pulse.cli.target import aws, settings
from pulse.errors import PulseError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from pulse.dead_letter_sqs import DeadLetterQueues, RedriveProgress
    from pulse.dead_letters import DeadLetterQueue

__all__ = ["dlq"]

_HOLD_HELP: Final = (
    "Seconds a message being read or moved stays hidden in the queue (one killed midway "
    "shows again after this)."
)


@click.group(short_help="List, read, redrive and purge the dead-letter queues.")
def dlq() -> None:
    """The dead-letter queues of the stack and the stream processor's failure queue.

    QUEUE is a name without the resource prefix: fraud-dlq, notify-dlq, webhooks-dlq.fifo
    (each back to the queue it serves), stream-failures (records the stream processor could
    not apply; a redrive sends them to stream-replays, which the processor re-applies
    through its own effects) and stream-failures-dlq (back to stream-failures).

    Reading a queue does not consume it: messages are received, then made visible again.
    Each read counts as a receive of every message read.
    """


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """A Pulse error (AWS refused, a queue missing, an unknown name) as one line, exit 1."""
    try:
        yield
    except PulseError as exc:
        raise click.ClickException(str(exc)) from exc


def _catalogue() -> list[DeadLetterQueue]:
    from pulse.dead_letters import dead_letter_queues  # noqa: PLC0415 - boto3 only when run

    return dead_letter_queues(settings().names)


def _queue(name: str) -> DeadLetterQueue:
    from pulse.dead_letters import find_queue  # noqa: PLC0415

    return find_queue(_catalogue(), name)


def _sqs(hold_seconds: int | None = None) -> DeadLetterQueues:
    from pulse.dead_letter_sqs import HOLD_SECONDS, DeadLetterQueues  # noqa: PLC0415

    return DeadLetterQueues(aws("sqs"), hold_seconds=hold_seconds or HOLD_SECONDS)


_hold_option = click.option(
    "--hold",
    "hold_seconds",
    type=click.IntRange(1, 43_200),
    default=30,
    metavar="SECONDS",
    help=_HOLD_HELP,
)


@dlq.command(name="list", short_help="Depth, in-flight and oldest age of each queue.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per queue instead.")
def dlq_list(*, as_json: bool) -> None:
    """Every dead-letter queue with its depth, messages in flight and oldest message.

    DEPTH counts the visible messages, IN FLIGHT those hidden (being read or moved). OLDEST is
    the age of the oldest of up to 10 messages read from the queue (SentTimestamp): exact
    when the queue holds no more, a lower bound otherwise; a message the consumer
    dead-lettered dates from then, one SQS moved from a standard queue from its first send.
    """
    from pulse.dead_letters import state_table  # noqa: PLC0415

    with _one_line_errors():
        sqs = _sqs()
        states = [sqs.state(queue) for queue in _catalogue()]
    if as_json:
        for s in states:
            row = {
                "queue": s.queue.label,
                "name": s.queue.name,
                "role": s.queue.role,
                "redrives_to": s.queue.source_label,
                "depth": s.visible,
                "in_flight": s.in_flight,
                "oldest_age_s": s.oldest_age_s,
            }
            click.echo(orjson.dumps(row).decode())
        return
    for line in state_table(states):
        click.echo(line)


@dlq.command(name="show", short_help="Decoded messages with their recorded errors.")
@click.argument("queue_name", metavar="QUEUE")
@click.option("--limit", type=click.IntRange(1, 1000), default=10, help="Most messages to show.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message instead.")
@_hold_option
def dlq_show(queue_name: str, limit: int, *, as_json: bool, hold_seconds: int) -> None:
    """Messages of QUEUE, decoded, with the error recorded when they were dead-lettered.

    An event's CloudEvent, or a stream failure's record, printed in full. The recorded error
    is the consumer's (its last, for a message that failed on its last allowed receive) or
    the stream processor's; a replayed record that failed again shows both. RECEIVES is how
    often it was received before it was dead-lettered. The messages stay in the queue (of a
    FIFO queue at most the next 10 of each message group are shown).
    """
    from pulse.dead_letters import describe  # noqa: PLC0415

    with _one_line_errors():
        queue = _queue(queue_name)
        messages = _sqs(hold_seconds).peek(queue, limit)
    now = datetime.now(UTC)
    for message in messages:
        letter = describe(message)
        if as_json:
            click.echo(orjson.dumps(letter.to_json()).decode())
            continue
        for line in letter.lines(now):
            click.echo(line)
        click.echo()
    if not as_json:
        click.echo(f"{queue.label}: {len(messages)} message(s) shown; they stay in the queue")


def _progress_printer(queue: DeadLetterQueue) -> Callable[[RedriveProgress], None]:
    """Progress on stderr: one line rewritten on a terminal, else a line per change."""
    tty = sys.stderr.isatty()
    last: list[int] = []

    def show(progress: RedriveProgress) -> None:
        of = f" of ~{progress.expected}" if progress.expected is not None else ""
        text = f"{queue.label} → {queue.source_label}: moved {progress.moved}{of}"
        if tty:
            click.echo(f"\r{text}", nl=progress.done, err=True)
        elif not last or last[-1] != progress.moved:
            click.echo(text, err=True)
        last.append(progress.moved)

    return show


@dlq.command(name="redrive", short_help="Send the messages back to their source queue.")
@click.argument("queue_name", metavar="QUEUE")
@click.option(
    "--max",
    "max_messages",
    type=click.IntRange(min=1),
    default=None,
    help="Move at most this many (always moved by Pulse itself, ten at a time).",
)
@_hold_option
def dlq_redrive(queue_name: str, max_messages: int | None, hold_seconds: int) -> None:
    """Send QUEUE's messages back to the queue they came from (fix the cause first).

    On AWS, SQS moves them (StartMessageMoveTask; progress from ListMessageMoveTasks).
    Where the endpoint lacks that action, or with --max, Pulse moves them in batches of 10:
    receive, send to the source, then delete — killed at any point, nothing is lost; a
    message sent but not deleted shows again after --hold seconds and a second redrive sends
    it again, a duplicate its receiver's idempotency absorbs. Redriving twice applies
    nothing twice. stream-failures goes to stream-replays: the stream processor re-applies
    each record through its own effects; one failing again comes back with the new error.
    """
    with _one_line_errors():
        queue = _queue(queue_name)
        sqs = _sqs(hold_seconds)
        done = sqs.redrive(queue, max_messages=max_messages, on_progress=_progress_printer(queue))
        visible, in_flight = sqs.counts(queue)
    how = "by SQS" if done.method == "move-task" else "ten at a time"
    click.echo(f"moved {done.moved} message(s) from {queue.label} to {queue.source_label} ({how})")
    if in_flight:
        click.echo(
            f"{in_flight} message(s) of {queue.label} are in flight (a redrive or read that "
            f"was interrupted holds them): they show again within {hold_seconds} s; "
            "redrive again then",
            err=True,
        )
    elif visible and max_messages is None:
        click.echo(f"{visible} message(s) arrived in {queue.label} meanwhile", err=True)


@dlq.command(name="purge", short_help="Delete every message (needs --yes).")
@click.argument("queue_name", metavar="QUEUE")
@click.option("--yes", is_flag=True, help="Really delete every message of QUEUE.")
def dlq_purge(queue_name: str, *, yes: bool) -> None:
    """Delete every message of QUEUE, for good (SQS allows one purge a minute per queue)."""
    with _one_line_errors():
        queue = _queue(queue_name)
        sqs = _sqs()
        visible, in_flight = sqs.counts(queue)
        count = visible + in_flight
        if not yes:
            raise click.ClickException(
                f"this would delete about {count} message(s) from {queue.label}; add --yes to purge"
            )
        sqs.purge(queue)
    click.echo(f"purged {queue.label}: about {count} message(s) deleted")
