"""The payment item ingest writes, and the creation response rebuilt from it."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from ingest.amounts import COUNTRY_CODES, CURRENCY_CODES, currency_digits
from ingest.records import created_payment, iso_timestamp, new_payment, payment_item
from ingest.validation import PaymentRequest, parse_payment_request, request_hash
from pulse.payments import item_from_image, payment_from_item


def test_iso_timestamps_have_milliseconds_and_z() -> None:
    ts = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    assert iso_timestamp(ts) == "2026-01-02T03:04:05.678Z"


def test_new_item_matches_the_contract_and_reads_back_as_the_payment() -> None:
    request = parse_payment_request(
        b'{"account_id":"A","amount":12.5,"currency":"EUR","merchant_id":"m",'
        b'"country":"DE","metadata":{"order":"42"}}'
    )
    now = datetime(2026, 1, 1, tzinfo=UTC)
    item = payment_item(
        new_payment(
            request,
            payment_id="p-1",
            request_hash=request_hash(request),
            traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            idempotency_key="k",
            now=now,
        )
    )
    assert item["amount"] == {"S": "12.50"}
    assert item["metadata"] == {"M": {"order": {"S": "42"}}}
    assert item["status"] == {"S": "PENDING"}
    assert item["idempotency_key"] == {"S": "k"}
    assert item["created_at"] == item["updated_at"] == {"S": "2026-01-01T00:00:00.000Z"}
    assert set(item) >= {"request_hash", "traceparent", "country"}
    payment = created_payment(item_from_image(item))
    assert payment == {
        "payment_id": "p-1",
        "account_id": "A",
        "amount": "12.50",
        "currency": "EUR",
        "merchant_id": "m",
        "country": "DE",
        "metadata": {"order": "42"},
        "status": "PENDING",
        "created_at": "2026-01-01T00:00:00.000Z",
        "updated_at": "2026-01-01T00:00:00.000Z",
    }
    assert payment == payment_from_item(item_from_image(item))


def test_a_replay_shows_the_payment_as_first_created() -> None:
    later = {
        "payment_id": "p-1",
        "account_id": "A",
        "amount": "12.50",
        "currency": "EUR",
        "merchant_id": "m",
        "status": "DECLINED",
        "created_at": "2026-01-01T00:00:00.000Z",
        "updated_at": "2026-01-01T00:00:05.000Z",
        "fraud_score": 90,
        "request_hash": "h",
    }
    payment = created_payment(later)
    assert payment["status"] == "PENDING"
    assert payment["updated_at"] == "2026-01-01T00:00:00.000Z"
    assert "fraud_score" not in payment
    assert "request_hash" not in payment


_ids = st.from_regex(r"[A-Za-z0-9_.@-]{1,128}", fullmatch=True)

# An amount valid in its currency: whole where the currency has no minor unit (JPY, AFN, …).
_priced = st.sampled_from(CURRENCY_CODES).flatmap(
    lambda code: st.tuples(
        st.just(code),
        st.decimals(
            min_value=Decimal(1), max_value=Decimal(10**6), places=min(2, currency_digits(code))
        ).map(str),
    )
)
_requests = _priced.flatmap(
    lambda priced: st.builds(
        PaymentRequest,
        account_id=_ids,
        amount=st.just(priced[1]),
        currency=st.just(priced[0]),
        merchant_id=_ids,
        country=st.none() | st.sampled_from(COUNTRY_CODES),
        metadata=st.none()
        | st.dictionaries(st.text(min_size=1, max_size=64), st.text(max_size=256), max_size=20),
    )
)


@given(_requests, st.none() | st.text(min_size=1), st.datetimes(timezones=st.just(UTC)))
def test_the_payment_is_what_its_item_reads_back_as(
    request: PaymentRequest, key: str | None, now: datetime
) -> None:
    """The response to a creation is built from the payment written, not read back from
    its item: the two are the same."""
    payment = new_payment(
        request,
        payment_id="p-1",
        request_hash=request_hash(request),
        traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        idempotency_key=key,
        now=now,
    )
    assert item_from_image(payment_item(payment)) == payment
    assert created_payment(payment) == created_payment(item_from_image(payment_item(payment)))
