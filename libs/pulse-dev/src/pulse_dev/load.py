"""``pulse load``: send payments to the ingest API at a steady rate and report latency; and
the payments of ``make run DEMO=1`` (:class:`DemoTraffic`).

Each payment is sent with a bearer credential: a given one for every request (``--token``,
an operator's JWT or an API key), or by default a development JWT per account, signed with
``PULSE_JWT_SECRET`` (:class:`AccountTokens`), so each account spends its own budget as a
merchant's backend would.

Requests are scheduled on a fixed timetable (open-loop), so a slow server shows up as latency,
not as a lower offered rate. A progress bar shows the run; the summary gives status counts and
latency percentiles.

Payments look like a healthy business's (:func:`random_payment`): each account pays at home,
in its country's currency (whole amounts where the currency has no minor unit, per CLDR),
mostly small sums; a few are large (the fraud worker reviews them), fewer very large
(declined), a few are paid abroad (reviewed: the country changed). :class:`DemoTraffic` adds
spread over enough accounts that no one trips the velocity rules by chance, and an
occasional fraud burst: a stolen card paying a dozen merchants abroad within seconds, which
the velocity rules review, then decline.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import statistics
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from http import HTTPStatus
from typing import Any, Final

import aiohttp
from babel.numbers import get_currency_precision
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from pulse.auth import issue_token
from pulse.events import new_traceparent

__all__ = [
    "AccountTokens",
    "CannotConnectError",
    "DemoTraffic",
    "LoadResult",
    "percentile",
    "random_payment",
    "random_payment_item",
    "run_load",
    "status_label",
]


@dataclass(frozen=True)
class _Market:
    country: str
    currency: str
    per_euro: Decimal  # roughly what a euro of spending is in the currency


# Where the demo's accounts live (an account's market follows from its number).
_MARKETS: Final = (
    _Market("DE", "EUR", Decimal(1)),
    _Market("FR", "EUR", Decimal(1)),
    _Market("NL", "EUR", Decimal(1)),
    _Market("GB", "GBP", Decimal("0.85")),
    _Market("US", "USD", Decimal("1.1")),
    _Market("CH", "CHF", Decimal("0.95")),
    _Market("JP", "JPY", Decimal(160)),
)
# Ingest's default PULSE_MAX_AMOUNT: a larger payment would be refused, not decided.
_MAX_AMOUNT: Final = Decimal(1_000_000)
# Shares of payments, and their size in euros: above the fraud worker's default review
# (5,000) and decline (20,000) amounts, each scaled to its currency's own limits.
_ABROAD_SHARE: Final = 0.02
_LARGE_SHARE: Final = 0.025
_VERY_LARGE_SHARE: Final = 0.006
_LARGE_EUROS: Final = (5_500, 15_000)
_VERY_LARGE_EUROS: Final = (22_000, 60_000)
# A stolen card's burst: more payments than the velocity rules' decline count (10).
_BURST_SIZE: Final = (12, 16)
_BURST_EUROS: Final = (40, 900)


def _amount(market: _Market, euros: float) -> str:
    """``euros`` worth in the market's currency, to its minor unit (and Pulse's two places)."""
    places = min(get_currency_precision(market.currency), 2)
    quantum = Decimal(1).scaleb(-places)
    value = (Decimal(str(euros)) * market.per_euro).quantize(quantum, rounding=ROUND_HALF_UP)
    return str(min(max(value, quantum), _MAX_AMOUNT))


def _everyday_euros(rng: random.Random) -> float:
    # Log-normal: a median of about 30 euros, rarely more than a few hundred.
    return min(math.exp(rng.gauss(3.4, 1.0)), 2_500.0)


def _abroad(rng: random.Random, home: _Market) -> _Market:
    return rng.choice([m for m in _MARKETS if m.country != home.country])


def _account(n: int) -> tuple[str, _Market]:
    return f"acct-{n:03d}", _MARKETS[n % len(_MARKETS)]


def random_payment(rng: random.Random | None = None, accounts: int = 20) -> dict[str, Any]:
    """A plausible payment of one of ``accounts`` accounts (see the module doc for the mix)."""
    rng = rng or random.Random()  # noqa: S311 - demo data, not security
    account_id, home = _account(rng.randint(1, accounts))
    where = home
    roll = rng.random()
    if roll < _ABROAD_SHARE:
        where, euros = _abroad(rng, home), _everyday_euros(rng)
    elif roll < _ABROAD_SHARE + _LARGE_SHARE:
        euros = rng.uniform(*_LARGE_EUROS)
    elif roll < _ABROAD_SHARE + _LARGE_SHARE + _VERY_LARGE_SHARE:
        euros = rng.uniform(*_VERY_LARGE_EUROS)
    else:
        euros = _everyday_euros(rng)
    return {
        "account_id": account_id,
        "amount": _amount(home, euros),
        "currency": home.currency,
        "merchant_id": f"m-{rng.randint(1, 50):02d}",
        "country": where.country,
    }


class DemoTraffic:
    """The endless payments of ``make run DEMO=1`` at ``rate`` per second.

    Over enough accounts that each pays about once in the velocity window (ten minutes) at
    this rate, so the velocity rules stay quiet except for the fraud bursts, which come about
    every ``burst_every`` seconds.
    """

    def __init__(
        self, rate: float = 2.0, *, rng: random.Random | None = None, burst_every: float = 180.0
    ) -> None:
        self.rng = rng or random.Random()  # noqa: S311 - demo data, not security
        self.accounts = max(200, math.ceil(rate * 500))
        self._burst_chance = 1.0 / max(burst_every * rate, 1.0)
        self._pending: list[dict[str, Any]] = []

    def next_payment(self) -> dict[str, Any]:
        if not self._pending and self.rng.random() < self._burst_chance:
            self._pending = self._fraud_burst()
        if self._pending:
            return self._pending.pop()
        return random_payment(self.rng, self.accounts)

    def _fraud_burst(self) -> list[dict[str, Any]]:
        """A stolen card: one account pays many merchants abroad in quick succession."""
        rng = self.rng
        account_id, home = _account(rng.randint(1, self.accounts))
        where = _abroad(rng, home)
        return [
            {
                "account_id": account_id,
                "amount": _amount(home, rng.uniform(*_BURST_EUROS)),
                "currency": home.currency,
                "merchant_id": f"m-{rng.randint(51, 99):02d}",
                "country": where.country,
            }
            for _ in range(rng.randint(*_BURST_SIZE))
        ]


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


def status_label(status: str) -> str:
    """``"201"`` → ``"201 Created"``; a failure's exception name as it is."""
    if status.isdigit():
        with contextlib.suppress(ValueError):
            return f"{status} {HTTPStatus(int(status)).phrase}"
    return status


