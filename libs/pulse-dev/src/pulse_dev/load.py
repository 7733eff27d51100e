"""``pulse load``: send payments to the ingest API at a steady rate and report latency.

Each payment is sent with a bearer credential: a given one for every request (``--token``,
an operator's JWT or an API key), or by default a development JWT per account, signed with
``PULSE_JWT_SECRET`` (:class:`AccountTokens`), so each account spends its own budget as a
merchant's backend would.

Requests are scheduled on a fixed timetable (open-loop), so a slow server shows up as latency,
not as a lower offered rate. A progress bar shows the run; the summary gives status counts and
latency percentiles.
"""

from __future__ import annotations

import asyncio
import math
import random
import statistics
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aiohttp
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from pulse.auth import issue_token
from pulse.events import new_traceparent

__all__ = [
    "AccountTokens",
    "LoadResult",
    "percentile",
    "random_payment",
    "random_payment_item",
    "run_load",
]

_CURRENCIES = ("EUR", "USD", "GBP", "CHF", "JPY")
_COUNTRIES = ("DE", "FR", "GB", "US", "CH", "NL")


def random_payment(rng: random.Random | None = None, accounts: int = 20) -> dict[str, Any]:
    """A plausible payment; a few are large enough to be reviewed or declined."""
    rng = rng or random.Random()  # noqa: S311 - demo data, not security
    cents = rng.choice([rng.randint(100, 20_000)] * 9 + [rng.randint(500_000, 9_000_000)])
    return {
        "account_id": f"acct-{rng.randint(1, accounts):03d}",
        "amount": str(Decimal(cents) / 100),
        "currency": rng.choice(_CURRENCIES),
        "merchant_id": f"m-{rng.randint(1, 50):02d}",
        "country": rng.choice(_COUNTRIES),
    }


def random_payment_item(rng: random.Random | None = None) -> dict[str, Any]:
    """A PENDING payment in DynamoDB's wire format, shaped as ingest stores it, for loads
    that write straight to the table (benchmarks of the stages after ingest)."""
    body = random_payment(rng)
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    return {
        "payment_id": {"S": str(uuid.uuid4())},
        "account_id": {"S": body["account_id"]},
        "amount": {"S": body["amount"]},
        "currency": {"S": body["currency"]},
        "merchant_id": {"S": body["merchant_id"]},
        "country": {"S": body["country"]},
        "status": {"S": "PENDING"},
        "created_at": {"S": now},
        "updated_at": {"S": now},
        "request_hash": {"S": uuid.uuid4().hex},
        "traceparent": {"S": new_traceparent()},
    }


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile of ``values`` (0 for an empty list)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class LoadResult:
    sent: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    payments: list[tuple[str, float]] = field(default_factory=list)  # (payment_id, sent at)
    elapsed_s: float = 0.0

    def summary(self) -> dict[str, float]:
        lat = self.latencies_ms
        return {
            "sent": float(self.sent),
            "ok": float(self.statuses.get("201", 0)),
            "rate_per_s": self.sent / self.elapsed_s if self.elapsed_s else 0.0,
            "p50_ms": percentile(lat, 50),
            "p90_ms": percentile(lat, 90),
            "p99_ms": percentile(lat, 99),
            "max_ms": max(lat) if lat else 0.0,
            "mean_ms": statistics.fmean(lat) if lat else 0.0,
        }


class AccountTokens:
    """Development bearer tokens for the ingest API: one JWT per account (``sub``), signed
    with ``secret``, made once each; or ``fixed``, one credential for every account."""

    def __init__(
        self, secret: str, *, fixed: str | None = None, ttl_seconds: int = 12 * 3600
    ) -> None:
        self._secret = secret
        self._fixed = fixed
        self._ttl = ttl_seconds
        self._headers: dict[str, dict[str, str]] = {}

    def headers(self, account_id: str) -> dict[str, str]:
        """The ``Authorization`` header to send for a payment of ``account_id``."""
        found = self._headers.get(account_id)
        if found is None:
            token = self._fixed or issue_token(self._secret, sub=account_id, ttl_seconds=self._ttl)
            found = self._headers[account_id] = {"Authorization": f"Bearer {token}"}
        return found


async def _one(
    session: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    result: LoadResult,
) -> None:
    sent_at = time.time()
    start = time.perf_counter()
    try:
        async with session.post(url, json=body, headers=headers) as resp:
            payload = await resp.json(content_type=None)
            result.statuses[str(resp.status)] += 1
            if resp.status == 201 and isinstance(payload, dict):  # noqa: PLR2004 - Created
                result.payments.append((str(payload.get("payment_id")), sent_at))
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        result.statuses[type(exc).__name__] += 1
        return
    result.latencies_ms.append((time.perf_counter() - start) * 1000)


async def run_load(
    base_url: str,
    *,
    tokens: AccountTokens,
    rate: float,
    duration: float,
    accounts: int = 20,
    seed: int | None = None,
    progress: bool = True,
    max_in_flight: int = 256,
) -> LoadResult:
    """Send ``rate`` payments/s for ``duration`` s to ``base_url``; the collected result."""
    if rate <= 0 or duration <= 0:
        raise ValueError("rate and duration must be positive")
    rng = random.Random(seed)  # noqa: S311 - load data, not security
    url = base_url.rstrip("/") + "/v1/payments"
    total = max(1, round(rate * duration))
    result = LoadResult()
    limit = asyncio.Semaphore(max_in_flight)
    tasks: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=max_in_flight)
    timeout = aiohttp.ClientTimeout(total=30)
    bar = Progress(
        TextColumn("[bold]load[/]"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(),
        disable=not progress,
        transient=True,
    )

    async def fire(body: dict[str, Any], task_id: Any) -> None:
        async with limit:
            await _one(session, url, body, tokens.headers(body["account_id"]), result)
        bar.advance(task_id)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        with bar:
            task_id = bar.add_task("load", total=total)
            start = time.perf_counter()
            for i in range(total):
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(fire(random_payment(rng, accounts), task_id))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                result.sent += 1
            if tasks:
                await asyncio.gather(*tasks)
            result.elapsed_s = time.perf_counter() - start
    return result
