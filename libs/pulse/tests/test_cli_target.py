"""Which stack the operator commands act on, and their one-line failures (pulse.cli.target).

The commands run in this process (click's runner) against the test's real AWS emulator and
Redis; the stack file is written as ``make run`` writes it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner, Result

from pulse.cli import main
from pulse.cli.target import STACK_FILE, STACK_VARIABLES, LocalStack, find_local_stack, settings
from pulse_dev.emulators import LOCAL_WEBHOOK_RECEIVERS_ENV, free_port

if TYPE_CHECKING:
    from pulse.settings import PulseSettings

# What could name a stack or give credentials: unset for each command here, so only what a
# test gives counts (and no file or instance metadata of the machine is consulted).
_CLEAN_ENV: dict[str, str | None] = {
    **dict.fromkeys(STACK_VARIABLES),
    **dict.fromkeys(
        (
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "PULSE_AWS_REGION",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
        )
    ),
    "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
}
MOTO_ACCOUNT = "123456789012"


def _stack(settings: PulseSettings, *, pid: int) -> LocalStack:
    assert settings.aws_endpoint_url is not None
    return LocalStack(
        pid=pid,
        aws_endpoint_url=settings.aws_endpoint_url,
        region="us-east-1",
        resource_prefix=settings.resource_prefix,
        redis_url=settings.redis_url,
        redis_prefix=settings.redis_prefix,
        ingest_url="http://127.0.0.1:1",
        gateway_url="http://127.0.0.1:2",
        started_at="2025-01-01T00:00:00Z",
    )


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def _with_prefix(settings: PulseSettings, prefix: str) -> PulseSettings:
    return settings.model_copy(update={"resource_prefix": prefix})


def _run(args: list[str], **env: str | None) -> Result:
    return CliRunner().invoke(main, args, env={**_CLEAN_ENV, **env})


def _one_line_error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    [line] = result.output.splitlines()
    assert line.startswith("Error: ")
    return line


@pytest.fixture
def in_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checkout's root (where ``make run`` writes .run/) with the cwd in a subdirectory."""
    subdir = tmp_path / "services" / "ingest"
    subdir.mkdir(parents=True)
    monkeypatch.chdir(subdir)
    return tmp_path


def test_commands_find_the_stack_make_run_started(
    in_checkout: Path, topology: object, stack_settings: PulseSettings
) -> None:
    _stack(stack_settings, pid=os.getpid()).write(in_checkout / STACK_FILE)

    made = _run(["keys", "create", "--account", "acct-1"])
    assert made.exit_code == 0, made.output
    announced = [line for line in made.output.splitlines() if line.startswith("pulse: ")]
    assert announced == [
        (
            f"pulse: the local stack of {in_checkout / STACK_FILE} (pid {os.getpid()}), "
            f"endpoint {stack_settings.aws_endpoint_url}: account {MOTO_ACCOUNT}, "
            f"region us-east-1, resource prefix {stack_settings.resource_prefix!r}"
        )
    ]
    listed = _run(["keys", "list", "--account", "acct-1"])
    assert listed.exit_code == 0, listed.output
    assert "acct-1" in listed.stdout  # the key made in the stack's table

    blocked = _run(["fraud", "list"])
    assert blocked.exit_code == 0, blocked.output
    redis = urlsplit(stack_settings.redis_url)
    assert blocked.output.splitlines()[0] == (
        f"pulse: the local stack of {in_checkout / STACK_FILE} (pid {os.getpid()}): "
        f"Redis {redis.hostname}:{redis.port} (standalone), "
        f"key prefix {stack_settings.redis_prefix!r}"
    )


def test_a_local_receiver_registers_on_the_stack_that_allows_it(
    in_checkout: Path, topology: object, stack_settings: PulseSettings
) -> None:
    # The stack's services deliver to receivers on this machine over http; so may its
    # operator register one, without repeating the stack's settings in the shell.
    receiver = ["webhooks", "add", "--account", "acct-1", "--url", "http://127.0.0.1:9/hook"]
    _stack(stack_settings, pid=os.getpid()).write(in_checkout / STACK_FILE)
    refused = _run(receiver)
    assert refused.exit_code == 2, refused.output
    assert "PULSE_WEBHOOK_ALLOW_HTTP" in refused.output

    stack = replace(_stack(stack_settings, pid=os.getpid()), env=dict(LOCAL_WEBHOOK_RECEIVERS_ENV))
    stack.write(in_checkout / STACK_FILE)
    added = _run(receiver)
    assert added.exit_code == 0, added.output
    assert "whsec_" in added.output


def test_a_stale_stack_file_is_ignored(in_checkout: Path, stack_settings: PulseSettings) -> None:
    _stack(stack_settings, pid=_dead_pid()).write(in_checkout / STACK_FILE)
    assert find_local_stack() is None
    line = _one_line_error(_run(["keys", "list"], AWS_REGION="eu-west-1"))
    assert "no AWS credentials" in line
    assert "AWS_PROFILE" in line


