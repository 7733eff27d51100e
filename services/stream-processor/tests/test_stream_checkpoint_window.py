"""The checkpoint window: which batches in flight may be checkpointed, in order, and when the
reader waits. Pure, so every case is a table row."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from stream_processor.checkpoint_window import (
    BatchState,
    CheckpointWindow,
    CheckpointWrite,
    InFlightBatch,
)

READ, LIVE, PROPAGATED, FAILED = "read", "live", "propagated", "failed"


def _window(states: list[str]) -> tuple[CheckpointWindow[int], list[InFlightBatch[int]]]:
    """A window holding one batch per state, oldest first; batch i's checkpoint is i + 1."""
    window: CheckpointWindow[int] = CheckpointWindow()
    batches = []
    for index, state in enumerate(states):
        batch = window.read(index, str(index + 1))
        if state in (LIVE, PROPAGATED):
            window.published(batch)
        if state == PROPAGATED:
            window.propagated(batch)
        if state == FAILED:
            window.failed(batch, RuntimeError(f"batch {index}"))
        batches.append(batch)
    return window, batches


@pytest.mark.parametrize(
    ("states", "checkpoint", "covers"),
    [
        ([], None, []),
        ([READ], None, []),
        ([LIVE], None, []),
        ([PROPAGATED], "1", [0]),
        ([PROPAGATED, PROPAGATED, PROPAGATED], "3", [0, 1, 2]),  # one write covers them all
        ([PROPAGATED, PROPAGATED, LIVE, PROPAGATED], "2", [0, 1]),  # never past a live one
        ([LIVE, PROPAGATED, PROPAGATED], None, []),  # the oldest holds everything back
        ([READ, PROPAGATED], None, []),
        ([PROPAGATED, READ], "1", [0]),
        ([PROPAGATED, FAILED, PROPAGATED], "1", [0]),  # up to the failure, not past it
        ([FAILED, PROPAGATED], None, []),
    ],
)
def test_the_due_checkpoint_is_the_last_of_the_leading_propagated_run(
    states: list[str], checkpoint: str | None, covers: list[int]
) -> None:
    window, _batches = _window(states)
    write = window.begin_write()
    if checkpoint is None:
        assert write is None
    else:
        assert write is not None
        assert write.checkpoint == checkpoint
        assert [batch.item for batch in write.covers] == covers


@pytest.mark.parametrize(
    ("states", "keep", "waits"),
    [
        ([], 0, False),
        ([LIVE], 0, True),  # keep 0: until every batch is checkpointed
        ([PROPAGATED], 0, True),  # propagated is not checkpointed yet
        ([LIVE], 1, False),
        ([LIVE, LIVE, LIVE, LIVE], 3, True),  # max_batches_in_flight = 4: the fourth waits
        ([LIVE, LIVE, LIVE], 3, False),
        ([FAILED, LIVE, LIVE, LIVE], 3, False),  # the oldest failed: take the failure instead
        ([LIVE, FAILED, LIVE, LIVE], 3, True),  # a later failure waits for the batch before
        ([FAILED], 0, False),
    ],
)
def test_the_reader_waits_while_more_than_keep_batches_are_in_flight(
    states: list[str], keep: int, waits: bool
) -> None:
    window, _batches = _window(states)
    assert window.must_wait(keep) is waits


@pytest.mark.parametrize(
    ("states", "failed"),
    [
        ([], None),
        ([LIVE, PROPAGATED], None),
        ([FAILED, LIVE], 0),
        ([LIVE, FAILED], None),  # not yet: the batch before it may still succeed
        ([PROPAGATED, FAILED], None),
        ([FAILED, FAILED], 0),  # the oldest failure is the one reported
    ],
)
def test_a_failure_counts_once_every_batch_before_it_is_done(
    states: list[str], failed: int | None
) -> None:
    window, _batches = _window(states)
    failure = window.failure()
    assert (failure.item if failure is not None else None) == failed


