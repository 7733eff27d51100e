"""Lua script calls that survive a failover: one pipeline per Redis node, ended by ``WAIT``.

Redis replicates asynchronously: a master acknowledges a write before any replica has it,
and if the master dies then, the promoted replica never saw it. ``WAIT <replicas>
<timeout ms>`` blocks until that many replicas acknowledged every write made *on the same
connection* so far, so :class:`ScriptRunner` sends each node's calls and their ``WAIT`` in
one pipeline on one connection:

- standalone and Sentinel (``redis.asyncio.Redis``): one pipeline, ``WAIT`` last;
- Redis Cluster (``redis.asyncio.RedisCluster``): the calls grouped by the node serving
  their slot (every key of one call shares a hash tag, so a call has one slot), one
  pipeline per node, all nodes at once, each ended by its own ``WAIT``. A call answered
  ``MOVED`` (the slot map changed: failover, resharding) is sent again to the new owner
  after the map is refreshed, ``ASK`` to the importing node after ``ASKING``,
  ``TRYAGAIN``/``CLUSTERDOWN`` after a pause; a lost connection refreshes the map too,
  and its calls are sent again only when the caller says they are idempotent (it cannot
  be known whether they ran).

Scripts go by SHA1 (``EVALSHA``); a node that answers ``NOSCRIPT`` gets ``SCRIPT LOAD`` and
the calls again — no round trip is spent asking whether scripts are loaded.

When fewer replicas than asked acknowledge within the timeout, the writes were applied on
the master but may not survive it: :class:`ReplicationShortfallError` (retryable) is
raised and ``pulse_redis_wait_shortfalls_total`` counts it. Callers retry, and Pulse's
scripts are written for that: a retried call finds its guard and changes nothing, but
still makes a write (it renews the guard's expiry), so its ``WAIT`` covers everything the
first attempt wrote before it on that master — replication is one ordered log per master.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import redis.asyncio as aioredis
from prometheus_client import Counter
from redis.asyncio.cluster import PipelineCommand
from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pulse.errors import RetryableError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from redis.asyncio.cluster import ClusterNode
    from redis.typing import EncodableT

    from pulse.settings import PulseSettings

__all__ = [
    "WAIT_SHORTFALLS",
    "LuaScript",
    "Replication",
    "ReplicationShortfallError",
    "ScriptCall",
    "ScriptRunner",
]

WAIT_SHORTFALLS: Final = Counter(
    "pulse_redis_wait_shortfalls_total",
    "Redis WAITs answered by fewer replicas than PULSE_REDIS_WAIT_REPLICAS in time "
    "(the writes are retried)",
)

_ROUNDS: Final = 5  # sends per call before giving up: redirections, reloads, lost nodes
_PAUSE_SECONDS: Final = 0.1  # times the round number, before a round after a failure
_LOST: Final = (RedisConnectionError, RedisTimeoutError, OSError)
_BUSY: Final = (TryAgainError, ClusterDownError, BusyLoadingError)
# Replies of calls that did not run: what they would have written is not for WAIT to count.
_NOT_RUN: Final = (MovedError, AskError, NoScriptError, SlotNotCoveredError, *_BUSY)


class ReplicationShortfallError(RetryableError):
    """Fewer replicas than asked acknowledged the writes in time. They were applied on the
    master and may be lost with it: retry (guarded writes make the retry change nothing)."""


@dataclass(frozen=True)
class Replication:
    """How many replicas must acknowledge durable writes (``PULSE_REDIS_WAIT_*``)."""

    replicas: int = 0
    timeout_ms: int = 1000

    @classmethod
    def of(cls, settings: PulseSettings) -> Replication:
        return cls(settings.redis_wait_replicas, settings.redis_wait_timeout_ms)


class LuaScript:
    """A Lua script run by its SHA1."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()


class ScriptCall(NamedTuple):
    """One ``EVALSHA``. Every key must hash to one slot (share a hash tag). ``durable``:
    its writes must reach the replicas (its node's pipeline ends with ``WAIT``)."""

    script: LuaScript
    keys: Sequence[str]
    args: Sequence[EncodableT]
    durable: bool = True


