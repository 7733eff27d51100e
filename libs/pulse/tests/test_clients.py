import asyncio
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError, ParamValidationError
from click.testing import CliRunner

from pulse.cli import main
from pulse.clients import aws_client, blocking_redis_client, pubsub_client, redis_client
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


def _standalone(redis_url: str) -> PulseSettings:
    return PulseSettings(redis_url=redis_url, redis_mode="standalone")


async def test_the_service_client_reads_what_it_writes(redis_url: str) -> None:
    key = f"pulse:{uuid.uuid4().hex}:k"
    client = redis_client(_standalone(redis_url))
    try:
        await client.set(key, b"v", ex=60)
        assert await client.get(key) == b"v"
    finally:
        await client.delete(key)
        await client.aclose()


async def test_a_burst_beyond_the_pool_waits_its_turn(redis_url: str) -> None:
    key = f"pulse:{uuid.uuid4().hex}:n"
    client = redis_client(_standalone(redis_url), max_connections=2)
    try:
        counts = await asyncio.gather(*(client.incr(key) for _ in range(50)))
        assert sorted(counts) == list(range(1, 51))
    finally:
        await client.delete(key)
        await client.aclose()


async def test_the_pubsub_client_is_named_and_hears_what_is_published(redis_url: str) -> None:
    name = f"pulse-test-{uuid.uuid4().hex[:8]}"
    channel = f"pulse:{name}:live"
    listener = pubsub_client(_standalone(redis_url), client_name=name)
    publisher = redis_client(_standalone(redis_url))
    pubsub = listener.pubsub()
    try:
        await pubsub.subscribe(channel)
        clients = await publisher.client_list()
        assert any(c["name"] == name for c in clients)
        await publisher.publish(channel, b"hello")
        message = None
        while message is None:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
        assert message["data"] == b"hello"
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # unannotated in redis-py
        await listener.aclose()
        await publisher.aclose()


def test_the_blocking_client_reads_what_it_writes(redis_url: str) -> None:
    key = f"pulse:{uuid.uuid4().hex}:k"
    with blocking_redis_client(_standalone(redis_url)) as client:
        client.set(key, b"v", ex=60)
        assert client.get(key) == b"v"
        client.delete(key)


def test_the_command_line_names_a_bad_redis_setting() -> None:
    result = CliRunner().invoke(
        main, ["fraud", "list"], env={"PULSE_REDIS_MODE": "sentinel", "PULSE_REDIS_SENTINELS": ""}
    )
    assert result.exit_code == 1
    assert "PULSE_REDIS_SENTINELS is required" in result.output
