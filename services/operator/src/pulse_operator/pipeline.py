"""An ``EventPipeline`` spec, mapped to the topology :mod:`pulse.topology_apply` applies.

The spec's field names follow AWS Controllers for Kubernetes (``tableName``, ``keySchema``,
``streamSpecification``, ``timeToLive``, ``globalSecondaryIndexes``, ``queueName``,
``visibilityTimeout``, ``messageRetentionPeriod``, ``filterPolicy``, ...), typed, so moving
to ACK on EKS is mechanical. The CRD's OpenAPI schema already refuses most bad input;
:func:`to_topology` checks what a schema cannot say (one HASH key, unique names, the
delivery mode Pulse's workers need, indexes projecting every attribute) and raises
:class:`InvalidPipelineError`, a permanent error.

Every name is prefixed with ``spec.resourcePrefix`` so two pipelines can share an account.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pulse.errors import PermanentError
from pulse.topology import IndexSpec, QueueSpec, TableSpec, TopologySpec

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "DeletionPolicy",
    "InvalidPipelineError",
    "Pipeline",
    "parse_pipeline",
    "to_topology",
]

DeletionPolicy = Literal["Retain", "Delete"]
STREAM_VIEW_TYPES = {"NEW_IMAGE", "OLD_IMAGE", "NEW_AND_OLD_IMAGES", "KEYS_ONLY"}


class InvalidPipelineError(PermanentError):
    """The spec cannot be applied as written; fixing the resource is the only remedy."""


@dataclass(frozen=True)
class Pipeline:
    """A parsed spec: the topology plus what only the operator needs."""

    topology: TopologySpec
    resource_prefix: str
    deletion_policy: DeletionPolicy
    config_map_name: str


def _get(obj: Mapping[str, Any], key: str, kind: type, default: Any, where: str) -> Any:
    value = obj.get(key, default)
    # bool is an int in Python: never accept true for a number or 1 for a flag
    if value is None or (isinstance(value, kind) and not (kind is int and isinstance(value, bool))):
        return value
    msg = f"{where}.{key} must be {kind.__name__}, got {type(value).__name__}"
    raise InvalidPipelineError(msg)


def _key_schema(raw: Mapping[str, Any], where: str) -> tuple[str, str | None]:
    """The HASH key and the RANGE key (or None) of a ``keySchema``."""
    keys = _get(raw, "keySchema", list, [], where)
    hashes = [k.get("attributeName") for k in keys if k.get("keyType") == "HASH"]
    ranges = [k.get("attributeName") for k in keys if k.get("keyType") == "RANGE"]
    if len(hashes) != 1 or len(ranges) > 1 or len(keys) != len(hashes) + len(ranges):
        msg = f"{where}.keySchema needs exactly one HASH key and at most one RANGE key"
        raise InvalidPipelineError(msg)
    return hashes[0], ranges[0] if ranges else None


def _index(raw: Mapping[str, Any], where: str) -> IndexSpec:
    name = _get(raw, "indexName", str, None, where)
    if not name:
        raise InvalidPipelineError(f"{where}.indexName is required")
    projection = _get(raw, "projection", dict, {}, where).get("projectionType", "ALL")
    if projection != "ALL":
        msg = f"{where}.projection.projectionType must be ALL (Pulse reads whole items)"
        raise InvalidPipelineError(msg)
    hash_key, range_key = _key_schema(raw, where)
    return IndexSpec(name=name, hash_key=hash_key, range_key=range_key)


def _table(raw: Mapping[str, Any], prefix: str, where: str) -> TableSpec:
    name = _get(raw, "tableName", str, None, where)
    if not name:
        raise InvalidPipelineError(f"{where}.tableName is required")
    hash_key, range_key = _key_schema(raw, where)
    stream = _get(raw, "streamSpecification", dict, {}, where)
    view = None
    if _get(stream, "streamEnabled", bool, default=False, where=f"{where}.streamSpecification"):
        view = stream.get("streamViewType", "NEW_AND_OLD_IMAGES")
        if view not in STREAM_VIEW_TYPES:
            allowed = sorted(STREAM_VIEW_TYPES)
            msg = f"{where}.streamSpecification.streamViewType {view!r} is not one of {allowed}"
            raise InvalidPipelineError(msg)
    ttl = _get(raw, "timeToLive", dict, {}, where)
    ttl_attribute = None
    if _get(ttl, "enabled", bool, default=False, where=f"{where}.timeToLive"):
        ttl_attribute = ttl.get("attributeName")
        if not ttl_attribute:
            raise InvalidPipelineError(f"{where}.timeToLive.attributeName is required when enabled")
    indexes = tuple(
        _index(index, f"{where}.globalSecondaryIndexes[{i}]")
        for i, index in enumerate(_get(raw, "globalSecondaryIndexes", list, [], where))
    )
    _unique([i.name for i in indexes], f"{where}: index")
    return TableSpec(
        name=prefix + name,
        hash_key=hash_key,
        range_key=range_key,
        stream_view_type=view,
        ttl_attribute=ttl_attribute,
        indexes=indexes,
    )


def _subscription(raw: Mapping[str, Any], where: str, *, fifo: bool) -> dict[str, Any] | None:
    """The queue's filter policy on the topic, or None when it is not subscribed."""
    if "subscription" not in raw:
        return None
    if fifo:
        msg = (
            f"{where}.subscription: Pulse's topic is a standard topic; it cannot feed a FIFO queue"
        )
        raise InvalidPipelineError(msg)
    sub = _get(raw, "subscription", dict, {}, where)
    scope = sub.get("filterPolicyScope", "MessageAttributes")
    if scope != "MessageAttributes":
        msg = (
            f"{where}.subscription.filterPolicyScope must be MessageAttributes"
            " (the stream processor sets the attributes the filters match)"
        )
        raise InvalidPipelineError(msg)
    if (
        _get(sub, "rawMessageDelivery", bool, default=True, where=f"{where}.subscription")
        is not True
    ):
        msg = (
            f"{where}.subscription.rawMessageDelivery must be true:"
            " the workers read the CloudEvent as the message body"
        )
        raise InvalidPipelineError(msg)
    return dict(_get(sub, "filterPolicy", dict, {}, f"{where}.subscription"))