def _evalsha(call: ScriptCall) -> tuple[EncodableT, ...]:
    return ("EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args)


@dataclass
class _Round:
    """What one round of sends left to do."""

    again: list[int]  # calls to send again, in order
    shortfall: ReplicationShortfallError | None = None
    pause: bool = False  # the cluster was busy or a node lost: wait before the next round


class ScriptRunner:
    """Runs :class:`ScriptCall` s in order per node, one round trip per node (module doc)."""

    def __init__(
        self,
        redis: aioredis.Redis | aioredis.RedisCluster,
        replication: Replication | None = None,
    ) -> None:
        self._redis = redis
        self.replication = replication or Replication()

    async def call(self, call: ScriptCall, *, idempotent: bool) -> Any:
        """:meth:`run` of one call; its reply."""
        return (await self.run([call], idempotent=idempotent))[0]

    async def run(self, calls: Sequence[ScriptCall], *, idempotent: bool) -> list[Any]:
        """Run ``calls``, in the order given on each node; their replies, in that order.

        ``idempotent``: running a call twice changes nothing more than running it once
        (guarded scripts); only then are calls sent again after a connection was lost
        mid-way. Raises the first error a script returned, then
        :class:`ReplicationShortfallError`, or a :class:`~pulse.errors.RetryableError` when
        Redis still redirected or refused calls after a few attempts. After any error some
        calls may have been applied: the caller retries them all.
        """
        replies: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        shortfall: ReplicationShortfallError | None = None
        for attempt in range(_ROUNDS):
            if isinstance(self._redis, aioredis.RedisCluster):
                round_ = _ClusterRound(self._redis, self.replication, calls, replies)
                done = await round_.run(todo)
            else:
                done = await self._standalone_round(calls, todo, replies)
            shortfall = shortfall or done.shortfall
            todo = done.again
            if not todo or (not idempotent and any(isinstance(replies[i], _LOST) for i in todo)):
                break  # done, or a call that may have run is not ours to send again
            if done.pause:
                await asyncio.sleep(_PAUSE_SECONDS * (attempt + 1))
        unsent = set(todo)
        for i, reply in enumerate(replies):
            if isinstance(reply, BaseException) and i not in unsent:
                raise reply
        if todo:
            last = replies[todo[0]]
            raise RetryableError(f"Redis did not run {len(todo)} script calls: {last}") from last
        if shortfall is not None:
            raise shortfall
        return replies

    async def _standalone_round(
        self, calls: Sequence[ScriptCall], todo: list[int], replies: list[Any]
    ) -> _Round:
        """One pipeline on one connection (redis-py resends it whole if the connection
        drops before any reply: its retry policy, as for every pipeline)."""
        redis = self._redis
        wait = self.replication.replicas > 0 and any(calls[i].durable for i in todo)
        async with redis.pipeline(transaction=False) as pipe:
            for i in todo:
                pipe.execute_command(*_evalsha(calls[i]))
            if wait:
                pipe.execute_command("WAIT", self.replication.replicas, self.replication.timeout_ms)
            results = await pipe.execute(raise_on_error=False)
        done = _Round(again=[])
        if wait:
            acks = results.pop()
            done.shortfall = _shortfall(acks, self.replication, calls, todo, results)
        for i, result in zip(todo, results, strict=True):
            replies[i] = result
            if isinstance(result, NoScriptError):
                done.again.append(i)
        for script in _scripts(calls, done.again):
            await redis.script_load(script.source)
        return done


def _scripts(calls: Sequence[ScriptCall], indexes: list[int]) -> list[LuaScript]:
    return list({calls[i].script.sha: calls[i].script for i in indexes}.values())


def _shortfall(
    acks: Any,
    replication: Replication,
    calls: Sequence[ScriptCall],
    sent: list[int],
    replies: Sequence[Any],
) -> ReplicationShortfallError | None:
    """The error for the ``WAIT`` reply ``acks`` after the calls ``sent`` (whose
    ``replies`` are in the same order): fewer replicas than asked, or no answer (counted).
    None when enough acknowledged or no durable call ran (redirected calls wrote nothing
    there; their ``WAIT`` is wherever they run)."""
    ran = any(
        calls[i].durable and not isinstance(reply, _NOT_RUN)
        for i, reply in zip(sent, replies, strict=True)
    )
    if not ran:
        return None
    if isinstance(acks, BaseException):
        text = f"WAIT failed: {acks}"
    elif int(acks) >= replication.replicas:
        return None
    else:
        text = f"{acks} of {replication.replicas} Redis replicas acknowledged the writes"
    WAIT_SHORTFALLS.inc()
    return ReplicationShortfallError(f"{text} (within {replication.timeout_ms} ms)")


class _ClusterRound:
    """One pipeline per node, all at once, and what to send again (module doc)."""

    def __init__(
        self,
        cluster: aioredis.RedisCluster,
        replication: Replication,
        calls: Sequence[ScriptCall],
        replies: list[Any],
    ) -> None:
        self._cluster = cluster
        self._replication = replication
        self._calls = calls
        self._replies = replies
        self._done = _Round(again=[])

    async def run(self, todo: list[int]) -> _Round:
        cluster, replies, done = self._cluster, self._replies, self._done
        await cluster.initialize()  # after a lost node: the slot map anew
        groups: dict[str, tuple[ClusterNode, list[int]]] = {}
        for i in todo:
            node = self._node_for(i)
            if node is None:  # mid-failover: no owner known yet
                done.again.append(i)
                replies[i] = SlotNotCoveredError(f"no node serves {self._calls[i].keys[0]!r}")
            else:
                groups.setdefault(node.name, (node, []))[1].append(i)
        outcomes = await asyncio.gather(
            *(self._pipeline(node, group) for node, group in groups.values()),
            return_exceptions=True,
        )
        refresh = bool(done.again)
        for (node, group), outcome in zip(groups.values(), outcomes, strict=True):
            if isinstance(outcome, _LOST):  # the pipeline could not be sent
                for i in group:
                    replies[i] = outcome
            elif isinstance(outcome, BaseException):
                raise outcome
            refresh = await self._settle(node, group) or refresh
        done.again.sort()
        if refresh:
            done.pause = True
            await cluster.aclose()  # the next round's initialize() reads the slot map anew
        return done

    def _node_for(self, i: int) -> ClusterNode | None:
        """The node to send call ``i`` to: where an ``ASK`` redirected it, else its slot's."""
        previous = self._replies[i]
        if isinstance(previous, AskError):
            node = self._cluster.get_node(host=previous.host, port=previous.port)
            if node is not None:
                return node
        try:
            return self._cluster.get_node_from_key(self._calls[i].keys[0])
        except SlotNotCoveredError:
            return None

    async def _pipeline(self, node: ClusterNode, group: list[int]) -> None:
        """``group``'s calls (after ``ASKING`` where redirected so), then ``WAIT``, on one
        of ``node``'s connections; their replies go to the round's replies, a shortfall to
        the round."""
        calls, replies, replication = self._calls, self._replies, self._replication
        commands: list[PipelineCommand] = []
        sent: list[tuple[int, PipelineCommand]] = []
        for i in group:
            if isinstance(replies[i], AskError):
                commands.append(PipelineCommand(len(commands), "ASKING"))
            command = PipelineCommand(len(commands), *_evalsha(calls[i]))
            commands.append(command)
            sent.append((i, command))
        wait = None
        if replication.replicas and any(calls[i].durable for i in group):
            wait = PipelineCommand(
                len(commands), "WAIT", replication.replicas, replication.timeout_ms
            )
            commands.append(wait)
        await node.execute_pipeline(commands)
        for i, command in sent:
            replies[i] = command.result
        if wait is not None:
            shortfall = _shortfall(
                wait.result, replication, calls, group, [replies[i] for i in group]
            )
            self._done.shortfall = self._done.shortfall or shortfall

    async def _settle(self, node: ClusterNode, group: list[int]) -> bool:
        """Note ``group``'s calls to send again, loading the scripts ``node`` lacked and
        the slots that moved; True if the slot map must be read anew."""
        refresh = False
        missing = []
        for i in group:
            reply = self._replies[i]
            if isinstance(reply, MovedError):
                await self._cluster.nodes_manager.move_slot(reply)
            elif isinstance(reply, _LOST):
                refresh = True
            elif isinstance(reply, _BUSY):
                self._done.pause = True
            elif isinstance(reply, NoScriptError):
                missing.append(i)
            elif not isinstance(reply, AskError):
                continue
            self._done.again.append(i)
        for script in _scripts(self._calls, missing):
            await node.execute_command("SCRIPT", "LOAD", script.source)
        return refresh
