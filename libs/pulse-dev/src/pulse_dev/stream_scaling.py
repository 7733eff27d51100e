"""The stream processor scaled out, for the tests and the ``scale`` benchmark: replicas as
processes, payments that change several times, and what reached Redis, checked.

- :class:`StreamReplicas` runs ``python -m stream_processor`` replicas, each with its own
  ``PULSE_WORKER_ID`` and HTTP port; :meth:`~StreamReplicas.kill` is a crash (SIGKILL),
  :meth:`~StreamReplicas.pause` and :meth:`~StreamReplicas.resume` freeze a replica and let
  it go on (SIGSTOP, SIGCONT: a long pause of the whole process), and
  :meth:`~StreamReplicas.metric` reads one of a replica's metrics.
- :class:`ExpectedEvents` remembers the marks each payment's events must carry, in order;
  :class:`PaymentScript` writes payments into the payments table as ingest does and moves
  each on through numbered steps (``updated_at`` is the step's mark), remembering them.
- :func:`delivery_report` *(pure)* compares a channel's history with those marks: marks
  lost, marks delivered twice, payments whose events came out of order.
- :func:`lease_counts`, :func:`lease_imbalance` and :func:`lineage_violations` read the
  leases table (KCL's layout, as the stream processor writes it): the shards each worker
  is reading, how far apart the busiest and the idlest are, and children read before their
  parent ended.

The run the tests and the benchmark share, through splits, a crash and a new replica, is
:mod:`pulse_dev.split_run`.
"""

from __future__ import annotations

import signal
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import redis
from prometheus_client.parser import text_string_to_metric_families

from pulse.clients import aws_client
from pulse.payments import APPROVED, DECLINED, REVIEW
from pulse_dev.emulators import free_port
from pulse_dev.payments_fixtures import CREATED_AT, pending_payment, put_payment
from pulse_dev.stream_emulation import split_shards
from pulse_dev.testing import ServiceProcess, channel_history

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from pathlib import Path

    from pulse.settings import PulseSettings
    from pulse.topology import TopologyOutputs

__all__ = [
    "SHARD_END",
    "DeliveryReport",
    "ExpectedEvents",
    "PaymentScript",
    "StackStream",
    "StreamReplicas",
    "delivery_report",
    "described_shards",
    "lease_counts",
    "lease_imbalance",
    "lease_items",
    "lineage_violations",
    "step_mark",
    "type_mark",
    "unread_leases",
    "updated_at_mark",
]

SHARD_END: Final = "SHARD_END"
_STATUSES: Final = (REVIEW, APPROVED, DECLINED)
MAX_STEPS: Final = 59


def step_mark(step: int) -> str:
    """The ``updated_at`` a payment carries after ``step`` (0: as created)."""
    if not 0 <= step <= MAX_STEPS:
        raise ValueError(f"a payment takes 0 to {MAX_STEPS} steps")
    return CREATED_AT.replace(":00.000Z", f":{step:02d}.000Z")


@dataclass(frozen=True)
class DeliveryReport:
    """What a channel's history holds against the marks expected, per payment."""

    expected: int  # events expected
    delivered: int  # distinct expected events found
    lost: int  # expected events missing
    duplicated: int  # extra copies of events found
    out_of_order: list[str] = field(default_factory=list)  # payment ids
    unexpected: int = 0  # events of these payments with a mark not expected

    @property
    def exact(self) -> bool:
        """Everything there once, in order."""
        return not (self.lost or self.duplicated or self.out_of_order or self.unexpected)


def updated_at_mark(event: Mapping[str, Any]) -> str:
    """An event's mark: its payment's ``updated_at``."""
    return str((event.get("data") or {}).get("updated_at"))


def type_mark(event: Mapping[str, Any]) -> str:
    """An event's mark: its type (``pulse.payment.created`` …)."""
    return str(event.get("type"))