@dataclass
class LoadResult:
    sent: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    payments: list[tuple[str, float]] = field(default_factory=list)  # (payment_id, sent at)
    elapsed_s: float = 0.0

    def status_table(self) -> list[str]:
        """The statuses and their counts as the lines of a table, most frequent first."""
        rows = [(status_label(s), str(n)) for s, n in self.statuses.most_common()]
        width = max([len("status"), *(len(label) for label, _ in rows)])
        count_width = max([len("count"), *(len(n) for _, n in rows)])
        lines = [f"{'status':<{width}}  {'count':>{count_width}}"]
        lines += [f"{label:<{width}}  {n:>{count_width}}" for label, n in rows]
        return lines

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


class CannotConnectError(Exception):
    """Nothing answers at the URL a load was to be sent to."""

    def __init__(self, url: str) -> None:
        super().__init__(f"cannot connect to {url}")
        self.url = url


async def _check_listening(session: aiohttp.ClientSession, base_url: str) -> None:
    """Raise :class:`CannotConnectError` unless something answers HTTP at ``base_url``."""
    try:
        async with session.get(base_url.rstrip("/") + "/healthz") as resp:
            await resp.read()
    except (aiohttp.ClientConnectionError, TimeoutError, OSError):
        raise CannotConnectError(base_url) from None


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
        await _check_listening(session, base_url)
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
