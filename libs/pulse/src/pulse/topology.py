"""Pulse's AWS resources, declared as data and applied idempotently.

:func:`apply_topology` creates what is missing and updates what drifted: the payments table
(stream NEW_AND_OLD_IMAGES, and the sparse review-queue index of payments in REVIEW,
:mod:`pulse.payment_states`), the events (audit) table with TTL and its index of an account's
events by time (webhook replays, :mod:`pulse.webhook_deliveries`), the stream processor's lease
table, the SNS topic, each SQS queue with its DLQ and redrive policy and the policy that lets
the topic send to it, and the filtered raw-delivery subscriptions. Applying the same spec
twice changes nothing: the second run reports no changes.

Without an explicit spec, :func:`apply_topology` applies :func:`pulse_spec`: the pipeline of
:func:`default_spec` plus the notify worker's webhook resources (:class:`WebhookNames`): the
endpoints table, the FIFO queue of first attempts (grouped per endpoint) with its FIFO DLQ,
the attempt log and the queue of scheduled retries; and the stream processor's failure queue
and the replay queue whose dead-letter queue it is
(:class:`StreamFailureNames`).

The same code serves ``make run``, the tests and the Kubernetes operator.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from pulse.aws_errors import AWS_ERRORS, AwsErrorKind, as_pulse_error, classify_aws_error
from pulse.clients import aws_client
from pulse.errors import RetryableError
from pulse.logging import get_logger
from pulse.payment_states import REVIEW_INDEX, REVIEW_QUEUE, REVIEW_SINCE
from pulse.webhook_attempts import BY_TIME_INDEX

if TYPE_CHECKING:
    from pulse.settings import PulseSettings, ResourceNames

__all__ = [
    "AUDIT_ACCOUNT_INDEX",
    "AUDIT_OFFSET_INDEX",
    "ENDPOINT_INDEX",
    "FAILURE_READS",
    "SQS_MAX_RECEIVES",
    "WEBHOOK_FIFO_RECEIVES",
    "WEBHOOK_MAX_RECEIVES",
    "IndexSpec",
    "QueueSpec",
    "StreamFailureNames",
    "TableSpec",
    "TopologyOutputs",
    "TopologySpec",
    "WebhookNames",
    "apply_topology",
    "default_spec",
    "pulse_spec",
]

log = get_logger("pulse.topology")

# The events table's index of an account's events by time (hash ``account_id``, range
# ``time``), for webhook replays: rows written before it existed carry no ``account_id``.
AUDIT_ACCOUNT_INDEX = "account-time"
# The events table's index of an account's events in channel order (hash ``account_id``,
# range ``account_offset``), for the gateway's recovery from the durable record
# (:mod:`pulse.audit_positions`): sparse, rows written before it have no offset.
AUDIT_OFFSET_INDEX = "account-offset"
# The webhooks table's index by endpoint id alone, for operators (who name no account).
ENDPOINT_INDEX = "endpoint-id"


@dataclass(frozen=True)
class IndexSpec:
    """A global secondary index (string keys, every attribute projected).

    Indexes are added to an existing table (one UpdateTable each, as DynamoDB allows),
    never changed or removed: an index of the same name is taken as it is.
    """

    name: str
    hash_key: str
    range_key: str | None = None


@dataclass(frozen=True)
class TableSpec:
    name: str
    hash_key: str
    range_key: str | None = None
    stream_view_type: str | None = None  # NEW_AND_OLD_IMAGES, or None for no stream
    ttl_attribute: str | None = None
    indexes: tuple[IndexSpec, ...] = ()


@dataclass(frozen=True)
class QueueSpec:
    name: str
    dlq_name: str
    # The topic subscription's filter; None: the queue is not subscribed to the topic.
    filter_policy: dict[str, Any] | None
    visibility_timeout: int = 30
    message_retention_period: int = 4 * 24 * 3600
    max_receive_count: int = 5
    dlq_message_retention_period: int = 14 * 24 * 3600
    receive_wait_time_seconds: int = 20
    # FIFO (both names end in ".fifo"); deduplication ids are given by the sender.
    fifo: bool = False


@dataclass(frozen=True)
class WebhookNames:
    """The webhook resources under one prefix (``PULSE_RESOURCE_PREFIX``): the endpoints
    table, the FIFO queue of first attempts and its FIFO DLQ (where deliveries that used up
    their schedule go), the attempt log (:mod:`pulse.webhook_attempts`) and the queue of
    scheduled retries with its own DLQ (for its redrive policy only)."""

    table: str
    queue: str
    dlq: str
    attempts: str
    retries: str
    retries_dlq: str

    @classmethod
    def from_prefix(cls, prefix: str) -> WebhookNames:
        return cls(
            table=f"{prefix}webhooks",
            queue=f"{prefix}webhooks.fifo",
            dlq=f"{prefix}webhooks-dlq.fifo",
            attempts=f"{prefix}webhook-attempts",
            retries=f"{prefix}webhook-retries",
            retries_dlq=f"{prefix}webhook-retries-dlq",
        )

    def secret_parameter(self, endpoint_id: str) -> str:
        """The SSM Parameter Store name of an endpoint's signing secret."""
        return f"/{self.table}/{endpoint_id}/secret"


