"""``pulse dev`` (``make run``) as a real process: its banner's commands work when pasted in
another terminal, it records its stack for them, and Ctrl-C stops it quietly.

The tests share one stack, in file order; the last one stops it with SIGINT.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from playwright.async_api import expect

from pulse.auth import verify_token
from pulse.cli.target import STACK_VARIABLES, LocalStack
from pulse.settings import DEV_JWT_SECRET
from pulse_dev.browser import chromium
from pulse_dev.devstack import DevStackProcess

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStackProcess]:
    workdir = tmp_path_factory.mktemp("devstack")
    with DevStackProcess.running(workdir, redis_url=redis_url, prefix=f"fh{os.getpid()}-") as proc:
        yield proc


def _pid(stack: DevStackProcess) -> int:
    assert stack.proc is not None
    return stack.proc.pid


def _another_terminal() -> dict[str, str]:
    """An operator's shell: nothing of a stack exported, no AWS credentials."""
    drop = {*STACK_VARIABLES, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"}
    return {k: v for k, v in os.environ.items() if k not in drop and k != "AWS_DEFAULT_REGION"}


def _pasted(stack: DevStackProcess, prefix: str) -> list[str]:
    """The banner's command line that starts with ``prefix`` (after the pulse script)."""
    for line in stack.logs().splitlines():
        words = shlex.split(line.strip()) if line.startswith("    ") else []
        if words[1:2] == [prefix]:
            return words
    raise AssertionError(f"no `pulse {prefix}` line in the banner:\n{stack.logs()}")


def test_the_stack_file_records_the_stack(stack: DevStackProcess) -> None:
    recorded = LocalStack.read(stack.stack_file)
    assert recorded is not None
    assert recorded.pid == _pid(stack)
    assert recorded.aws_endpoint_url == f"http://127.0.0.1:{stack.emulator_port}"
    assert recorded.ingest_url == stack.ingest_url
    assert recorded.gateway_ws_url == stack.gateway_url
    assert (recorded.resource_prefix, recorded.redis_prefix) == (
        stack.prefix,
        f"pulse:{stack.prefix}",
    )


def test_the_banner_gives_the_console_with_an_operators_token(stack: DevStackProcess) -> None:
    # In the fragment: the browser keeps it, never sends it to the gateway in a request line.
    found = re.search(rf"http://127\.0\.0\.1:{stack.gateway_port}/#token=(\S+)", stack.logs())
    assert found is not None, stack.logs()
    claims = verify_token(found.group(1), DEV_JWT_SECRET)
    assert "ops" in claims.roles
    tail = _pasted(stack, "tail")
    assert tail[tail.index("--token") + 1] == found.group(1)  # the full token, pasteable
    assert Path(stack.workdir, tail[0]).is_file()  # the virtual environment's pulse
    for command in ("review", "dlq"):
        assert _pasted(stack, command)[2] == "list"


async def test_the_banners_console_url_opens_the_console_live(stack: DevStackProcess) -> None:
    found = re.search(r"console +(http://\S+)", stack.logs())
    assert found is not None, stack.logs()
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(found.group(1))
        await expect(page.get_by_test_id("connection-state")).to_have_text("live")
        assert "token=" not in page.url  # taken out of the address bar


def _in_another_terminal(
    stack: DevStackProcess, argv: list[str]
) -> subprocess.CompletedProcess[str]:
    """``argv`` run from the stack's directory in a shell that names no stack."""
    return subprocess.run(
        argv,
        cwd=stack.workdir,
        env=_another_terminal(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_pasted_commands_find_the_stack(stack: DevStackProcess) -> None:
    keys = _in_another_terminal(stack, _pasted(stack, "keys"))
    assert keys.returncode == 0, keys.stderr
    assert "api key: psk_" in keys.stdout
    assert keys.stderr.startswith(
        f"pulse: the local stack of .run/stack.json (pid {_pid(stack)}), "
        f"endpoint http://127.0.0.1:{stack.emulator_port}: account 123456789012, "
    )
    # The other pasted commands act on the same stack: its queues, its payments table.
    dlq = _in_another_terminal(stack, _pasted(stack, "dlq"))
    assert dlq.returncode == 0, dlq.stderr
    assert "fraud-dlq" in dlq.stdout
    review = _in_another_terminal(stack, _pasted(stack, "review"))
    assert review.returncode == 0, review.stderr
    assert review.stdout == "no payment is waiting for review\n"
    load = _in_another_terminal(
        stack, [sys.executable, "-m", "pulse.cli", "load", "--rate", "5", "--duration", "1"]
    )
    assert load.returncode == 0, load.stdout + load.stderr
    assert re.search(r"^201 Created +5$", load.stdout, re.MULTILINE), load.stdout


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_the_console_on_the_gateway_may_call_ingest(stack: DevStackProcess) -> None:
    services = {env.get("PULSE_SERVICE_NAME"): env for env in map(_environ, _children(_pid(stack)))}
    origins = services["ingest"]["PULSE_CORS_ORIGINS"].split(",")
    assert origins == [
        f"http://127.0.0.1:{stack.gateway_port}",
        f"http://localhost:{stack.gateway_port}",
    ]
    assert services["ws-gateway"]["PULSE_CONSOLE_INGEST_URL"] == stack.ingest_url
    assert {env["PULSE_LOG_LEVEL"] for env in services.values()} == {"info"}


def test_ctrl_c_stops_everything_quietly(stack: DevStackProcess) -> None:
    started = len(stack.logs())
    began = time.monotonic()
    code = stack.stop(sig=signal.SIGINT)
    print(f"pulse dev stopped {time.monotonic() - began:.1f} s after Ctrl-C")  # noqa: T201
    after = stack.logs()[started:]
    assert code == 0, after
    for noise in ("Traceback", "Task was destroyed", "Exception ignored", "Could not connect"):
        assert noise not in after, after
    # Each group stopped within its grace, none killed: the services (3 s), then the
    # emulator (1 s), within 5 s in all.
    assert "did not stop within" not in after, after
    assert after.rstrip().endswith("stopped")
    # At make run's level (info) the payments pulse load sent were not logged one by one
    # (their lines are at debug): the banner stays in view.
    assert [line for line in stack.logs().splitlines() if "payment_id=" in line] == []
    assert not stack.stack_file.exists()
    assert all(_port_closed(port) for port in stack.ports)


def _port_closed(port: int) -> bool:
    import socket  # noqa: PLC0415

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0
