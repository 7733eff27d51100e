"""API keys for merchant backends: ``psk_<key id>_<secret>``, stored only as a hash.

A key reads ``psk_`` + a key id (16 lowercase hex characters: 8 random bytes; the table's key,
safe to log and to show) + ``_`` + a secret (43 characters: 32 random bytes, base64url). It is
printed once, when created (``pulse keys create``); the API-keys table keeps the key id, the
account, a name, the scopes, the times it was created, last used and revoked, and the
SHA-256 of the secret — never the secret.

A fast hash is the right one here: the secret carries 256 random bits, so neither a
dictionary nor a brute-force search of the hash can find it (slow password hashes protect
secrets people chose). The stored and the offered hashes are compared in constant time.

Scopes limit what a key may do, always for the key's own account: ``payments:write``
(create payments), ``payments:read`` (read payments and their audit trails) and
``webhooks:manage`` (register, change, remove, test and replay its webhook endpoints, and
rotate their signing secrets). A key created without ``--scope`` has the two payment scopes
(:data:`DEFAULT_SCOPES`): managing webhooks is asked for by name.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field, replace
from typing import Any, Final

from pulse.aws_errors import AWS_ERRORS, AwsErrorKind, as_pulse_error, classify_aws_error

__all__ = [
    "API_KEY_PREFIX",
    "DEFAULT_SCOPES",
    "PAYMENTS_READ",
    "PAYMENTS_WRITE",
    "SCOPES",
    "WEBHOOKS_MANAGE",
    "ApiKey",
    "ApiKeyTable",
    "NewApiKey",
    "new_api_key",
    "parse_api_key",
]

API_KEY_PREFIX: Final = "psk_"
PAYMENTS_WRITE: Final = "payments:write"
PAYMENTS_READ: Final = "payments:read"
WEBHOOKS_MANAGE: Final = "webhooks:manage"
SCOPES: Final = frozenset({PAYMENTS_WRITE, PAYMENTS_READ, WEBHOOKS_MANAGE})
# A key's scopes unless others are asked for.
DEFAULT_SCOPES: Final = frozenset({PAYMENTS_WRITE, PAYMENTS_READ})
_KEY_ID_BYTES: Final = 8
_SECRET_BYTES: Final = 32
_FORMAT: Final = re.compile(r"psk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    """A stored key: everything but its secret."""

    key_id: str
    account_id: str
    name: str
    scopes: frozenset[str]
    created_at: str
    secret_hash: str = field(repr=False)
    last_used_at: str | None = None
    revoked_at: str | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def matches(self, secret: str) -> bool:
        """Whether ``secret`` is this key's, compared in constant time."""
        return hmac.compare_digest(_digest(secret), self.secret_hash)

    def to_item(self) -> dict[str, Any]:
        """The DynamoDB item (attribute-value form)."""
        item: dict[str, Any] = {
            "key_id": {"S": self.key_id},
            "account_id": {"S": self.account_id},
            "name": {"S": self.name},
            "scopes": {"L": [{"S": s} for s in sorted(self.scopes)]},
            "created_at": {"S": self.created_at},
            "secret_hash": {"S": self.secret_hash},
        }
        for name in ("last_used_at", "revoked_at"):
            value = getattr(self, name)
            if value is not None:
                item[name] = {"S": value}
        return item

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> ApiKey:
        def text(name: str) -> str | None:
            value = item.get(name)
            return str(value["S"]) if value else None

        return cls(
            key_id=str(item["key_id"]["S"]),
            account_id=str(item["account_id"]["S"]),
            name=text("name") or "",
            scopes=frozenset(str(s["S"]) for s in item.get("scopes", {}).get("L", [])),
            created_at=str(item["created_at"]["S"]),
            secret_hash=str(item["secret_hash"]["S"]),
            last_used_at=text("last_used_at"),
            revoked_at=text("revoked_at"),
        )


@dataclass(frozen=True)
class NewApiKey:
    """A key just made: its record, and the only copy of the full key (``token``)."""

    key: ApiKey
    token: str = field(repr=False)


