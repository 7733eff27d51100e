"""Pulse's error hierarchy: whether an error is worth retrying is part of its type.

    PulseError
    ├── RetryableError          -- transient: throttling, a dependency down, a timeout.
    │   │                          Workers leave the message for redelivery (optionally after
    │   │                          ``delay`` seconds); the stream processor retries the record.
    │   ├── ResourceNotFoundError -- an AWS resource (table, queue, topic, parameter) does not
    │   │                          exist: not yet (the topology is being applied) or no longer.
    │   │                          Retried like any transient failure; callers for whom absence
    │   │                          is an answer (get-or-create, delete) catch it.
    │   └── Hold                -- not a failure: the work must wait ``delay`` seconds (a
    │                              webhook endpoint outside its delivery window). The message
    │                              is hidden that long and never dead-lettered for its receive
    │                              count.
    └── PermanentError          -- retrying cannot help: invalid input, a poison message.
        ├── ConditionFailedError -- a conditional write found its condition false: an answer
        │                          (someone else wrote first), caught by the writer.
        └── ConfigurationError  -- the process cannot start with the settings it was given.

Consumers retry the first kind and dead-letter the second. :mod:`pulse.aws_errors` maps
every AWS error onto this tree.
"""

from __future__ import annotations

__all__ = [
    "ConditionFailedError",
    "ConfigurationError",
    "Hold",
    "PermanentError",
    "PulseError",
    "ResourceNotFoundError",
    "RetryableError",
    "TopologyMissingError",
]


class PulseError(Exception):
    """Base of every error Pulse raises on purpose."""


class RetryableError(PulseError):
    """A transient failure: the same work may succeed later."""

    def __init__(self, message: str, *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class ResourceNotFoundError(RetryableError):
    """An AWS resource the call needs does not exist (yet)."""


class TopologyMissingError(ResourceNotFoundError):
    """A table or queue of Pulse's topology does not exist; the message names it and says
    how to apply the topology (the CLI prints it as it is)."""


class Hold(RetryableError):  # noqa: N818 - a signal to wait, not an error
    """The work may not be done yet: try again in ``delay`` seconds (required)."""

    def __init__(self, message: str, *, delay: float) -> None:
        super().__init__(message, delay=delay)


class PermanentError(PulseError):
    """A failure that retrying cannot fix; the work goes to a dead-letter destination."""


class ConditionFailedError(PermanentError):
    """A conditional write's condition did not hold; nothing was written."""


class ConfigurationError(PermanentError):
    """The settings are invalid; the process exits with this message."""
