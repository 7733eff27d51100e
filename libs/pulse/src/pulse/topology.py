"""Pulse's AWS resources, declared as data: what :mod:`pulse.topology_apply` creates and repairs.

:func:`default_spec` is the pipeline: the payments table (stream NEW_AND_OLD_IMAGES, and the
sparse review-queue index of payments in REVIEW, :mod:`pulse.payment_states`), the events
(audit) table with TTL and its indexes of an account's events by time (webhook replays,
:mod:`pulse.webhook_deliveries`) and in channel order (:mod:`pulse.audit_positions`), the
stream processor's lease table, the SNS topic, and each SQS queue with its DLQ, its redrive
policy and, for a queue the topic feeds, the filter of its subscription.

:func:`pulse_spec`, what :func:`pulse.topology_apply.apply_topology` applies without an
explicit spec, is :func:`default_spec` plus the notify worker's webhook resources
(:class:`WebhookNames`): the endpoints table, the FIFO queue of first attempts (grouped per
endpoint) with its FIFO DLQ, the attempt log and the queue of scheduled retries; the stream
processor's failure queue and the replay queue whose dead-letter queue it is
(:class:`StreamFailureNames`); and ingest's API-keys table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pulse.payment_states import REVIEW_INDEX, REVIEW_QUEUE, REVIEW_SINCE
from pulse.webhook_attempts import BY_TIME_INDEX

if TYPE_CHECKING:
    from pulse.settings import ResourceNames

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
    "default_spec",
    "pulse_spec",
]

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
