import json

from pulse.clients import aws_client
from pulse.settings import PulseSettings
from pulse.topology_apply import apply_topology


def test_apply_creates_everything_then_changes_nothing(stack_settings: PulseSettings) -> None:
    first = apply_topology(stack_settings)
    second = apply_topology(stack_settings)

    names = stack_settings.names
    assert first.changes
    assert second.changes == []
    assert second.queue_urls == first.queue_urls
    assert second.topic_arn == first.topic_arn
    assert names.payments_table in first.stream_arns

    ddb = aws_client("dynamodb", stack_settings)
    table = ddb.describe_table(TableName=names.payments_table)["Table"]
    assert table["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    ttl = ddb.describe_time_to_live(TableName=names.events_table)["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_at"

    sqs = aws_client("sqs", stack_settings)
    attrs = sqs.get_queue_attributes(
        QueueUrl=first.queue_urls[names.fraud_queue], AttributeNames=["All"]
    )["Attributes"]
    redrive = json.loads(attrs["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == first.queue_arns[names.fraud_dlq]
    assert int(redrive["maxReceiveCount"]) == 5


def test_drift_is_repaired(stack_settings: PulseSettings) -> None:
    out = apply_topology(stack_settings)
    names = stack_settings.names
    sqs = aws_client("sqs", stack_settings)
    sqs.set_queue_attributes(
        QueueUrl=out.queue_urls[names.notify_queue], Attributes={"VisibilityTimeout": "5"}
    )
    repaired = apply_topology(stack_settings)
    assert any("VisibilityTimeout" in change for change in repaired.changes)
    attrs = sqs.get_queue_attributes(
        QueueUrl=out.queue_urls[names.notify_queue], AttributeNames=["VisibilityTimeout"]
    )["Attributes"]
    assert attrs["VisibilityTimeout"] == "30"


def test_subscriptions_route_by_event_type(stack_settings: PulseSettings) -> None:
    out = apply_topology(stack_settings)
    names = stack_settings.names
    sns = aws_client("sns", stack_settings)
    sqs = aws_client("sqs", stack_settings)
    for kind in ("created", "updated", "deleted"):
        sns.publish(
            TopicArn=out.topic_arn,
            Message=json.dumps({"kind": kind}),
            MessageAttributes={"type": {"DataType": "String", "StringValue": kind}},
        )

    def drain(queue: str) -> list[dict[str, str]]:
        got = sqs.receive_message(
            QueueUrl=out.queue_urls[queue], MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        return [json.loads(m["Body"]) for m in got.get("Messages", [])]

    assert drain(names.fraud_queue) == [{"kind": "created"}]  # raw delivery: body as sent
    assert drain(names.notify_queue) == [{"kind": "updated"}]


def test_webhook_tables_and_queues_are_created_unsubscribed(
    stack_settings: PulseSettings,
) -> None:
    from pulse.topology import (  # noqa: PLC0415
        SQS_MAX_RECEIVES,
        WEBHOOK_MAX_RECEIVES,
        WebhookNames,
    )

    out = apply_topology(stack_settings)
    hooks = WebhookNames.from_prefix(stack_settings.resource_prefix)
    ddb = aws_client("dynamodb", stack_settings)
    keys = ddb.describe_table(TableName=hooks.table)["Table"]["KeySchema"]
    assert [(k["AttributeName"], k["KeyType"]) for k in keys] == [
        ("account_id", "HASH"),
        ("endpoint_id", "RANGE"),
    ]
    sqs = aws_client("sqs", stack_settings)
    attrs = sqs.get_queue_attributes(QueueUrl=out.queue_urls[hooks.queue], AttributeNames=["All"])[
        "Attributes"
    ]
    assert attrs["FifoQueue"] == "true"
    assert json.loads(attrs["RedrivePolicy"])["deadLetterTargetArn"] == out.queue_arns[hooks.dlq]
    assert hooks.dlq.endswith(".fifo")
    assert hooks.queue not in out.subscription_arns  # fed by the notify worker, not the topic
    # Attempts are counted apart from receives, and each hold outside a delivery window is
    # a receive: the redrive is a last resort only, and held events outlast a 7-day closure.
    assert json.loads(attrs["RedrivePolicy"])["maxReceiveCount"] == SQS_MAX_RECEIVES
    assert int(attrs["MessageRetentionPeriod"]) == 14 * 24 * 3600

    retries = sqs.get_queue_attributes(
        QueueUrl=out.queue_urls[hooks.retries], AttributeNames=["All"]
    )["Attributes"]
    assert "FifoQueue" not in retries  # a standard queue: per-message delays
    redrive = json.loads(retries["RedrivePolicy"])
    assert redrive == {
        "deadLetterTargetArn": out.queue_arns[hooks.retries_dlq],
        "maxReceiveCount": WEBHOOK_MAX_RECEIVES,
    }
    assert hooks.retries not in out.subscription_arns

    table = ddb.describe_table(TableName=hooks.attempts)["Table"]
    assert [(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]] == [
        ("endpoint_id", "HASH"),
        ("attempt_key", "RANGE"),
    ]
    (index,) = table["GlobalSecondaryIndexes"]
    assert [(k["AttributeName"], k["KeyType"]) for k in index["KeySchema"]] == [
        ("endpoint_id", "HASH"),
        ("attempted_at", "RANGE"),
    ]
    ttl = ddb.describe_time_to_live(TableName=hooks.attempts)["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_at"
    assert apply_topology(stack_settings).changes == []


def test_the_stream_failure_queue_is_declared_with_a_dlq_and_not_subscribed(
    stack_settings: PulseSettings,
) -> None:
    from pulse.topology import FAILURE_READS, StreamFailureNames  # noqa: PLC0415

    out = apply_topology(stack_settings)
    failures = StreamFailureNames.from_prefix(stack_settings.resource_prefix)
    assert failures.queue == f"{stack_settings.resource_prefix}stream-failures"
    sqs = aws_client("sqs", stack_settings)
    attrs = sqs.get_queue_attributes(
        QueueUrl=out.queue_urls[failures.queue], AttributeNames=["All"]
    )["Attributes"]
    assert attrs["MessageRetentionPeriod"] == str(14 * 24 * 3600)
    redrive = json.loads(attrs["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == out.queue_arns[failures.dlq]
    assert redrive["maxReceiveCount"] == FAILURE_READS  # people read it; reading moves nothing
    assert failures.queue not in out.subscription_arns  # fed by the stream processor only
    # the replay queue's dead-letter queue is the failure queue: what fails again goes back
    replays = sqs.get_queue_attributes(
        QueueUrl=out.queue_urls[failures.replays], AttributeNames=["All"]
    )["Attributes"]
    assert json.loads(replays["RedrivePolicy"]) == {
        "deadLetterTargetArn": out.queue_arns[failures.queue],
        "maxReceiveCount": 5,
    }
    assert failures.replays not in out.subscription_arns
    assert apply_topology(stack_settings).changes == []


def _review_index(ddb: object, table: str) -> list[tuple[str, str]]:
    described = ddb.describe_table(TableName=table)["Table"]  # type: ignore[attr-defined]
    indexes = {i["IndexName"]: i for i in described.get("GlobalSecondaryIndexes", [])}
    return [(k["AttributeName"], k["KeyType"]) for k in indexes["review-queue"]["KeySchema"]]


def test_the_payments_table_has_the_review_queue_index(stack_settings: PulseSettings) -> None:
    apply_topology(stack_settings)
    ddb = aws_client("dynamodb", stack_settings)
    assert _review_index(ddb, stack_settings.names.payments_table) == [
        ("review_queue", "HASH"),
        ("review_since", "RANGE"),
    ]


def test_an_index_is_added_to_a_table_made_before_it_once(stack_settings: PulseSettings) -> None:
    from dataclasses import replace  # noqa: PLC0415

    from pulse.topology import TopologySpec, pulse_spec  # noqa: PLC0415

    full = pulse_spec(stack_settings.names)
    payments = full.tables[0]
    older = TopologySpec([replace(payments, indexes=())], full.topic_name, [])
    apply_topology(stack_settings, older)
    ddb = aws_client("dynamodb", stack_settings)
    described = ddb.describe_table(TableName=payments.name)["Table"]
    assert not described.get("GlobalSecondaryIndexes")

    upgraded = apply_topology(stack_settings, replace(older, tables=[payments]))
    assert upgraded.changes == [f"created index {payments.name}/review-queue"]
    assert _review_index(ddb, payments.name) == [
        ("review_queue", "HASH"),
        ("review_since", "RANGE"),
    ]
    again = apply_topology(stack_settings, replace(older, tables=[payments]))
    assert again.changes == []
