"""Bearer credentials to principals: JWTs and API keys, against the real emulator."""

from __future__ import annotations

import asyncio
import time

import jwt
import pytest

from pulse.api_keys import PAYMENTS_READ, SCOPES, ApiKeyTable, new_api_key
from pulse.auth import TokenVerifier, issue_token
from pulse.clients import aws_client
from pulse.credentials import (
    Authenticator,
    CredentialError,
    CredentialUnavailableError,
    Principal,
    bearer_credential,
    insufficient_scope,
    unauthorized,
)
from pulse.settings import CredentialSettings, PulseSettings
from pulse.topology import TopologyOutputs

SECRET = "credentials-test-secret-0123456789abcdef"
NOW = "2026-12-04T10:00:00Z"


@pytest.fixture
def table(topology: TopologyOutputs, stack_settings: PulseSettings) -> ApiKeyTable:
    return ApiKeyTable(aws_client("dynamodb", stack_settings), stack_settings.names.api_keys_table)


def _authenticator(table: ApiKeyTable | None, **kwargs: float) -> Authenticator:
    return Authenticator(TokenVerifier(algorithm="HS256", secret=SECRET), table, **kwargs)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        ("Basic dXNlcjpwYXNz", "missing"),  # another scheme: no bearer credential at all
        ("Bearer", "malformed"),
        ("Bearer    ", "malformed"),
    ],
)
def test_only_a_bearer_header_carries_a_credential(header: str | None, reason: str) -> None:
    with pytest.raises(CredentialError) as caught:
        bearer_credential(header)
    assert caught.value.reason == reason


def test_refusals_carry_the_rfc_6750_challenge() -> None:
    missing = unauthorized(CredentialError("missing", "send a bearer"))
    assert missing.status == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="pulse"'
    expired = unauthorized(CredentialError("expired", "the token has expired"))
    assert expired.headers["WWW-Authenticate"] == (
        'Bearer realm="pulse", error="invalid_token", error_description="the token has expired"'
    )
    assert expired.document()["type"] == "https://pulse.dev/problems/unauthorized"
    scope = insufficient_scope("payments:write")
    assert scope.status == 403
    assert scope.headers["WWW-Authenticate"] == (
        'Bearer realm="pulse", error="insufficient_scope", scope="payments:write"'
    )


def test_the_bearer_scheme_is_case_insensitive() -> None:
    assert bearer_credential("bearer abc") == "abc"
    assert bearer_credential("Bearer  abc ") == "abc"


async def test_a_jwt_is_its_account_with_every_scope() -> None:
    auth = _authenticator(None)
    principal = await auth.authenticate(issue_token(SECRET, sub="acct-1"))
    assert principal == Principal("jwt", "acct-1", SCOPES, frozenset())
    ops = await auth.authenticate(issue_token(SECRET, sub="alice", roles=["ops"]))
    assert ops.is_ops
    assert ops.label == "jwt:alice"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (jwt.encode({"sub": "a", "exp": int(time.time()) - 5}, SECRET, "HS256"), "expired"),
        (jwt.encode({"sub": "a", "exp": int(time.time()) + 60}, "x" * 40, "HS256"), "invalid"),
        (jwt.encode({"sub": "a"}, SECRET, "HS256"), "invalid"),  # no exp
        ("not.a.jwt", "invalid"),
        ("psk_nonsense", "malformed"),
    ],
)
async def test_bad_tokens_are_refused_with_their_reason(token: str, reason: str) -> None:
    with pytest.raises(CredentialError) as caught:
        await _authenticator(None).authenticate(token)
    assert caught.value.reason == reason
    assert token not in str(caught.value)


