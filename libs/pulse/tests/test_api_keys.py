"""API keys: the format, the hash, and the table (against the real emulator)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from pulse.api_keys import (
    PAYMENTS_READ,
    PAYMENTS_WRITE,
    SCOPES,
    WEBHOOKS_MANAGE,
    ApiKey,
    ApiKeyTable,
    new_api_key,
    parse_api_key,
)
from pulse.cli import main
from pulse.clients import aws_client
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs

NOW = "2026-12-04T10:00:00Z"


def test_a_key_is_prefixed_names_its_id_and_carries_32_random_bytes() -> None:
    made = new_api_key("acct-1", name="backend", now=NOW)
    token = made.token
    assert token.startswith(f"psk_{made.key.key_id}_")
    parsed = parse_api_key(token)
    assert parsed is not None
    key_id, secret = parsed
    assert key_id == made.key.key_id
    assert len(secret) == 43  # 32 bytes, base64url
    assert made.key.matches(secret)
    assert secret not in repr(made)
    assert secret not in repr(made.key)
    assert made.key.secret_hash != secret
    assert new_api_key("acct-1", name="x", now=NOW).token != token


@pytest.mark.parametrize(
    "text",
    [
        "",
        "psk_",
        "psk_0123456789abcdef",
        "psk_0123456789abcdef_short",
        "psk_0123456789ABCDEF_" + "a" * 43,  # the id is lowercase hex
        "psk_0123456789abcdef_" + "a" * 44,
        "sk_0123456789abcdef_" + "a" * 43,
        "psk_0123456789abcdef_" + "a" * 42 + "!",
    ],
)
def test_malformed_keys_are_not_parsed(text: str) -> None:
    assert parse_api_key(text) is None


def test_a_wrong_secret_does_not_match() -> None:
    made = new_api_key("acct-1", name="", now=NOW)
    parsed = parse_api_key(made.token)
    assert parsed is not None
    assert not made.key.matches(parsed[1][:-1] + ("A" if parsed[1][-1] != "A" else "B"))


def test_scopes_must_be_known_and_not_empty() -> None:
    # managing webhooks is asked for by name: a key has the payment scopes by default
    assert new_api_key("a", name="", now=NOW).key.scopes == {PAYMENTS_READ, PAYMENTS_WRITE}
    assert new_api_key("a", name="", scopes=SCOPES, now=NOW).key.scopes == {
        PAYMENTS_READ,
        PAYMENTS_WRITE,
        WEBHOOKS_MANAGE,
    }
    assert new_api_key("a", name="", scopes=frozenset({PAYMENTS_READ}), now=NOW).key.scopes == {
        PAYMENTS_READ
    }
    for bad in (frozenset(), frozenset({"payments:delete"})):
        with pytest.raises(ValueError, match="scopes"):
            new_api_key("a", name="", scopes=bad, now=NOW)


def test_an_item_round_trips_without_the_secret() -> None:
    key = new_api_key("acct-9", name="n", now=NOW).key
    item = key.to_item()
    assert ApiKey.from_item(item) == key
    assert set(item) == {"key_id", "account_id", "name", "scopes", "created_at", "secret_hash"}


def test_the_table_stores_lists_touches_and_revokes(
    topology: TopologyOutputs, stack_settings: PulseSettings
) -> None:
    table = ApiKeyTable(aws_client("dynamodb", stack_settings), stack_settings.names.api_keys_table)
    first = new_api_key("acct-1", name="one", now=NOW).key
    second = new_api_key("acct-2", name="two", scopes=frozenset({PAYMENTS_WRITE}), now=NOW).key
    table.put(first)
    table.put(second)
    assert table.get(first.key_id) == first
    assert table.get("0000000000000000") is None
    assert [k.key_id for k in table.list("acct-2")] == [second.key_id]
    assert {k.key_id for k in table.list()} == {first.key_id, second.key_id}
    touched = table.touch(first, now="2026-12-04T10:05:00Z")
    assert table.get(first.key_id) == touched
    assert touched.last_used_at == "2026-12-04T10:05:00Z"
    revoked = table.revoke(first.key_id, now="2026-12-04T11:00:00Z")
    assert revoked is not None
    assert revoked.revoked
    again = table.revoke(first.key_id, now="2026-12-04T12:00:00Z")
    assert again is not None
    assert again.revoked_at == "2026-12-04T11:00:00Z"
    assert table.revoke("0000000000000000", now=NOW) is None


def test_the_keys_commands(topology: TopologyOutputs, stack_env: dict[str, str]) -> None:
    runner = CliRunner()
    made = runner.invoke(
        main,
        ["keys", "create", "--account", "acct-7", "--name", "shop", "--scope", "payments:read"],
        env=stack_env,
    )
    assert made.exit_code == 0, made.output
    lines = dict(line.split(": ", 1) for line in made.stdout.splitlines())
    key_id, token = lines["key id"], lines["api key"]
    assert token.startswith(f"psk_{key_id}_")
    assert lines["scopes"] == "payments:read"
    listed = runner.invoke(main, ["keys", "list", "--account", "acct-7"], env=stack_env)
    assert listed.exit_code == 0
    assert key_id in listed.output
    assert "never" in listed.output
    assert "active" in listed.output
    assert "shop" in listed.output
    assert token.split("_", 2)[2] not in listed.output  # never the secret
    revoked = runner.invoke(main, ["keys", "revoke", key_id], env=stack_env)
    assert revoked.exit_code == 0
    assert "within PULSE_API_KEY_CACHE_SECONDS (5 s" in revoked.output
    assert "revoked 20" in runner.invoke(main, ["keys", "list"], env=stack_env).output
    missing = runner.invoke(main, ["keys", "revoke", "0000000000000000"], env=stack_env)
    assert missing.exit_code == 1
    bad = runner.invoke(main, ["keys", "create", "--account", "a", "--scope", "all"])
    assert bad.exit_code == 2
