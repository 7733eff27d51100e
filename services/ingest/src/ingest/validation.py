"""Validation of a payment request: bytes in, a :class:`PaymentRequest` or a problem out;
also the review body and the review listing's query.

Pure: no I/O. Amounts are judged by their *decimal text*. The body is parsed with the
standard ``json`` module keeping every JSON number as its raw text (:class:`JsonNumber`), so
``0.30000000000000004`` is seen with its sixteen decimals and refused, and ``12.50`` is
exactly twelve and a half; a float is never involved. The currencies, countries and the
rules of an amount are in :mod:`ingest.amounts`.

No message names a regular expression: refusals say in words what is allowed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Final, TypeVar

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from ingest.amounts import (
    COUNTRY_CODES,
    CURRENCY_CODES,
    DEFAULT_MAX_AMOUNT,
    amount_field_schema,
    decimal_from_text,
    kept_places,
    whole_amount_rule,
)
from pulse.identifiers import ID_PATTERN, ID_WORDS
from pulse.payment_states import InvalidCursorError, decode_cursor
from pulse.payments import APPROVED, DECLINED, REVIEW
from pulse.problems import FieldError, bad_request, unprocessable

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "ID_PATTERN",
    "JsonNumber",
    "PaymentRequest",
    "ReviewListing",
    "ReviewRequest",
    "canonical_request",
    "page_limit",
    "parse_json",
    "parse_payment_request",
    "parse_review_listing",
    "parse_review_request",
    "request_hash",
    "unknown_parameters",
]

MAX_METADATA_ENTRIES: Final = 20
MAX_METADATA_KEY_LENGTH: Final = 64
MAX_METADATA_VALUE_LENGTH: Final = 256
MAX_REVIEW_NOTE_LENGTH: Final = 1000
REVIEW_DECISIONS: Final = (APPROVED, DECLINED)
DEFAULT_LISTING_LIMIT: Final = 50
MAX_LISTING_LIMIT: Final = 100
_CURRENCIES: Final = frozenset(CURRENCY_CODES)
_COUNTRIES: Final = frozenset(COUNTRY_CODES)
ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class JsonNumber:
    """A JSON number kept as the exact text the client sent."""

    text: str


def page_limit(
    query: Mapping[str, str], default: int, maximum: int, errors: list[FieldError]
) -> int:
    """The ``limit`` of a listing's page (``default`` when absent); a value that is not a
    whole number from 1 to ``maximum`` is added to ``errors`` (and read as 0)."""
    text = query.get("limit", str(default))
    limit = int(text) if text.isascii() and text.isdigit() and len(text) <= 6 else 0  # noqa: PLR2004
    if not 1 <= limit <= maximum:
        errors.append(
            FieldError(field="limit", message=f"limit must be a whole number from 1 to {maximum}")
        )
    return limit


def unknown_parameters(query: Mapping[str, str], known: set[str]) -> list[FieldError]:
    """One error per query parameter a listing does not take."""
    return [
        FieldError(field=name, message="unknown parameter") for name in sorted(set(query) - known)
    ]


def parse_json(raw: bytes) -> Any:
    """Parse a request body; numbers become :class:`JsonNumber`.

    Raises :class:`~pulse.problems.Problem` (400) for bytes that are not UTF-8 JSON.
    """
    try:
        text = raw.decode("utf-8")
        return json.loads(
            text,
            parse_float=JsonNumber,
            parse_int=JsonNumber,
            parse_constant=_refuse_constant,
            object_pairs_hook=_object,
        )
    except RecursionError:
        raise bad_request(
            "malformed-json", "Malformed JSON", "the body is nested too deeply"
        ) from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad_request("malformed-json", "Malformed JSON", _json_error(exc)) from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate escape such as "\ud800"
        return False
    return True


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Strings must be storable (DynamoDB, the request hash): no lone surrogate escapes.
    for key, value in pairs:
        if not _is_unicode(key) or (isinstance(value, str) and not _is_unicode(value)):
            raise ValueError("strings must be valid Unicode (a lone surrogate escape was sent)")
    return dict(pairs)


def _json_error(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"the body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
    if isinstance(exc, UnicodeDecodeError):
        return "the body is not valid UTF-8"
    return f"the body is not valid JSON: {exc}"


Identifier = Annotated[
    StrictStr,
    StringConstraints(min_length=1, max_length=128, pattern=ID_PATTERN),
]  # a refusal says ID_WORDS, not the pattern (_message)
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=MAX_METADATA_KEY_LENGTH)]
MetadataValue = Annotated[StrictStr, StringConstraints(max_length=MAX_METADATA_VALUE_LENGTH)]


class PaymentRequest(BaseModel):
    """The body of ``POST /v1/payments``. Unknown fields are refused so typos are caught."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="PaymentRequest",
        json_schema_extra={"allOf": [whole_amount_rule(DEFAULT_MAX_AMOUNT)]},
    )

    account_id: Identifier = Field(description="The paying account; used in channel names.")
    # The currency is validated first: the amount's decimals depend on it.
    currency: Annotated[
        StrictStr,
        WithJsonSchema({"type": "string", "enum": list(CURRENCY_CODES), "examples": ["EUR"]}),
    ] = Field(description="ISO 4217 currency code, upper case.")
    amount: Annotated[Decimal, WithJsonSchema(amount_field_schema())]
    merchant_id: Identifier = Field(description="The merchant being paid.")
    country: Annotated[
        StrictStr | None,
        WithJsonSchema(
            {
                "anyOf": [{"type": "string", "enum": list(COUNTRY_CODES)}, {"type": "null"}],
                "examples": ["DE"],
            }
        ),
    ] = Field(default=None, description="ISO 3166-1 alpha-2 country code, upper case.")
    metadata: (
        Annotated[
            dict[MetadataKey, MetadataValue],
            Field(max_length=MAX_METADATA_ENTRIES),
        ]
        | None
    ) = Field(
        default=None,
        description=f"At most {MAX_METADATA_ENTRIES} string entries.",
    )

    @field_validator("amount", mode="before")
    @classmethod
    def _amount_text(cls, value: Any) -> Decimal:
        if isinstance(value, JsonNumber):
            return decimal_from_text(value.text)
        if isinstance(value, str):
            return decimal_from_text(value)
        if isinstance(value, int) and not isinstance(value, bool):  # built in code, not JSON
            return Decimal(value)
        raise ValueError("amount must be a decimal string or a JSON number")

    @field_validator("amount")
    @classmethod
    def _amount_range(cls, value: Decimal, info: ValidationInfo) -> Decimal:
        if value <= 0:
            raise ValueError("amount must be greater than 0")
        context = info.context or {}
        maximum = Decimal(context.get("max_amount", DEFAULT_MAX_AMOUNT))
        if value > maximum:
            raise ValueError(f"amount must be at most {maximum}")
        return kept_places(value, info.data.get("currency"))

    @field_validator("currency")
    @classmethod
    def _currency_code(cls, value: str) -> str:
        if value not in _CURRENCIES:
            raise ValueError("currency must be an ISO 4217 code such as EUR (upper case)")
        return value

    @field_validator("country")
    @classmethod
    def _country_code(cls, value: str | None) -> str | None:
        if value is not None and value not in _COUNTRIES:
            raise ValueError("country must be an ISO 3166-1 alpha-2 code such as DE (upper case)")
        return value


