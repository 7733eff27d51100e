"""One map from AWS errors to retryable / not found / condition failed / permanent."""

from __future__ import annotations

import pytest
from botocore.exceptions import (
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)

from pulse.aws_errors import AwsErrorKind, as_pulse_error, aws_error_code, classify_aws_error
from pulse.errors import (
    ConditionFailedError,
    PermanentError,
    ResourceNotFoundError,
    RetryableError,
)
from pulse_dev.testing import aws_client_error as client_error


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (client_error("ThrottlingException"), AwsErrorKind.RETRYABLE),
        (client_error("ProvisionedThroughputExceededException"), AwsErrorKind.RETRYABLE),
        (client_error("RequestLimitExceeded"), AwsErrorKind.RETRYABLE),
        (client_error("Throttling"), AwsErrorKind.RETRYABLE),  # SNS's spelling
        (client_error("TransactionConflictException"), AwsErrorKind.RETRYABLE),
        (client_error("ResourceInUseException"), AwsErrorKind.RETRYABLE),
        (client_error("SomethingNew", status=503), AwsErrorKind.RETRYABLE),  # any 5xx
        (client_error("InternalServerError", status=500), AwsErrorKind.RETRYABLE),
        (client_error("ResourceNotFoundException"), AwsErrorKind.NOT_FOUND),
        (client_error("AWS.SimpleQueueService.NonExistentQueue"), AwsErrorKind.NOT_FOUND),
        (client_error("QueueDoesNotExist"), AwsErrorKind.NOT_FOUND),
        (client_error("NotFound", status=404), AwsErrorKind.NOT_FOUND),
        (client_error("ParameterNotFound"), AwsErrorKind.NOT_FOUND),
        (client_error("ConditionalCheckFailedException"), AwsErrorKind.CONDITION_FAILED),
        (client_error("ValidationException"), AwsErrorKind.PERMANENT),
        (client_error("AccessDeniedException", status=403), AwsErrorKind.PERMANENT),
        (client_error("InvalidParameterValue"), AwsErrorKind.PERMANENT),
        (EndpointConnectionError(endpoint_url="http://x"), AwsErrorKind.RETRYABLE),
        (ReadTimeoutError(endpoint_url="http://x"), AwsErrorKind.RETRYABLE),
        (ConnectTimeoutError(endpoint_url="http://x"), AwsErrorKind.RETRYABLE),
        (NoCredentialsError(), AwsErrorKind.RETRYABLE),
        (ParamValidationError(report="bad"), AwsErrorKind.PERMANENT),
        (ValueError("not AWS"), AwsErrorKind.PERMANENT),
    ],
)
def test_every_error_has_one_kind(error: Exception, kind: AwsErrorKind) -> None:
    assert classify_aws_error(error) is kind


@pytest.mark.parametrize(
    ("error", "pulse_type"),
    [
        (client_error("ThrottlingException"), RetryableError),
        (client_error("ResourceNotFoundException"), ResourceNotFoundError),
        (client_error("ConditionalCheckFailedException"), ConditionFailedError),
        (client_error("ValidationException"), PermanentError),
        (EndpointConnectionError(endpoint_url="http://x"), RetryableError),
    ],
)
def test_as_pulse_error_keeps_the_kind_and_says_what_failed(
    error: Exception, pulse_type: type[Exception]
) -> None:
    converted = as_pulse_error(error, "write payment", delay=2.0)
    assert type(converted) is pulse_type
    assert str(converted).startswith("write payment: ")
    if isinstance(converted, RetryableError):
        assert converted.delay == 2.0


def test_not_found_is_retried_and_condition_failed_is_not() -> None:
    # A worker started before its topology waits for it; a lost conditional write is final.
    assert isinstance(
        as_pulse_error(client_error("ResourceNotFoundException"), "x"), RetryableError
    )
    assert isinstance(
        as_pulse_error(client_error("ConditionalCheckFailedException"), "x"), PermanentError
    )


def test_pulse_errors_pass_through() -> None:
    original = RetryableError("already ours", delay=1.0)
    assert as_pulse_error(original, "x") is original


def test_error_code() -> None:
    assert aws_error_code(client_error("ThrottlingException")) == "ThrottlingException"
    assert aws_error_code(EndpointConnectionError(endpoint_url="http://x")) == ""
