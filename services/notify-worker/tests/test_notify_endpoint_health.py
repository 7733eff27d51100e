"""What EndpointHealth writes per attempt, with the webhooks table and the endpoint cache
replaced by recorders (the writes themselves run against the emulator in
libs/pulse/tests/test_webhook_endpoint_health.py): a healthy endpoint costs no write per
delivery; a failure is recorded once and cleared by the next success."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from notify_worker.endpoint_health import EndpointHealth
from notify_worker.webhooks import Delivery
from pulse.webhook_endpoints import WebhookEndpoint

ENDPOINT = WebhookEndpoint(
    account_id="acct-e",
    endpoint_id="ep_" + "e" * 32,
    url="https://hooks.example.com/e",
    secret_parameter="/p",
    created_at="2026-12-04T10:00:00.000Z",
)
DELIVERY = Delivery(ENDPOINT.endpoint_id, "acct-e", ENDPOINT.url, "/p", {"id": "ev-1"})


@dataclass
class Recorder:
    """The table's writes as calls, and the endpoint as the worker's cache shows it."""

    shown: WebhookEndpoint = ENDPOINT
    calls: list[str] = field(default_factory=list)

    async def endpoint(self, _account_id: str, _endpoint_id: str) -> WebhookEndpoint | None:
        return self.shown

    def mark_failing(self, _account: str, _endpoint: str, *, now: datetime) -> str:
        self.calls.append("mark_failing")
        return now.isoformat()

    def clear_failing(self, _account: str, _endpoint: str) -> bool:
        self.calls.append("clear_failing")
        return True


def _health(recorder: Recorder) -> EndpointHealth:
    unused: Any = None  # no disabling here: the channel and the fan-out are never called
    table: Any = recorder  # the table and the endpoint cache both
    return EndpointHealth(
        table, table, channel=unused, fanout=unused, disable_after_seconds=432_000
    )


async def test_a_healthy_endpoint_costs_one_write_a_minute_not_one_per_delivery() -> None:
    recorder = Recorder()
    health = _health(recorder)
    for _ in range(50):
        await health.attempted(DELIVERY, failed=False)
    # the first success clears what another replica may have left; then nothing
    assert recorder.calls == ["clear_failing"]


async def test_a_failure_is_recorded_once_and_the_next_success_clears_it() -> None:
    recorder = Recorder()
    health = _health(recorder)
    await health.attempted(DELIVERY, failed=False)
    await health.attempted(DELIVERY, failed=True)
    assert recorder.calls == ["clear_failing", "mark_failing"]
    recorder.shown = replace(ENDPOINT, failing_since="2026-12-04T10:00:00.000Z")
    await health.attempted(DELIVERY, failed=True)  # the cache shows it: no second write
    await health.attempted(DELIVERY, failed=False)
    recorder.shown = ENDPOINT
    await health.attempted(DELIVERY, failed=False)
    assert recorder.calls == ["clear_failing", "mark_failing", "clear_failing"]