@dataclass(frozen=True)
class StreamFailureNames:
    """The stream processor's on-failure destination and its replays, under one prefix.

    ``queue`` receives, whole, the stream records whose effects could not be applied; it is
    not subscribed to the topic. ``replays`` is where ``pulse dlq redrive stream-failures``
    moves them: the stream processor consumes it and applies each record through its own
    effects, and ``queue`` is its dead-letter queue, so a record that fails again goes back
    there with the new error (and, being a dead-letter queue, ``queue`` can be redriven by
    SQS's ``StartMessageMoveTask``). ``dlq`` is ``queue``'s own dead-letter queue: people
    read ``queue`` (each look is a receive), so its redrive policy allows
    :data:`FAILURE_READS` receives before a message is moved there.
    """

    queue: str
    dlq: str
    replays: str

    @classmethod
    def from_prefix(cls, prefix: str) -> StreamFailureNames:
        return cls(
            f"{prefix}stream-failures", f"{prefix}stream-failures-dlq", f"{prefix}stream-replays"
        )


_FAILURE_RETENTION_SECONDS = 14 * 24 * 3600  # SQS's longest: failures wait for a person
# Receives of one webhook message before its queue's redrive dead-letters it (module doc of
# pulse_spec): at the consumer's backoff (at most 300 s) about two hours of failing AWS.
WEBHOOK_MAX_RECEIVES = 50
SQS_MAX_RECEIVES = 1000  # SQS's highest maxReceiveCount
FAILURE_READS = SQS_MAX_RECEIVES  # reading failures never moves them
# Receives of one first attempt (the webhooks FIFO queue): an endpoint outside its delivery
# window holds its head message once per PULSE_WEBHOOK_WINDOW_RECHECK_SECONDS (an hour by
# default), and each hold is a receive: a 7-day closure, the longest a schedule may have,
# is 168 of them (pulse_spec's doc).
WEBHOOK_FIFO_RECEIVES = SQS_MAX_RECEIVES
_WEBHOOK_RETENTION_SECONDS = 14 * 24 * 3600  # SQS's longest: held events outlast a closure


@dataclass(frozen=True)
class TopologySpec:
    tables: list[TableSpec]
    topic_name: str
    queues: list[QueueSpec]


@dataclass
class TopologyOutputs:
    """Resolved names, ARNs and URLs; ``changes`` lists what this run created or updated."""

    table_names: dict[str, str] = field(default_factory=dict)
    stream_arns: dict[str, str] = field(default_factory=dict)
    topic_arn: str = ""
    queue_urls: dict[str, str] = field(default_factory=dict)
    queue_arns: dict[str, str] = field(default_factory=dict)
    subscription_arns: dict[str, str] = field(default_factory=dict)
    changes: list[str] = field(default_factory=list)


