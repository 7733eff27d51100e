"""End to end: the system started the way `make run` starts it, driven as a user drives it.

`pulse dev` runs as a real process (emulator, topology, five services); the test talks to it
only over HTTP and WebSocket sockets, and through the operator's console in headless Chromium.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
import pytest
from playwright.async_api import Locator, expect
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect

from pulse.auth import issue_token
from pulse.settings import DEV_JWT_SECRET
from pulse_dev.browser import artefacts, chromium
from pulse_dev.devstack import DevStackProcess

pytestmark = pytest.mark.timeout(240)


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.3):
        return True
    return False


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStackProcess]:
    workdir = tmp_path_factory.mktemp("e2e")
    with DevStackProcess.running(workdir, redis_url=redis_url, prefix=f"e2e{os.getpid()}-") as proc:
        yield proc


async def _open(stack: DevStackProcess, sub: str, roles: list[str]) -> ClientConnection:
    token = issue_token(DEV_JWT_SECRET, sub=sub, roles=roles)
    return await connect(f"{stack.gateway_url}?token={token}")


async def _subscribe(ws: ClientConnection, channel: str) -> dict[str, Any]:
    await ws.send(orjson.dumps({"op": "subscribe", "channel": channel}).decode())
    while True:
        frame = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        if frame.get("op") in {"subscribed", "error"} and frame.get("channel", channel) == channel:
            return dict(frame)


async def _events_for(
    ws: ClientConnection, payment_id: str, want: set[str]
) -> list[dict[str, Any]]:
    """Collect event frames about ``payment_id`` until every type in ``want`` arrived."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(45):
        while not want <= {f["event"]["type"] for f in got}:
            frame = orjson.loads(await ws.recv())
            if frame.get("op") == "event" and (
                frame["event"].get("data", {}).get("payment_id") == payment_id
            ):
                got.append(frame)
    return got


async def test_payment_travels_from_api_to_both_websockets(stack: DevStackProcess) -> None:
    owner = await _open(stack, "A", [])
    ops = await _open(stack, "ops-1", ["ops"])
    intruder = await _open(stack, "B", [])
    try:
        assert (await _subscribe(owner, "account:A"))["op"] == "subscribed"
        assert (await _subscribe(ops, "payments"))["op"] == "subscribed"
        refused = await _subscribe(intruder, "account:A")
        assert refused["op"] == "error"
        assert refused["code"] == "forbidden"

        body = {"account_id": "A", "amount": "12.50", "currency": "EUR", "merchant_id": "m-1"}
        # The account holder's own token: ingest lets an account act on its payments only.
        bearer = {"Authorization": f"Bearer {issue_token(DEV_JWT_SECRET, sub='A')}"}
        async with aiohttp.ClientSession(headers=bearer) as http:
            async with http.post(f"{stack.ingest_url}/v1/payments", json=body) as resp:
                assert resp.status == 201
                payment = await resp.json()
            payment_id = payment["payment_id"]
            assert payment["status"] == "PENDING"

            wanted = {"pulse.payment.created", "pulse.payment.updated"}
            owner_frames, ops_frames = await asyncio.gather(
                _events_for(owner, payment_id, wanted | {"pulse.notification"}),
                _events_for(ops, payment_id, wanted),
            )
            for frames, channel in ((owner_frames, "account:A"), (ops_frames, "payments")):
                types = [f["event"]["type"] for f in frames]
                assert types.index("pulse.payment.created") < types.index("pulse.payment.updated")
                assert {f["channel"] for f in frames} == {channel}
                updated = next(f for f in frames if f["event"]["type"] == "pulse.payment.updated")
                assert updated["event"]["data"]["old_status"] == "PENDING"
                assert updated["event"]["data"]["status"] == "APPROVED"
                assert updated["event"]["subject"] == payment_id

            async with http.get(f"{stack.ingest_url}/v1/payments/{payment_id}") as resp:
                assert (await resp.json())["status"] == "APPROVED"
            async with asyncio.timeout(20):
                while True:
                    async with http.get(f"{stack.ingest_url}/v1/payments/{payment_id}/events") as r:
                        audit = await r.json()
                    if len(audit["events"]) >= 2:
                        break
                    await asyncio.sleep(0.2)
            assert [e["type"] for e in audit["events"]][:2] == [
                "pulse.payment.created",
                "pulse.payment.updated",
            ]

        # the intruder saw nothing and is still connected
        await intruder.send('{"op":"ping"}')
        assert orjson.loads(await asyncio.wait_for(intruder.recv(), 5)) == {"op": "pong"}
    finally:
        for ws in (owner, ops, intruder):
            await ws.close()


async def test_an_operators_review_flows_to_the_payments_channel(stack: DevStackProcess) -> None:
    ops = await _open(stack, "ops-1", ["ops"])
    try:
        assert (await _subscribe(ops, "payments"))["op"] == "subscribed"
        # above the review amount (5000 EUR): the fraud worker holds it for an operator
        body = {"account_id": "R", "amount": "6000.00", "currency": "EUR", "merchant_id": "m-1"}
        bearer = {
            "Authorization": f"Bearer {issue_token(DEV_JWT_SECRET, sub='ops-1', roles=['ops'])}"
        }
        async with aiohttp.ClientSession(headers=bearer) as http:
            async with http.post(f"{stack.ingest_url}/v1/payments", json=body) as resp:
                assert resp.status == 201
                payment_id = (await resp.json())["payment_id"]
            held = await _events_for(ops, payment_id, {"pulse.payment.updated"})
            assert held[-1]["event"]["data"]["status"] == "REVIEW"
            assert held[-1]["event"]["data"].get("reviewed_by") is None
            async with http.get(f"{stack.ingest_url}/v1/payments?status=REVIEW") as resp:
                queue = await resp.json()
            assert payment_id in [p["payment_id"] for p in queue["items"]]

            review = {"decision": "APPROVED", "note": "known customer"}
            url = f"{stack.ingest_url}/v1/payments/{payment_id}/review"
            async with http.post(url, json=review) as resp:
                assert resp.status == 200
            frames = await _events_for(ops, payment_id, {"pulse.payment.updated"})
            data = frames[-1]["event"]["data"]
            assert (data["old_status"], data["status"]) == ("REVIEW", "APPROVED")
            assert data["reviewed_by"] == "ops-1"
            assert data["review_note"] == "known customer"
            assert data["reviewed_at"]
            async with http.post(url, json={"decision": "DECLINED"}) as resp:
                assert resp.status == 409
    finally:
        await ops.close()


