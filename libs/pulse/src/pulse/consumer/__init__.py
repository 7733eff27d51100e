"""The SQS consumer runtime the workers run on.

:class:`SqsConsumer` long-polls one queue and hands each message to an async handler,
several at once (at most ``max_in_flight``). What happens to a message depends on how its
handler ended — the outcome policy, pure and tabled in :mod:`pulse.consumer.outcome`:

- returned: the message is deleted (batched: ``DeleteMessageBatch`` of up to 10, or after
  ~100 ms), never before the handler's effects are done;
- raised :class:`~pulse.errors.RetryableError` (or anything unexpected): the message's
  visibility is set to a backoff (the error's ``delay``, else Pulse's one backoff,
  :class:`~pulse.backoff.FullJitter`: a draw from ``[0, min(2**receive_count,
  sqs_max_backoff_seconds)]`` seconds, rounded up) so it comes back later; a message that
  fails on the last receive the queue's redrive policy allows (``maxReceiveCount``) is
  dead-lettered by the consumer as below, its last error as the reason (SQS's own move at
  the next receive would record none; it remains the backstop for a worker that dies);
- raised :class:`~pulse.errors.PermanentError`: the body goes to the dead-letter queue at
  once with the message attributes ``error`` giving the reason, ``source_queue`` and
  ``receive_count``, then the original is deleted.

Visibility heartbeat: while a handler runs, its message's visibility is extended (one
``ChangeMessageVisibilityBatch`` for every message held at least ``heartbeat_seconds``, default
a third of the visibility timeout) so no other consumer receives it meanwhile. Callbacks a
handler registered with :func:`on_heartbeat` (an idempotency lease, say) run on the same beat.
If an extension is refused (the receipt handle is no longer valid: the message was received
or deleted elsewhere) or a callback reports its lease lost, the handler is cancelled — it no
longer owns the message — and the message is neither deleted nor retried by this consumer.

FIFO queues (the URL ends in ``.fifo``): the messages of one message group are handled one
after the other, in the order received; when one does not succeed (a retry, a lost
heartbeat), the group's later messages of the same batch are made visible again unhandled,
so the group stays blocked behind the failed message and its order holds. Dead-lettering to
a FIFO DLQ keeps the group id.

Depth: every ``depth_poll_seconds`` the queue's depth and its dead-letter queue's depth are
read into the gauges ``pulse_sqs_queue_depth{queue}`` and ``pulse_sqs_dlq_depth{queue}``.

Health: :attr:`SqsConsumer.health` is the consumer's probe for the health report
(:mod:`pulse.health`): the queue's and its dead-letter queue's depth, messages in flight and
oldest message's age, measured as :mod:`pulse.consumer.health` says; :func:`consume` adds it
and the stage's throughput to a worker's reporter.

Batching window: when a receive returns fewer messages than it asked for, the next receive
waits ``batch_window_seconds`` (default 0.1 s), so a trickle of messages is fetched in
batches rather than one ``ReceiveMessage`` per message — Lambda's
``MaximumBatchingWindowInSeconds``, trading that much latency for far fewer calls. A failed
receive is retried after ``receive_error_backoff_seconds``; it is logged as an error when
:mod:`pulse.aws_errors` calls it permanent (access denied, a request refused as invalid).

Shutdown (``stopping`` set): receiving stops at once — a pending long poll is abandoned,
and any messages it returns later are made visible again (``ChangeMessageVisibility`` 0);
in-flight handlers get ``shutdown_grace_seconds`` to finish (the messages of those that do
not are released the same way); pending deletes are flushed; :meth:`SqsConsumer.run` returns.

Every boto3 call runs off the event loop. The long poll runs in its own daemon thread rather
than the default executor: ``asyncio.run`` joins executor threads at exit, which would hold a
stopping process for the rest of a 20 s poll.

The package, one module a part: ``runtime`` (the receive loop, slots, drain, applying each
outcome), ``outcome`` (the policy), ``message``, ``long_poll``, ``deletes``, ``visibility``,
``dead_letter``, ``heartbeat``, ``depth``, ``health``, ``metrics``, ``settings``, ``limits``
(SQS's quotas) and ``lifecycle`` (:func:`consume`: a worker's consumer with its readiness check).
"""

from __future__ import annotations

from pulse.consumer.heartbeat import on_heartbeat
from pulse.consumer.lifecycle import consume, wait_for_queue_url
from pulse.consumer.message import MessageHandler, SqsMessage
from pulse.consumer.runtime import SqsConsumer
from pulse.consumer.settings import SqsConsumerSettings

__all__ = [
    "MessageHandler",
    "SqsConsumer",
    "SqsConsumerSettings",
    "SqsMessage",
    "consume",
    "on_heartbeat",
    "wait_for_queue_url",
]
