"""Ingest throughput through the API vs. a bare PutItem loop against the same emulator.

The API runs as deployed: every request authenticated (half with a JWT per account, half
with an API key per account, so both paths are measured) and throttled through Redis, with
budgets too large to bind.

``python bench/bench_ingest.py callgrind [REQUESTS]`` counts instead the instructions the
ingest process executes per request under valgrind's callgrind (all threads): a CPU figure
that holds on a machine other work shares, where times and ratios move by a fifth from run
to run. Under callgrind ingest serves some 15 requests/s, not 500; one account's JWT and API
key keep the work that depends on time (a budget reservation per caller and window, API-key
cache refreshes) near the share it has at full speed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import aiohttp

from pulse.api_keys import ApiKeyTable, new_api_key
from pulse.clients import aws_client
from pulse.settings import PulseSettings
from pulse.topology_apply import apply_topology
from pulse_dev.emulators import (
    AWS_TEST_CREDENTIALS,
    free_port,
    local_redis,
    start_moto,
    stop_process,
    wait_for_port,
)
from pulse_dev.load import AccountTokens, random_payment, random_payment_item
from pulse_dev.testing import ServiceProcess

CONCURRENCY = 16
ACCOUNTS = 20
REQUESTS = 400
ROUNDS = 6


def _bare_put_loop(settings: PulseSettings, n: int) -> float:
    """Conditional PutItems of payment-shaped items with CONCURRENCY threads; ops/s."""
    ddb = aws_client("dynamodb", settings, max_pool=CONCURRENCY * 2)
    table = settings.names.payments_table

    def put(_: int) -> None:
        item = random_payment_item()
        ddb.put_item(
            TableName=table, Item=item, ConditionExpression="attribute_not_exists(payment_id)"
        )

    start = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(put, range(n)))
    return n / (time.perf_counter() - start)


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _credentials(
    settings: PulseSettings, accounts: int = ACCOUNTS
) -> list[dict[str, dict[str, str]]]:
    """Per account: a JWT's ``Authorization`` header, and an API key's."""
    keys = ApiKeyTable(aws_client("dynamodb", settings), settings.names.api_keys_table)
    jwts = AccountTokens(settings.jwt_secret.get_secret_value())
    api_keys: dict[str, dict[str, str]] = {}
    for n in range(1, accounts + 1):
        account = f"acct-{n:03d}"  # as random_payment names them
        made = new_api_key(account, name="bench", now="2026-01-01T00:00:00Z")
        keys.put(made.key)
        api_keys[account] = {"Authorization": f"Bearer {made.token}"}
    return [{a: jwts.headers(a) for a in api_keys}, api_keys]


async def _api_loop(
    url: str, n: int, credentials: list[dict[str, dict[str, str]]], accounts: int = ACCOUNTS
) -> float:
    """POST /v1/payments with CONCURRENCY concurrent clients; requests/s (all must be 201)."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    failures = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal failures
        while not queue.empty():
            i = queue.get_nowait()
            body = random_payment(accounts=accounts)
            headers = credentials[i % 2][body["account_id"]]
            async with session.post(url, json=body, headers=headers) as resp:
                await resp.read()
                failures += resp.status != 201

    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"{failures} requests failed")
    return n / elapsed


@contextmanager
def _stack(work: Path) -> Iterator[tuple[dict[str, str], PulseSettings]]:
    """moto and Redis with the topology applied; ingest's environment, and the settings."""
    port = free_port()
    moto = start_moto(port, work / "moto.log")
    redis_url, own_redis = local_redis(work)
    env = {
        **AWS_TEST_CREDENTIALS,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "REDIS_URL": redis_url,
        "PULSE_RESOURCE_PREFIX": "bench-",
        "PULSE_REDIS_PREFIX": f"pulse:bench{os.getpid()}:",
        "PULSE_LOG_LEVEL": "warning",
        "PULSE_RATE_LIMIT_PER_SECOND": "1000000",
        "PULSE_RATE_LIMIT_BURST": "1000000",
    }
    os.environ.update(env)
    settings = PulseSettings()
    try:
        apply_topology(settings)
        yield env, settings
    finally:
        stop_process(moto)
        if own_redis is not None:
            stop_process(own_redis)


def bench_ingest() -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="pulse-bench-"))
    with _stack(work) as (env, settings):
        return _bench(work, env, settings)