async def test_an_api_key_is_its_account_limited_to_its_scopes(table: ApiKeyTable) -> None:
    made = new_api_key("acct-3", name="", scopes=frozenset({PAYMENTS_READ}), now=NOW)
    table.put(made.key)
    auth = _authenticator(table, touch_interval_seconds=3600)
    principal = await auth.authenticate(made.token)
    assert principal == Principal(
        "api_key", "acct-3", frozenset({PAYMENTS_READ}), key_id=made.key.key_id
    )
    assert principal.label == f"key:{made.key.key_id}"
    assert not principal.is_ops
    await auth.close()
    stored = table.get(made.key.key_id)
    assert stored is not None
    assert stored.last_used_at is not None


async def test_unknown_keys_and_wrong_secrets_are_refused_alike(table: ApiKeyTable) -> None:
    made = new_api_key("acct-4", name="", now=NOW)
    table.put(made.key)
    auth = _authenticator(table)
    wrong_secret = made.token[:-1] + ("A" if made.token[-1] != "A" else "B")
    unknown = new_api_key("acct-4", name="", now=NOW).token
    for token in (wrong_secret, unknown):
        with pytest.raises(CredentialError) as caught:
            await auth.authenticate(token)
        assert (caught.value.reason, caught.value.description) == ("invalid", "unknown API key")


async def test_a_revoked_key_is_refused_once_the_cache_let_it_go(table: ApiKeyTable) -> None:
    made = new_api_key("acct-5", name="", now=NOW)
    table.put(made.key)
    auth = _authenticator(table, key_cache_seconds=0.5)
    assert (await auth.authenticate(made.token)).account_id == "acct-5"
    table.revoke(made.key.key_id, now=NOW)
    started = time.monotonic()

    async def refused() -> bool:
        try:
            await auth.authenticate(made.token)
        except CredentialError as exc:
            return exc.reason == "revoked"
        return False

    while not await refused():
        assert time.monotonic() - started < 5, "still accepted"
        await asyncio.sleep(0.05)
    assert time.monotonic() - started < 1.5  # the cache's lifetime, and not much more


async def test_last_use_is_written_at_most_once_per_interval(table: ApiKeyTable) -> None:
    made = new_api_key("acct-6", name="", now=NOW)
    table.put(made.key)
    auth = _authenticator(table, key_cache_seconds=0, touch_interval_seconds=3600)
    for _ in range(5):
        await auth.authenticate(made.token)
    await auth.close()
    first = table.get(made.key.key_id)
    assert first is not None
    assert first.last_used_at is not None
    table.touch(first, now="2000-01-01T00:00:00Z")
    await auth.authenticate(made.token)
    await auth.close()
    again = table.get(made.key.key_id)
    assert again is not None
    assert again.last_used_at == "2000-01-01T00:00:00Z"


async def test_an_unreachable_key_table_is_unavailable_not_a_refusal(
    stack_settings: PulseSettings,
) -> None:
    missing = ApiKeyTable(aws_client("dynamodb", stack_settings), "no-such-table")
    with pytest.raises(CredentialUnavailableError):
        await _authenticator(missing).authenticate(new_api_key("a", name="", now=NOW).token)


async def test_a_key_table_that_refuses_reads_is_unavailable_and_logged(
    stack_settings: PulseSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    """A read AWS refuses for good (a key schema it rejects here; no IAM grant on AWS) is not
    the caller's fault: 503, and an error line for the operator."""
    ddb = aws_client("dynamodb", stack_settings)
    name = f"{stack_settings.resource_prefix}wrong-keys"
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    refused = ApiKeyTable(ddb, name)
    with pytest.raises(CredentialUnavailableError):
        await _authenticator(refused).authenticate(new_api_key("a", name="", now=NOW).token)
    assert "the API-key table refuses reads" in capsys.readouterr().out


def test_the_public_development_secret_is_warned_about(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PULSE_JWT_SECRET", raising=False)
    TokenVerifier.from_settings(CredentialSettings())
    assert "public development secret" in capsys.readouterr().out
    monkeypatch.setenv("PULSE_JWT_SECRET", SECRET)
    TokenVerifier.from_settings(CredentialSettings())
    assert "public development secret" not in capsys.readouterr().out