def delivery_report(
    events: Iterable[Mapping[str, Any]],
    expected: Mapping[str, Sequence[str]],
    mark: Callable[[Mapping[str, Any]], str] = updated_at_mark,
) -> DeliveryReport:
    """Check ``events`` (a channel's history, oldest first) against ``expected``: for each
    payment id, the marks its events must carry, in order (by default each event's
    ``updated_at``). Events of other payments are ignored."""
    seen: dict[str, list[str]] = {payment_id: [] for payment_id in expected}
    for event in events:
        data = event.get("data") or {}
        marks = seen.get(str(data.get("payment_id")))
        if marks is not None:
            marks.append(mark(event))
    lost = duplicated = delivered = unexpected = 0
    out_of_order = []
    for payment_id, wanted in expected.items():
        got = seen[payment_id]
        counts = Counter(got)
        delivered += sum(1 for mark in wanted if counts[mark])
        lost += sum(1 for mark in wanted if not counts[mark])
        duplicated += sum(count - 1 for count in counts.values())
        unexpected += sum(1 for mark in counts if mark not in wanted)
        firsts = [mark for mark in dict.fromkeys(got) if mark in wanted]
        if firsts != [mark for mark in wanted if mark in counts]:
            out_of_order.append(payment_id)
    return DeliveryReport(
        expected=sum(len(wanted) for wanted in expected.values()),
        delivered=delivered,
        lost=lost,
        duplicated=duplicated,
        out_of_order=out_of_order,
        unexpected=unexpected,
    )


class ExpectedEvents:
    """The marks each payment's events must carry, in order, and each payment's account."""

    def __init__(self) -> None:
        self.marks: dict[str, list[str]] = {}  # payment id -> marks of its events, in order
        self.accounts: dict[str, str] = {}  # payment id -> account id

    def record(self, payment_id: str, account_id: str, marks: Iterable[str]) -> None:
        self.marks[payment_id] = list(marks)
        self.accounts[payment_id] = account_id

    def by_account(self) -> dict[str, dict[str, list[str]]]:
        """The expected marks split by account (each account channel's share)."""
        split: dict[str, dict[str, list[str]]] = {}
        for payment_id, marks in self.marks.items():
            split.setdefault(self.accounts[payment_id], {})[payment_id] = marks
        return split


class PaymentScript(ExpectedEvents):
    """Payments written straight into the payments table and moved on step by step."""

    def __init__(self, ddb: Any, table: str, *, accounts: int = 8) -> None:
        super().__init__()
        self._ddb = ddb
        self._table = table
        self._accounts = accounts

    def create(self, count: int) -> list[str]:
        """``count`` new PENDING payments, spread over the accounts; their ids."""
        created = []
        for _ in range(count):
            account_id = f"acct-{len(self.marks) % self._accounts}"
            payment = put_payment(self._ddb, self._table, pending_payment(account_id=account_id))
            self.record(payment["payment_id"], account_id, [step_mark(0)])
            created.append(payment["payment_id"])
        return created

    def advance(self, payment_ids: Iterable[str]) -> None:
        """One more step for each payment: a new status and ``updated_at``."""
        for payment_id in payment_ids:
            step = len(self.marks[payment_id])
            mark = step_mark(step)
            self._ddb.update_item(
                TableName=self._table,
                Key={"payment_id": {"S": payment_id}},
                UpdateExpression="SET #status = :status, updated_at = :mark",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":status": {"S": _STATUSES[step % len(_STATUSES)]},
                    ":mark": {"S": mark},
                },
            )
            self.marks[payment_id].append(mark)


# -- the stream and the leases table ----------------------------------------------------
def described_shards(streams: Any, stream_arn: str) -> list[dict[str, Any]]:
    """Every shard DescribeStream lists, following its pages."""
    shards: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"StreamArn": stream_arn}
    while True:
        page = streams.describe_stream(**kwargs)["StreamDescription"]
        shards += page["Shards"]
        if "LastEvaluatedShardId" not in page:
            return shards
        kwargs["ExclusiveStartShardId"] = page["LastEvaluatedShardId"]


def lease_items(ddb: Any, table: str) -> list[dict[str, Any]]:
    """Every lease item (attribute-value form), read consistently."""
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        page = ddb.scan(**kwargs)
        items += page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


class StackStream:
    """A test stack's payments stream: payments written straight into its table, its shards
    split, listed and leased, and the channel history they reach."""

    def __init__(self, settings: PulseSettings, topology: TopologyOutputs, redis_url: str) -> None:
        self.settings = settings
        self.ddb = aws_client("dynamodb", settings)
        self.streams = aws_client("dynamodbstreams", settings)
        self.redis = redis.Redis.from_url(redis_url)
        self.arn = topology.stream_arns[settings.names.payments_table]
        self.script = PaymentScript(self.ddb, settings.names.payments_table)

    def split(self) -> None:
        split_shards(self.settings.aws_endpoint_url or "", table=self.settings.names.payments_table)

    def shards(self) -> list[dict[str, Any]]:
        return described_shards(self.streams, self.arn)

    def leases(self) -> list[dict[str, Any]]:
        return lease_items(self.ddb, self.settings.names.leases_table)

    def history(self, channel: str) -> list[dict[str, Any]]:
        return channel_history(self.redis, self.settings.redis_prefix, channel)


