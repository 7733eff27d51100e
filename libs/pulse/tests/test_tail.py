"""``pulse tail`` against a real gateway process: readable lines, raw frames, refusals with the
server's reason, and a resumed tail after the gateway went away."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from pulse.auth import issue_token
from pulse.channels import ChannelPublisher
from pulse.events import PAYMENT_CREATED, PAYMENT_UPDATED, CloudEvent, new_event
from pulse.tail import event_line, tail_channels
from pulse_dev.emulators import free_port
from pulse_dev.testing import until

if TYPE_CHECKING:
    from pathlib import Path

    import redis.asyncio as aioredis

    from pulse_dev.testing import GatewayFactory, RunningGateway

pytestmark = pytest.mark.timeout(120)


def _payment_event(n: int, *, status: str = "PENDING", old: str | None = None) -> CloudEvent:
    data: dict[str, Any] = {
        "payment_id": f"pay-{n}",
        "account_id": "acct-007",
        "amount": "12.50",
        "currency": "EUR",
        "status": status,
    }
    if old:
        data["old_status"] = old
    kind = PAYMENT_UPDATED if old else PAYMENT_CREATED
    return new_event(type=kind, source="/tests/tail", subject=f"pay-{n}", data=data)


def test_an_event_is_one_line_in_local_time() -> None:
    event = _payment_event(1, status="APPROVED", old="PENDING")
    event = event.model_copy(update={"time": "2025-03-01T12:00:00.250Z"})
    frame = {
        "op": "event",
        "channel": "payments",
        "offset": "1-0",
        "event": orjson.loads(event.to_json()),
    }
    local = datetime(2025, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC).astimezone()
    assert event_line(frame) == (
        f"{local:%H:%M:%S}.250 {local:%Z}  pulse.payment.updated  pay-1  acct-007  "
        "12.50 EUR  APPROVED (was PENDING)"
    )
    decision = {
        "op": "event",
        "channel": "alerts",
        "event": {
            "type": "pulse.fraud.decision",
            "time": "2025-03-01T12:00:00.250Z",
            "data": {
                "payment_id": "pay-2",
                "account_id": "acct-1",
                "decision": "REVIEW",
                "score": 45,
                "reasons": ["country_mismatch"],
                "amount": "9.00",
                "currency": "GBP",
            },
        },
    }
    assert event_line(decision, with_channel=True).endswith(
        "alerts  pulse.fraud.decision  pay-2  acct-1  9.00 GBP  REVIEW score 45 (country_mismatch)"
    )


async def _tail(
    gateway: RunningGateway, channels: list[str], token: str, **kwargs: Any
) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.wait_for(
        tail_channels(gateway.ws, channels, token, out=out, err=err, **kwargs), 30
    )
    return code, out.getvalue(), err.getvalue()


async def test_refusals_end_the_tail_with_the_gateways_reason(gateways: GatewayFactory) -> None:
    gateway = gateways.start()
    ops = gateway.token("ops-1", ["ops"])

    code, _, err = await _tail(gateway, ["payments"], issue_token("another-secret" * 3, sub="x"))
    assert code == 1
    assert err == (
        "pulse tail: the gateway refused the connection: "
        "HTTP 401 Unauthorized: the token is not valid\n"
    )
    expired = issue_token(gateway.secret, sub="ops-1", roles=["ops"], ttl_seconds=-60)
    code, _, err = await _tail(gateway, ["payments"], expired)
    assert (code, err.strip().rsplit(": ", 1)[-1]) == (1, "the token has expired")

    code, _, err = await _tail(gateway, ["payments"], gateway.token("acct-1"))
    assert (code, err) == (1, "pulse tail: payments: not allowed to subscribe (forbidden)\n")
    code, _, err = await _tail(gateway, ["stats", "nope"], ops)
    assert (code, err) == (1, "pulse tail: nope: no such channel (unknown_channel)\n")


async def test_nothing_listening_is_cannot_connect() -> None:
    url = f"ws://127.0.0.1:{free_port()}/ws"
    err = io.StringIO()
    code = await tail_channels(url, ["payments"], "t", out=io.StringIO(), err=err)
    assert code == 1
    assert err.getvalue().startswith(f"pulse tail: cannot connect to {url}: ")


async def test_json_prints_the_gateways_frames(
    gateways: GatewayFactory, async_redis: aioredis.Redis
) -> None:
    gateway = gateways.start()
    channel = f"account:{uuid.uuid4().hex[:8]}"
    event = _payment_event(1)
    await ChannelPublisher(async_redis, gateway.prefix).append(event, [channel])
    out = io.StringIO()
    task = asyncio.create_task(
        tail_channels(
            gateway.ws, [channel], gateway.token("ops", ["ops"]), since="0-0", raw=True, out=out
        )
    )
    try:
        await asyncio.wait_for(_lines(out, 2), 20)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    subscribed, replayed = (orjson.loads(line) for line in out.getvalue().splitlines()[:2])
    assert subscribed["op"] == "subscribed"
    assert replayed["op"] == "event"
    assert replayed["event"]["id"] == event.id


async def _lines(out: io.StringIO, count: int) -> None:
    while len(out.getvalue().splitlines()) < count:
        await asyncio.sleep(0.05)


def _ctrl_c_as_in_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def test_the_tail_resumes_each_channel_from_its_own_offset_after_the_gateway_comes_back(
    gateways: GatewayFactory, async_redis: aioredis.Redis, tmp_path: Path
) -> None:
    gateway = gateways.start()
    first, second = (f"account:{uuid.uuid4().hex[:8]}" for _ in range(2))
    publisher = ChannelPublisher(async_redis, gateway.prefix)
    out, err = tmp_path / "tail.out", tmp_path / "tail.err"
    await publisher.append(_payment_event(0), [first])
    await publisher.append(_payment_event(10), [second])
    argv = [sys.executable, "-m", "pulse.cli", "tail", "--url", gateway.ws]
    argv += ["--channel", first, "--channel", second]
    argv += ["--token", gateway.token("ops-1", ["ops"], ttl=600), "--since", "0-0"]
    with out.open("wb") as stdout, err.open("wb") as stderr:
        tail = subprocess.Popen(
            argv,
            stdout=stdout,
            stderr=stderr,
            env={**os.environ, "TZ": "Asia/Tokyo"},
            # Ctrl-C as in a terminal, even when the tests run as a background job (whose
            # children inherit SIGINT ignored, as the shell sets it for them)
            preexec_fn=_ctrl_c_as_in_a_terminal,  # noqa: PLW1509 - one child, no fork race
        )

    def printed() -> list[str]:
        return out.read_text().splitlines()

    try:
        await asyncio.to_thread(until, lambda: len(printed()) == 2, 20)  # replayed
        gateway.kill()
        # Appended while no gateway runs, interleaved: only in each channel's history.
        for n, channel in ((11, second), (1, first), (2, first), (12, second)):
            await publisher.append(_payment_event(n), [channel])
        await asyncio.to_thread(until, lambda: "reconnecting" in err.read_text(), 20)
        gateway.start()
        await asyncio.to_thread(until, lambda: len(printed()) == 6, 30)
        await publisher.append(_payment_event(3), [first])
        await asyncio.to_thread(until, lambda: len(printed()) == 7, 20)
    finally:
        tail.send_signal(signal.SIGINT)
        try:
            code = tail.wait(20)
        except subprocess.TimeoutExpired:
            tail.kill()
            tail.wait()
            pytest.fail(f"pulse tail still ran 20 s after Ctrl-C:\n{err.read_text()}")
    # Every event of each channel once, in order, each in the viewer's zone (named) with
    # its channel and payment.
    lines = [line.split()[1:] for line in printed()]
    for channel, numbers in ((first, [0, 1, 2, 3]), (second, [10, 11, 12])):
        assert [words for words in lines if words[1] == channel] == [
            ["JST", channel, PAYMENT_CREATED, f"pay-{n}", "acct-007", "12.50", "EUR", "PENDING"]
            for n in numbers
        ]
    assert "history no longer reaches" not in err.read_text()
    assert "reconnected" in err.read_text()
    assert "Traceback" not in err.read_text()
    assert code == 0
