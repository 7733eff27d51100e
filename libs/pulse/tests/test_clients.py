from typing import Any

import pytest
from botocore.exceptions import ClientError, ParamValidationError

from pulse.clients import aws_client
from pulse.settings import PulseSettings

ACCOUNT = 123456789012  # an int where the model says string


def test_clients_check_requests_against_the_model_by_default(
    stack_settings: PulseSettings, stack_prefix: str
) -> None:
    sqs = aws_client("sqs", stack_settings)
    sqs.create_queue(QueueName=f"{stack_prefix}q")
    with pytest.raises(ParamValidationError):
        sqs.get_queue_url(QueueName=f"{stack_prefix}q", QueueOwnerAWSAccountId=ACCOUNT)


def test_without_parameter_validation_requests_go_out_unchecked(
    stack_settings: PulseSettings, stack_prefix: str
) -> None:
    sqs = aws_client("sqs", stack_settings, parameter_validation=False)
    url = sqs.create_queue(QueueName=f"{stack_prefix}q")["QueueUrl"]
    reply = sqs.get_queue_url(QueueName=f"{stack_prefix}q", QueueOwnerAWSAccountId=ACCOUNT)
    assert reply["QueueUrl"] == url
    with pytest.raises(ClientError):  # the service still refuses what it cannot serve
        sqs.get_queue_url(QueueName=f"{stack_prefix}missing")


def test_a_fixed_user_agent_goes_out_as_given(stack_settings: PulseSettings) -> None:
    sqs = aws_client("sqs", stack_settings, user_agent="pulse-test/1")
    sent: list[str] = []

    def record(request: Any, **_: Any) -> None:
        agent = request.headers["User-Agent"]
        sent.append(agent.decode() if isinstance(agent, bytes) else agent)

    sqs.meta.events.register("before-send.sqs.ListQueues", record)
    sqs.list_queues()
    sqs.list_queues()
    assert len(set(sent)) == 1
    assert sent[0].startswith("pulse-test/1")  # boto3 appends its name and version
