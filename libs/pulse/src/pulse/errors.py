"""Pulse's error hierarchy: whether an error is worth retrying is part of its type.

    PulseError
    ├── RetryableError     -- transient: throttling, a dependency down, a timeout.
    │                         Workers leave the message for redelivery (optionally after
    │                         ``delay`` seconds); the stream processor retries the record.
    └── PermanentError     -- retrying cannot help: invalid input, a poison message.
        └── ConfigurationError -- the process cannot start with the settings it was given.

Consumers retry the first kind and dead-letter the second.
"""

from __future__ import annotations

__all__ = ["ConfigurationError", "PermanentError", "PulseError", "RetryableError"]


class PulseError(Exception):
    """Base of every error Pulse raises on purpose."""


class RetryableError(PulseError):
    """A transient failure: the same work may succeed later."""

    def __init__(self, message: str, *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentError(PulseError):
    """A failure that retrying cannot fix; the work goes to a dead-letter destination."""


class ConfigurationError(PermanentError):
    """The settings are invalid; the process exits with this message."""