async def test_the_console_follows_payments_and_approves_a_review_from_the_page(
    stack: DevStackProcess,
) -> None:
    """The operator's console in headless Chromium on the whole pipeline: a payment posted by
    the test appears and changes status; one in REVIEW approved from the page becomes
    APPROVED through the pipeline; the health panels have numbers. Screenshot in
    `.artifacts/console/`."""
    ops = issue_token(DEV_JWT_SECRET, sub="ops-console", roles=["ops"])
    bearer = {"Authorization": f"Bearer {issue_token(DEV_JWT_SECRET, sub='C')}"}
    async with aiohttp.ClientSession(headers=bearer) as http, chromium() as browser:

        async def pay(amount: str) -> str:
            body = {"account_id": "C", "amount": amount, "currency": "EUR", "merchant_id": "m-1"}
            async with http.post(f"{stack.ingest_url}/v1/payments", json=body) as resp:
                assert resp.status == 201, await resp.text()
                return str((await resp.json())["payment_id"])

        before = await pay("12.50")  # from the history when the page opens
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(f"http://127.0.0.1:{stack.gateway_port}/#token={ops}")
        await expect(page.get_by_test_id("connection-state")).to_have_text("live")

        def feed_status(payment_id: str) -> Locator:
            row = page.locator(f'[data-testid="feed-row"][data-payment-id="{payment_id}"]')
            return row.locator(".status")

        await expect(feed_status(before)).to_have_text("APPROVED", timeout=30_000)
        posted = await pay("20.00")
        await expect(feed_status(posted)).to_have_text(re.compile("PENDING|APPROVED"))
        await expect(feed_status(posted)).to_have_text("APPROVED", timeout=30_000)

        # Above EUR's review limit: held for an operator, on the desk with its reason.
        held = await pay("7500.00")
        await expect(feed_status(held)).to_have_text("REVIEW", timeout=30_000)
        row = page.locator(f'[data-testid="review-row"][data-payment-id="{held}"]')
        await expect(row).to_contain_text("The amount is above the review limit for its currency.")
        await row.get_by_test_id("review-note").fill("called the customer")
        await row.get_by_test_id("review-approve").click()
        await expect(row.get_by_test_id("review-status")).to_have_text("APPROVED", timeout=30_000)
        await expect(row).to_contain_text("by ops-console")
        await expect(feed_status(held)).to_have_text("APPROVED")
        async with http.get(
            f"{stack.ingest_url}/v1/payments/{held}",
            headers={"Authorization": f"Bearer {ops}"},
        ) as resp:
            decided = await resp.json()
        assert (decided["status"], decided["reviewed_by"]) == ("APPROVED", "ops-console")
        assert decided["review_note"] == "called the customer"

        # The pipeline reports on itself.
        number = re.compile(r"^\d[\d,.]*$")
        for testid in ("health-stream-lag", "health-queue-depth", "health-dlq-depth"):
            await expect(page.get_by_test_id(testid)).to_have_text(number, timeout=30_000)
        await expect(page.get_by_test_id("health-e2e-p99")).to_have_text(number)
        await page.screenshot(path=str(artefacts("console") / "e2e-1280.png"), full_page=True)
        assert errors == []


async def test_every_service_times_its_garbage_collections(stack: DevStackProcess) -> None:
    """Each service froze what its start-up made and times each collection since (the
    timer is set up with the freeze), so an operator sees a process standing still in one
    (``pulse_gc_pause_seconds``)."""
    ops = stack.ops_port_base
    scrapes = {
        "ingest": f"{stack.ingest_url}/metrics",
        "ws-gateway": f"http://127.0.0.1:{stack.gateway_port}/metrics",
        "stream-processor": f"http://127.0.0.1:{ops}/metrics",
        "fraud-worker": f"http://127.0.0.1:{ops + 1}/metrics",
        "notify-worker": f"http://127.0.0.1:{ops + 2}/metrics",
    }
    timed = {}
    async with aiohttp.ClientSession() as http:
        for service, url in scrapes.items():
            async with http.get(url) as resp:
                samples = [
                    sample
                    for family in text_string_to_metric_families(await resp.text())
                    for sample in family.samples
                ]
            # A series per generation from the start (a service that collects rarely, its
            # young threshold raised, may not have collected yet).
            timed[service] = sorted(
                s.labels["generation"] for s in samples if s.name == "pulse_gc_pause_seconds_count"
            )
    assert all(generations == ["0", "1", "2"] for generations in timed.values()), timed


def test_sigterm_stops_every_process(stack: DevStackProcess) -> None:
    assert stack.stop() == 0
    still_listening = [p for p in stack.ports if _port_open(p)]
    assert still_listening == [], stack.logs()[-3000:]
    assert "stopped" in stack.logs()