def _queue(raw: Mapping[str, Any], prefix: str, where: str) -> QueueSpec:
    name = _get(raw, "queueName", str, None, where)
    if not name:
        raise InvalidPipelineError(f"{where}.queueName is required")
    fifo = _get(raw, "fifoQueue", bool, default=False, where=where)
    if fifo != name.endswith(".fifo"):
        msg = f"{where}: a FIFO queue's name ends in .fifo, and only a FIFO queue's does"
        raise InvalidPipelineError(msg)
    dead = _get(raw, "deadLetter", dict, {}, where)
    default_dlq = f"{name.removesuffix('.fifo')}-dlq" + (".fifo" if fifo else "")
    dlq_name = dead.get("queueName") or default_dlq
    if fifo != dlq_name.endswith(".fifo"):
        msg = f"{where}.deadLetter.queueName: a FIFO queue's DLQ is FIFO too (name ends in .fifo)"
        raise InvalidPipelineError(msg)
    filter_policy = _subscription(raw, where, fifo=fifo)
    defaults = QueueSpec(name="", dlq_name="", filter_policy={})
    numbers = {
        "visibility_timeout": _get(
            raw, "visibilityTimeout", int, defaults.visibility_timeout, where
        ),
        "message_retention_period": _get(
            raw, "messageRetentionPeriod", int, defaults.message_retention_period, where
        ),
        "receive_wait_time_seconds": _get(
            raw, "receiveMessageWaitTimeSeconds", int, defaults.receive_wait_time_seconds, where
        ),
        "max_receive_count": _get(
            dead, "maxReceiveCount", int, defaults.max_receive_count, f"{where}.deadLetter"
        ),
        "dlq_message_retention_period": _get(
            dead,
            "messageRetentionPeriod",
            int,
            defaults.dlq_message_retention_period,
            f"{where}.deadLetter",
        ),
    }
    return QueueSpec(
        name=prefix + name,
        dlq_name=prefix + dlq_name,
        filter_policy=filter_policy,
        fifo=fifo,
        **numbers,
    )


def _unique(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InvalidPipelineError(f"{what} {name!r} is declared twice")
        seen.add(name)


def _check_queue_names(queues: list[QueueSpec]) -> None:
    """Each queue and each dead-letter queue declared once. A dead-letter queue may be another
    declared queue (the stream failures are the replay queue's), then with that queue's
    retention, or the two would undo each other's attributes on every reconcile."""
    _unique([q.name for q in queues], "queue")
    _unique([q.dlq_name for q in queues], "dead-letter queue")
    declared = {q.name: q for q in queues}
    for q in queues:
        if q.dlq_name == q.name:
            raise InvalidPipelineError(f"queue {q.name!r} cannot be its own dead-letter queue")
        target = declared.get(q.dlq_name)
        if target is not None and target.message_retention_period != q.dlq_message_retention_period:
            msg = (
                f"queue {q.name!r}: its dead-letter queue {q.dlq_name!r} is declared as a queue "
                "too; give deadLetter.messageRetentionPeriod that queue's messageRetentionPeriod"
            )
            raise InvalidPipelineError(msg)


def parse_pipeline(spec: Mapping[str, Any], *, name: str) -> Pipeline:
    """Map an ``EventPipeline``'s ``spec`` to a :class:`Pipeline`.

    ``name`` is the resource's ``metadata.name``; the outputs ConfigMap defaults to
    ``<name>-outputs``. Raises :class:`InvalidPipelineError` when the spec cannot be applied.
    """
    prefix = _get(spec, "resourcePrefix", str, "", "spec")
    policy = spec.get("deletionPolicy", "Retain")
    if policy not in ("Retain", "Delete"):
        raise InvalidPipelineError(f"spec.deletionPolicy must be Retain or Delete, got {policy!r}")
    tables = [
        _table(t, prefix, f"spec.tables[{i}]")
        for i, t in enumerate(_get(spec, "tables", list, [], "spec"))
    ]
    topic = _get(spec, "topic", dict, {}, "spec")
    topic_name = _get(topic, "name", str, None, "spec.topic")
    if not topic_name:
        raise InvalidPipelineError("spec.topic.name is required")
    queues = [
        _queue(q, prefix, f"spec.queues[{i}]")
        for i, q in enumerate(_get(spec, "queues", list, [], "spec"))
    ]
    if not tables:
        raise InvalidPipelineError("spec.tables must declare at least one table")
    _unique([t.name for t in tables], "table")
    _check_queue_names(queues)
    return Pipeline(
        topology=TopologySpec(tables=tables, topic_name=prefix + topic_name, queues=queues),
        resource_prefix=prefix,
        deletion_policy=policy,
        config_map_name=_get(spec, "outputsConfigMap", str, None, "spec") or f"{name}-outputs",
    )


def to_topology(spec: Mapping[str, Any], *, name: str = "pipeline") -> TopologySpec:
    """The :class:`TopologySpec` an ``EventPipeline`` spec declares (see :func:`parse_pipeline`)."""
    return parse_pipeline(spec, name=name).topology