def new_api_key(
    account_id: str, *, name: str, scopes: frozenset[str] = DEFAULT_SCOPES, now: str
) -> NewApiKey:
    """A new key for ``account_id``; ``ValueError`` for an empty or unknown scope."""
    unknown = scopes - SCOPES
    if not scopes or unknown:
        raise ValueError(f"scopes must be among {sorted(SCOPES)}, got {sorted(scopes)}")
    key_id = secrets.token_hex(_KEY_ID_BYTES)
    secret = secrets.token_urlsafe(_SECRET_BYTES)
    key = ApiKey(key_id, account_id, name, frozenset(scopes), now, _digest(secret))
    return NewApiKey(key, f"{API_KEY_PREFIX}{key_id}_{secret}")


def parse_api_key(token: str) -> tuple[str, str] | None:
    """``(key id, secret)`` of a well-formed key, else None."""
    match = _FORMAT.fullmatch(token)
    return (match.group(1), match.group(2)) if match else None


class ApiKeyTable:
    """The API-keys table (hash key ``key_id``), over a blocking boto3 DynamoDB client."""

    def __init__(self, ddb: Any, table: str) -> None:
        self._ddb = ddb
        self.table = table

    def put(self, key: ApiKey) -> None:
        """Store a new key (never overwriting one with the same id)."""
        try:
            self._ddb.put_item(
                TableName=self.table,
                Item=key.to_item(),
                ConditionExpression="attribute_not_exists(key_id)",
            )
        except AWS_ERRORS as exc:
            raise as_pulse_error(exc, f"store API key {key.key_id}") from exc

    def get(self, key_id: str) -> ApiKey | None:
        try:
            got = self._ddb.get_item(
                TableName=self.table, Key={"key_id": {"S": key_id}}, ConsistentRead=True
            )
        except AWS_ERRORS as exc:
            raise as_pulse_error(exc, f"read API key {key_id}", delay=1.0) from exc
        item = got.get("Item")
        return ApiKey.from_item(item) if item else None

    def list(self, account_id: str | None = None) -> list[ApiKey]:
        """Every key (of ``account_id``), oldest first."""
        kwargs: dict[str, Any] = {"TableName": self.table}
        if account_id is not None:
            kwargs["FilterExpression"] = "account_id = :a"
            kwargs["ExpressionAttributeValues"] = {":a": {"S": account_id}}
        try:
            pages = self._ddb.get_paginator("scan").paginate(**kwargs)
            keys = [ApiKey.from_item(i) for page in pages for i in page.get("Items", [])]
        except AWS_ERRORS as exc:
            raise as_pulse_error(exc, "list API keys") from exc
        return sorted(keys, key=lambda k: (k.created_at, k.key_id))

    def revoke(self, key_id: str, *, now: str) -> ApiKey | None:
        """Mark the key revoked (once: a second revoke keeps the first time); None if there is
        no such key."""
        try:
            got = self._ddb.update_item(
                TableName=self.table,
                Key={"key_id": {"S": key_id}},
                UpdateExpression="SET revoked_at = if_not_exists(revoked_at, :now)",
                ConditionExpression="attribute_exists(key_id)",
                ExpressionAttributeValues={":now": {"S": now}},
                ReturnValues="ALL_NEW",
            )
        except AWS_ERRORS as exc:
            if classify_aws_error(exc) is AwsErrorKind.CONDITION_FAILED:
                return None
            raise as_pulse_error(exc, f"revoke API key {key_id}") from exc
        return ApiKey.from_item(got["Attributes"])

    def touch(self, key: ApiKey, *, now: str) -> ApiKey:
        """Record that ``key`` was used at ``now``; the key as it now stands."""
        try:
            self._ddb.update_item(
                TableName=self.table,
                Key={"key_id": {"S": key.key_id}},
                UpdateExpression="SET last_used_at = :now",
                ConditionExpression="attribute_exists(key_id)",
                ExpressionAttributeValues={":now": {"S": now}},
            )
        except AWS_ERRORS as exc:
            raise as_pulse_error(exc, f"record use of API key {key.key_id}") from exc
        return replace(key, last_used_at=now)
