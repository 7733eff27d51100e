"""Real Redis Cluster and Sentinel groups for tests, started from Debian's ``redis-server`` 7.

- :func:`start_cluster` forms a cluster (3 masters with a replica each by default) whose
  killed master fails over within seconds; :class:`RedisClusterGroup` kills, waits for the
  failover, heals and flushes it.
- :func:`start_sentinel_group` runs a master, its replicas and sentinels watching them;
  :class:`SentinelGroup` does the same for a sentinel-managed master.

Each group lives in a temporary directory of its own under the ``workdir`` it is given, on
ports picked at run time, with TLS (:func:`make_tls_files`) and a password when asked.
Its processes are killed by ``stop()`` or, at the latest, when the interpreter exits. A
missing ``redis-server`` raises RuntimeError saying how to install it.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from pulse_dev.redis_nodes import (
    RedisNode,
    TlsFiles,
    make_tls_files,
    redis_server_path,
    start_node,
    wait_until,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "RedisClusterGroup",
    "RedisNode",
    "SentinelGroup",
    "TlsFiles",
    "make_tls_files",
    "start_cluster",
    "start_sentinel_group",
]

_FORM_TIMEOUT: Final = 60.0
# Sentinel: a master silent for 2 s is down; a failover that stalls is retried after 5 s.
# Not 1 s: a loaded machine pauses a process (a sentinel or the master) for over a second
# now and then, and each such pause was a failover nobody caused.
_DOWN_AFTER_MS: Final = 2000
_FAILOVER_TIMEOUT_MS: Final = 5000
_REPLICA_PRIORITY: Final = 100  # Redis's default: a replica sentinels may promote


def _group_dir(workdir: Path, kind: str) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=workdir))


def _stop(nodes: Iterable[RedisNode]) -> None:
    for node in nodes:
        node.kill()


# -- cluster -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _ClusterEntry:
    """One line of ``CLUSTER NODES``."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str  # "-" for a master
    slots: tuple[range, ...]

    @classmethod
    def parse(cls, address: str, fields: dict[str, Any]) -> _ClusterEntry:
        """An entry of redis-py's parsed ``CLUSTER NODES`` reply (``{address: fields}``)."""
        slots = tuple(range(int(span[0]), int(span[-1]) + 1) for span in fields["slots"])
        return cls(
            fields["node_id"],
            int(address.rpartition(":")[2]),
            frozenset(fields["flags"].split(",")),
            fields["master_id"],
            slots,
        )

    @property
    def failing(self) -> bool:
        return bool({"fail", "fail?", "handshake", "noaddr"} & self.flags)


@dataclass(eq=False)
class RedisClusterGroup:
    """A running Redis Cluster: its nodes, how to reach it, and the faults tests inject."""

    nodes: list[RedisNode]
    replicas_per_master: int
    directory: Path
    _killed: list[RedisNode] = field(default_factory=list, repr=False)

    @property
    def seed_url(self) -> str:
        """The URL of a live master (``redis://`` or ``rediss://``, with the password)."""
        return self.masters()[0].url

    def _by_port(self, port: int) -> RedisNode | None:
        return next((node for node in self.nodes if node.port == port), None)

    def _view(self, node: RedisNode | None = None) -> list[_ClusterEntry]:
        """``CLUSTER NODES`` as ``node`` (else any live node) sees it."""
        source = node or next(node for node in self.nodes if node.alive)
        reply = source.client().cluster("nodes")
        return [_ClusterEntry.parse(address, fields) for address, fields in reply.items()]

    def _live(self, role: str) -> list[RedisNode]:
        found = []
        for entry in self._view():
            node = self._by_port(entry.port)
            if role in entry.flags and not entry.failing and node is not None and node.alive:
                found.append(node)
        return found

    def masters(self) -> list[RedisNode]:
        """The live masters, as the cluster sees them now."""
        return self._live("master")

    def replicas(self) -> list[RedisNode]:
        """The live replicas, as the cluster sees them now."""
        return self._live("slave")

    def master_for_key(self, key: str) -> RedisNode:
        """The live master serving ``key``'s slot; raises LookupError when none does."""
        slot = key_slot(key.encode())
        for entry in self._view():
            node = self._by_port(entry.port)
            serves = "master" in entry.flags and any(slot in span for span in entry.slots)
            if serves and node is not None and node.alive and not entry.failing:
                return node
        raise LookupError(f"no live master serves slot {slot} (key {key!r})")

    def kill_master(self, key: str | None = None) -> RedisNode:
        """SIGKILL the master serving ``key``'s slot (any master without a key); that node."""
        node = self.master_for_key(key) if key is not None else self.masters()[0]
        node.kill()
        self._killed.append(node)
        return node

    def _serves_every_slot(self, node: RedisNode) -> bool:
        info = node.client().cluster("info")
        if info.get("cluster_state") != "ok":
            return False
        covered = 0
        for entry in self._view(node):
            owner = self._by_port(entry.port)
            if "master" in entry.flags and not entry.failing and owner and owner.alive:
                covered += sum(len(span) for span in entry.slots)
        return covered == REDIS_CLUSTER_HASH_SLOTS

    def wait_for_failover(self, timeout: float = 30) -> None:
        """Wait until every live node reports ``cluster_state:ok`` and sees every slot
        served by a live master; raises TimeoutError."""
        wait_until(
            lambda: all(self._serves_every_slot(node) for node in self.nodes if node.alive),
            timeout,
            "cluster failover",
        )

    def _healthy(self) -> bool:
        if not all(node.alive and self._serves_every_slot(node) for node in self.nodes):
            return False
        view = self._view()
        if any(entry.failing for entry in view) or len(view) != len(self.nodes):
            return False
        masters = {entry.node_id for entry in view if entry.slots}
        attached = [entry.master_id for entry in view if "slave" in entry.flags]
        if any(attached.count(master) != self.replicas_per_master for master in masters):
            return False
        return all(
            node.client().info("replication").get("master_link_status") == "up"
            for node in self.replicas()
        )

    def wait_until_healthy(self, timeout: float = _FORM_TIMEOUT) -> None:
        """Wait until every node runs and agrees the cluster is whole: every slot served,
        no node failing, every replica attached and in sync; raises TimeoutError."""
        wait_until(self._healthy, timeout, "a healthy cluster")

    def heal(self, timeout: float = _FORM_TIMEOUT) -> None:
        """Restart every killed node (each rejoins as a replica) and wait until healthy."""
        for node in self.nodes:
            if not node.alive:
                node.restart()
        self._killed.clear()
        self.wait_until_healthy(timeout)

    def flushall(self) -> None:
        """Delete every key (FLUSHALL on each master)."""
        for node in self.masters():
            node.client().flushall()

    def stop(self) -> None:
        _stop(self.nodes)


