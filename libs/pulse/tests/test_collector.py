"""settle_collector: what is alive is frozen out of later collections, young threshold raised."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from pulse.collector import BATCH_YOUNG_THRESHOLD, settle_collector


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
