"""A webhook endpoint's record: its fields, the check each field's value passes, and its row
of ``{prefix}webhooks`` (:class:`WebhookEndpoint`: ``to_item``, ``from_item``). No AWS call
here: the table and the secrets are :mod:`pulse.webhook_endpoints`', which re-exports the
names its callers import from here.

An endpoint has its ``url``, a ``description``, the ``event_types`` it wants (absent:
every type of :data:`WEBHOOK_EVENT_TYPES`; :func:`accepts`), whether it is ``disabled``, a
delivery ``schedule`` (a five-field cron expression: the windows it is sent in,
:mod:`pulse.webhook_windows`; none: always), its ``rate_per_second`` (absent: the notify
worker's ``PULSE_WEBHOOK_RATE_PER_SECOND``), the name of its secret's parameter, and
``failing_since`` (written by the notify worker: :mod:`pulse.webhook_endpoint_health`).
Ids read ``ep_<32 hex>``.

**URLs** pass :func:`pulse.webhook_targets.check_url` under the SSRF policy at creation and
at every change (:class:`UrlRefused`: the reason in words); the notify worker checks again,
resolving, at delivery. Field refusals are :class:`InvalidField` (which field, why);
:func:`check_fields` gathers every one of a request in :class:`InvalidFields`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from croniter import croniter

from pulse.errors import PulseError
from pulse.events import NOTIFICATION, WEBHOOK_ENDPOINT_DISABLED
from pulse.webhook_targets import TargetRefused, check_url
from pulse.webhook_windows import window_gap_refusal

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from pulse.webhook_targets import SsrfPolicy

__all__ = [
    "ENDPOINT_ID_PATTERN",
    "ENDPOINT_PREFIX",
    "MAX_DESCRIPTION_LENGTH",
    "MAX_RATE_PER_SECOND",
    "MAX_URL_LENGTH",
    "WEBHOOK_EVENT_TYPES",
    "InvalidField",
    "InvalidFields",
    "UrlRefused",
    "WebhookEndpoint",
    "accepts",
    "check_fields",
    "is_endpoint_id",
    "validate_description",
    "validate_event_types",
    "validate_rate",
    "validate_schedule",
    "validate_url",
]

ENDPOINT_PREFIX: Final = "ep_"
ENDPOINT_ID_PATTERN: Final = r"^ep_[0-9a-f]{32}$"
# What the fan-out sends, and so what an endpoint's ``event_types`` may name.
WEBHOOK_EVENT_TYPES: Final = {
    NOTIFICATION: "a payment's status changed (approved, declined, held for review, …)",
    WEBHOOK_ENDPOINT_DISABLED: "another endpoint of the account failed continuously and "
    "was disabled (PATCH it with disabled: false to send to it again)",
}
MAX_URL_LENGTH: Final = 2048
MAX_DESCRIPTION_LENGTH: Final = 256
MAX_RATE_PER_SECOND: Final = 10_000
_ENDPOINT_ID: Final = re.compile(ENDPOINT_ID_PATTERN)
_CRON_FIELDS: Final = 5


class InvalidField(PulseError):  # noqa: N818 - a refusal of input, named for what it is
    """A field of an endpoint that cannot be taken: ``field`` and why (``message``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class UrlRefused(InvalidField):
    """A URL the SSRF policy refuses (:class:`~pulse.webhook_targets.TargetRefused`)."""

    def __init__(self, refused: TargetRefused) -> None:
        super().__init__("url", str(refused))
        self.reason = refused.reason
        self.setting = refused.setting


class InvalidFields(PulseError):  # noqa: N818 - a refusal of input, named for what it is
    """Every field of a request that cannot be taken (:class:`InvalidField` each)."""

    def __init__(self, errors: Sequence[InvalidField]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = list(errors)

    @property
    def url_refused(self) -> UrlRefused | None:
        """The URL's refusal by the SSRF policy, if it is one of the errors."""
        return next((e for e in self.errors if isinstance(e, UrlRefused)), None)


def is_endpoint_id(value: str) -> bool:
    return _ENDPOINT_ID.fullmatch(value) is not None


def accepts(event_types: Iterable[str] | None, event_type: str) -> bool:
    """Whether an endpoint whose filter is ``event_types`` (None: every type) wants an event
    of ``event_type``. Pure."""
    return event_types is None or event_type in event_types


def validate_url(url: object, policy: SsrfPolicy) -> str:
    """``url`` if it may be registered: a string of at most :data:`MAX_URL_LENGTH` printable
    ASCII characters the SSRF policy lets through (:class:`UrlRefused` for a string that is
    not one, :class:`InvalidField` for no string or a length out of bounds)."""
    if not isinstance(url, str) or not url:
        raise InvalidField("url", "must be a non-empty string")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidField("url", f"must be at most {MAX_URL_LENGTH} characters")
    if not url.isascii() or any(c <= " " or c == "\x7f" for c in url):
        raise UrlRefused(
            TargetRefused(
                "a URL is printable ASCII without spaces (percent-encode the rest; an "
                "international host name in its xn-- form)"
            )
        )
    try:
        check_url(url, policy)
    except TargetRefused as exc:
        raise UrlRefused(exc) from None
    return url


def validate_description(description: object) -> str | None:
    if description is None:
        return None
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_LENGTH:
        raise InvalidField(
            "description", f"must be a string of at most {MAX_DESCRIPTION_LENGTH} characters"
        )
    return description


def validate_event_types(event_types: object) -> tuple[str, ...] | None:
    """The filter as stored (sorted, each once); None (every type) stays None."""
    if event_types is None:
        return None
    known = ", ".join(sorted(WEBHOOK_EVENT_TYPES))
    if (
        not isinstance(event_types, list | tuple)
        or not event_types
        or not all(isinstance(t, str) for t in event_types)
    ):
        raise InvalidField(
            "event_types", f"must be a non-empty list of event types (of: {known}), or null"
        )
    unknown = sorted({t for t in event_types if t not in WEBHOOK_EVENT_TYPES})
    if unknown:
        raise InvalidField("event_types", f"unknown event type {unknown[0]!r} (known: {known})")
    return tuple(sorted(set(event_types)))


def validate_schedule(schedule: object) -> str | None:
    """A five-field cron expression (minute hour day-of-month month day-of-week) as given,
    checked by ``croniter``, whose windows are at most 7 days apart
    (:func:`pulse.webhook_windows.window_gap_refusal`); None stays None."""
    if schedule is None:
        return None
    words = (
        "must be a cron expression of five fields (minute hour day-of-month month "
        "day-of-week), such as */5 * * * * or 0 9-17 * * mon-fri"
    )
    if not isinstance(schedule, str) or len(schedule) > MAX_DESCRIPTION_LENGTH:
        raise InvalidField("schedule", words)
    if len(schedule.split()) != _CRON_FIELDS or not croniter.is_valid(schedule):
        raise InvalidField("schedule", words)
    refusal = window_gap_refusal(schedule)
    if refusal is not None:
        raise InvalidField("schedule", refusal)
    return schedule


def validate_rate(rate: object) -> int | None:
    """Requests a second to the endpoint at most: a whole number 1 to
    :data:`MAX_RATE_PER_SECOND`; None (the worker's default) stays None."""
    if rate is None:
        return None
    # JSON has numbers, not integers: 10.0 is the whole number 10 (as JSON Schema says).
    if isinstance(rate, float) and rate.is_integer():
        rate = int(rate)
    if isinstance(rate, bool) or not isinstance(rate, int) or not 1 <= rate <= MAX_RATE_PER_SECOND:
        raise InvalidField(
            "rate_per_second", f"must be a whole number from 1 to {MAX_RATE_PER_SECOND}, or null"
        )
    return rate


@dataclass(frozen=True)
class WebhookEndpoint:
    """One endpoint, as stored (everything but its secret)."""

    account_id: str
    endpoint_id: str
    url: str
    secret_parameter: str
    created_at: str
    description: str | None = None
    event_types: tuple[str, ...] | None = None
    disabled: bool = False
    disabled_reason: str | None = None
    schedule: str | None = None
    rate_per_second: int | None = None
    updated_at: str | None = None
    secret_rotated_at: str | None = None
    previous_secret_expires_at: str | None = None
    # Since when every attempt failed (none succeeded since): pulse.webhook_endpoint_health.
    failing_since: str | None = None

    def accepts(self, event_type: str) -> bool:
        """Whether the fan-out sends it an event of ``event_type``: enabled, and the type in
        its filter."""
        return not self.disabled and accepts(self.event_types, event_type)

    def public(self) -> dict[str, Any]:
        """The endpoint as the API shows it (no parameter names, no secret)."""
        return {
            "endpoint_id": self.endpoint_id,
            "account_id": self.account_id,
            "url": self.url,
            "description": self.description,
            "event_types": list(self.event_types) if self.event_types is not None else None,
            "disabled": self.disabled,
            "disabled_reason": self.disabled_reason,
            "schedule": self.schedule,
            "rate_per_second": self.rate_per_second,
            "created_at": self.created_at,
            "updated_at": self.updated_at or self.created_at,
            "secret_rotated_at": self.secret_rotated_at,
            "previous_secret_expires_at": self.previous_secret_expires_at,
            "failing_since": self.failing_since,
        }

    def to_item(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "account_id": {"S": self.account_id},
            "endpoint_id": {"S": self.endpoint_id},
            "url": {"S": self.url},
            "secret_parameter": {"S": self.secret_parameter},
            "created_at": {"S": self.created_at},
        }
        if self.event_types is not None:
            item["event_types"] = {"L": [{"S": t} for t in self.event_types]}
        if self.disabled:
            item["disabled"] = {"BOOL": True}
        if self.rate_per_second is not None:
            item["rate_per_second"] = {"N": str(self.rate_per_second)}
        for name in _OPTIONAL_TEXT:
            value = getattr(self, name)
            if value is not None:
                item[name] = {"S": value}
        return item

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> WebhookEndpoint:
        def text(name: str) -> str | None:
            value = item.get(name)
            return str(value["S"]) if value and "S" in value else None

        types = item.get("event_types")
        rate = item.get("rate_per_second")
        return cls(
            account_id=str(item["account_id"]["S"]),
            endpoint_id=str(item["endpoint_id"]["S"]),
            url=str(item["url"]["S"]),
            secret_parameter=str(item["secret_parameter"]["S"]),
            created_at=text("created_at") or "",
            event_types=tuple(str(t["S"]) for t in types["L"]) if types else None,
            disabled=bool(item.get("disabled", {}).get("BOOL", False)),
            rate_per_second=int(rate["N"]) if rate else None,
            **{name: text(name) for name in _OPTIONAL_TEXT},
        )


_OPTIONAL_TEXT: Final = (
    "description",
    "disabled_reason",
    "schedule",
    "updated_at",
    "secret_rotated_at",
    "previous_secret_expires_at",
    "failing_since",
)


def _disabled(value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidField("disabled", "must be true or false")
    return value


# The fields a request may set, and the check of each (the URL's takes the policy).
_CHECKS: Final = {
    "description": validate_description,
    "event_types": validate_event_types,
    "schedule": validate_schedule,
    "rate_per_second": validate_rate,
    "disabled": _disabled,
}


def check_fields(values: Mapping[str, Any], policy: SsrfPolicy) -> dict[str, Any]:
    """``values`` (``url``, ``description``, ``event_types``, ``schedule``,
    ``rate_per_second``, ``disabled``) as stored; :class:`InvalidFields` naming every one
    that cannot be taken, an unknown name among them."""
    checked: dict[str, Any] = {}
    errors: list[InvalidField] = []
    for name, value in values.items():
        if name != "url" and name not in _CHECKS:
            errors.append(InvalidField(name, "unknown field"))
            continue
        try:
            checked[name] = validate_url(value, policy) if name == "url" else _CHECKS[name](value)
        except InvalidField as exc:
            errors.append(exc)
    if errors:
        raise InvalidFields(errors)
    return checked
