"""The operator's AWS edge: measure a pipeline's queues and delete its resources.

Creating and updating is :func:`pulse.topology_apply.apply_topology` (the code ``make run`` uses);
this module adds only what the operator needs on top. Blocking boto3 calls: run them
through ``asyncio.to_thread``.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from pulse.aws_errors import AWS_ERRORS, AwsErrorKind, as_pulse_error, classify_aws_error
from pulse.clients import aws_client
from pulse.logging import get_logger
from pulse_operator.status import QueueDepth

if TYPE_CHECKING:
    from pulse.settings import PulseSettings
    from pulse.topology import QueueSpec, TopologySpec

__all__ = ["delete_resources", "measure_queues"]

log = get_logger("pulse_operator.aws")


def _pulse_error(exc: Exception, what: str) -> Exception:
    """``exc`` as Pulse's error (:mod:`pulse.aws_errors`); an unreachable endpoint is retried
    after longer than a throttled call."""
    return as_pulse_error(exc, what, delay=10.0 if isinstance(exc, BotoCoreError) else 5.0)


def _gone(exc: ClientError) -> bool:
    return classify_aws_error(exc) is AwsErrorKind.NOT_FOUND


def _oldest_age(cloudwatch: Any, queue_name: str) -> int | None:
    """ApproximateAgeOfOldestMessage from CloudWatch; None when there is no datapoint (an
    emulator without CloudWatch, a queue too new for one, CloudWatch unreachable).

    SQS has no API for the age: the only other way, receiving the oldest message to read its
    SentTimestamp, counts as a receive (ApproximateReceiveCount) and so pushes messages
    towards the DLQ, and hides them from the workers for the visibility timeout.
    """
    now = dt.datetime.now(dt.UTC)
    try:
        points = cloudwatch.get_metric_statistics(
            Namespace="AWS/SQS",
            MetricName="ApproximateAgeOfOldestMessage",
            Dimensions=[{"Name": "QueueName", "Value": queue_name}],
            StartTime=now - dt.timedelta(minutes=5),
            # past now, so the period holding the latest datapoint is whole and included
            EndTime=now + dt.timedelta(minutes=1),
            Period=60,
            Statistics=["Maximum"],
        )["Datapoints"]
    except AWS_ERRORS as exc:
        log.debug("no queue age from cloudwatch", queue=queue_name, error=str(exc))
        return None
    if not points:
        return None
    latest = max(points, key=lambda p: p["Timestamp"])
    return int(latest["Maximum"])


def _depth(sqs: Any, name: str) -> tuple[int, int]:
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    attrs = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs.get("ApproximateNumberOfMessages", 0)), int(
        attrs.get("ApproximateNumberOfMessagesNotVisible", 0)
    )


def measure_queues(settings: PulseSettings, queues: list[QueueSpec]) -> list[QueueDepth]:
    """Each queue's visible and in-flight messages, its DLQ's depth and its oldest message age.

    Raises :class:`~pulse.errors.RetryableError` on throttling, an unreachable endpoint or a
    queue that does not exist (:class:`~pulse.errors.ResourceNotFoundError`: drift, which
    the reconcile repairs) and :class:`~pulse.errors.PermanentError` for a refused request.
    """
    sqs = aws_client("sqs", settings)
    cloudwatch = aws_client("cloudwatch", settings)
    out = []
    current = ""  # the queue the error is about
    try:
        for q in queues:
            current = q.name
            visible, in_flight = _depth(sqs, q.name)
            current = q.dlq_name
            dlq_visible, _ = _depth(sqs, q.dlq_name)
            current = q.name
            # An empty queue has no lag, whatever CloudWatch says (its datapoints trail by
            # minutes): known without CloudWatch. A non-empty one needs CloudWatch's figure.
            age = 0 if visible + in_flight == 0 else _oldest_age(cloudwatch, q.name)
            out.append(QueueDepth(q.name, visible, in_flight, q.dlq_name, dlq_visible, age))
    except AWS_ERRORS as exc:
        raise _pulse_error(exc, f"queue {current}") from exc
    return out


def _ignore_gone(call: Any, **kwargs: Any) -> bool:
    try:
        call(**kwargs)
    except ClientError as exc:
        if _gone(exc):
            return False
        raise
    return True


def _delete_topic(sns: Any, topic_name: str) -> list[str]:
    topic_arn = next(
        (
            t["TopicArn"]
            for page in sns.get_paginator("list_topics").paginate()
            for t in page.get("Topics", [])
            if t["TopicArn"].rsplit(":", 1)[-1] == topic_name
        ),
        None,
    )
    if not topic_arn:
        return []
    subs = [
        sub["SubscriptionArn"]
        for page in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic_arn)
        for sub in page.get("Subscriptions", [])
        if sub["SubscriptionArn"].startswith("arn:")  # not "PendingConfirmation"
    ]
    deleted = [
        f"subscription {arn}" for arn in subs if _ignore_gone(sns.unsubscribe, SubscriptionArn=arn)
    ]
    sns.delete_topic(TopicArn=topic_arn)
    return [*deleted, f"topic {topic_name}"]


def _delete_queue(sqs: Any, name: str) -> bool:
    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as exc:
        if _gone(exc):
            return False
        raise
    return _ignore_gone(sqs.delete_queue, QueueUrl=url)


def delete_resources(settings: PulseSettings, spec: TopologySpec) -> list[str]:
    """Delete every resource ``spec`` declares; missing ones are skipped. Returns what went.

    Subscriptions first, then the topic, the queues and their DLQs, then the tables. Safe
    to call again after a partial failure.
    """
    ddb = aws_client("dynamodb", settings)
    sqs = aws_client("sqs", settings)
    try:
        deleted = _delete_topic(aws_client("sns", settings), spec.topic_name)
        names = [n for q in spec.queues for n in (q.name, q.dlq_name)]
        deleted += [f"queue {n}" for n in names if _delete_queue(sqs, n)]
        deleted += [
            f"table {t.name}"
            for t in spec.tables
            if _ignore_gone(ddb.delete_table, TableName=t.name)
        ]
    except AWS_ERRORS as exc:
        raise _pulse_error(exc, "delete pipeline") from exc
    return deleted
