"""Lua script calls that survive a failover: one pipeline per Redis node, ended by ``WAIT``.

Redis replicates asynchronously: a master acknowledges a write before any replica has it,
and if the master dies then, the promoted replica never saw it. ``WAIT <replicas>
<timeout ms>`` blocks until that many replicas acknowledged every write made *on the same
connection* so far, so :class:`ScriptRunner` sends each node's calls and their ``WAIT`` in
one pipeline (one write, then the replies) on one connection:

- standalone and Sentinel (``redis.asyncio.Redis``): one pipeline, ``WAIT`` last; a lost
  connection's calls are sent again on a new one when the caller says they are idempotent;
- Redis Cluster (``redis.asyncio.RedisCluster``): the calls grouped by the node serving
  their slot (every key of one call shares a hash tag, so a call has one slot), one
  pipeline per node, all nodes at once, each ended by its own ``WAIT``. A call answered
  ``MOVED`` (the slot map changed: failover, resharding) is sent again to the new owner
  after the map is refreshed, ``ASK`` to the importing node after ``ASKING``,
  ``TRYAGAIN``/``CLUSTERDOWN`` after a pause; a lost connection refreshes the map too,
  and its calls are sent again only when the caller says they are idempotent (it cannot
  be known whether they ran).

Scripts go by SHA1 (``EVALSHA``); a node that answers ``NOSCRIPT`` gets ``SCRIPT LOAD`` and
the calls again — no round trip is spent asking whether scripts are loaded. The pipeline is
encoded here (:func:`_pack`): redis-py's encoder copies the command built so far once per
argument, which for three calls per event carrying the event's JSON cost more CPU than the
rest of the append.

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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import redis.asyncio as aioredis
from prometheus_client import Counter
from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pulse.errors import RetryableError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from redis.asyncio.cluster import ClusterNode
    from redis.asyncio.connection import AbstractConnection

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
    args: Sequence[bytes | str | int]
    durable: bool = True


Command = tuple[bytes | str | int, ...]


def _evalsha(call: ScriptCall) -> Command:
    return ("EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args)


def _pack(commands: Sequence[Command]) -> bytes:
    """``commands`` in the Redis protocol (RESP arrays of bulk strings), as one buffer."""
    parts: list[bytes] = []
    append = parts.append
    for command in commands:
        append(b"*%d\r\n" % len(command))
        for arg in command:
            data = arg.encode() if isinstance(arg, str) else arg
            if isinstance(data, int):
                data = b"%d" % data
            append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


async def _exchange(connection: AbstractConnection, commands: list[Command]) -> list[Any]:
    """Send ``commands`` in one write on ``connection`` and read their replies: an error
    reply as its exception; a lost connection as the error, for every reply not read.
    Cancelled half-way, the connection is closed: replies left unread on it would be read
    by its next user."""
    replies: list[Any] = []
    try:
        await connection.send_packed_command(_pack(commands))
        while len(replies) < len(commands):
            try:
                replies.append(await connection.read_response())
            except ResponseError as exc:
                replies.append(exc)
    except _LOST as exc:  # redis-py disconnected it: the next use connects anew
        replies += [exc] * (len(commands) - len(replies))
    except BaseException:
        await connection.disconnect()
        raise
    return replies


@dataclass
class _Round:
    """What one round of sends left to do."""

    again: list[int]  # calls to send again, in order
    shortfall: ReplicationShortfallError | None = None
    pause: bool = False  # the cluster was busy or a node lost: wait before the next round
    refresh: bool = False  # the slot map must be read anew
    moved: list[MovedError] = field(default_factory=list)

    def settle(self, group: list[int], replies: list[Any]) -> list[int]:
        """Note which of ``group``'s calls to send again, by their replies; the calls whose
        script the server lacked."""
        missing = []
        for i in group:
            reply = replies[i]
            if isinstance(reply, MovedError):
                self.moved.append(reply)
            elif isinstance(reply, _LOST):
                self.refresh = self.pause = True
            elif isinstance(reply, _BUSY):
                self.pause = True
            elif isinstance(reply, NoScriptError):
                missing.append(i)
            elif not isinstance(reply, AskError):
                continue
            self.again.append(i)
        return missing


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
        pause = False
        for attempt in range(_ROUNDS):
            if not todo:
                break
            if pause:
                await asyncio.sleep(_PAUSE_SECONDS * attempt)
            if isinstance(self._redis, aioredis.RedisCluster):
                done = await _cluster_round(self._redis, self.replication, calls, todo, replies)
            else:
                done = await self._standalone_round(calls, todo, replies)
            shortfall = shortfall or done.shortfall
            todo, pause = done.again, done.pause
            if not idempotent and any(isinstance(replies[i], _LOST) for i in todo):
                break  # a call that may have run is not ours to send again
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
        """One pipeline on one connection of the pool."""
        redis = self._redis
        assert isinstance(redis, aioredis.Redis)
        pool = redis.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            shortfall = await _send(connection, self.replication, calls, todo, replies)
        finally:
            await pool.release(connection)
        done = _Round(again=[], shortfall=shortfall)
        for script in _scripts(calls, done.settle(todo, replies)):
            await redis.script_load(script.source)
        return done


async def _send(
    connection: AbstractConnection,
    replication: Replication,
    calls: Sequence[ScriptCall],
    group: list[int],
    replies: list[Any],
) -> ReplicationShortfallError | None:
    """``group``'s calls (after ``ASKING`` where an ``ASK`` redirected them), then ``WAIT``
    if one is durable, in one pipeline on ``connection``; their replies go to ``replies``.
    The shortfall, if the ``WAIT`` fell short."""
    commands: list[Command] = []
    positions = []
    for i in group:
        if isinstance(replies[i], AskError):
            commands.append(("ASKING",))
        positions.append(len(commands))
        commands.append(_evalsha(calls[i]))
    wait = replication.replicas > 0 and any(calls[i].durable for i in group)
    if wait:
        commands.append(("WAIT", replication.replicas, replication.timeout_ms))
    results = await _exchange(connection, commands)
    for i, position in zip(group, positions, strict=True):
        replies[i] = results[position]
    return _shortfall(results[-1], replication, calls, group, replies) if wait else None


def _scripts(calls: Sequence[ScriptCall], indexes: list[int]) -> list[LuaScript]:
    return list({calls[i].script.sha: calls[i].script for i in indexes}.values())


def _shortfall(
    acks: Any,
    replication: Replication,
    calls: Sequence[ScriptCall],
    group: list[int],
    replies: list[Any],
) -> ReplicationShortfallError | None:
    """The error for the ``WAIT`` reply ``acks`` after ``group``'s calls: fewer replicas
    than asked, or no answer (counted). None when enough acknowledged or no durable call
    ran (redirected calls wrote nothing there; their ``WAIT`` is wherever they run)."""
    if not any(calls[i].durable and not isinstance(replies[i], _NOT_RUN) for i in group):
        return None
    if isinstance(acks, BaseException):
        text = f"WAIT failed: {acks}"
    elif int(acks) >= replication.replicas:
        return None
    else:
        text = f"{acks} of {replication.replicas} Redis replicas acknowledged the writes"
    WAIT_SHORTFALLS.inc()
    return ReplicationShortfallError(f"{text} (within {replication.timeout_ms} ms)")


async def _cluster_round(
    cluster: aioredis.RedisCluster,
    replication: Replication,
    calls: Sequence[ScriptCall],
    todo: list[int],
    replies: list[Any],
) -> _Round:
    """One pipeline per node, all at once (module doc); what to send again."""
    await cluster.initialize()  # after a lost node: the slot map anew
    done = _Round(again=[])
    groups: dict[str, tuple[ClusterNode, list[int]]] = {}
    for i in todo:
        node = _node_for(cluster, calls[i], replies[i])
        if node is None:  # mid-failover: no owner known yet
            replies[i] = SlotNotCoveredError(f"no node serves {calls[i].keys[0]!r}")
            done.again.append(i)
            done.refresh = done.pause = True
        else:
            groups.setdefault(node.name, (node, []))[1].append(i)
    shortfalls = await asyncio.gather(
        *(_on_node(node, replication, calls, group, replies) for node, group in groups.values())
    )
    done.shortfall = next((s for s in shortfalls if s is not None), None)
    for node, group in groups.values():
        for script in _scripts(calls, done.settle(group, replies)):
            await node.execute_command("SCRIPT", "LOAD", script.source)
    for moved in done.moved:
        await cluster.nodes_manager.move_slot(moved)
    done.again.sort()
    if done.refresh:
        await cluster.aclose()  # the next round's initialize() reads the slot map anew
    return done


async def _on_node(
    node: ClusterNode,
    replication: Replication,
    calls: Sequence[ScriptCall],
    group: list[int],
    replies: list[Any],
) -> ReplicationShortfallError | None:
    connection = node.acquire_connection()
    try:
        return await _send(connection, replication, calls, group, replies)
    finally:
        node.release(connection)


def _node_for(
    cluster: aioredis.RedisCluster, call: ScriptCall, previous: Any
) -> ClusterNode | None:
    """The node to send ``call`` to: where an ``ASK`` redirected it, else its slot's."""
    if isinstance(previous, AskError):
        node = cluster.get_node(host=previous.host, port=previous.port)
        if node is not None:
            return node
    try:
        return cluster.get_node_from_key(call.keys[0])
    except SlotNotCoveredError:
        return None
