"""``pulse webhooks``: ``add`` refuses a target the notify worker would refuse by its URL
alone; the commands manage endpoints through the code of ingest's endpoints API."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from click.testing import CliRunner

from pulse.cli import main
from pulse.clients import aws_client
from pulse.settings import PulseSettings
from pulse.topology import WebhookNames
from pulse.webhook_endpoints import WebhookEndpoints, read_signing_secrets
from pulse.webhook_targets import SsrfPolicy
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


def _lines(output: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in output.splitlines() if ": " in line)


def test_an_endpoint_is_managed_from_the_terminal_on_the_apis_code_path(
    topology: object, stack_env: dict[str, str], stack_settings: PulseSettings
) -> None:
    runner = CliRunner()
    url = "https://hooks.example.com/h"
    added = runner.invoke(
        main,
        [
            *("webhooks", "add", "--account", "acct-c", "--url", url),
            *("--description", "orders", "--event-type", "pulse.notification"),
            *("--schedule", "*/5 * * * *", "--rate", "3"),
        ],
        env=stack_env,
    )
    assert added.exit_code == 0, added.output
    endpoint, secret = _lines(added.output)["endpoint"], _lines(added.output)["secret"]
    store = WebhookEndpoints(
        aws_client("dynamodb", stack_settings),
        aws_client("ssm", stack_settings),
        WebhookNames.from_prefix(stack_settings.resource_prefix),
        policy=SsrfPolicy(),
    )
    stored = store.get(endpoint, "acct-c")
    assert stored is not None
    assert (stored.description, stored.event_types) == ("orders", ("pulse.notification",))
    assert (stored.schedule, stored.rate_per_second) == ("*/5 * * * *", 3)
    shown = runner.invoke(main, ["webhooks", "show", "--endpoint", endpoint], env=stack_env)
    assert shown.exit_code == 0, shown.output
    as_json = orjson.loads(shown.output)
    assert as_json == stored.public()
    assert (as_json["schedule"], as_json["rate_per_second"]) == ("*/5 * * * *", 3)

    rotated = runner.invoke(
        main, ["webhooks", "rotate-secret", "--endpoint", endpoint], env=stack_env
    )
    assert rotated.exit_code == 0, rotated.output
    new_secret = _lines(rotated.output)["secret"]
    assert new_secret.startswith("whsec_")
    assert new_secret != secret
    assert _lines(rotated.output)["previous secret valid until"].endswith("Z")
    secrets = read_signing_secrets(aws_client("ssm", stack_settings), stored.secret_parameter)
    assert secrets is not None
    assert secrets.valid(datetime.now(UTC).timestamp()) == (new_secret, secret)

    tested = runner.invoke(main, ["webhooks", "test", "--endpoint", endpoint], env=stack_env)
    assert tested.exit_code == 0, tested.output
    assert tested.output.startswith("queued pulse.webhook.test ")
    replayed = runner.invoke(
        main,
        ["webhooks", "replay", "--endpoint", endpoint, "--since", "2026-01-01T00:00:00Z"],
        env=stack_env,
    )
    assert replayed.exit_code == 0, replayed.output
    assert replayed.output == f"queued 0 events for {endpoint}\n"
    backwards = runner.invoke(
        main,
        ["webhooks", "replay", "--endpoint", endpoint, "--since", "2999-01-01T00:00:00Z"],
        env=stack_env,
    )
    assert backwards.exit_code == 2
    assert "--since invalid: must be before" in backwards.output

    store.update(stored, {"disabled": True}, now=datetime.now(UTC))
    listed = runner.invoke(main, ["webhooks", "list", "--account", "acct-c"], env=stack_env)
    assert listed.output == f"acct-c {endpoint} {url} (disabled)\n"

    removed = runner.invoke(main, ["webhooks", "remove", "--endpoint", endpoint], env=stack_env)
    assert removed.output == f"removed {endpoint}\n"
    again = runner.invoke(main, ["webhooks", "remove", "--endpoint", endpoint], env=stack_env)
    assert again.exit_code == 1
    assert f"no endpoint {endpoint}" in again.output


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--event-type", "pulse.payment.deleted"], "--event-type invalid: unknown event type"),
        (["--schedule", "at noon"], "--schedule invalid: must be a cron expression"),
        (["--schedule", "0 0 1 * *"], "--schedule invalid: its windows are up to 31.0 days apart"),
        (["--rate", "0"], "--rate invalid: must be a whole number from 1 to 10000"),
    ],
)
def test_a_bad_option_is_one_line_naming_it(
    topology: object, stack_env: dict[str, str], args: list[str], words: str
) -> None:
    refused = CliRunner().invoke(
        main,
        ["webhooks", "add", "--account", "acct-o", "--url", "https://h.example.com", *args],
        env=stack_env,
    )
    assert refused.exit_code == 2
    (line,) = refused.output.splitlines()
    assert words in line
