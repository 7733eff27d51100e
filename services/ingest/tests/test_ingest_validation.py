"""Unit tests of ingest.validation (bytes in, a PaymentRequest or a problem out), with the
amounts of ingest.amounts and the headers and ids of ingest.request_ids."""

from __future__ import annotations

import json
import re
import uuid
from decimal import Decimal

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from ingest.amounts import DEFAULT_MAX_AMOUNT, amount_pattern, currency_digits
from ingest.openapi import openapi_document
from ingest.request_ids import (
    parse_idempotency_key,
    parse_payment_id,
    parse_traceparent,
    payment_id_for_key,
)
from ingest.validation import canonical_request, parse_payment_request, request_hash
from pulse.problems import Problem

BASE = {"account_id": "acct-001", "amount": "12.50", "currency": "EUR", "merchant_id": "m-01"}


def body(**changes: object) -> bytes:
    data = {**BASE, **changes}
    return json.dumps({k: v for k, v in data.items() if v is not _DROP}).encode()


_DROP = object()


def problem_of(raw: bytes, **kwargs: object) -> Problem:
    with pytest.raises(Problem) as info:
        parse_payment_request(raw, **kwargs)  # type: ignore[arg-type]
    return info.value


def fields_of(raw: bytes) -> set[str]:
    problem = problem_of(raw)
    assert problem.status == 422
    assert problem.type == "https://pulse.dev/problems/validation"
    assert problem.errors
    return {e.field for e in problem.errors}


def test_a_minimal_payment_is_accepted() -> None:
    request = parse_payment_request(body())
    assert request.amount == Decimal("12.50")
    assert request.country is None
    assert request.metadata is None


def test_every_optional_field_is_kept() -> None:
    request = parse_payment_request(body(country="DE", metadata={"order": "42", "note": ""}))
    assert request.country == "DE"
    assert request.metadata == {"order": "42", "note": ""}


@pytest.mark.parametrize(
    ("raw_amount", "expected"),
    [
        ("12.50", "12.50"),
        ("12.5", "12.50"),
        ("7", "7.00"),
        ("0.01", "0.01"),
        ("1000000.00", "1000000.00"),
    ],
)
def test_amount_strings_are_normalised_to_two_places(raw_amount: str, expected: str) -> None:
    request = parse_payment_request(body(amount=raw_amount))
    assert canonical_request(request)["amount"] == expected


@pytest.mark.parametrize(
    ("text", "expected"), [("12.5", "12.50"), ("42", "42.00"), ("0.1", "0.10")]
)
def test_json_numbers_are_judged_by_their_text(text: str, expected: str) -> None:
    raw = body(amount="X").replace(b'"X"', text.encode())
    assert canonical_request(parse_payment_request(raw))["amount"] == expected


@pytest.mark.parametrize(
    ("raw_amount", "message"),
    [
        ('"-5.00"', "greater than 0"),
        ("-5", "greater than 0"),
        ('"0"', "greater than 0"),
        ("0.00", "greater than 0"),
        ('"1000000.01"', "at most"),
        ("99999999999999999999999999", "at most"),
        ('"12.345"', "2 decimal places"),
        ("12.345", "2 decimal places"),
        ('"12.500"', "2 decimal places"),
        # 0.1 + 0.2 in binary floating point, as a JavaScript client would send it
        ("0.30000000000000004", "2 decimal places"),
        ('"1e3"', "plain notation"),
        ("1e3", "plain notation"),
        ('"12,50"', "plain notation"),
        ('" 12.50"', "plain notation"),
        ('"NaN"', "plain notation"),
        ('"Infinity"', "plain notation"),
        ('""', "plain notation"),
        ("true", "decimal string or a JSON number"),
        ("false", "decimal string or a JSON number"),
        ("null", "decimal string or a JSON number"),
        ('["12.50"]', "decimal string or a JSON number"),
        ('{"value": 1}', "decimal string or a JSON number"),
    ],
)
def test_bad_amounts_are_refused_with_a_reason(raw_amount: str, message: str) -> None:
    raw = body(amount="X").replace(b'"X"', raw_amount.encode())
    problem = problem_of(raw)
    assert problem.status == 422
    assert problem.errors is not None
    [error] = problem.errors
    assert error.field == "amount"
    assert message in error.message


