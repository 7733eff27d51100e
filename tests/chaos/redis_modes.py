"""The Redis a reliability run uses, in each of Pulse's three modes, and how to hurt it.

- ``standalone``: one ``redis-server`` with an append-only file (``appendfsync always``), so
  a kill and restart loses nothing;
- ``cluster``: 3 masters with a replica each (``pulse_dev.redis_servers``);
- ``sentinel``: a master, a replica and 3 sentinels.

In the replicated modes the services run with ``PULSE_REDIS_WAIT_REPLICAS=1``: an append is
acknowledged only once a replica holds it, so killing a master (its replica promoted) loses
nothing that was acknowledged. That is the fault these modes add: ``kill_master``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

from pulse.channels import PAYMENTS, ChannelKeys
from pulse.clients import RedisClient, redis_client
from pulse.settings import PulseSettings
from pulse_dev.emulators import free_port, redis_server_binary, stop_process, wait_for_port
from pulse_dev.redis_servers import (
    RedisClusterGroup,
    SentinelGroup,
    start_cluster,
    start_sentinel_group,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["MODES", "RedisDeployment", "RedisMode", "RedisServer"]

RedisMode = Literal["standalone", "cluster", "sentinel"]
MODES: Final[tuple[RedisMode, ...]] = ("standalone", "cluster", "sentinel")
_MASTER_NAME: Final = "pulse"


class RedisServer:
    """A ``redis-server`` on a fixed port, persisting every write to its append-only file
    (``appendfsync always``), so killing and restarting it loses nothing."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("no redis-server binary found")
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--dir", str(self.workdir), "--save", ""]
        argv += ["--appendonly", "yes", "--appendfsync", "always"]
        with (self.workdir / "redis.log").open("ab") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for_port(self.port)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def forget(self) -> None:
        """Delete the append-only file: the next start is an empty Redis."""
        for path in self.workdir.glob("appendonly*"):
            if path.is_dir():
                for part in path.iterdir():
                    part.unlink()
                path.rmdir()
            else:
                path.unlink()

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


class RedisDeployment:
    """The Redis of one run in ``mode``: started, reached (``env``, ``settings``), hurt."""

    def __init__(self, workdir: Path, mode: RedisMode, redis_prefix: str) -> None:
        self.workdir = workdir / "redis"
        self.mode = mode
        self.keys = ChannelKeys(redis_prefix)
        self.server = RedisServer(self.workdir)
        self.cluster: RedisClusterGroup | None = None
        self.sentinel: SentinelGroup | None = None
        self._env: dict[str, str] = {}

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        if self.mode == "standalone":
            self.server.start()
        elif self.mode == "cluster":
            self.cluster = start_cluster(self.workdir)
        else:
            self.sentinel = start_sentinel_group(self.workdir, master_name=_MASTER_NAME)
        self._env = self._reach()

    def stop(self) -> None:
        self.server.stop()
        if self.cluster is not None:
            self.cluster.stop()
        if self.sentinel is not None:
            self.sentinel.stop()

    # -- how the services reach it --------------------------------------------------------
    def env(self) -> dict[str, str]:
        """``REDIS_URL`` and the mode's settings, as the services read them (fixed at
        start: a process restarted after a failover finds the new master by itself)."""
        if not self._env:
            raise RuntimeError("Redis is not started")
        return dict(self._env)

    def _reach(self) -> dict[str, str]:
        if self.cluster is not None:
            return {
                "REDIS_URL": self._cluster_seed(self.cluster),
                "PULSE_REDIS_MODE": "cluster",
                "PULSE_REDIS_WAIT_REPLICAS": "1",
            }
        if self.sentinel is not None:
            return {
                "REDIS_URL": self.sentinel.master().url,
                "PULSE_REDIS_MODE": "sentinel",
                "PULSE_REDIS_SENTINELS": ",".join(self.sentinel.sentinel_urls),
                "PULSE_REDIS_MASTER_NAME": self.sentinel.master_name,
                "PULSE_REDIS_WAIT_REPLICAS": "1",
            }
        return {"REDIS_URL": self.server.url}

    def _cluster_seed(self, cluster: RedisClusterGroup) -> str:
        """A node that ``kill_master`` leaves alive: a master of another slot range than
        the ``payments`` channel's (any node works as a seed; the client learns the rest)."""
        victim = cluster.master_for_key(self.victim_key)
        return next(node.url for node in cluster.masters() if node is not victim)

    def settings(self, base: Mapping[str, str]) -> PulseSettings:
        """:class:`PulseSettings` for the harness's own reads, from the services' env."""
        env = {**base, **self.env()}
        return PulseSettings(
            redis_url=env["REDIS_URL"],
            redis_mode=self.mode,
            redis_sentinels=tuple(filter(None, env.get("PULSE_REDIS_SENTINELS", "").split(","))),
            redis_master_name=env.get("PULSE_REDIS_MASTER_NAME"),
            aws_endpoint_url=env["AWS_ENDPOINT_URL"],
            resource_prefix=env["PULSE_RESOURCE_PREFIX"],
            redis_prefix=env["PULSE_REDIS_PREFIX"],
        )

    def client(self, settings: PulseSettings) -> RedisClient:
        return redis_client(settings, max_connections=8)

    def pids(self) -> dict[str, int]:
        """The Redis processes, by name (their memory is reported, not judged)."""
        if self.cluster is not None:
            nodes = self.cluster.nodes
        elif self.sentinel is not None:
            nodes = [*self.sentinel.data_nodes, *self.sentinel.sentinels]
        else:
            proc = self.server.proc
            return {"(redis)": proc.pid} if proc is not None and proc.poll() is None else {}
        return {
            f"(redis {node.port})": node.process.pid
            for node in nodes
            if node.process is not None and node.alive
        }

    # -- faults ---------------------------------------------------------------------------
    @property
    def victim_key(self) -> str:
        """The key whose master a cluster fault kills: the busiest channel's history."""
        return self.keys.history(PAYMENTS)

    def kill_master(self) -> str:
        """SIGKILL the master (in a cluster: the one serving the ``payments`` channel);
        returns once a replica has been promoted. What it did, in words."""
        if self.cluster is not None:
            node = self.cluster.kill_master(self.victim_key)
            self.cluster.wait_for_failover()
            return f"cluster master :{node.port} kill -9, its replica promoted"
        if self.sentinel is not None:
            node = self.sentinel.kill_master()
            self.sentinel.wait_for_failover()
            return f"sentinel master :{node.port} kill -9, its replica promoted"
        raise RuntimeError("kill_master needs a replicated mode (cluster or sentinel)")

    def heal(self) -> None:
        """Restart killed nodes: each rejoins as a replica of the promoted master."""
        if self.cluster is not None:
            self.cluster.heal()
        if self.sentinel is not None:
            self.sentinel.heal()
