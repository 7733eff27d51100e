"""The webhook attempt log against the real emulator: claims, records, the reader's query."""

from __future__ import annotations

import time

import pytest
from click.testing import CliRunner

from pulse.cli import main
from pulse.clients import aws_client
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs, WebhookNames
from pulse.webhook_attempts import (
    FAILED,
    NEXT_DEAD,
    NEXT_RETRY,
    SENDING,
    SUCCEEDED,
    AttemptLog,
    AttemptResult,
    Claim,
    Taken,
)

ENDPOINT = "ep_1"
OK = AttemptResult(200, 12, '{"ok":true}')
DOWN = AttemptResult(503, 40, "maintenance", "HTTP 503")


@pytest.fixture
def attempts(topology: TopologyOutputs, stack_settings: PulseSettings) -> AttemptLog:
    names = WebhookNames.from_prefix(stack_settings.resource_prefix)
    return AttemptLog(aws_client("dynamodb", stack_settings), names.attempts, ttl_seconds=3600)


def _claim(log: AttemptLog, event: str, attempt: int, owner: str, **kwargs: int) -> Claim | Taken:
    return log.claim(
        ENDPOINT, event, attempt, account_id="acct-1", owner=owner, lease_seconds=30, **kwargs
    )


def test_one_claim_per_attempt_and_a_copy_finds_what_it_did(attempts: AttemptLog) -> None:
    first = _claim(attempts, "ev-1", 1, "w1")
    assert isinstance(first, Claim)
    copy = _claim(attempts, "ev-1", 1, "w2")
    assert isinstance(copy, Taken)
    assert copy.record.state == SENDING
    assert copy.record.owner == "w1"
    assert 25 < copy.busy_seconds <= 30  # the rest of w1's lease
    assert isinstance(_claim(attempts, "ev-1", 2, "w2"), Claim)  # another attempt number

    done = attempts.finish(first, DOWN, next_step=NEXT_RETRY, next_at_ms=123_000)
    assert done is not None
    assert (done.state, done.next, done.followed_up) == (FAILED, NEXT_RETRY, False)
    later = _claim(attempts, "ev-1", 1, "w3")
    assert isinstance(later, Taken)
    assert (later.record.state, later.record.status_code, later.record.error) == (
        FAILED,
        503,
        "HTTP 503",
    )
    assert (later.record.next_at_ms, later.record.followed_up, later.busy_seconds) == (
        123_000,
        False,
        0.0,
    )
    attempts.followed_up(later.record)
    stored = attempts.get(ENDPOINT, "ev-1", 1)
    assert stored is not None
    assert stored.followed_up


def test_a_dead_workers_claim_is_taken_over_and_the_slow_one_cannot_finish(
    attempts: AttemptLog,
) -> None:
    now = int(time.time() * 1000)
    stale = _claim(attempts, "ev-2", 1, "dead", now_ms=now - 60_000)
    assert isinstance(stale, Claim)
    fresh = _claim(attempts, "ev-2", 1, "alive", now_ms=now)
    assert isinstance(fresh, Claim)  # the lease (30 s) ran out a while ago
    assert attempts.finish(stale, OK) is None  # no longer the dead one's
    assert not attempts.renew(stale, 30)
    assert attempts.renew(fresh, 30)
    finished = attempts.finish(fresh, OK)
    assert finished is not None
    assert (finished.state, finished.followed_up, finished.next) == (SUCCEEDED, True, None)


def test_a_released_claim_is_free_at_once(attempts: AttemptLog) -> None:
    claim = _claim(attempts, "ev-3", 1, "w1")
    assert isinstance(claim, Claim)
    attempts.release(claim)
    assert attempts.get(ENDPOINT, "ev-3", 1) is None
    assert isinstance(_claim(attempts, "ev-3", 1, "w2"), Claim)


