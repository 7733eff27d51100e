"""What an ``EventPipeline``'s status says, built from plain data (no I/O here).

``status.conditions[]`` follows the Kubernetes convention (type, status, reason, message,
lastTransitionTime, observedGeneration); ``status.outputs`` holds the resolved names, ARNs
and URLs (also written to a ConfigMap the services mount); the health fields are the ones
the printer columns show: READY, QUEUES (messages waiting), DLQ (messages dead-lettered)
and LAG (age of the oldest message: ``unknown`` when it cannot be read, never a made-up 0).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from pulse.topology import TopologyOutputs, TopologySpec

__all__ = [
    "QueueDepth",
    "config_map_data",
    "health_status",
    "lag_text",
    "outputs_status",
    "pipeline_lag",
    "set_condition",
]


@dataclass(frozen=True)
class QueueDepth:
    """One queue's depths as SQS reports them; ``oldest_age_seconds`` is None when unknown."""

    queue_name: str
    visible: int
    in_flight: int
    dlq_name: str
    dlq_visible: int
    oldest_age_seconds: int | None = None


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    *,
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """``conditions`` with the one of ``type_`` replaced; others kept in order.

    ``lastTransitionTime`` moves only when the condition's status changes, so it says how
    long the pipeline has been (un)ready.
    """
    value = "True" if status else "False"
    out: list[dict[str, Any]] = []
    found = False
    for cond in conditions:
        if cond.get("type") != type_:
            out.append(dict(cond))
            continue
        found = True
        same = cond.get("status") == value
        out.append(
            _condition(
                type_,
                value,
                reason,
                message,
                generation=generation,
                when=cond["lastTransitionTime"] if same else now,
            )
        )
    if not found:
        out.append(_condition(type_, value, reason, message, generation=generation, when=now))
    return out


def _condition(
    type_: str, value: str, reason: str, message: str, *, generation: int | None, when: str
) -> dict[str, Any]:
    cond: dict[str, Any] = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message[:1024],
        "lastTransitionTime": when,
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def outputs_status(outputs: TopologyOutputs, spec: TopologySpec, config_map: str) -> dict[str, Any]:
    """``status.outputs``: what the services need to find every resource."""
    return {
        "configMapName": config_map,
        "topicArn": outputs.topic_arn,
        "tables": [
            {
                "tableName": t.name,
                **(
                    {"latestStreamArn": outputs.stream_arns[t.name]}
                    if t.name in outputs.stream_arns
                    else {}
                ),
            }
            for t in spec.tables
        ],
        "queues": [
            {
                "queueName": q.name,
                "queueURL": outputs.queue_urls.get(q.name, ""),
                "queueARN": outputs.queue_arns.get(q.name, ""),
                "deadLetterQueueURL": outputs.queue_urls.get(q.dlq_name, ""),
                "deadLetterQueueARN": outputs.queue_arns.get(q.dlq_name, ""),
                "subscriptionARN": outputs.subscription_arns.get(q.name, ""),
            }
            for q in spec.queues
        ],
    }


def lag_text(seconds: int | None) -> str:
    """The LAG column: ``unknown``, or a duration as kubectl prints ages (``45s``, ``3m5s``,
    ``2h10m``)."""
    if seconds is None:
        return "unknown"
    if seconds < 60:  # noqa: PLR2004 - seconds in a minute
        return f"{seconds}s"
    if seconds < 3600:  # noqa: PLR2004 - seconds in an hour
        return f"{seconds // 60}m{seconds % 60}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60}m"


def pipeline_lag(depths: Sequence[QueueDepth]) -> int | None:
    """The oldest message's age across the queues; None (unknown, never 0) when any queue
    that holds messages has no known age, since the unknown one may be the oldest."""
    ages = [d.oldest_age_seconds for d in depths]
    if any(age is None for age in ages):
        return None
    return max((age for age in ages if age is not None), default=0)


def health_status(depths: Sequence[QueueDepth]) -> dict[str, Any]:
    """The printer-column fields and the per-queue detail, from measured depths."""
    lag = pipeline_lag(depths)
    return {
        "queueDepth": sum(d.visible + d.in_flight for d in depths),
        "deadLetterDepth": sum(d.dlq_visible for d in depths),
        # null (the field is removed) when unknown: unknown is not "no lag"
        "oldestMessageAgeSeconds": lag,
        "lag": lag_text(lag),
        "queues": [
            {
                "queueName": d.queue_name,
                "visible": d.visible,
                "inFlight": d.in_flight,
                "deadLetterQueueName": d.dlq_name,
                "deadLetterVisible": d.dlq_visible,
                "oldestMessageAgeSeconds": d.oldest_age_seconds,
            }
            for d in depths
        ],
    }


def _env_key(name: str, prefix: str) -> str:
    short = name.removeprefix(prefix) if prefix else name
    return re.sub(r"[^A-Z0-9]+", "_", short.upper()).strip("_")


def config_map_data(
    outputs: TopologyOutputs, spec: TopologySpec, resource_prefix: str
) -> dict[str, str]:
    """The outputs ConfigMap's data: environment-variable keys the services can ``envFrom``.

    Keys are the resource's name without the prefix, upper-cased, e.g. ``QUEUE_URL_FRAUD``,
    ``TABLE_NAME_PAYMENTS``, ``STREAM_ARN_PAYMENTS``, plus ``PULSE_RESOURCE_PREFIX`` (which
    the services use to derive every name) and ``TOPIC_ARN``.
    """
    data = {"PULSE_RESOURCE_PREFIX": resource_prefix, "TOPIC_ARN": outputs.topic_arn}
    for t in spec.tables:
        key = _env_key(t.name, resource_prefix)
        data[f"TABLE_NAME_{key}"] = t.name
        if t.name in outputs.stream_arns:
            data[f"STREAM_ARN_{key}"] = outputs.stream_arns[t.name]
    for q in spec.queues:
        for name in (q.name, q.dlq_name):
            key = _env_key(name, resource_prefix)
            data[f"QUEUE_URL_{key}"] = outputs.queue_urls.get(name, "")
            data[f"QUEUE_ARN_{key}"] = outputs.queue_arns.get(name, "")
    return data
