"""settle_collector: what is alive is frozen out of later collections, young threshold raised;
the Freezer: what survives a pass is frozen, garbage among frozen objects swept once the
Python heap doubles; every collection timed."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from pulse.collector import BATCH_YOUNG_THRESHOLD, Freezer, settle_collector


@pytest.fixture
def collector_restored() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("collector_restored")
def test_live_objects_are_frozen_and_garbage_is_not() -> None:
    kept = [[n] for n in range(1000)]
    cycle: list[object] = []
    cycle.append(cycle)  # garbage once the name goes
    del cycle
    thresholds = gc.get_threshold()
    settle_collector()
    assert gc.get_freeze_count() >= len(kept)
    assert gc.collect() == 0  # the cycle was collected before freezing, nothing left over
    assert gc.get_threshold() == thresholds  # no young threshold asked for, none changed


@pytest.mark.usefixtures("collector_restored")
def test_the_young_threshold_is_raised_and_the_older_ones_kept() -> None:
    _young, middle, old = gc.get_threshold()
    settle_collector(BATCH_YOUNG_THRESHOLD)
    assert gc.get_threshold() == (BATCH_YOUNG_THRESHOLD, middle, old)


class _Node:
    """A tracked object that can sit in a reference cycle."""

    def __init__(self) -> None:
        self.other: _Node | None = None


def _cycles(n: int) -> list[_Node]:
    """``n`` pairs of objects referring to each other; garbage once the list goes."""
    firsts = []
    for _ in range(n):
        a, b = _Node(), _Node()
        a.other, b.other = b, a
        firsts.append(a)
    return firsts


def _nodes() -> int:
    """The nodes that exist, frozen or not (unfreezes; collects nothing)."""
    gc.unfreeze()
    return sum(1 for o in gc.get_objects() if type(o) is _Node)


@pytest.mark.usefixtures("collector_restored")
def test_a_pass_frees_new_garbage_and_freezes_what_survives() -> None:
    settle_collector()
    freezer = Freezer(interval=1.0)
    frozen = gc.get_freeze_count()
    kept = _cycles(1000)  # alive: 2,000 nodes
    lost = _cycles(1000)
    del lost  # garbage, in cycles, not frozen yet
    freezer.run_once()
    assert gc.get_freeze_count() >= frozen + 2 * len(kept)  # the survivors are frozen
    assert sum(1 for o in gc.get_objects() if type(o) is _Node) == 0  # none left unfrozen
    assert _nodes() == 2 * len(kept)  # the garbage was freed before freezing


@pytest.mark.usefixtures("collector_restored")
def test_frozen_objects_dropped_are_freed_and_cycles_among_them_once_the_heap_doubles() -> None:
    settle_collector()
    freezer = Freezer(interval=1.0)
    base = gc.get_freeze_count()
    sweeps = _sample("pulse_gc_full_sweeps_total")

    plain = [[n] for n in range(1000)]  # no cycles: freed by their reference counts
    cyclic = _cycles(1000)
    freezer.run_once()
    assert gc.get_freeze_count() >= base + len(plain) + 2 * len(cyclic)
    frozen = gc.get_freeze_count()
    del plain
    assert gc.get_freeze_count() <= frozen - 1000  # freed though frozen
    del cyclic  # garbage among frozen objects: no collection sees it yet
    freezer.run_once()
    assert _sample("pulse_gc_full_sweeps_total") == sweeps
    assert gc.get_freeze_count() >= base + 2 * 1000  # the cycles are still there

    # The heap grown to twice what the last sweep left: everything is swept once, the
    # cycles go.
    filler = [[n] for n in range(sys.getallocatedblocks())]
    freezer.run_once()
    assert _sample("pulse_gc_full_sweeps_total") == sweeps + 1
    assert _nodes() == 0
    del filler


@pytest.mark.usefixtures("collector_restored")
def test_every_collection_is_timed_by_generation() -> None:
    settle_collector()
    settle_collector()  # the timer is installed once
    assert sum(1 for c in gc.callbacks if type(c).__name__ == "_PauseTimer") == 1
    before = _sample("pulse_gc_pause_seconds_count", generation="2")
    gc.collect()
    assert _sample("pulse_gc_pause_seconds_count", generation="2") == before + 1
    assert _sample("pulse_gc_pause_seconds_sum", generation="2") > 0


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0
