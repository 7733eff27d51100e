"""The consumer's own metrics, per queue (the stage's RED metrics are :mod:`pulse.metrics`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "DELETE_FAILURES",
    "DLQ_DEPTH",
    "HEARTBEAT_EXTENSIONS",
    "QUEUE_DEPTH",
    "RECEIVE_COUNT",
    "RELEASED",
    "VISIBILITY_LOST",
]

# Not "..._receive_count": a histogram's series would read pulse_sqs_message_receive_count_count.
RECEIVE_COUNT = Histogram(
    "pulse_sqs_message_receives",
    "How many times a message had been received (ApproximateReceiveCount) when handled",
    ["queue"],
    buckets=(1, 2, 3, 4, 5, 10, 20),
)
DELETE_FAILURES = Counter(
    "pulse_sqs_delete_failures_total",
    "Messages whose delete failed after successful handling (they will be redelivered)",
    ["queue"],
)
VISIBILITY_LOST = Counter(
    "pulse_sqs_visibility_lost_total",
    "Handlers stopped because their message's visibility or lease could not be extended",
    ["queue"],
)
HEARTBEAT_EXTENSIONS = Counter(
    "pulse_sqs_visibility_extensions_total",
    "Visibility extensions of messages whose handlers were still running",
    ["queue"],
)
QUEUE_DEPTH = Gauge(
    "pulse_sqs_queue_depth",
    "Messages in the queue (visible plus in flight), polled",
    ["queue"],
)
DLQ_DEPTH = Gauge(
    "pulse_sqs_dlq_depth",
    "Messages in the queue's dead-letter queue, polled",
    ["queue"],
)
RELEASED = Counter(
    "pulse_sqs_messages_released_total",
    "Messages made visible again unhandled because the consumer was stopping",
    ["queue"],
)
