"""Receiving: one ``ReceiveMessage`` long poll at a time, which a stopping consumer abandons.

The long poll runs in its own daemon thread rather than the default executor:
``asyncio.run`` joins executor threads at exit, which would hold a stopping process for the
rest of a 20 s poll. Messages an abandoned poll returns later are made visible again.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any

from pulse.aws_errors import AwsErrorKind, classify_aws_error
from pulse.consumer.message import SqsMessage
from pulse.logging import get_logger

if TYPE_CHECKING:
    from collections.abc import Callable

    from pulse.consumer.visibility import Visibility

__all__ = ["LongPoll", "Receiver"]

log = get_logger("pulse.consumer")


class LongPoll:
    """One ``ReceiveMessage`` call in a daemon thread that the caller may abandon.

    If abandoned, the thread itself releases whatever the call returns, so no message stays
    invisible for a whole visibility timeout because the process was stopping.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        call: Callable[[], list[SqsMessage]],
        release: Callable[[list[SqsMessage]], None],
    ) -> None:
        self._loop = loop
        self._call = call
        self._release = release
        self._lock = threading.Lock()
        self._abandoned = False
        self._delivered = False
        self.future: asyncio.Future[list[SqsMessage]] = loop.create_future()
        threading.Thread(target=self._target, name="sqs-receive", daemon=True).start()

    def _target(self) -> None:
        result: list[SqsMessage] = []
        error: BaseException | None = None
        try:
            result = self._call()
        except BaseException as exc:  # handed to the awaiting coroutine
            error = exc
        with self._lock:
            abandoned = self._abandoned
            self._delivered = not abandoned
        if not abandoned:
            try:
                self._loop.call_soon_threadsafe(self._settle, result, error)
                return  # noqa: TRY300 - the release below is for a closed loop only
            except RuntimeError:  # the loop is closed: nobody will handle these
                pass
        if result:
            self._release(result)

    def _settle(self, result: list[SqsMessage], error: BaseException | None) -> None:
        if self.future.done():
            return
        if error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(result)

    def abandon(self) -> bool:
        """Give up on the call; False if its result is already on its way to the loop."""
        with self._lock:
            if self._delivered:
                return False
            self._abandoned = True
            return True


class Receiver:
    """Receives the messages of one queue, hidden for ``visibility_timeout`` seconds."""

    def __init__(
        self,
        sqs_client: Any,
        queue_url: str,
        queue_name: str,
        visibility: Visibility,
        *,
        wait_time_seconds: int,
        visibility_timeout: int,
    ) -> None:
        self._sqs = sqs_client
        self._queue_url = queue_url
        self._queue_name = queue_name
        self._visibility = visibility
        self._wait_time = max(0, min(wait_time_seconds, 20))
        self._visibility_timeout = visibility_timeout

    def _receive_sync(self, count: int) -> list[SqsMessage]:
        response = self._sqs.receive_message(
            QueueUrl=self._queue_url,
            MaxNumberOfMessages=count,
            WaitTimeSeconds=self._wait_time,
            VisibilityTimeout=self._visibility_timeout,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return [SqsMessage.from_sqs(raw) for raw in response.get("Messages") or []]

    async def receive(self, count: int, stop_wait: asyncio.Task[bool]) -> list[SqsMessage] | None:
        """Up to ``count`` messages; [] when stopping; None when ReceiveMessage failed.

        A failed receive is logged, as a warning when it may pass by itself (throttling, an
        unreachable endpoint, a queue not there yet), else as an error; the caller tries
        again after a pause either way.
        """
        release = self._visibility.release
        poll = LongPoll(asyncio.get_running_loop(), lambda: self._receive_sync(count), release)
        waiters: set[asyncio.Future[Any]] = {poll.future, stop_wait}
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if not poll.future.done() and poll.abandon():
            log.info("stopping: long poll abandoned", queue=self._queue_name)
            return []
        try:
            messages = await poll.future
        except Exception as exc:
            transient = classify_aws_error(exc) is not AwsErrorKind.PERMANENT
            (log.warning if transient else log.error)(
                "receive failed", queue=self._queue_name, error=str(exc)
            )
            return None
        if stop_wait.done() and messages:
            # Stopping: hand them straight back rather than start new work.
            await asyncio.to_thread(release, messages)
            return []
        return messages
