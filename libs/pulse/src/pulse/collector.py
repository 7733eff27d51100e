"""Keeping CPython's cyclic garbage collector off what a process holds for a long time.

A full collection walks every tracked object. Imported modules, classes, clients' service
models (and, in the AWS emulator, every stored item) are never garbage, yet at CPython's
default thresholds each full collection walks them all again: a tenth of a busy process's
CPU, or, with thousands of WebSocket connections, a stall for every client.
:func:`settle_collector` runs once start-up is done.

A process that keeps acquiring long-lived objects after start-up (the WebSocket gateway's
connections) also runs a :class:`Freezer`: it freezes what survives a collection every so
often, so later full collections walk only what is newer. Objects frozen and then dropped
are freed as usual when nothing refers to them; only garbage in reference cycles among
frozen objects waits, until the Python heap has doubled and one full collection of
everything frees it (memory held that way stays below what the heap held before).

Every collection's pause is timed into ``pulse_gc_pause_seconds{generation}``; the heap's
size is ``pulse_python_allocated_blocks``. Nothing here walks the frozen objects to count
them: ``gc.get_freeze_count()`` does, and with 10,000 connections that alone took 37 ms.
"""

from __future__ import annotations

import gc
import sys
import time
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import Counter, Gauge, Histogram

from pulse.service import sleep_unless_stopped

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "BATCH_YOUNG_THRESHOLD",
    "Freezer",
    "settle_collector",
]

# Container objects allocated, net of those freed, between two young collections (CPython's
# default: 700). Work that holds thousands of objects at once (a batch of 100 stream
# records, a BatchWriteItem of 25 rows) crosses 700 several times over; at that default its
# objects were promoted to the older generations and full collections followed.
BATCH_YOUNG_THRESHOLD = 10_000

_GC_PAUSE = Histogram(
    "pulse_gc_pause_seconds",
    "Time the process stood still in one cyclic garbage collection, by generation "
    "(2: a full collection)",
    ["generation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
_ALLOCATED = Gauge(
    "pulse_python_allocated_blocks",
    "Memory blocks the Python allocator has handed out and not had back (objects alive, "
    "frozen or not, and garbage not yet collected)",
)
_ALLOCATED.set_function(sys.getallocatedblocks)
_FULL_SWEEPS = Counter(
    "pulse_gc_full_sweeps_total",
    "Full collections of frozen objects too, once the Python heap had doubled",
)

# At most this factor between the Python heap and what it held after the last sweep of
# everything: garbage in cycles among frozen objects is bounded by what was alive.
HEAP_GROWTH: Final = 2.0


class _PauseTimer:
    """A ``gc.callbacks`` entry timing each collection (the callbacks run with the GIL held,
    while no other collection can start, so one start time suffices)."""

    def __init__(self) -> None:
        self._started = 0.0
        self._by_generation = [_GC_PAUSE.labels(generation=str(g)) for g in range(3)]

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._by_generation[info["generation"]].observe(time.perf_counter() - self._started)


def _time_pauses() -> None:
    """Time every later collection into ``pulse_gc_pause_seconds`` (once per process)."""
    if not any(isinstance(callback, _PauseTimer) for callback in gc.callbacks):
        gc.callbacks.append(_PauseTimer())


def settle_collector(young_threshold: int | None = None) -> None:
    """Collect once, then freeze everything alive out of later collections (nothing that
    is garbage now gets frozen); with ``young_threshold``, also raise the young
    generation's threshold so a unit of work's objects die young. Later collections are
    timed."""
    gc.collect()
    gc.freeze()
    if young_threshold is not None:
        gc.set_threshold(young_threshold, *gc.get_threshold()[1:])
    _time_pauses()


class Freezer:
    """Every ``interval`` seconds, a full collection of what is not frozen yet (what came
    since the last pass: cheap) and then a freeze of what survived it. Once the Python heap
    (``sys.getallocatedblocks()``) has grown to twice what it held after the last sweep of
    everything, it is unfrozen and swept whole once (the one pause that walks every
    object), then frozen again."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._swept_at = sys.getallocatedblocks()

    def run_once(self) -> None:
        gc.collect()
        if sys.getallocatedblocks() >= HEAP_GROWTH * self._swept_at:
            gc.unfreeze()
            gc.collect()
            _FULL_SWEEPS.inc()
            self._swept_at = sys.getallocatedblocks()
        gc.freeze()

    async def run(self, stopping: asyncio.Event) -> None:
        """Pass after pass until ``stopping`` is set."""
        while True:
            await sleep_unless_stopped(stopping, self.interval)
            if stopping.is_set():
                return
            self.run_once()
