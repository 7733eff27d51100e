"""The kopf wiring: which handlers exist for EventPipeline, and how the process starts."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

import kopf
from kopf._core.intents.handlers import TimerHandler

from pulse_operator.handlers import configure, kopf_scope
from pulse_operator.settings import OperatorSettings

if TYPE_CHECKING:
    from collections.abc import Iterator

import pytest


@pytest.fixture
def registry() -> Iterator[kopf.OperatorRegistry]:
    previous = kopf.get_default_registry()
    fresh = kopf.OperatorRegistry()
    kopf.set_default_registry(fresh)
    yield fresh
    kopf.set_default_registry(previous)


class NoConfigMaps:
    async def apply(self, body: dict[str, object]) -> None:
        raise AssertionError(body)


def test_handlers_cover_create_update_resume_delete_and_two_timers(
    registry: kopf.OperatorRegistry,
) -> None:
    configure(
        OperatorSettings(status_interval_seconds=7, repair_interval_seconds=60), NoConfigMaps()
    )
    changing = registry._changing.get_all_handlers()  # kopf has no public listing
    # kopf's resume handlers have no reason: they run for objects found at start-up (initial)
    reasons = {
        (h.id, h.reason.value if h.reason else "resume" if h.initial else None) for h in changing
    }
    assert reasons == {
        ("reconcile", "create"),
        ("reconcile", "update"),
        ("reconcile", "resume"),
        ("finalize", "delete"),
    }
    assert all(h.selector is not None and h.selector.group == "pulse.dev" for h in changing)
    # the delete handler is what makes kopf put its finalizer on every EventPipeline
    assert next(h for h in changing if h.id == "finalize").requires_finalizer
    timers = {}
    for h in registry._spawning.get_all_handlers():
        assert isinstance(h, TimerHandler)  # a timer, not a daemon
        timers[h.id] = h.interval
    assert timers == {"status": 7, "repair": 60}


def test_one_namespace_or_every_namespace() -> None:
    assert kopf_scope(OperatorSettings(watch_namespace="pulse")) == {
        "clusterwide": False,
        "namespaces": ["pulse"],
    }
    assert kopf_scope(OperatorSettings(watch_namespace="")) == {
        "clusterwide": True,
        "namespaces": [],
    }


def test_a_bad_setting_exits_2_naming_it() -> None:
    env = {**os.environ, "PULSE_STATUS_INTERVAL_SECONDS": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "pulse_operator"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "status_interval_seconds" in proc.stderr.lower()
