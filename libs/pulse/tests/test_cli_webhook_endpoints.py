"""``pulse webhooks add`` refuses a target the notify worker would refuse by its URL alone."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from pulse.cli import main
from pulse_dev.testing import LOCAL_WEBHOOK_RECEIVERS_ENV


@pytest.mark.parametrize(
    ("url", "reason", "setting"),
    [
        ("http://hooks.example.com/h", "http:// is refused", "PULSE_WEBHOOK_ALLOW_HTTP=true"),
        (
            "https://169.254.169.254/latest/meta-data/",
            "the cloud metadata service",
            "PULSE_WEBHOOK_ALLOWED_NETWORKS",
        ),
        ("https://10.0.0.5/h", "private", "PULSE_WEBHOOK_ALLOWED_NETWORKS"),
        ("https://[::1]:9000/h", "loopback", "PULSE_WEBHOOK_ALLOWED_NETWORKS"),
        ("https://localhost:9000/h", "loopback", "PULSE_WEBHOOK_ALLOWED_NETWORKS"),
    ],
)
def test_a_refused_url_is_one_line_naming_the_reason_and_the_setting(
    topology: object, stack_env: dict[str, str], url: str, reason: str, setting: str
) -> None:
    runner = CliRunner()
    refused = runner.invoke(
        main, ["webhooks", "add", "--account", "acct-s", "--url", url], env=stack_env
    )
    assert refused.exit_code == 2
    (line,) = refused.output.splitlines()
    assert line.startswith("Error: --url refused: ")
    assert reason in line
    assert setting in line
    # nothing was registered
    assert runner.invoke(main, ["webhooks", "list"], env=stack_env).output == ""


def test_the_allowing_settings_let_a_local_receiver_be_registered(
    topology: object, stack_env: dict[str, str]
) -> None:
    runner = CliRunner()
    url = "http://127.0.0.1:9000/h"
    refused = runner.invoke(
        main, ["webhooks", "add", "--account", "acct-l", "--url", url], env=stack_env
    )
    assert refused.exit_code == 2
    added = runner.invoke(
        main,
        ["webhooks", "add", "--account", "acct-l", "--url", url],
        env={**stack_env, **LOCAL_WEBHOOK_RECEIVERS_ENV},
    )
    assert added.exit_code == 0, added.output
    listed = runner.invoke(main, ["webhooks", "list", "--account", "acct-l"], env=stack_env)
    assert listed.output.split()[-1] == url


def test_a_bad_allowing_setting_is_named(topology: object, stack_env: dict[str, str]) -> None:
    result = CliRunner().invoke(
        main,
        ["webhooks", "add", "--account", "acct-b", "--url", "https://10.1.2.3/h"],
        env={**stack_env, "PULSE_WEBHOOK_ALLOWED_NETWORKS": "10.1.2.0/33"},
    )
    assert result.exit_code == 1
    assert "PULSE_WEBHOOK_ALLOWED_NETWORKS: '10.1.2.0/33'" in result.output
