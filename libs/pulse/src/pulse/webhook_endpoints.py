"""Webhook endpoints: an account's receivers (the webhooks table) and their signing secrets
(SSM Parameter Store), one code path for ingest's ``/v1/webhook-endpoints`` and
``pulse webhooks``. This module is the store (:class:`WebhookEndpoints`: register, read,
list by pages, change, disable, remove, rotate a secret) and the notify worker's read of an
account's endpoints (:func:`query_account_endpoints`); an endpoint's record and the checks
of its fields are :mod:`pulse.webhook_endpoint_record`, the secrets' form and their read
:mod:`pulse.webhook_endpoint_secrets`, both re-exported here.

An endpoint is a row of ``{prefix}webhooks`` (hash ``account_id``, range ``endpoint_id``,
the index :data:`~pulse.topology.ENDPOINT_INDEX` by ``endpoint_id`` alone for operators, who name an
endpoint without its account): its fields are :class:`WebhookEndpoint`'s; ``failing_since``
is written by the notify worker, which disables an endpoint failing too long
(:mod:`pulse.webhook_endpoint_health`). Ids read ``ep_<32 hex>``.

**Secrets** are Standard Webhooks secrets, ``whsec_<base64 of 24 random bytes>``, shown once
(at creation, at rotation) and kept only as SecureString parameters:
``/{prefix}webhooks/{id}/secret`` holds the current one. :meth:`WebhookEndpoints.rotate_secret`
makes a new one and keeps the old one valid for an overlap
(``PULSE_WEBHOOK_SECRET_OVERLAP_SECONDS``, a day by default) in ``…/secret-previous``, as
JSON ``{"secret", "expires_at"}``; meanwhile deliveries carry a signature by each
(:func:`read_signing_secrets`, :meth:`SigningSecrets.valid`). Rotating again within the
overlap ends the older secret's at once: at most two secrets sign.

**URLs** pass :func:`pulse.webhook_targets.check_url` under the SSRF policy at creation and
at every change (:class:`UrlRefused`: the reason in words); the notify worker checks again,
resolving, at delivery.

Every call is blocking (boto3); an AWS failure is Pulse's error of its kind
(:mod:`pulse.aws_errors`). Field refusals are :class:`InvalidField` (which field, why).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import orjson
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from pulse.aws_errors import AWS_ERRORS, AwsErrorKind, as_pulse_error, classify_aws_error
from pulse.errors import PulseError
from pulse.events import iso_timestamp
from pulse.topology import ENDPOINT_INDEX
from pulse.webhook_endpoint_record import (
    ENDPOINT_ID_PATTERN,
    ENDPOINT_PREFIX,
    MAX_DESCRIPTION_LENGTH,
    MAX_RATE_PER_SECOND,
    MAX_URL_LENGTH,
    WEBHOOK_EVENT_TYPES,
    InvalidField,
    InvalidFields,
    UrlRefused,
    WebhookEndpoint,
    accepts,
    check_fields,
    is_endpoint_id,
    validate_description,
    validate_event_types,
    validate_rate,
    validate_schedule,
)
from pulse.webhook_endpoint_secrets import (
    SECRET_PREFIX,
    SigningSecrets,
    new_secret,
    previous_secret_parameter,
    read_signing_secrets,
)
from pulse.webhook_targets import SsrfPolicy, WebhookTargetSettings

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from pulse.topology import WebhookNames

__all__ = [
    "ENDPOINT_ID_PATTERN",
    "MAX_DESCRIPTION_LENGTH",
    "MAX_RATE_PER_SECOND",
    "MAX_URL_LENGTH",
    "SECRET_PREFIX",
    "WEBHOOK_EVENT_TYPES",
    "EndpointPage",
    "InvalidCursorError",
    "InvalidField",
    "InvalidFields",
    "NewEndpoint",
    "RotatedSecret",
    "SigningSecrets",
    "UrlRefused",
    "WebhookEndpoint",
    "WebhookEndpointSettings",
    "WebhookEndpoints",
    "accepts",
    "check_fields",
    "is_endpoint_id",
    "previous_secret_parameter",
    "query_account_endpoints",
    "read_signing_secrets",
    "validate_description",
    "validate_event_types",
    "validate_rate",
    "validate_schedule",
]

_MAX_CURSOR_PART: Final = 256


class WebhookEndpointSettings(WebhookTargetSettings):
    """What managing endpoints takes (``PULSE_WEBHOOK_*``): the SSRF guard's settings, the
    old secret's overlap after a rotation, and the most events one replay sends. Read by
    ingest and by ``pulse webhooks``."""

    model_config = SettingsConfigDict(
        env_prefix="PULSE_", frozen=True, extra="ignore", populate_by_name=True
    )

    # PULSE_WEBHOOK_SECRET_OVERLAP_SECONDS: how long a rotated-out secret still signs
    # deliveries (beside the new one), so receivers can switch without losing one.
    webhook_secret_overlap_seconds: int = Field(default=86_400, ge=0, le=30 * 86_400)
    # PULSE_WEBHOOK_REPLAY_MAX_EVENTS: the most events one replay request queues; the answer
    # says where to go on from.
    webhook_replay_max_events: int = Field(default=1000, ge=1, le=100_000)


class InvalidCursorError(ValueError):
    """A listing cursor that this module did not make (or made for another listing)."""


@dataclass(frozen=True)
class NewEndpoint:
    """An endpoint just made and the only copy of its secret."""

    endpoint: WebhookEndpoint
    secret: str = field(repr=False)


@dataclass(frozen=True)
class RotatedSecret:
    """The endpoint after a rotation, its new secret (shown once) and until when the old one
    still signs (None: there was no overlap)."""

    endpoint: WebhookEndpoint
    secret: str = field(repr=False)
    previous_valid_until: str | None


@dataclass(frozen=True)
class EndpointPage:
    items: list[WebhookEndpoint]
    next_cursor: str | None


def query_account_endpoints(ddb: Any, table: str, account_id: str) -> list[WebhookEndpoint]:
    """Every endpoint of ``account_id`` in ``table`` (consistent read), by endpoint id.
    Raises AWS's errors as they come."""
    pages = ddb.get_paginator("query").paginate(
        TableName=table,
        KeyConditionExpression="account_id = :a",
        ExpressionAttributeValues={":a": {"S": account_id}},
        ConsistentRead=True,
    )
    return [WebhookEndpoint.from_item(i) for page in pages for i in page.get("Items", [])]