def test_the_maximum_amount_is_configurable() -> None:
    assert parse_payment_request(body(amount="50.00"), max_amount=Decimal("50.00"))
    problem = problem_of(body(amount="50.01"), max_amount=Decimal("50.00"))
    assert problem.errors is not None
    assert "at most 50.00" in problem.errors[0].message


@given(cents=st.integers(min_value=1, max_value=int(DEFAULT_MAX_AMOUNT * 100)))
def test_any_valid_amount_round_trips_as_string_and_number(cents: int) -> None:
    amount = Decimal(cents) / 100
    text = f"{amount:.2f}"
    as_string = parse_payment_request(body(amount=text))
    as_number = parse_payment_request(body(amount="X").replace(b'"X"', text.encode()))
    assert canonical_request(as_string)["amount"] == text
    assert as_number.amount == as_string.amount == Decimal(text)
    assert request_hash(as_number) == request_hash(as_string)
    assert re.fullmatch(amount_pattern(DEFAULT_MAX_AMOUNT), text)


@given(st.from_regex(amount_pattern(Decimal(1000)), fullmatch=True))
def test_strings_matching_the_published_pattern_are_accepted(text: str) -> None:
    assert parse_payment_request(body(amount=text), max_amount=Decimal(1000))


@pytest.mark.parametrize(
    ("maximum", "good", "bad"),
    [
        (
            Decimal("1000000.00"),
            ["1000000", "1000000.00", "999999.99", "0.01"],
            ["1000000.01", "0", "0.00", "01"],
        ),
        (Decimal(100), ["100", "99.99", "0.5"], ["100.01", "101", "1000"]),
    ],
)
def test_amount_pattern_for_powers_of_ten_is_exact(
    maximum: Decimal, good: list[str], bad: list[str]
) -> None:
    pattern = amount_pattern(maximum)
    assert all(re.fullmatch(pattern, text) for text in good)
    assert not any(re.fullmatch(pattern, text) for text in bad)


def test_currency_digits_come_from_the_cldr_table() -> None:
    assert [currency_digits(c) for c in ("EUR", "USD", "JPY", "KRW", "BHD", "KWD")] == [
        2,
        2,
        0,
        0,
        3,
        3,
    ]


@pytest.mark.parametrize("currency", ["JPY", "KRW", "CLP", "VND"])
def test_currencies_without_a_minor_unit_refuse_fractions(currency: str) -> None:
    for amount in ("1500", "1500.0", "1500.00", 1500):
        request = parse_payment_request(body(amount=amount, currency=currency))
        assert canonical_request(request)["amount"] == "1500.00"  # kept to two places
    for amount in ("1500.50", "0.5", "1500.01"):
        problem = problem_of(body(amount=amount, currency=currency))
        assert problem.errors is not None
        [error] = problem.errors
        assert error.field == "amount"
        assert error.message == f"amount must be a whole number: {currency} has no minor unit"


@pytest.mark.parametrize("currency", ["BHD", "KWD", "OMR"])
def test_three_decimal_currencies_are_kept_to_two_places(currency: str) -> None:
    request = parse_payment_request(body(amount="1.25", currency=currency))
    assert canonical_request(request)["amount"] == "1.25"
    problem = problem_of(body(amount="1.255", currency=currency))
    assert problem.errors is not None
    [error] = problem.errors
    assert error.field == "amount"
    assert error.message == (
        f"amount must have at most 2 decimal places (Pulse keeps amounts to 2 places; "
        f"{currency} has 3)"
    )


@pytest.mark.parametrize(
    ("amount", "currency"),
    [
        *[("12.50", "EUR"), (12.5, "EUR"), ("1500", "JPY"), ("1500.00", "JPY"), (1500, "KRW")],
        *[("12.50", "JPY"), (12.5, "JPY"), ("0.5", "KRW"), ("12.505", "EUR")],
    ],
)
def test_the_published_schema_says_what_validation_does(amount: object, currency: str) -> None:
    schema = openapi_document()["components"]["schemas"]["PaymentRequest"]
    request = {**BASE, "amount": amount, "currency": currency}
    published = Draft202012Validator(schema).is_valid(request)
    try:
        parse_payment_request(json.dumps(request).encode())
    except Problem:
        accepted = False
    else:
        accepted = True
    assert published == accepted