def _bench(work: Path, env: dict[str, str], settings: PulseSettings) -> dict[str, float]:
    http_port = free_port()
    ingest = ServiceProcess(
        "ingest", {**env, "PULSE_HTTP_PORT": str(http_port)}, work / "ingest.log"
    ).start(wait_port=http_port)
    url = f"http://127.0.0.1:{http_port}/v1/payments"
    credentials = _credentials(settings)
    print(
        f"setup: moto server, ingest process (authenticated: JWTs and API keys of {ACCOUNTS} "
        f"accounts; throttled through Redis, budgets not binding), {CONCURRENCY} concurrent "
        f"clients, {REQUESTS} requests per round, {ROUNDS} rounds of both loops (order "
        "alternating); ratio = median of the per-round ratios, so drift in the emulator "
        "cancels out"
    )
    try:
        _bare_put_loop(settings, 50)  # warm-up both paths
        asyncio.run(_api_loop(url, 50, credentials))
        bare, api = [], []
        assert ingest.proc is not None
        cpu = 0.0
        for round_no in range(ROUNDS):
            if round_no % 2 == 0:
                bare.append(_bare_put_loop(settings, REQUESTS))
            before = _cpu_seconds(ingest.proc.pid)
            api.append(asyncio.run(_api_loop(url, REQUESTS, credentials)))
            cpu += _cpu_seconds(ingest.proc.pid) - before
            if round_no % 2:
                bare.append(_bare_put_loop(settings, REQUESTS))
    finally:
        ingest.stop()
    print(f"bare PutItem: {', '.join(f'{b:.0f}' for b in bare)} ops/s")
    print(f"ingest API:   {', '.join(f'{a:.0f}' for a in api)} req/s")
    figures = {
        "ingest.api_rps": statistics.median(api),
        "ingest.putitem_rps": statistics.median(bare),
        "ingest.ratio": statistics.median(a / b for a, b in zip(api, bare, strict=True)),
        # The service's own CPU per request, all threads (boto3's included): it moves less
        # than the ratio with what else the machine is doing, yet still by a tenth or more
        # (``python bench/bench_ingest.py callgrind`` counts instructions instead).
        "ingest.cpu_us_per_request": cpu / (ROUNDS * REQUESTS) * 1e6,
    }
    for name, value in figures.items():
        print(f"{name}: {value:.3f}")
    return figures


def _callgrind(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True)


def callgrind_ingest(requests: int) -> float:
    """Instructions per request of ingest under callgrind (see the module docstring)."""
    work = Path(tempfile.mkdtemp(prefix="pulse-bench-"))
    out = work / "callgrind.out"
    with _stack(work) as (env, settings):
        http_port = free_port()
        argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no"]
        argv += [f"--callgrind-out-file={out}", sys.executable, "-m", "ingest"]
        with (work / "ingest.log").open("wb") as log:
            proc = subprocess.Popen(
                argv,
                env={**os.environ, **env, "PULSE_HTTP_PORT": str(http_port)},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_for_port(http_port, timeout=300)
            url = f"http://127.0.0.1:{http_port}/v1/payments"
            credentials = _credentials(settings, accounts=1)
            asyncio.run(_api_loop(url, 200, credentials, accounts=1))  # caches, pools
            _callgrind("--instr=on", str(proc.pid))
            asyncio.run(_api_loop(url, requests, credentials, accounts=1))
            _callgrind("--instr=off", str(proc.pid))
            _callgrind("--dump", str(proc.pid))
        finally:
            stop_process(proc, timeout=120)
    counted = [
        int(line.split()[1])
        for dump in work.glob("callgrind.out*")
        for line in dump.read_text().splitlines()
        if line.startswith("totals:")
    ]
    return max(counted) / requests


if __name__ == "__main__":
    if sys.argv[1:2] != ["callgrind"] or shutil.which("valgrind") is None:
        raise SystemExit("usage: python bench/bench_ingest.py callgrind [REQUESTS] (valgrind)")
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 400
    print(
        f"setup: as the ingest group, the ingest process under callgrind, {count} requests "
        f"from {CONCURRENCY} clients with one account's JWT and API key"
    )
    print(f"ingest.instructions_per_request: {callgrind_ingest(count):.0f}")
