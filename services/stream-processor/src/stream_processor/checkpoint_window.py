"""Which of a shard's batches in flight may be checkpointed, and when. Pure: no I/O, no clock.

The shard reader pipelines a shard's batches: each is *read*, *published live* (Redis, the
hot path), then *propagated* (SNS and audit rows) in the background while the next batches
are read. A checkpoint promises that every record up to it has all its effects, so it may
only move over a leading run of propagated batches, oldest first::

    oldest ───────────────────────────────────────────────▶ newest
    [propagated] [propagated] [published live] [propagated] [read]
    └─ one write: the second batch's checkpoint ─┘

- :meth:`CheckpointWindow.begin_write` names the checkpoint that may be written now — the
  last batch of that leading run — and the batches it covers. One write at a time: while a
  write runs nothing more is due, and batches that propagate meanwhile are covered by the
  next write, so while a shard catches up checkpoint writes never queue one behind another.
- :meth:`~CheckpointWindow.written` takes the covered batches out of the window;
  :meth:`~CheckpointWindow.write_failed` fails them.
- :meth:`~CheckpointWindow.must_wait`: the reader reads on only while at most ``keep``
  batches are in flight (``keep = 0``: until every batch is checkpointed).
- :meth:`~CheckpointWindow.failure`: the oldest batch in flight, once it failed. A failure
  of a later batch waits until the batches before it are checkpointed or fail themselves.
  After a failure nothing may be checkpointed past the last checkpoint written:
  :meth:`~CheckpointWindow.drop` gives every batch in flight up, to be read again from it.

A batch's lifecycle; the window holds it while it is read, live, propagated or failed::

    read ──▶ live ──▶ propagated ──▶ checkpointed
     │        │           │
     └────────┴───────────┴──▶ failed        (any of the four) ──▶ dropped
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["BatchState", "CheckpointWindow", "CheckpointWrite", "InFlightBatch"]

T = TypeVar("T")


class BatchState(enum.Enum):
    READ = "read"  # read; its live publish has not finished
    LIVE = "live"  # published live; its SNS and audit writes are running
    PROPAGATED = "propagated"  # every effect done; waiting for its checkpoint
    FAILED = "failed"  # an effect or its checkpoint failed
    CHECKPOINTED = "checkpointed"  # covered by a written checkpoint; out of the window
    DROPPED = "dropped"  # given up after a failure; out of the window


_IN_WINDOW = frozenset({BatchState.READ, BatchState.LIVE, BatchState.PROPAGATED, BatchState.FAILED})


@dataclass(eq=False)
class InFlightBatch(Generic[T]):
    """One batch in the window: what the reader keeps with it, its checkpoint and state."""

    item: T
    checkpoint: str  # the batch's last sequence number
    state: BatchState = BatchState.READ
    error: Exception | None = None  # why it failed


@dataclass(frozen=True, eq=False)
class CheckpointWrite(Generic[T]):
    """A checkpoint write the window allowed: ``checkpoint`` covers ``covers``, oldest first."""

    checkpoint: str
    covers: tuple[InFlightBatch[T], ...]


class CheckpointWindow(Generic[T]):
    """A shard's batches in flight, in stream order (see the module docstring)."""

    def __init__(self) -> None:
        self._batches: deque[InFlightBatch[T]] = deque()
        self._writing: CheckpointWrite[T] | None = None  # the write in progress

    def __len__(self) -> int:
        return len(self._batches)

    def __iter__(self) -> Iterator[InFlightBatch[T]]:
        return iter(self._batches)

    def read(self, item: T, checkpoint: str) -> InFlightBatch[T]:
        """A batch read after every batch in the window; ``checkpoint`` is its last record's."""
        batch = InFlightBatch(item, checkpoint)
        self._batches.append(batch)
        return batch

    def published(self, batch: InFlightBatch[T]) -> None:
        """``batch`` was published live; its SNS and audit writes start."""
        self._move(batch, BatchState.READ, BatchState.LIVE)

    def propagated(self, batch: InFlightBatch[T]) -> None:
        """Every effect of ``batch`` succeeded; it waits for a checkpoint to cover it."""
        self._move(batch, BatchState.LIVE, BatchState.PROPAGATED)

    def failed(self, batch: InFlightBatch[T], error: Exception) -> None:
        """An effect of ``batch`` failed (news of a batch already out of the window is moot)."""
        if batch.state in _IN_WINDOW and batch.state is not BatchState.FAILED:
            batch.state = BatchState.FAILED
            batch.error = error

    def begin_write(self) -> CheckpointWrite[T] | None:
        """The checkpoint to write now, claimed by the caller; None while a write runs or the
        oldest batch is not propagated. Report the outcome to :meth:`written` or
        :meth:`write_failed`."""
        if self._writing is not None:
            return None
        covers: list[InFlightBatch[T]] = []
        for batch in self._batches:
            if batch.state is not BatchState.PROPAGATED:
                break
            covers.append(batch)
        if not covers:
            return None
        self._writing = CheckpointWrite(covers[-1].checkpoint, tuple(covers))
        return self._writing

    def written(self, write: CheckpointWrite[T]) -> tuple[InFlightBatch[T], ...]:
        """``write`` is stored: the batches it covers leave the window (and are returned)."""
        if write is not self._writing:
            return ()  # the window was dropped while it ran
        self._writing = None
        for batch in write.covers:
            self._batches.popleft()
            batch.state = BatchState.CHECKPOINTED
        return write.covers

    def write_failed(self, write: CheckpointWrite[T], error: Exception) -> None:
        """``write`` failed: the batches it covers failed with ``error``."""
        if write is not self._writing:
            return
        self._writing = None
        for batch in write.covers:
            self.failed(batch, error)

    def failure(self) -> InFlightBatch[T] | None:
        """The oldest batch in flight if it failed (then the window must be dropped)."""
        if self._batches and self._batches[0].state is BatchState.FAILED:
            return self._batches[0]
        return None

    def must_wait(self, keep: int) -> bool:
        """True while more than ``keep`` batches are in flight and the oldest has not failed:
        the reader waits (for a checkpoint or a failure) before it reads on."""
        return len(self._batches) > keep and self.failure() is None

    def drop(self) -> list[InFlightBatch[T]]:
        """Give up every batch in flight, oldest first; a write still running is forgotten."""
        dropped = list(self._batches)
        self._batches.clear()
        self._writing = None
        for batch in dropped:
            batch.state = BatchState.DROPPED
        return dropped

    def _move(self, batch: InFlightBatch[T], before: BatchState, after: BatchState) -> None:
        if batch.state is before:
            batch.state = after
        elif batch.state in _IN_WINDOW:
            raise ValueError(f"a {batch.state.value} batch cannot become {after.value}")
        # else: out of the window (dropped) — news of it is moot