def encode_cursor(last_key: Mapping[str, Any]) -> str:
    parts = [last_key["account_id"]["S"], last_key["endpoint_id"]["S"]]
    return base64.urlsafe_b64encode(orjson.dumps(parts)).decode().rstrip("=")


def decode_cursor(cursor: str, account_id: str | None) -> dict[str, Any]:
    """The ``ExclusiveStartKey`` of a cursor :func:`encode_cursor` made for this listing (an
    account's own, or every account's)."""
    try:
        parts = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        raise InvalidCursorError("the cursor is not one this API returned") from None
    if not (
        isinstance(parts, list)
        and len(parts) == 2  # noqa: PLR2004 - account and endpoint
        and all(isinstance(p, str) and 0 < len(p) <= _MAX_CURSOR_PART for p in parts)
        and (account_id is None or parts[0] == account_id)
    ):
        raise InvalidCursorError("the cursor is not one this API returned")
    return {"account_id": {"S": parts[0]}, "endpoint_id": {"S": parts[1]}}


def _stamp(now: datetime) -> str:
    return iso_timestamp(now)


class WebhookEndpoints:
    """The endpoints of every account: the webhooks table and the secrets' parameters.

    ``ddb`` and ``ssm`` are blocking boto3 clients; ``policy`` judges URLs; ``overlap_seconds``
    is how long a rotated-out secret still signs.
    """

    def __init__(
        self,
        ddb: Any,
        ssm: Any,
        names: WebhookNames,
        *,
        policy: SsrfPolicy,
        overlap_seconds: float = 86_400,
    ) -> None:
        self._ddb = ddb
        self._ssm = ssm
        self._names = names
        self._table = names.table
        self.policy = policy
        self._overlap = timedelta(seconds=overlap_seconds)

    @classmethod
    def of(
        cls, ddb: Any, ssm: Any, names: WebhookNames, settings: WebhookEndpointSettings
    ) -> WebhookEndpoints:
        return cls(
            ddb,
            ssm,
            names,
            policy=SsrfPolicy.from_settings(settings),
            overlap_seconds=settings.webhook_secret_overlap_seconds,
        )

    def _call(self, what: str, method: Any, **kwargs: Any) -> Any:
        try:
            return method(**kwargs)
        except AWS_ERRORS as exc:
            raise as_pulse_error(exc, what, delay=1.0) from exc

    # -- create, read ------------------------------------------------------------------
    def create(
        self,
        account_id: str,
        url: str,
        *,
        description: str | None = None,
        event_types: Sequence[str] | None = None,
        schedule: str | None = None,
        rate_per_second: int | None = None,
        now: datetime,
    ) -> NewEndpoint:
        """Register an endpoint of ``account_id``: its secret first (a row without one would
        have its deliveries dropped), then its row. :class:`InvalidFields` for bad fields."""
        fields = check_fields(
            {
                "url": url,
                "description": description,
                "event_types": event_types,
                "schedule": schedule,
                "rate_per_second": rate_per_second,
            },
            self.policy,
        )
        endpoint_id = f"{ENDPOINT_PREFIX}{uuid.uuid4().hex}"
        endpoint = WebhookEndpoint(
            account_id=account_id,
            endpoint_id=endpoint_id,
            secret_parameter=self._names.secret_parameter(endpoint_id),
            created_at=_stamp(now),
            **fields,
        )
        secret = new_secret()
        self._put_secret(endpoint.secret_parameter, secret)
        self._call(
            f"register webhook endpoint {endpoint_id}",
            self._ddb.put_item,
            TableName=self._table,
            Item=endpoint.to_item(),
            ConditionExpression="attribute_not_exists(endpoint_id)",
        )
        return NewEndpoint(endpoint, secret)

    def _put_secret(self, name: str, value: str) -> None:
        self._call(
            f"store webhook secret {name}",
            self._ssm.put_parameter,
            Name=name,
            Value=value,
            Type="SecureString",
            Overwrite=True,
        )

    def get(self, endpoint_id: str, account_id: str | None) -> WebhookEndpoint | None:
        """The endpoint ``endpoint_id`` of ``account_id`` (None: of whichever account, looked
        up by the endpoint index); None if there is none."""
        if not is_endpoint_id(endpoint_id):
            return None
        if account_id is None:
            account_id = self._owner(endpoint_id)
            if account_id is None:
                return None
        got = self._call(
            f"read webhook endpoint {endpoint_id}",
            self._ddb.get_item,
            TableName=self._table,
            Key=_key(account_id, endpoint_id),
            ConsistentRead=True,
        )
        item = got.get("Item")
        return WebhookEndpoint.from_item(item) if item else None

    def _owner(self, endpoint_id: str) -> str | None:
        """The account of ``endpoint_id``, from the endpoint index (eventually consistent:
        an endpoint registered a moment ago may not be found yet)."""
        found = self._call(
            f"find webhook endpoint {endpoint_id}",
            self._ddb.query,
            TableName=self._table,
            IndexName=ENDPOINT_INDEX,
            KeyConditionExpression="endpoint_id = :e",
            ExpressionAttributeValues={":e": {"S": endpoint_id}},
        ).get("Items", [])
        return str(found[0]["account_id"]["S"]) if found else None

    def account_endpoints(self, account_id: str) -> list[WebhookEndpoint]:
        """Every endpoint of ``account_id`` (consistent read), by endpoint id."""
        try:
            return query_account_endpoints(self._ddb, self._table, account_id)
        except AWS_ERRORS as exc:
            raise as_pulse_error(exc, f"webhook endpoints of {account_id}", delay=1.0) from exc

    def page(self, account_id: str | None, *, limit: int, cursor: str | None) -> EndpointPage:
        """One page of ``account_id``'s endpoints (by endpoint id), or of every account's
        (None; in the table's order); :class:`InvalidCursorError` for a cursor of another
        listing."""
        kwargs: dict[str, Any] = {"TableName": self._table, "Limit": limit}
        if cursor is not None:
            kwargs["ExclusiveStartKey"] = decode_cursor(cursor, account_id)
        if account_id is None:
            got = self._call("list webhook endpoints", self._ddb.scan, **kwargs)
        else:
            got = self._call(
                f"list webhook endpoints of {account_id}",
                self._ddb.query,
                KeyConditionExpression="account_id = :a",
                ExpressionAttributeValues={":a": {"S": account_id}},
                ConsistentRead=True,
                **kwargs,
            )
        last = got.get("LastEvaluatedKey")
        return EndpointPage(
            [WebhookEndpoint.from_item(i) for i in got.get("Items", [])],
            encode_cursor(last) if last else None,
        )

    # -- change ------------------------------------------------------------------------
    def update(
        self, endpoint: WebhookEndpoint, changes: Mapping[str, Any], *, now: datetime
    ) -> WebhookEndpoint | None:
        """Apply ``changes`` (``url``, ``description``, ``event_types``, ``schedule``,
        ``rate_per_second``: None clears all but the first; ``disabled``: a bool, False also
        clears the reason and ``failing_since``, a fresh start for the automatic disabling);
        the endpoint as it now stands, or None if it was removed meanwhile.
        :class:`InvalidFields` for bad fields."""
        values = check_fields(changes, self.policy)
        if values.get("disabled") is False:
            values["disabled_reason"] = None
            values["failing_since"] = None
        values["updated_at"] = _stamp(now)
        return self._set(endpoint, values)

    def disable(
        self, endpoint: WebhookEndpoint, reason: str, *, now: datetime
    ) -> WebhookEndpoint | None:
        """Stop sending to ``endpoint`` (the fan-out skips it), saying why; PATCH
        ``{"disabled": false}`` sends again. (The notify worker's automatic disabling is
        one conditional write of its own: :mod:`pulse.webhook_endpoint_health`.)"""
        return self._set(
            endpoint, {"disabled": True, "disabled_reason": reason, "updated_at": _stamp(now)}
        )

    def _set(self, endpoint: WebhookEndpoint, values: Mapping[str, Any]) -> WebhookEndpoint | None:
        sets, removes = [], []
        names: dict[str, str] = {}
        attributes: dict[str, Any] = {}
        staged = replace(endpoint, **values)
        item = staged.to_item()
        for i, name in enumerate(values):
            names[f"#n{i}"] = name
            if name in item:
                sets.append(f"#n{i} = :v{i}")
                attributes[f":v{i}"] = item[name]
            else:
                removes.append(f"#n{i}")
        expression = " ".join(
            part
            for part in (
                f"SET {', '.join(sets)}" if sets else "",
                f"REMOVE {', '.join(removes)}" if removes else "",
            )
            if part
        )
        try:
            got = self._ddb.update_item(
                TableName=self._table,
                Key=_key(endpoint.account_id, endpoint.endpoint_id),
                UpdateExpression=expression,
                ConditionExpression="attribute_exists(endpoint_id)",
                ExpressionAttributeNames=names,
                ReturnValues="ALL_NEW",
                **({"ExpressionAttributeValues": attributes} if attributes else {}),
            )
        except AWS_ERRORS as exc:
            if classify_aws_error(exc) is AwsErrorKind.CONDITION_FAILED:
                return None
            raise as_pulse_error(exc, f"update webhook endpoint {endpoint.endpoint_id}") from exc
        return WebhookEndpoint.from_item(got["Attributes"])

    def delete(self, account_id: str, endpoint_id: str) -> WebhookEndpoint | None:
        """Remove the endpoint and its secrets (deliveries already queued for it are then
        dropped); the endpoint removed, or None if there was none."""
        if not is_endpoint_id(endpoint_id):
            return None
        got = self._call(
            f"remove webhook endpoint {endpoint_id}",
            self._ddb.delete_item,
            TableName=self._table,
            Key=_key(account_id, endpoint_id),
            ReturnValues="ALL_OLD",
        )
        if not got.get("Attributes"):
            return None
        removed = WebhookEndpoint.from_item(got["Attributes"])
        for name in (
            removed.secret_parameter,
            previous_secret_parameter(removed.secret_parameter),
        ):
            self._delete_parameter(name)
        return removed

    def _delete_parameter(self, name: str) -> None:
        try:
            self._ssm.delete_parameter(Name=name)
        except AWS_ERRORS as exc:
            if classify_aws_error(exc) is not AwsErrorKind.NOT_FOUND:
                raise as_pulse_error(exc, f"remove webhook secret {name}") from exc

    # -- secrets -----------------------------------------------------------------------
    def signing_secrets(self, endpoint: WebhookEndpoint) -> SigningSecrets | None:
        try:
            return read_signing_secrets(self._ssm, endpoint.secret_parameter)
        except AWS_ERRORS as exc:
            raise as_pulse_error(exc, f"read webhook secret of {endpoint.endpoint_id}") from exc

    def rotate_secret(self, endpoint: WebhookEndpoint, *, now: datetime) -> RotatedSecret | None:
        """A new secret for ``endpoint``; the current one keeps signing for the overlap
        (beside the new one). None if the endpoint was removed meanwhile."""
        current = self.signing_secrets(endpoint)
        until: str | None = None
        previous_name = previous_secret_parameter(endpoint.secret_parameter)
        if current is not None and self._overlap.total_seconds() > 0:
            until = _stamp(now + self._overlap)
            kept = orjson.dumps({"secret": current.current, "expires_at": until}).decode()
            self._put_secret(previous_name, kept)
        else:
            self._delete_parameter(previous_name)
        secret = new_secret()
        self._put_secret(endpoint.secret_parameter, secret)
        updated = self._set(
            endpoint,
            {
                "secret_rotated_at": _stamp(now),
                "previous_secret_expires_at": until,
                "updated_at": _stamp(now),
            },
        )
        if updated is None:  # removed while rotating: leave no secret behind
            with contextlib.suppress(PulseError):
                self._delete_parameter(endpoint.secret_parameter)
                self._delete_parameter(previous_name)
            return None
        return RotatedSecret(updated, secret, until)


def _key(account_id: str, endpoint_id: str) -> dict[str, Any]:
    return {"account_id": {"S": account_id}, "endpoint_id": {"S": endpoint_id}}