def _record(log: AttemptLog, event: str, attempt: int, result: AttemptResult, at_ms: int) -> None:
    claim = _claim(log, event, attempt, f"w-{event}-{attempt}", now_ms=at_ms)
    assert isinstance(claim, Claim)
    step = None if result.error is None else (NEXT_DEAD if attempt == 3 else NEXT_RETRY)
    assert log.finish(claim, result, next_step=step) is not None


def _history(log: AttemptLog) -> int:
    """ev-a fails three times; ev-b fails once, then gets through; ev-c at once. Returns
    the time of the first attempt (ms)."""
    start = int(time.time() * 1000) - 100_000
    for i, (event, attempt, result) in enumerate(
        [
            ("ev-a", 1, DOWN),
            ("ev-b", 1, DOWN),
            ("ev-a", 2, DOWN),
            ("ev-b", 2, OK),
            ("ev-c", 1, OK),
            ("ev-a", 3, DOWN),
        ]
    ):
        _record(log, event, attempt, result, start + i * 1000)
    return start


def test_the_log_by_endpoint_event_and_outcome_newest_first_a_page_at_a_time(
    attempts: AttemptLog,
) -> None:
    _history(attempts)
    every = attempts.query(ENDPOINT)
    assert [(r.event_id, r.attempt) for r in every.items] == [
        ("ev-a", 3),
        ("ev-c", 1),
        ("ev-b", 2),
        ("ev-a", 2),
        ("ev-b", 1),
        ("ev-a", 1),
    ]
    assert every.next_cursor is None
    assert [r.attempt for r in attempts.query(ENDPOINT, event_id="ev-a").items] == [3, 2, 1]
    assert [
        (r.event_id, r.attempt) for r in attempts.query(ENDPOINT, status="succeeded").items
    ] == [
        ("ev-c", 1),
        ("ev-b", 2),
    ]
    failed_a = attempts.query(ENDPOINT, event_id="ev-a", status="failed").items
    assert [(r.attempt, r.next) for r in failed_a] == [
        (3, NEXT_DEAD),
        (2, NEXT_RETRY),
        (1, NEXT_RETRY),
    ]
    assert failed_a[0].to_json()["status_code"] == 503
    assert attempts.query("ep_other").items == []

    seen = []
    cursor = None
    while True:
        page = attempts.query(ENDPOINT, status="failed", limit=2, cursor=cursor)
        assert len(page.items) <= 2
        seen += [(r.event_id, r.attempt) for r in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [("ev-a", 3), ("ev-a", 2), ("ev-b", 1), ("ev-a", 1)]
    with pytest.raises(ValueError, match="cursor"):
        attempts.query(ENDPOINT, cursor="not-ours")
    with pytest.raises(ValueError, match="status"):
        attempts.query(ENDPOINT, status="sending")


def test_pulse_webhooks_attempts_prints_the_log(
    attempts: AttemptLog, stack_env: dict[str, str]
) -> None:
    _history(attempts)
    runner = CliRunner()
    shown = runner.invoke(
        main, ["webhooks", "attempts", ENDPOINT, "--event", "ev-a"], env=stack_env
    )
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert [line.split()[1:6] for line in lines] == [
        ["ev-a", "#3", "failed", "503", "40ms"],
        ["ev-a", "#2", "failed", "503", "40ms"],
        ["ev-a", "#1", "failed", "503", "40ms"],
    ]
    assert "dead-lettered" in lines[0]
    assert "next attempt at" in lines[1]
    assert "response: 'maintenance'" in lines[0]
    ok = runner.invoke(
        main,
        ["webhooks", "attempts", ENDPOINT, "--status", "succeeded", "--limit", "1"],
        env=stack_env,
    )
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.split()[1:4] == ["ev-c", "#1", "succeeded"]
    assert "more: --cursor" in ok.stderr
    refused = runner.invoke(
        main, ["webhooks", "attempts", ENDPOINT, "--status", "sending"], env=stack_env
    )
    assert refused.exit_code == 2
