"""``pulse.aws_emulator`` with moto's thread-safety races locked out, for the reliability suites.

moto's backends are not thread-safe, and the emulator serves them from a pool of threads.
Races there make an emulator repeat what AWS would not, and a suite that counts duplicated
events would blame Pulse for them:

- ``ReceiveMessage``: two concurrent receives on one queue can both pick the same visible
  message (the visibility check and ``mark_received`` are not atomic), so a FIFO message
  goes to two consumers at once (seen: 1 in 2,000 receives with 8 threads);
- DynamoDB writes: a conditional write reads the item and writes it without a lock, so
  two at once can both pass their condition (not seen in practice; locked as a precaution).

Here each receive scans the queue under a lock (the long-poll wait happens outside it, so
waiting consumers do not block each other), and DynamoDB writes are serialised.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any

from pulse.aws_emulator import main as emulator_main


def _lock_sqs_receives() -> None:
    from moto.sqs.models import SQSBackend  # noqa: PLC0415 - moto loads only in the emulator

    lock = threading.Lock()
    receive = SQSBackend.receive_message

    def receive_message(  # noqa: PLR0917 - moto's signature, called positionally
        self: SQSBackend,
        queue_name: str,
        count: int,
        wait_seconds_timeout: int,
        visibility_timeout: int,
        message_attribute_names: list[str] | None = None,
    ) -> Any:
        deadline = time.monotonic() + (wait_seconds_timeout or 0)
        queue = self.get_queue(queue_name)
        while True:
            with lock:
                got = receive(
                    self, queue_name, count, 0, visibility_timeout, message_attribute_names
                )
            remaining = deadline - time.monotonic()
            if got or remaining <= 0:
                return got
            queue.wait_for_messages(min(1.0, remaining))  # type: ignore[attr-defined]

    SQSBackend.receive_message = receive_message  # type: ignore[method-assign]


def _serialise_dynamodb_writes() -> None:
    from moto.dynamodb.models import DynamoDBBackend  # noqa: PLC0415

    lock = threading.RLock()
    for name in (
        "put_item",
        "update_item",
        "delete_item",
        "transact_write_items",
    ):
        original = getattr(DynamoDBBackend, name)

        @functools.wraps(original)
        def locked(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            with lock:
                return _original(*args, **kwargs)

        setattr(DynamoDBBackend, name, locked)


if __name__ == "__main__":
    _lock_sqs_receives()
    _serialise_dynamodb_writes()
    emulator_main()
