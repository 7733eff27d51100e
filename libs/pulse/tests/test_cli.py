from importlib.metadata import version

import pytest
from click.testing import CliRunner

from pulse.auth import verify_token
from pulse.cli import main
from pulse.settings import DEV_JWT_SECRET


def test_help_lists_every_command_once() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    listed = result.output.split("Commands:", 1)[1].splitlines()
    # A command's row starts two spaces in; a short help that wraps goes on further in.
    names = [line.split()[0] for line in listed if line.startswith("  ") and line[2:3].strip()]
    assert sorted(names) == sorted(set(names))
    expected = {"dev", "token", "load", "tail", "fraud", "keys", "webhooks", "review", "dlq"}
    assert expected <= set(names)
    assert set(names) == set(main.commands)


def test_version_is_the_installed_package_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"pulse {version('pulse')}\n"


def test_token_is_signed_with_the_configured_secret() -> None:
    result = CliRunner().invoke(
        main,
        ["token", "--sub", "alice", "--roles", "ops, audit"],
        env={"PULSE_JWT_SECRET": DEV_JWT_SECRET},
    )
    assert result.exit_code == 0
    claims = verify_token(result.output.strip(), DEV_JWT_SECRET)
    assert claims.sub == "alice"
    assert claims.roles == {"ops", "audit"}


def test_token_requires_a_subject() -> None:
    result = CliRunner().invoke(main, ["token"])
    assert result.exit_code == 2
    assert "--sub" in result.output


def test_load_refuses_a_zero_rate() -> None:
    result = CliRunner().invoke(main, ["load", "--rate", "0"])
    assert result.exit_code == 2
    assert "rate" in result.output.lower()


def test_fraud_block_unblock_and_list_keep_redis_sets(redis_url: str) -> None:
    import redis  # noqa: PLC0415

    from pulse.blocklists import blocklist_key  # noqa: PLC0415

    prefix = "pulse:cli-test-blocklist:"
    env = {"REDIS_URL": redis_url, "PULSE_REDIS_PREFIX": prefix}
    runner = CliRunner()
    result = runner.invoke(
        main,
        ["fraud", "block", "--account", "a-1", "--merchant", "m-9", "--merchant", "m-8"],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert "blocked 2 merchants (2 new)" in result.output
    listed = runner.invoke(main, ["fraud", "list"], env=env)
    assert listed.output.splitlines() == ["account a-1", "merchant m-8", "merchant m-9"]

    result = runner.invoke(main, ["fraud", "unblock", "--merchant", "m-9"], env=env)
    assert result.exit_code == 0
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.smembers(blocklist_key(prefix, "merchants")) == {b"m-8"}
        assert client.smembers(blocklist_key(prefix, "accounts")) == {b"a-1"}
    finally:
        client.delete(blocklist_key(prefix, "merchants"), blocklist_key(prefix, "accounts"))
        client.close()


def test_fraud_block_needs_an_id_and_has_help() -> None:
    result = CliRunner().invoke(main, ["fraud", "block"])
    assert result.exit_code == 2
    assert "--account or --merchant" in result.output
    helped = CliRunner().invoke(main, ["fraud", "--help"])
    assert helped.exit_code == 0
    for command in ("block", "unblock", "list"):
        assert command in helped.output


def test_webhooks_add_list_remove(
    topology: object, stack_env: dict[str, str], stack_settings: object
) -> None:
    from pulse.clients import aws_client  # noqa: PLC0415
    from pulse.settings import PulseSettings  # noqa: PLC0415
    from pulse.topology import WebhookNames  # noqa: PLC0415

    assert isinstance(stack_settings, PulseSettings)
    runner = CliRunner()
    added = runner.invoke(
        main,
        ["webhooks", "add", "--account", "acct-1", "--url", "https://example.com/h"],
        env=stack_env,
    )
    assert added.exit_code == 0, added.output
    fields = dict(line.split(": ", 1) for line in added.output.splitlines())
    endpoint, secret = fields["endpoint"], fields["secret"]
    assert secret.startswith("whsec_")
    names = WebhookNames.from_prefix(stack_settings.resource_prefix)
    ssm = aws_client("ssm", stack_settings)
    stored = ssm.get_parameter(Name=names.secret_parameter(endpoint), WithDecryption=True)
    assert stored["Parameter"]["Value"] == secret
    assert stored["Parameter"]["Type"] == "SecureString"

    listed = runner.invoke(main, ["webhooks", "list", "--account", "acct-1"], env=stack_env)
    assert listed.output.splitlines() == [f"acct-1 {endpoint} https://example.com/h"]

    removed = runner.invoke(
        main, ["webhooks", "remove", "--account", "acct-1", "--endpoint", endpoint], env=stack_env
    )
    assert removed.exit_code == 0, removed.output
    assert runner.invoke(main, ["webhooks", "list"], env=stack_env).output == ""
    again = runner.invoke(
        main, ["webhooks", "remove", "--account", "acct-1", "--endpoint", endpoint], env=stack_env
    )
    assert again.exit_code == 1
    bad = runner.invoke(
        main, ["webhooks", "add", "--account", "a", "--url", "ftp://x"], env=stack_env
    )
    assert bad.exit_code == 2


@pytest.mark.parametrize(
    "args",
    [
        ["keys", "create", "--account", "a/b"],
        ["keys", "list", "--account", ""],
        ["fraud", "block", "--account", "ok-1", "--account", "a b"],
        ["fraud", "unblock", "--merchant", "m:1"],
        ["webhooks", "add", "--account", "a/b", "--url", "https://example.com/hook"],
        ["webhooks", "list", "--account", "é"],
    ],
)
def test_ids_ingest_would_refuse_are_refused_before_anything_is_done(args: list[str]) -> None:
    # No AWS endpoint or Redis is given: a command that went on would fail another way.
    result = CliRunner().invoke(main, args, env={"REDIS_URL": "redis://127.0.0.1:1/0"})
    assert result.exit_code == 2, result.output
    assert "must be 1 to 128 letters, digits or the characters _ . @ -" in result.output
    assert "Traceback" not in result.output
