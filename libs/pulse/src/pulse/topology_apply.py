"""Applying Pulse's topology (:mod:`pulse.topology`) to AWS, idempotently.

:func:`apply_topology` creates what is missing and updates what drifted: each table (created
with its keys), its stream (a changed view type is turned off, then on), its global secondary
indexes (added to an existing table one at a time and waited for until ACTIVE, never changed
or removed) and its TTL; the SNS topic; each SQS queue with its DLQ and redrive policy and,
for a queue the topic feeds, the policy that lets the topic send to it and the filtered
raw-delivery subscription. Applying the same spec twice changes nothing: the second run
reports no changes. Without an explicit spec it applies :func:`pulse.topology.pulse_spec`.

The same code serves ``make run``, the tests, the chart's topology Job and the Kubernetes
operator.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from pulse.aws_errors import AWS_ERRORS, AwsErrorKind, as_pulse_error, classify_aws_error
from pulse.clients import aws_client
from pulse.errors import RetryableError
from pulse.logging import get_logger
from pulse.topology import TopologyOutputs, pulse_spec

if TYPE_CHECKING:
    from pulse.settings import PulseSettings
    from pulse.topology import IndexSpec, QueueSpec, TableSpec, TopologySpec

__all__ = ["apply_topology"]

log = get_logger("pulse.topology")  # the topology's logger: its records keep their name


class _Applier:
    def __init__(self, settings: PulseSettings) -> None:
        self.ddb = aws_client("dynamodb", settings)
        self.sns = aws_client("sns", settings)
        self.sqs = aws_client("sqs", settings)
        self.out = TopologyOutputs()

    # -- tables -----------------------------------------------------------------------
    def table(self, spec: TableSpec) -> None:
        try:
            desc = self.ddb.describe_table(TableName=spec.name)["Table"]
        except ClientError as exc:
            if classify_aws_error(exc) is not AwsErrorKind.NOT_FOUND:
                raise
            desc = self._create_table(spec)
        self._wait_active(spec.name)
        self._ensure_stream(spec, desc)
        self._ensure_indexes(spec)
        self._ensure_ttl(spec)
        self.out.table_names[spec.name] = spec.name
        desc = self.ddb.describe_table(TableName=spec.name)["Table"]
        if desc.get("LatestStreamArn") and spec.stream_view_type:
            self.out.stream_arns[spec.name] = desc["LatestStreamArn"]

    def _create_table(self, spec: TableSpec) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "TableName": spec.name,
            "KeySchema": _key_schema(spec.hash_key, spec.range_key),
            "AttributeDefinitions": _attributes(
                spec.hash_key, spec.range_key, *(k for i in spec.indexes for k in _keys(i))
            ),
            "BillingMode": "PAY_PER_REQUEST",
        }
        if spec.indexes:
            kwargs["GlobalSecondaryIndexes"] = [_index(i) for i in spec.indexes]
        if spec.stream_view_type:
            kwargs["StreamSpecification"] = {
                "StreamEnabled": True,
                "StreamViewType": spec.stream_view_type,
            }
        desc: dict[str, Any] = self.ddb.create_table(**kwargs)["TableDescription"]
        self.out.changes.append(f"created table {spec.name}")
        return desc

    def _wait_active(self, name: str, timeout: float = 60.0) -> None:
        """Until the table and its indexes are ACTIVE (a new index first fills from the
        table); a RetryableError after ``timeout``, and the next apply waits again."""
        deadline = time.monotonic() + timeout
        while not _active(self.ddb.describe_table(TableName=name)["Table"]):
            if time.monotonic() > deadline:
                raise RetryableError(f"table {name} not ACTIVE after {timeout:.0f}s", delay=5)
            time.sleep(0.5)

    def _ensure_indexes(self, spec: TableSpec) -> None:
        for index in spec.indexes:
            desc = self.ddb.describe_table(TableName=spec.name)["Table"]
            if any(i["IndexName"] == index.name for i in desc.get("GlobalSecondaryIndexes", [])):
                continue
            self.ddb.update_table(
                TableName=spec.name,
                AttributeDefinitions=_attributes(*_keys(index)),
                GlobalSecondaryIndexUpdates=[{"Create": _index(index)}],
            )
            self.out.changes.append(f"created index {spec.name}/{index.name}")
            self._wait_active(spec.name)

    def _ensure_stream(self, spec: TableSpec, desc: dict[str, Any]) -> None:
        current = desc.get("StreamSpecification") or {}
        want_enabled = spec.stream_view_type is not None
        if bool(current.get("StreamEnabled")) == want_enabled and (
            not want_enabled or current.get("StreamViewType") == spec.stream_view_type
        ):
            return
        if current.get("StreamEnabled"):  # a view type cannot change in place
            self.ddb.update_table(TableName=spec.name, StreamSpecification={"StreamEnabled": False})
            self._wait_active(spec.name)
        if want_enabled:
            self.ddb.update_table(
                TableName=spec.name,
                StreamSpecification={
                    "StreamEnabled": True,
                    "StreamViewType": spec.stream_view_type,
                },
            )
            self._wait_active(spec.name)
        self.out.changes.append(f"updated stream of {spec.name}")

    def _ensure_ttl(self, spec: TableSpec) -> None:
        if not spec.ttl_attribute:
            return
        ttl = self.ddb.describe_time_to_live(TableName=spec.name)["TimeToLiveDescription"]
        if ttl.get("TimeToLiveStatus") in {"ENABLED", "ENABLING"} and (
            ttl.get("AttributeName") == spec.ttl_attribute
        ):
            return
        self.ddb.update_time_to_live(
            TableName=spec.name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": spec.ttl_attribute},
        )
        self.out.changes.append(f"enabled TTL on {spec.name}.{spec.ttl_attribute}")

    # -- topic, queues, subscriptions -------------------------------------------------
    def topic(self, name: str) -> None:
        existing = self._find_topic(name)
        if existing is None:
            existing = self.sns.create_topic(Name=name)["TopicArn"]
            self.out.changes.append(f"created topic {name}")
        self.out.topic_arn = existing

    def _find_topic(self, name: str) -> str | None:
        for page in self.sns.get_paginator("list_topics").paginate():
            for topic in page.get("Topics", []):
                if topic["TopicArn"].rsplit(":", 1)[-1] == name:
                    return str(topic["TopicArn"])
        return None

    def queue(self, spec: QueueSpec) -> None:
        fifo = {"FifoQueue": "true", "ContentBasedDeduplication": "false"} if spec.fifo else {}
        dlq_url, dlq_arn = self._queue(
            spec.dlq_name,
            {"MessageRetentionPeriod": str(spec.dlq_message_retention_period), **fifo},
        )
        redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": spec.max_receive_count}
        attributes = {
            "VisibilityTimeout": str(spec.visibility_timeout),
            "MessageRetentionPeriod": str(spec.message_retention_period),
            "ReceiveMessageWaitTimeSeconds": str(spec.receive_wait_time_seconds),
            "RedrivePolicy": json.dumps(redrive, separators=(",", ":")),
            **fifo,
        }
        if spec.filter_policy is not None:
            policy = self._queue_policy(spec.name)
            attributes["Policy"] = json.dumps(policy, separators=(",", ":"))
        url, arn = self._queue(spec.name, attributes)
        self.out.queue_urls[spec.name] = url
        self.out.queue_arns[spec.name] = arn
        self.out.queue_urls[spec.dlq_name] = dlq_url
        self.out.queue_arns[spec.dlq_name] = dlq_arn
        if spec.filter_policy is not None:
            self._subscription(spec, spec.filter_policy, arn)

    def _queue_policy(self, queue_name: str) -> dict[str, Any]:
        arn_prefix = self.out.topic_arn.rsplit(":", 1)[0]
        return {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "AllowPulseTopic",
                    "Effect": "Allow",
                    "Principal": {"Service": "sns.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": f"{arn_prefix.replace(':sns:', ':sqs:')}:{queue_name}",
                    "Condition": {"ArnEquals": {"aws:SourceArn": self.out.topic_arn}},
                }
            ],
        }

    def _queue(self, name: str, attributes: dict[str, str]) -> tuple[str, str]:
        try:
            url = self.sqs.get_queue_url(QueueName=name)["QueueUrl"]
        except ClientError as exc:
            if classify_aws_error(exc) is not AwsErrorKind.NOT_FOUND:
                raise
            url = self.sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
            self.out.changes.append(f"created queue {name}")
        current = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        drift = {
            k: v
            for k, v in attributes.items()
            if k != "FifoQueue" and not _same_attr(current.get(k), v)  # fixed at creation
        }
        if drift:
            self.sqs.set_queue_attributes(QueueUrl=url, Attributes=drift)
            self.out.changes.append(f"updated queue {name}: {', '.join(sorted(drift))}")
        return str(url), str(current["QueueArn"])

    def _subscription(self, spec: QueueSpec, filter_policy: dict[str, Any], queue_arn: str) -> None:
        want = {
            "FilterPolicy": json.dumps(filter_policy, separators=(",", ":")),
            "FilterPolicyScope": "MessageAttributes",
            "RawMessageDelivery": "true",
        }
        sub_arn = None
        paginator = self.sns.get_paginator("list_subscriptions_by_topic")
        for page in paginator.paginate(TopicArn=self.out.topic_arn):
            for sub in page.get("Subscriptions", []):
                if sub["Endpoint"] == queue_arn and sub["Protocol"] == "sqs":
                    sub_arn = sub["SubscriptionArn"]
        if sub_arn is None:
            sub_arn = self.sns.subscribe(
                TopicArn=self.out.topic_arn,
                Protocol="sqs",
                Endpoint=queue_arn,
                Attributes=want,
                ReturnSubscriptionArn=True,
            )["SubscriptionArn"]
            self.out.changes.append(f"subscribed {spec.name} to {self.out.topic_arn}")
        else:
            current = self.sns.get_subscription_attributes(SubscriptionArn=sub_arn)["Attributes"]
            for key, value in want.items():
                if not _same_attr(current.get(key), value):
                    self.sns.set_subscription_attributes(
                        SubscriptionArn=sub_arn, AttributeName=key, AttributeValue=value
                    )
                    self.out.changes.append(f"updated subscription {spec.name}: {key}")
        self.out.subscription_arns[spec.name] = str(sub_arn)


def _keys(index: IndexSpec) -> tuple[str, ...]:
    return (index.hash_key, index.range_key) if index.range_key else (index.hash_key,)


def _key_schema(hash_key: str, range_key: str | None) -> list[dict[str, str]]:
    keys = [{"AttributeName": hash_key, "KeyType": "HASH"}]
    if range_key:
        keys.append({"AttributeName": range_key, "KeyType": "RANGE"})
    return keys


def _attributes(*names: str | None) -> list[dict[str, str]]:
    """The attribute definitions of key attributes (strings), each once."""
    return [{"AttributeName": n, "AttributeType": "S"} for n in dict.fromkeys(names) if n]


def _index(index: IndexSpec) -> dict[str, Any]:
    return {
        "IndexName": index.name,
        "KeySchema": _key_schema(index.hash_key, index.range_key),
        "Projection": {"ProjectionType": "ALL"},
    }


def _active(table: dict[str, Any]) -> bool:
    return table["TableStatus"] == "ACTIVE" and all(
        i.get("IndexStatus", "ACTIVE") == "ACTIVE" for i in table.get("GlobalSecondaryIndexes", [])
    )


def _same_attr(current: str | None, wanted: str) -> bool:
    """Compare attribute values, treating JSON documents by content, not by spelling."""
    if current is None:
        return False
    if current == wanted:
        return True
    try:
        return bool(json.loads(current) == json.loads(wanted))
    except ValueError:
        return current.lower() == wanted.lower()


def apply_topology(settings: PulseSettings, spec: TopologySpec | None = None) -> TopologyOutputs:
    """Create or update every resource of ``spec`` (default: :func:`pulse_spec`).

    Idempotent. Raises :class:`RetryableError` for throttling, an unreachable endpoint or a
    resource still changing state and :class:`PermanentError` for a request AWS refuses
    (:mod:`pulse.aws_errors` decides which).
    """
    spec = spec or pulse_spec(settings.names)
    applier = _Applier(settings)
    try:
        for table in spec.tables:
            applier.table(table)
        applier.topic(spec.topic_name)
        for queue in spec.queues:
            applier.queue(queue)
    except AWS_ERRORS as exc:
        raise as_pulse_error(exc, "apply topology", delay=2.0) from exc
    log.info("topology applied", changes=len(applier.out.changes))
    return applier.out