def _field_name(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(body)"


def _message(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "field required"
    if kind == "model_type":
        return "the body must be a JSON object"
    if kind == "string_pattern_mismatch":  # only identifiers have a pattern
        return ID_WORDS
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def _validated(model: type[ModelT], data: Any, context: dict[str, Any] | None = None) -> ModelT:
    """``data`` as ``model``; a 422 problem with one entry per bad field otherwise."""
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        errors = [
            FieldError(field=_field_name(err["loc"]), message=_message(err))
            for err in exc.errors(include_url=False)
        ]
        raise unprocessable(errors) from None


def parse_payment_request(
    raw: bytes, *, max_amount: Decimal = DEFAULT_MAX_AMOUNT
) -> PaymentRequest:
    """Parse and validate a request body.

    Raises :class:`~pulse.problems.Problem`: 400 for malformed JSON, 422 with one entry per
    bad field otherwise.
    """
    return _validated(PaymentRequest, parse_json(raw), {"max_amount": max_amount})


class ReviewRequest(BaseModel):
    """The body of ``POST /v1/payments/{payment_id}/review``: an operator's decision."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="ReviewRequest")

    decision: Annotated[
        StrictStr,
        WithJsonSchema({"type": "string", "enum": list(REVIEW_DECISIONS)}),
    ] = Field(description="APPROVED or DECLINED.")
    note: Annotated[StrictStr, StringConstraints(max_length=MAX_REVIEW_NOTE_LENGTH)] | None = Field(
        default=None,
        description=f"Why, in at most {MAX_REVIEW_NOTE_LENGTH} characters; kept on the "
        "payment as review_note.",
    )

    @field_validator("decision")
    @classmethod
    def _decision(cls, value: str) -> str:
        if value not in REVIEW_DECISIONS:
            raise ValueError("decision must be APPROVED or DECLINED")
        return value


def parse_review_request(raw: bytes) -> ReviewRequest:
    """Parse and validate a review body: 400 for malformed JSON, 422 for bad fields."""
    return _validated(ReviewRequest, parse_json(raw))


@dataclass(frozen=True)
class ReviewListing:
    """The query of ``GET /v1/payments?status=REVIEW&limit=&cursor=``."""

    limit: int
    cursor: str | None


def parse_review_listing(query: Mapping[str, str]) -> ReviewListing:
    """The listing's query parameters; a 422 problem naming each bad one (a cursor not made
    by this API is 400)."""
    errors = []
    status = query.get("status")
    if status != REVIEW:
        message = "field required" if status is None else "only status=REVIEW can be listed"
        errors.append(FieldError(field="status", message=message))
    limit = page_limit(query, DEFAULT_LISTING_LIMIT, MAX_LISTING_LIMIT, errors)
    errors += unknown_parameters(query, {"status", "limit", "cursor"})
    if errors:
        raise unprocessable(errors)
    cursor = query.get("cursor") or None
    if cursor is not None:
        try:
            decode_cursor(cursor)
        except InvalidCursorError as exc:
            raise bad_request("invalid-cursor", "Invalid cursor", str(exc)) from None
    return ReviewListing(limit, cursor)


def canonical_request(request: PaymentRequest) -> dict[str, Any]:
    """The request as stored and hashed: amount as ``"12.50"``, no absent or empty parts."""
    out: dict[str, Any] = {
        "account_id": request.account_id,
        "amount": str(request.amount),
        "currency": request.currency,
        "merchant_id": request.merchant_id,
    }
    if request.country is not None:
        out["country"] = request.country
    if request.metadata:
        out["metadata"] = dict(request.metadata)
    return out


def request_hash(request: PaymentRequest) -> str:
    """SHA-256 (hex) of the canonical request: equal for bodies that mean the same payment."""
    canonical = orjson.dumps(canonical_request(request), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()