@given(st.from_regex(amount_pattern(Decimal(1000), whole=True), fullmatch=True))
def test_whole_amounts_matching_the_published_pattern_are_accepted(text: str) -> None:
    assert parse_payment_request(body(amount=text, currency="JPY"), max_amount=Decimal(1000))


def test_a_bad_currency_leaves_the_amount_judged_by_two_places() -> None:
    assert fields_of(body(amount="12.50", currency="ZZZ")) == {"currency"}
    assert fields_of(body(amount="12.505", currency="ZZZ")) == {"amount", "currency"}


@pytest.mark.parametrize("currency", ["ABC", "eur", "EURO", "", 978, None, "XXX"])
def test_unknown_currencies_are_refused(currency: object) -> None:
    assert fields_of(body(currency=currency)) == {"currency"}


@pytest.mark.parametrize("country", ["XX", "de", "DEU", "", 276])
def test_bad_countries_are_refused(country: object) -> None:
    assert fields_of(body(country=country)) == {"country"}


def test_a_null_country_means_no_country() -> None:
    assert parse_payment_request(body(country=None)).country is None


@pytest.mark.parametrize("field", ["account_id", "amount", "currency", "merchant_id"])
def test_missing_fields_are_named(field: str) -> None:
    problem = problem_of(body(**{field: _DROP}))
    assert problem.errors is not None
    assert [(e.field, e.message) for e in problem.errors] == [(field, "field required")]


def test_every_bad_field_is_reported_at_once() -> None:
    raw = body(account_id="", amount="-1", currency="ZZZ", merchant_id=7)
    assert fields_of(raw) == {"account_id", "amount", "currency", "merchant_id"}


@pytest.mark.parametrize(
    "account_id",
    ["", "a" * 129, "has space", "colon:inside", "slash/inside", "ünïcode", 12, True, ["a"], None],
)
def test_ids_must_be_short_safe_strings(account_id: object) -> None:
    assert fields_of(body(account_id=account_id)) == {"account_id"}


@pytest.mark.parametrize("account_id", ["has space", "colon:inside", "ünïcode"])
def test_refused_ids_are_explained_in_words_not_a_pattern(account_id: str) -> None:
    problem = problem_of(body(account_id=account_id, merchant_id="m/1"))
    assert problem.errors is not None
    messages = {e.field: e.message for e in problem.errors}
    expected = "must be 1 to 128 letters, digits or the characters _ . @ -"
    assert messages == {"account_id": expected, "merchant_id": expected}


def test_no_refusal_shows_a_regular_expression() -> None:
    bad_bodies = [
        body(account_id="a b", amount="1.234", currency="JPY", merchant_id="", country="de"),
        body(amount="1e3", currency="eur", metadata={"k" * 65: "v"}),
        b"{",
    ]
    for raw in bad_bodies:
        problem = problem_of(raw)
        texts = [problem.detail or "", *(e.message for e in problem.errors or [])]
        for text in texts:  # what a pattern looks like: anchors, classes, groups, counts
            assert not re.search(r"\^|\$$|\(\?|\]\{|\[A-|\\[dws.]|pattern", text), text


def test_ids_may_use_the_whole_safe_alphabet() -> None:
    safe = "Az09_.@-" + "x" * 120
    request = parse_payment_request(body(account_id=safe, merchant_id="a"))
    assert request.account_id == safe


def test_unknown_fields_are_refused_by_name() -> None:
    problem = problem_of(body(ammount="12.50"))
    assert problem.errors is not None
    assert [(e.field, e.message) for e in problem.errors] == [("ammount", "unknown field")]


@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        ({f"k{i}": "v" for i in range(21)}, "metadata"),
        ({"k" * 65: "v"}, "metadata.k"),
        ({"": "v"}, "metadata."),
        ({"k": "v" * 257}, "metadata.k"),
        ({"k": 1}, "metadata.k"),
        ({"k": {"nested": "x"}}, "metadata.k"),
        ({"k": None}, "metadata.k"),
        (["a"], "metadata"),
        ("text", "metadata"),
    ],
)
def test_metadata_limits(metadata: object, field: str) -> None:
    assert all(f.startswith(field) for f in fields_of(body(metadata=metadata)))


