"""Pulse as separate real processes the reliability suites can hurt, and everything that
watches it: the payment poster, WebSocket clients that reconnect with ``since``/``epoch``,
a webhook receiver that verifies signatures, and the ledger that says, per payment, where
each of its events arrived and how often.

Used by the chaos suite (``faults.py``) and the soak (``tests/soak/soak.py``). Nothing is
mocked: a moto server, a ``redis-server`` (with an append-only file, so a restart keeps its
data), and every service as its own ``python -m <package>`` process, several replicas of
those that scale out. The harness owns every process, so it can kill, pause and restart
any of them.

This module is the one import point; the parts live beside it, by role:

- ``chaos_stack``: the stack and its processes (``Stack``, ``Topology``, ``Replica``,
  ``AwsEmulator``, the services' settings for a suite);
- ``chaos_clients``: what posts and watches (``Poster``, ``Posted``, ``WatchingClient``,
  ``Seen``, ``WebhookReceiver``, ``ingest_client``);
- ``chaos_ledger``: the exactly-once bookkeeping (``Ledger``, ``Tally``,
  ``CounterReading``, the event types);
- here: ``running`` (the stack started with its watchers, a ``Rig``), the suites' output
  (``say``, ``log``), ``parse_with_workdir`` and ``rss_kb``.

Every name is re-exported here; those modules never import this one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from chaos_clients import (
    Posted,
    Poster,
    Seen,
    WatchingClient,
    WebhookReceiver,
    ingest_client,
)
from chaos_ledger import (
    APPROVED,
    CREATED,
    DECISION,
    NOTIFICATION,
    UPDATED,
    CounterReading,
    Ledger,
    Tally,
)
from chaos_stack import (
    INGEST_ENV,
    STREAM_ENV,
    WORKER_ENV,
    AwsEmulator,
    Replica,
    Stack,
    Topology,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = [
    "APPROVED",
    "CREATED",
    "DECISION",
    "INGEST_ENV",
    "NOTIFICATION",
    "STREAM_ENV",
    "UPDATED",
    "WORKER_ENV",
    "AwsEmulator",
    "CounterReading",
    "Ledger",
    "Posted",
    "Poster",
    "Replica",
    "Rig",
    "Seen",
    "Stack",
    "Tally",
    "Topology",
    "WatchingClient",
    "WebhookReceiver",
    "ingest_client",
    "log",
    "parse_with_workdir",
    "rss_kb",
    "running",
    "say",
]


def say(text: str = "") -> None:
    """A line of the suite's report, on stdout (progress goes to stderr)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def log(text: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {text}\n")
    sys.stderr.flush()


def parse_with_workdir(
    parser: argparse.ArgumentParser, name: str
) -> tuple[argparse.Namespace, Path]:
    """A suite's arguments, ``--workdir`` added: them, and the folder for the run's logs
    (``--workdir``, else a new temporary folder ``pulse-<name>-…``)."""
    parser.add_argument("--workdir", type=Path, default=None, help="logs (default: a temp dir)")
    args = parser.parse_args()
    return args, args.workdir or Path(tempfile.mkdtemp(prefix=f"pulse-{name}-"))


@dataclass
class Rig:
    """A started stack with its watchers: subscribed clients and the webhook receiver."""

    stack: Stack
    clients: list[WatchingClient]
    receiver: WebhookReceiver
    stopping: asyncio.Event


@contextlib.asynccontextmanager
async def running(
    stack: Stack, clients: list[WatchingClient], accounts: list[str]
) -> AsyncIterator[Rig]:
    """Start ``stack``, register a webhook endpoint per account (``pulse webhooks add``),
    connect ``clients`` and wait until each is subscribed; stop everything on exit."""
    receiver = WebhookReceiver()
    rig = Rig(stack, clients, receiver, asyncio.Event())
    tasks: list[asyncio.Task[None]] = []
    try:
        log(f"starting the stack in {stack.workdir}")
        await stack.start()
        await receiver.start()
        for account in accounts:
            await receiver.register(stack, account)
        tasks = [asyncio.create_task(c.run(rig.stopping)) for c in clients]
        async with asyncio.timeout(30):
            await asyncio.gather(*(c.subscribed.wait() for c in clients))
        yield rig
    finally:
        rig.stopping.set()
        for client in clients:
            await client.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await receiver.stop()
        await stack.stop()


def rss_kb(pid: int) -> int | None:
    """Resident set size of a process in KiB (``VmRSS`` in /proc), None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None
