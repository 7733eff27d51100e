from click.testing import CliRunner

from pulse.auth import verify_token
from pulse.cli import main
from pulse.settings import DEV_JWT_SECRET


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("dev", "token", "load", "tail"):
        assert f"pulse {command}" in result.output


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
