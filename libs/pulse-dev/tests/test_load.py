from __future__ import annotations

import json
import random
from collections import Counter, defaultdict, deque
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from fraud_worker.rules import AccountActivity, FraudDecision, PaymentFacts, evaluate
from fraud_worker.settings import FraudSettings
from ingest.validation import parse_payment_request
from pulse.cli import main
from pulse_dev.emulators import free_port
from pulse_dev.load import DemoTraffic, LoadResult, percentile, random_payment

if TYPE_CHECKING:
    from collections.abc import Iterator


def test_percentiles_use_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([], 50) == 0.0


@given(st.lists(st.floats(0, 1e6), min_size=1), st.floats(0, 100))
def test_percentile_is_one_of_the_values(values: list[float], pct: float) -> None:
    assert percentile(values, pct) in values


def test_random_payments_are_requests_ingest_accepts() -> None:
    rng = random.Random(7)
    traffic = DemoTraffic(rng=random.Random(8), burst_every=10)
    bodies = [random_payment(rng) for _ in range(500)]
    bodies += [traffic.next_payment() for _ in range(500)]
    for body in bodies:
        request = parse_payment_request(json.dumps(body).encode())  # raises if refused
        assert request.account_id.startswith("acct-")
    # Every currency in its own digits: no yen with cents.
    assert all(Decimal(b["amount"]) % 1 == 0 for b in bodies if b["currency"] == "JPY")


def _decisions(payments: Iterator[dict[str, Any]], rate: float) -> list[FraudDecision]:
    """Each payment decided by the fraud worker's rules and default limits, with the account
    activity its store would report (the velocity window, the last country remembered)."""
    fraud = FraudSettings()
    limits = fraud.risk_limits()
    window: dict[str, deque[tuple[float, str, Decimal]]] = defaultdict(deque)
    last_country: dict[str, tuple[float, str]] = {}
    start = datetime(2025, 1, 1, tzinfo=UTC)
    decisions = []
    for i, body in enumerate(payments):
        now, account, amount = i / rate, body["account_id"], Decimal(body["amount"])
        recent = window[account]
        recent.append((now, body["currency"], amount))
        while recent[0][0] <= now - fraud.velocity_window_seconds:
            recent.popleft()
        seen = last_country.get(account)
        previous = seen[1] if seen and now - seen[0] < fraud.country_memory_seconds else None
        last_country[account] = (now, body["country"])
        activity = AccountActivity(
            count=len(recent),
            amount_sum=sum((a for _, c, a in recent if c == body["currency"]), Decimal(0)),
            previous_country=previous,
        )
        facts = PaymentFacts(
            payment_id=str(i),
            account_id=account,
            amount=amount,
            currency=body["currency"],
            merchant_id=body["merchant_id"],
            country=body["country"],
            occurred_at=start + timedelta(seconds=now),
        )
        decisions.append(evaluate(facts, activity, limits))
    return decisions


def test_demo_traffic_looks_like_a_healthy_business() -> None:
    rate, total = 2.0, 2000  # make run DEMO=1's rate, for about 17 minutes
    traffic = DemoTraffic(rate, rng=random.Random(2025))
    decisions = _decisions((traffic.next_payment() for _ in range(total)), rate)
    outcomes = Counter(d.decision for d in decisions)
    reasons = Counter(r for d in decisions for r in d.reasons)
    print(dict(outcomes), dict(reasons))  # noqa: T201 - the mix, for whoever tunes it
    assert outcomes["APPROVED"] >= 0.8 * total  # most are approved
    assert 0.03 * total <= outcomes["REVIEW"] <= 0.12 * total  # some are reviewed
    assert 0.005 * total <= outcomes["DECLINED"] <= 0.06 * total  # a few declined
    # Each rule a healthy business trips now and then, and the fraud bursts: a stolen card
    # paying again and again, reviewed, then declined for velocity.
    for reason in ("amount_above_review_limit", "amount_above_decline_limit", "country_mismatch"):
        assert reasons[reason] > 0, reason
    assert reasons["velocity_count_review"] > 0
    assert reasons["velocity_count_decline"] > 0


def test_load_says_cannot_connect_when_nothing_listens() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(main, ["load", "--url", url, "--duration", "1"])
    assert result.exit_code == 1
    assert result.output == f"Error: cannot connect to {url}\n"


def test_statuses_are_a_table() -> None:
    result = LoadResult(statuses=Counter({"201": 97, "429": 2, "ClientOSError": 1}))
    assert result.status_table() == [
        "status                 count",
        "201 Created               97",
        "429 Too Many Requests      2",
        "ClientOSError              1",
    ]