def test_the_environment_names_the_stack_before_any_stack_file(
    in_checkout: Path, stack_settings: PulseSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _stack(_with_prefix(stack_settings, "filed-"), pid=os.getpid()).write(in_checkout / STACK_FILE)
    # stack_settings put this test's stack in the environment: it wins.
    assert settings().resource_prefix == stack_settings.resource_prefix
    for name in STACK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert settings().resource_prefix == "filed-"


def test_without_a_stack_the_standard_chain_says_whose_account_and_region_it_changes(
    in_checkout: Path, stack_settings: PulseSettings
) -> None:
    # An operator's shell: no stack file, nothing of a stack exported, an AWS profile with
    # credentials and a region (and, here, an endpoint: the emulator stands in for AWS).
    profile = in_checkout / "aws-config"
    profile.write_text(
        "[default]\n"
        "region = eu-west-3\n"
        f"endpoint_url = {stack_settings.aws_endpoint_url}\n"
        "aws_access_key_id = testing\n"
        "aws_secret_access_key = testing\n"
    )
    result = _run(["dlq", "list"], AWS_CONFIG_FILE=str(profile))
    announced, *rest = result.output.splitlines()
    assert announced == (
        f"pulse: AWS: account {MOTO_ACCOUNT}, region eu-west-3, resource prefix 'pulse-'"
    )
    # Nothing of Pulse in that region: said in one line, after whose AWS it is.
    assert result.exit_code == 1, result.output
    assert rest == [
        (
            "Error: queue pulse-fraud-dlq does not exist: apply the topology (make run does; "
            "on Kubernetes, the chart's topology job or the operator)"
        )
    ]


def test_no_credentials_is_one_line_saying_what_to_set(in_checkout: Path) -> None:
    line = _one_line_error(_run(["keys", "list"], AWS_REGION="eu-west-1"))
    assert line == (
        "Error: no AWS credentials: set AWS_PROFILE (or AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY), or start a local stack with `make run` in this checkout"
    )


def test_no_region_is_one_line_saying_what_to_set(in_checkout: Path) -> None:
    line = _one_line_error(
        _run(["keys", "list"], AWS_ACCESS_KEY_ID="AKIDEXAMPLE", AWS_SECRET_ACCESS_KEY="x")
    )
    assert "no AWS region: set AWS_REGION" in line


def test_an_unreachable_endpoint_is_one_line(in_checkout: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    line = _one_line_error(
        _run(
            ["webhooks", "list"],
            AWS_ENDPOINT_URL=endpoint,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_REGION="us-east-1",
        )
    )
    assert f"cannot connect to {endpoint}" in line
    assert "AWS_ENDPOINT_URL" in line


@pytest.mark.parametrize(
    ("args", "missing"),
    [
        (["review", "approve", "p-1"], "UpdateItem"),
        (["keys", "create", "--account", "a-1"], "PutItem"),
        (["webhooks", "list"], "Scan"),
    ],
)
def test_tables_not_there_yet_are_one_line_saying_to_apply_the_topology(
    in_checkout: Path, aws_endpoint: str, args: list[str], missing: str
) -> None:
    result = _run(
        args,
        AWS_ENDPOINT_URL=aws_endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_REGION="us-east-1",
        PULSE_RESOURCE_PREFIX="never-applied-",
    )
    line = _one_line_error(result)
    assert line.startswith(f"Error: {missing}: "), line
    assert "apply the topology (make run does" in line


def test_an_unreachable_redis_is_one_line(in_checkout: Path) -> None:
    port = free_port()
    line = _one_line_error(
        _run(["fraud", "block", "--account", "a-1"], REDIS_URL=f"redis://127.0.0.1:{port}/0")
    )
    assert f"cannot connect to Redis (Error 111 connecting to 127.0.0.1:{port}" in line
    assert "set REDIS_URL" in line


def test_a_stack_file_round_trips_and_junk_is_no_stack(tmp_path: Path) -> None:
    path = tmp_path / STACK_FILE
    stack = LocalStack(
        pid=os.getpid(),
        aws_endpoint_url="http://127.0.0.1:4566",
        region="us-east-1",
        resource_prefix="pulse-",
        redis_url="redis://127.0.0.1:6379/0",
        redis_prefix="pulse:",
        ingest_url="http://127.0.0.1:8080",
        gateway_url="http://127.0.0.1:8090",
        started_at="2025-01-01T00:00:00Z",
    )
    stack.write(path)
    assert LocalStack.read(path) == stack
    assert stack.gateway_ws_url == "ws://127.0.0.1:8090/ws"
    assert find_local_stack(tmp_path / "deeper" / "still") == (stack, path.resolve())
    path.write_text('{"pid": 1}')
    assert LocalStack.read(path) is None
    assert replace(stack, pid=_dead_pid()).alive() is False
