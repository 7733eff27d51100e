"""One map from AWS (botocore) errors to what Pulse does about them.

Every service asks this module, never the error code itself, whether a failed AWS call is
worth retrying::

    kind            error codes (and botocore errors)                 Pulse error
    --------------  ------------------------------------------------  ---------------------
    RETRYABLE       throttling, 5xx, a resource changing state,       RetryableError
                    transaction conflicts; an unreachable endpoint,
                    a timeout, credentials not yet there
    NOT_FOUND       ResourceNotFoundException, NonExistentQueue,      ResourceNotFoundError
                    NotFound, ParameterNotFound                        (retryable: the
                                                                       topology may not be
                                                                       applied yet)
    CONDITION_FAILED ConditionalCheckFailedException                  ConditionFailedError
    PERMANENT       everything else: a request AWS refuses as         PermanentError
                    invalid, access denied, a bad parameter

Callers for whom "not found" or "condition failed" is an answer rather than a fault
(get-or-create, delete, a conditional put that may lose a race) test the kind with
:func:`classify_aws_error` and carry on; everything else is raised as
:func:`as_pulse_error`'s result.
"""

from __future__ import annotations

import enum
from typing import Final

from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

from pulse.errors import (
    ConditionFailedError,
    PermanentError,
    PulseError,
    ResourceNotFoundError,
    RetryableError,
)

__all__ = ["AWS_ERRORS", "AwsErrorKind", "as_pulse_error", "aws_error_code", "classify_aws_error"]


class AwsErrorKind(enum.Enum):
    RETRYABLE = "retryable"
    NOT_FOUND = "not_found"
    CONDITION_FAILED = "condition_failed"
    PERMANENT = "permanent"


_RETRYABLE_CODES: Final = frozenset(
    {
        # throttling, in the spellings the services use
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "LimitExceededException",
        "SlowDown",
        "KMSThrottlingException",
        # the service failed, or the resource is between states
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "TransactionConflictException",
        "ResourceInUseException",
        "KMS.KMSInternalException",
    }
)
_NOT_FOUND_CODES: Final = frozenset(
    {
        "ResourceNotFoundException",
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "NotFound",
        "NotFoundException",
        "ParameterNotFound",
    }
)
_CONDITION_FAILED_CODES: Final = frozenset({"ConditionalCheckFailedException"})
_KIND_OF_CODE: Final = {
    **dict.fromkeys(_RETRYABLE_CODES, AwsErrorKind.RETRYABLE),
    **dict.fromkeys(_NOT_FOUND_CODES, AwsErrorKind.NOT_FOUND),
    **dict.fromkeys(_CONDITION_FAILED_CODES, AwsErrorKind.CONDITION_FAILED),
}

AWS_ERRORS: Final = (ClientError, BotoCoreError)
"""What a boto3 call raises when AWS (or the way to it) fails: catch these, then classify."""


def aws_error_code(exc: BaseException) -> str:
    """The error code of a :class:`ClientError` (``""`` for anything else)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def _status(exc: ClientError) -> int:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return status if isinstance(status, int) else 0


def classify_aws_error(exc: BaseException) -> AwsErrorKind:
    """What kind of failure ``exc`` is (see the module's table)."""
    if isinstance(exc, ClientError):
        code = aws_error_code(exc)
        kind = _KIND_OF_CODE.get(code)
        if kind is not None:
            return kind
        return AwsErrorKind.RETRYABLE if _status(exc) >= 500 else AwsErrorKind.PERMANENT  # noqa: PLR2004 - any 5xx
    if isinstance(exc, BotoCoreError) and not isinstance(exc, ParamValidationError):
        return AwsErrorKind.RETRYABLE  # no connection, a timeout, credentials not yet there
    return AwsErrorKind.PERMANENT  # a request botocore refused to send is a bug


def as_pulse_error(exc: BaseException, what: str, *, delay: float | None = None) -> PulseError:
    """``exc`` as the Pulse error of its kind, its message starting with ``what``.

    ``delay`` is the wait a retryable kind suggests (its :attr:`RetryableError.delay`).
    Raise the result ``from exc``.
    """
    if isinstance(exc, PulseError):
        return exc
    kind = classify_aws_error(exc)
    # A ClientError's text names its code and operation; a BotoCoreError's says what failed.
    text = f"{what}: {exc}"
    if kind is AwsErrorKind.RETRYABLE:
        return RetryableError(text, delay=delay)
    if kind is AwsErrorKind.NOT_FOUND:
        return ResourceNotFoundError(text, delay=delay)
    if kind is AwsErrorKind.CONDITION_FAILED:
        return ConditionFailedError(text)
    return PermanentError(text)