def default_spec(names: ResourceNames) -> TopologySpec:
    """Pulse's standard topology under ``names``' prefix."""
    return TopologySpec(
        tables=[
            TableSpec(
                names.payments_table,
                "payment_id",
                stream_view_type="NEW_AND_OLD_IMAGES",
                indexes=(IndexSpec(REVIEW_INDEX, REVIEW_QUEUE, REVIEW_SINCE),),
            ),
            TableSpec(
                names.events_table,
                "payment_id",
                "sk",
                ttl_attribute="expires_at",
                indexes=(
                    IndexSpec(AUDIT_ACCOUNT_INDEX, "account_id", "time"),
                    IndexSpec(AUDIT_OFFSET_INDEX, "account_id", "account_offset"),
                ),
            ),
            TableSpec(names.leases_table, "leaseKey"),
        ],
        topic_name=names.topic,
        queues=[
            QueueSpec(names.fraud_queue, names.fraud_dlq, {"type": ["created"]}),
            QueueSpec(names.notify_queue, names.notify_dlq, {"type": ["updated"]}),
        ],
    )


def pulse_spec(names: ResourceNames) -> TopologySpec:
    """Everything Pulse's services need: :func:`default_spec`, the webhook resources, the
    stream processor's failure and replay queues and ingest's API keys.

    The webhooks table (hash ``account_id``, range ``endpoint_id``) lists each account's
    endpoints, and its index ``endpoint-id`` finds one by its id alone; the FIFO queue
    carries each event's first attempt per endpoint, the retries
    queue its later attempts (chained delays), and the attempts table (hash
    ``endpoint_id``, range ``attempt_key``, TTL ``expires_at``, index ``by-time``) logs and
    claims every attempt (:mod:`pulse.webhook_attempts`). A delivery's attempts are counted
    apart from SQS receives, so the redrive policies only catch a message that keeps failing
    for other reasons (AWS or Redis out of reach for hours, a bug): the retries queue's
    after :data:`WEBHOOK_MAX_RECEIVES` receives, the FIFO queue's after
    :data:`WEBHOOK_FIFO_RECEIVES` (SQS's most), because its messages also wait there, one
    receive per hold, while their endpoint is outside its delivery window
    (:mod:`pulse.webhook_windows`). With a hold at most every hour, a 7-day closure (the
    longest a schedule may have) is 168 receives: an event survives five of the longest,
    or about 60 weeknights of business hours, before the redrive could touch it. The FIFO
    queue keeps messages 14 days (SQS's most), longer than any closure. The failure queue
    keeps what it holds for 14 days, and is the dead-letter queue of the replay queue
    (declared after it, so the failure queue's own attributes are set first). The API-keys
    table (hash ``key_id``) holds the merchant backends' keys, hashed (:mod:`pulse.api_keys`).
    """
    base = default_spec(names)
    hooks = WebhookNames.from_prefix(names.prefix)
    failures = StreamFailureNames.from_prefix(names.prefix)
    return TopologySpec(
        tables=[
            *base.tables,
            TableSpec(
                hooks.table,
                "account_id",
                "endpoint_id",
                indexes=(IndexSpec(ENDPOINT_INDEX, "endpoint_id"),),
            ),
            TableSpec(
                hooks.attempts,
                "endpoint_id",
                "attempt_key",
                ttl_attribute="expires_at",
                indexes=(IndexSpec(BY_TIME_INDEX, "endpoint_id", "attempted_at"),),
            ),
            TableSpec(names.api_keys_table, "key_id"),
        ],
        topic_name=base.topic_name,
        queues=[
            *base.queues,
            QueueSpec(
                hooks.queue,
                hooks.dlq,
                None,
                visibility_timeout=60,
                message_retention_period=_WEBHOOK_RETENTION_SECONDS,
                max_receive_count=WEBHOOK_FIFO_RECEIVES,
                fifo=True,
            ),
            QueueSpec(
                hooks.retries,
                hooks.retries_dlq,
                None,
                visibility_timeout=60,
                max_receive_count=WEBHOOK_MAX_RECEIVES,
            ),
            QueueSpec(
                failures.queue,
                failures.dlq,
                None,
                message_retention_period=_FAILURE_RETENTION_SECONDS,
                max_receive_count=FAILURE_READS,
                dlq_message_retention_period=_FAILURE_RETENTION_SECONDS,
            ),
            QueueSpec(
                failures.replays,
                failures.queue,
                None,
                message_retention_period=_FAILURE_RETENTION_SECONDS,
                dlq_message_retention_period=_FAILURE_RETENTION_SECONDS,
            ),
        ],
    )


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
