import random
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from pulse_dev.load import percentile, random_payment


def test_percentiles_use_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([], 50) == 0.0


@given(st.lists(st.floats(0, 1e6), min_size=1), st.floats(0, 100))
def test_percentile_is_one_of_the_values(values: list[float], pct: float) -> None:
    assert percentile(values, pct) in values


def test_random_payments_are_valid_requests() -> None:
    rng = random.Random(7)
    for _ in range(200):
        body = random_payment(rng)
        amount = Decimal(body["amount"])
        assert amount > 0
        assert amount == amount.quantize(Decimal("0.01"))
        assert body["account_id"].startswith("acct-")