def lease_counts(items: Iterable[Mapping[str, Any]], workers: Iterable[str]) -> dict[str, int]:
    """Shards each of ``workers`` holds and has not finished (leases of others ignored)."""
    counts = dict.fromkeys(workers, 0)
    for item in items:
        owner = item.get("leaseOwner", {}).get("S")
        if owner in counts and item.get("checkpoint", {}).get("S") != SHARD_END:
            counts[owner] += 1
    return counts


def unread_leases(items: Iterable[Mapping[str, Any]], workers: Iterable[str]) -> list[str]:
    """Shards not finished that none of ``workers`` holds."""
    live = set(workers)
    return [
        item["leaseKey"]["S"]
        for item in items
        if item.get("checkpoint", {}).get("S") != SHARD_END
        and item.get("leaseOwner", {}).get("S") not in live
    ]


def lease_imbalance(counts: Mapping[str, int]) -> int:
    """The busiest worker's lease count minus the idlest's."""
    return max(counts.values()) - min(counts.values()) if counts else 0


def lineage_violations(items: Iterable[Mapping[str, Any]]) -> list[str]:
    """Shards with a checkpoint whose parent's lease exists and has not ended: read before
    their parent was finished."""
    items = list(items)
    checkpoints = {i["leaseKey"]["S"]: i.get("checkpoint", {}).get("S") for i in items}
    violations = []
    for item in items:
        parents = [p["S"] for p in item.get("parentShardIds", {}).get("L", [])]
        started = item.get("checkpoint", {}).get("S") is not None
        unfinished = [p for p in parents if p in checkpoints and checkpoints[p] != SHARD_END]
        if started and unfinished:
            violations.append(item["leaseKey"]["S"])
    return violations


# -- replicas ---------------------------------------------------------------------------
class StreamReplicas:
    """Stream-processor replicas as real processes, by worker id."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_dir: Path,
        *,
        failover_seconds: float = 1.5,
        shard_refresh_seconds: float = 1.0,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self._env = {
            **env,
            "PULSE_POLL_INTERVAL_SECONDS": "0.1",
            "PULSE_SHARD_REFRESH_SECONDS": str(shard_refresh_seconds),
            "PULSE_FAILOVER_SECONDS": str(failover_seconds),
            "PULSE_SHUTDOWN_GRACE_SECONDS": "5",
            **(settings or {}),
        }
        self._log_dir = log_dir
        self.processes: dict[str, ServiceProcess] = {}
        self.ports: dict[str, int] = {}

    @property
    def live(self) -> list[str]:
        """Worker ids of the replicas still running."""
        return [
            worker
            for worker, process in self.processes.items()
            if process.proc is not None and process.proc.poll() is None
        ]

    def start(self, worker_id: str) -> ServiceProcess:
        port = free_port()
        env = {**self._env, "PULSE_WORKER_ID": worker_id, "PULSE_HTTP_PORT": str(port)}
        log = self._log_dir / f"stream-processor-{worker_id}.log"
        process = ServiceProcess("stream_processor", env, log).start(wait_port=port)
        self.processes[worker_id] = process
        self.ports[worker_id] = port
        return process

    def kill(self, worker_id: str) -> None:
        """SIGKILL, as a crash would."""
        self.processes[worker_id].kill()

    def pause(self, worker_id: str) -> None:
        """SIGSTOP: the whole process stands still (as in a long stall) until resumed."""
        self._signal(worker_id, signal.SIGSTOP)

    def resume(self, worker_id: str) -> None:
        """SIGCONT after :meth:`pause`."""
        self._signal(worker_id, signal.SIGCONT)

    def _signal(self, worker_id: str, signum: signal.Signals) -> None:
        proc = self.processes[worker_id].proc
        assert proc is not None  # started
        proc.send_signal(signum)

    def metric(self, worker_id: str, name: str, **labels: str) -> float:
        """The sample ``name`` with ``labels`` a live replica serves on ``/metrics`` (0 when
        it has none)."""
        url = f"http://127.0.0.1:{self.ports[worker_id]}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return 0.0

    def stop(self) -> dict[str, int]:
        """SIGTERM every live replica; their exit codes."""
        return {worker: self.processes[worker].stop() for worker in self.live}

    def close(self) -> None:
        for process in self.processes.values():
            process.kill()