def test_metadata_at_its_limits_is_accepted() -> None:
    metadata = {f"{i:02d}" + "k" * 62: "v" * 256 for i in range(20)}
    assert parse_payment_request(body(metadata=metadata)).metadata == metadata


@pytest.mark.parametrize(
    "raw", [b"", b"{", b"not json", b'{"a": 1,}', b"\xff\xfe", b"NaN", b'{"amount": NaN}']
)
def test_malformed_json_is_a_400(raw: bytes) -> None:
    problem = problem_of(raw)
    assert problem.status == 400
    assert problem.type == "https://pulse.dev/problems/malformed-json"


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000 + b"]" * 100_000,
        body(account_id="\ud800"),  # json.dumps writes the lone surrogate as an escape
        body(metadata={"\udc00": "x"}),
        body(metadata={"k": "\udc00"}),
    ],
)
def test_deep_nesting_and_lone_surrogates_are_malformed(raw: bytes) -> None:
    assert b"\\ud" in raw or raw.startswith(b"[[")
    assert problem_of(raw).status == 400


@pytest.mark.parametrize("raw", [b"[]", b'"text"', b"12", b"null"])
def test_a_body_that_is_not_an_object_is_a_422(raw: bytes) -> None:
    assert fields_of(raw) == {"(body)"}


def test_equivalent_bodies_hash_alike_and_different_ones_do_not() -> None:
    a = parse_payment_request(
        b'{"account_id":"A","amount":"12.5","currency":"EUR","merchant_id":"m"}'
    )
    b = parse_payment_request(
        b'{"merchant_id":"m","currency":"EUR","amount":12.50,"account_id":"A"}'
    )
    c = parse_payment_request(
        b'{"account_id":"A","amount":"12.51","currency":"EUR","merchant_id":"m"}'
    )
    d = parse_payment_request(
        b'{"account_id":"A","amount":"12.5","currency":"EUR","merchant_id":"m","metadata":{}}'
    )
    assert request_hash(a) == request_hash(b) == request_hash(d)
    assert request_hash(a) != request_hash(c)
    assert re.fullmatch(r"[0-9a-f]{64}", request_hash(a))


def test_canonical_request_is_what_is_stored() -> None:
    request = parse_payment_request(body(amount=7, country="FR", metadata={"b": "2", "a": "1"}))
    assert canonical_request(request) == {
        "account_id": "acct-001",
        "amount": "7.00",
        "currency": "EUR",
        "merchant_id": "m-01",
        "country": "FR",
        "metadata": {"a": "1", "b": "2"},
    }
    assert orjson.loads(orjson.dumps(canonical_request(request)))["amount"] == "7.00"


@pytest.mark.parametrize(
    "key", ["k", "order-42", "a b", "~" * 255, "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"]
)
def test_good_idempotency_keys(key: str) -> None:
    assert parse_idempotency_key(key) == key


@pytest.mark.parametrize("key", ["", " ", "x" * 256, "tab\there", "naïve", "line\nbreak", " lead"])
def test_bad_idempotency_keys_are_a_400(key: str) -> None:
    with pytest.raises(Problem) as info:
        parse_idempotency_key(key)
    assert info.value.status == 400
    assert info.value.slug == "invalid-idempotency-key"


def test_no_idempotency_key_is_fine() -> None:
    assert parse_idempotency_key(None) is None


def test_payment_ids_follow_the_idempotency_key() -> None:
    assert payment_id_for_key("k1") == payment_id_for_key("k1")
    assert payment_id_for_key("k1") != payment_id_for_key("k2")
    assert uuid.UUID(payment_id_for_key("k1")).version == 5
    assert payment_id_for_key(None) != payment_id_for_key(None)
    assert uuid.UUID(payment_id_for_key(None)).version == 4


def test_traceparent_is_taken_only_when_valid() -> None:
    good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert parse_traceparent(good) == good
    assert parse_traceparent(good.upper().replace("X", "x")) == good
    for bad in (
        None,
        "",
        "garbage",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
    ):
        assert parse_traceparent(bad) is None


def test_payment_ids_in_paths_are_canonical_uuids() -> None:
    pid = str(uuid.uuid4())
    assert parse_payment_id(pid) == pid
    assert parse_payment_id(pid.upper()) == pid
    assert parse_payment_id("not-a-uuid") is None
    assert parse_payment_id("") is None