@dataclass
class Run:
    """Replays steps on a window of batches named by letters, checkpoint = the letter."""

    window: CheckpointWindow[str] = field(default_factory=CheckpointWindow)
    batches: dict[str, InFlightBatch[str]] = field(default_factory=dict)
    write: CheckpointWrite[str] | None = None
    written: list[tuple[str, str]] = field(default_factory=list)  # (checkpoint, covered)

    def step(self, step: str) -> None:
        verb, _, name = step.partition(" ")
        batch = self.batches.get(name)
        if verb == "read":
            self.batches[name] = self.window.read(name, name)
        elif verb == "publish":
            assert batch is not None
            self.window.published(batch)
        elif verb == "propagate":
            assert batch is not None
            self.window.propagated(batch)
        elif verb == "fail":
            assert batch is not None
            self.window.failed(batch, RuntimeError(name))
        else:
            self._write_step(verb)

    def _write_step(self, verb: str) -> None:
        if verb == "begin":
            self.write = self.window.begin_write()
        elif verb == "written":
            assert self.write is not None
            covered = self.window.written(self.write)
            self.written.append((self.write.checkpoint, "".join(b.item for b in covered)))
        elif verb == "write_failed":
            assert self.write is not None
            self.window.write_failed(self.write, RuntimeError("refused"))
        elif verb == "drop":
            self.window.drop()
        else:
            raise AssertionError(f"unknown step {verb}")

    def states(self) -> str:
        return " ".join(f"{batch.item}:{batch.state.value}" for batch in self.window)


@pytest.mark.parametrize(
    ("steps", "written", "left"),
    [
        pytest.param(
            "read a, publish a, propagate a, begin, written",
            [("a", "a")],
            "",
            id="one batch: read, live, propagated, checkpointed",
        ),
        pytest.param(
            "read a, read b, publish a, publish b, propagate b, begin",
            [],
            "a:live b:propagated",
            id="a later batch that propagated first waits for the one before",
        ),
        pytest.param(
            "read a, publish a, read b, publish b, propagate a, begin, "
            "propagate b, written, begin, written",
            [("a", "a"), ("b", "b")],
            "",
            id="a batch that propagates while a write runs gets the next write",
        ),
        pytest.param(
            "read a, publish a, read b, publish b, read c, publish c, propagate a, begin, "
            "propagate b, propagate c, written, begin, written",
            [("a", "a"), ("c", "bc")],
            "",
            id="writes do not queue: the next one covers all that propagated meanwhile",
        ),
        pytest.param(
            "read a, publish a, read b, publish b, propagate a, propagate b, begin, write_failed",
            [],
            "a:failed b:failed",
            id="a refused checkpoint fails every batch it covers",
        ),
        pytest.param(
            "read a, publish a, read b, publish b, fail a, propagate b, begin",
            [],
            "a:failed b:propagated",
            id="nothing is checkpointed past a failed batch",
        ),
        pytest.param(
            "read a, publish a, propagate a, begin, drop, written",
            [("a", "")],
            "",
            id="a write that ran while the window was dropped takes nothing out",
        ),
        pytest.param(
            "read a, publish a, drop, propagate a, fail a, begin",
            [],
            "",
            id="news of a dropped batch is moot",
        ),
        pytest.param(
            "read a, fail a, read b, publish b, propagate b, begin",
            [],
            "a:failed b:propagated",
            id="a batch whose live publish failed holds back the batches after it",
        ),
    ],
)
def test_checkpoints_follow_stream_order(
    steps: str, written: list[tuple[str, str]], left: str
) -> None:
    run = Run()
    for step in steps.split(", "):
        run.step(step)
    assert run.written == written
    assert run.states() == left


@pytest.mark.parametrize(
    ("states", "dropped"),
    [
        ([], []),
        ([PROPAGATED, LIVE, FAILED, READ], [0, 1, 2, 3]),
    ],
)
def test_drop_gives_up_every_batch_in_flight_oldest_first(
    states: list[str], dropped: list[int]
) -> None:
    window, batches = _window(states)
    running = window.begin_write()  # a write in progress when the window is dropped
    assert [batch.item for batch in window.drop()] == dropped
    assert len(window) == 0
    assert all(batch.state is BatchState.DROPPED for batch in batches)
    # The next batch is checkpointed on its own: the write that was running is forgotten.
    batch = window.read(99, "99")
    window.published(batch)
    window.propagated(batch)
    write = window.begin_write()
    assert write is not None
    if running is not None:
        assert window.written(running) == ()
    assert [b.item for b in window.written(write)] == [99]


@pytest.mark.parametrize(
    ("state", "transition"),
    [
        (READ, "propagated"),  # not published live yet
        (PROPAGATED, "published"),
        (PROPAGATED, "propagated"),
        (FAILED, "published"),
        (FAILED, "propagated"),
    ],
)
def test_a_batch_moves_forward_only(state: str, transition: str) -> None:
    window, (batch,) = _window([state])
    with pytest.raises(ValueError, match="cannot become"):
        getattr(window, transition)(batch)


def test_a_failed_batch_keeps_its_first_error() -> None:
    window, (batch,) = _window([LIVE])
    first = RuntimeError("SNS timed out")
    window.failed(batch, first)
    window.failed(batch, RuntimeError("later"))
    assert batch.error is first
    assert window.failure() is batch