def _slot_ranges(count: int) -> list[tuple[int, int]]:
    bounds = [i * REDIS_CLUSTER_HASH_SLOTS // count for i in range(count + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(count)]


def _form_cluster(masters: list[RedisNode], replicas: list[RedisNode]) -> None:
    """Assign slots, introduce every node to the first, and attach replicas round-robin."""
    everyone = masters + replicas
    for epoch, (node, (first, last)) in enumerate(
        zip(masters, _slot_ranges(len(masters)), strict=True), start=1
    ):
        client = node.client()
        client.cluster("set-config-epoch", epoch)
        client.cluster("addslotsrange", first, last)
    seed = everyone[0].client()
    for node in everyone[1:]:
        seed.cluster("meet", node.host, node.port, node.bus_port)
    for index, replica in enumerate(replicas):
        master_id = masters[index % len(masters)].client().cluster("myid")
        client = replica.client()
        # REPLICATE fails until the replica has heard of that master through gossip.
        wait_until(
            partial(client.cluster, "replicate", master_id),
            _FORM_TIMEOUT,
            f"replica on port {replica.port} attached",
        )


def start_cluster(
    workdir: Path,
    *,
    masters: int = 3,
    replicas_per_master: int = 1,
    password: str | None = None,
    tls: TlsFiles | None = None,
) -> RedisClusterGroup:
    """A Redis Cluster of ``masters`` masters with ``replicas_per_master`` replicas each,
    formed and healthy (every slot served, every replica in sync). Raises RuntimeError
    when ``redis-server`` is missing, TimeoutError when the cluster does not form."""
    redis_server_path()
    directory = _group_dir(workdir, "redis-cluster")
    nodes: list[RedisNode] = []
    group = RedisClusterGroup(nodes, replicas_per_master, directory)
    try:
        nodes.extend(
            start_node(directory / f"node-{index + 1}", password=password, tls=tls, cluster=True)
            for index in range(masters * (1 + replicas_per_master))
        )
        _form_cluster(nodes[:masters], nodes[masters:])
        group.wait_until_healthy()
    except BaseException:
        group.stop()
        raise
    return group


# -- sentinel ----------------------------------------------------------------------------


@dataclass(eq=False)
class SentinelGroup:
    """A master, its replicas and the sentinels that watch them, under ``master_name``."""

    master_name: str
    data_nodes: list[RedisNode]
    sentinels: list[RedisNode]
    directory: Path
    _killed: RedisNode | None = field(default=None, repr=False)

    @property
    def sentinel_urls(self) -> list[str]:
        """Each sentinel's ``redis://host:port`` (``rediss://`` with TLS)."""
        return [node.url for node in self.sentinels]

    def _reported(self, sentinel: RedisNode) -> RedisNode | None:
        reply = sentinel.client().sentinel_get_master_addr_by_name(self.master_name)
        return self._by_port(int(reply[1])) if isinstance(reply, tuple) else None

    def _by_port(self, port: int) -> RedisNode | None:
        return next((node for node in self.data_nodes if node.port == port), None)

    def master(self) -> RedisNode:
        """The master the (first live) sentinel reports."""
        sentinel = next(node for node in self.sentinels if node.alive)
        node = self._reported(sentinel)
        if node is None:
            raise LookupError(f"sentinels report no master named {self.master_name!r}")
        return node

    def kill_master(self) -> RedisNode:
        """SIGKILL the current master; that node."""
        node = self.master()
        node.kill()
        self._killed = node
        return node

    def _promoted(self) -> bool:
        reported = {self._reported(node) for node in self.sentinels if node.alive}
        if len(reported) != 1:
            return False
        (master,) = reported
        return (
            master is not None
            and master is not self._killed
            and master.alive
            and master.client().role()[0] == "master"
        )

    def wait_for_failover(self, timeout: float = 30) -> None:
        """Wait until every sentinel reports a new master (not the one killed) and it answers
        ROLE as a master; raises TimeoutError."""
        wait_until(self._promoted, timeout, "sentinel failover")

    def _replicas_follow(self, master: RedisNode) -> bool:
        for node in self.data_nodes:
            info = node.client().info("replication")
            if node is not master and (
                info.get("master_port") != master.port or info.get("master_link_status") != "up"
            ):
                return False
        return True

    def _sentinels_complete(self) -> bool:
        for sentinel in self.sentinels:
            state = sentinel.client().sentinel_master(self.master_name)
            if not isinstance(state, dict):
                return False
            if state["num-other-sentinels"] != len(self.sentinels) - 1:
                return False
            if state["num-slaves"] < len(self.data_nodes) - 1:
                return False
        return True

    def _healthy(self) -> bool:
        if not all(node.alive for node in self.data_nodes + self.sentinels):
            return False
        reported = {self._reported(node) for node in self.sentinels}
        if len(reported) != 1 or None in reported:
            return False
        master = self.master()
        return (
            master.client().role()[0] == "master"
            and self._replicas_follow(master)
            and self._sentinels_complete()
        )

    def wait_until_healthy(self, timeout: float = _FORM_TIMEOUT) -> None:
        """Wait until every process runs, every replica follows the master the sentinels
        agree on, and the sentinels know each other; raises TimeoutError."""
        wait_until(self._healthy, timeout, "a healthy sentinel group")

    def heal(self, timeout: float = _FORM_TIMEOUT) -> None:
        """Restart every killed node (an old master comes back as a replica of the current
        one) and wait until healthy.

        A restarted node holds nothing until its first sync from the master ends, yet the
        sentinels would promote it meanwhile (a failover then takes every key with it:
        the master resyncs from the empty node). So it comes back with ``replica-priority
        0``, which sentinels never promote, and gets the default 100 once in sync."""
        master = self.master()
        restarted = [node for node in self.data_nodes if not node.alive]
        for node in restarted:
            node.start(
                options=["--replicaof", master.host, str(master.port), "--replica-priority", "0"]
            )
        for node in self.sentinels:
            if not node.alive:
                node.start()
        self._killed = None
        self.wait_until_healthy(timeout)
        for node in restarted:
            node.client().config_set("replica-priority", _REPLICA_PRIORITY)

    def flushall(self) -> None:
        """Delete every key (FLUSHALL on the master)."""
        self.master().client().flushall()

    def stop(self) -> None:
        _stop(self.sentinels + self.data_nodes)


def _sentinel_lines(name: str, master: RedisNode, quorum: int) -> list[str]:
    lines = [
        f"sentinel monitor {name} {master.host} {master.port} {quorum}",
        f"sentinel down-after-milliseconds {name} {_DOWN_AFTER_MS}",
        f"sentinel failover-timeout {name} {_FAILOVER_TIMEOUT_MS}",
        f"sentinel parallel-syncs {name} 1",
    ]
    if master.password:
        lines.append(f'sentinel auth-pass {name} "{master.password}"')
    return lines


def start_sentinel_group(
    workdir: Path,
    *,
    replicas: int = 1,
    sentinels: int = 3,
    master_name: str = "pulse",
    password: str | None = None,
    tls: TlsFiles | None = None,
) -> SentinelGroup:
    """A master with ``replicas`` replicas and ``sentinels`` sentinels (quorum: a majority)
    monitoring it as ``master_name``, healthy. ``password`` protects the data nodes (the
    sentinels answer without one). Raises RuntimeError when ``redis-server`` is missing,
    TimeoutError when the group does not settle."""
    redis_server_path()
    directory = _group_dir(workdir, "redis-sentinel")
    group = SentinelGroup(master_name, [], [], directory)
    try:
        master = start_node(directory / "master", password=password, tls=tls)
        group.data_nodes.append(master)
        for index in range(replicas):
            node = start_node(
                directory / f"replica-{index + 1}",
                [f"replicaof {master.host} {master.port}"],
                password=password,
                tls=tls,
            )
            group.data_nodes.append(node)
        lines = _sentinel_lines(master_name, master, sentinels // 2 + 1)
        for index in range(sentinels):
            node = start_node(directory / f"sentinel-{index + 1}", lines, tls=tls, sentinel=True)
            group.sentinels.append(node)
        group.wait_until_healthy()
    except BaseException:
        group.stop()
        raise
    return group
