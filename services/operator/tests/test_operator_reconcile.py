"""The handlers' logic against the real AWS emulator (no cluster): create, drift repair,
status reporting, invalid specs, refusals and deletion under each policy, and the Events each
posts.

The ConfigMap writer and the Event sink are the Kubernetes edge; recorders stand in for the
API server here (``test_operator_kopf.py`` runs the whole operator against one).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import pathlib
from typing import Any

import kopf
import pytest
import yaml

from pulse.clients import aws_client
from pulse.settings import PulseSettings
from pulse_operator.events import PipelineRef
from pulse_operator.handlers import PipelineOperator
from pulse_operator.kube import KubernetesRejectedError

EXAMPLE = pathlib.Path(__file__).parents[3] / "k8s" / "examples" / "eventpipeline.yaml"
REF = PipelineRef(
    api_version="pulse.dev/v1alpha1", kind="EventPipeline", name="p", namespace="ns", uid="u-1"
)


class RecordingConfigMaps:
    def __init__(self) -> None:
        self.applied: list[dict[str, Any]] = []

    async def apply(self, body: dict[str, Any]) -> None:
        self.applied.append(body)


class RefusingConfigMaps:
    """The API server refusing the write, as OwnerReferencesPermissionEnforcement does when
    the operator may not update the pipeline's finalizers."""

    async def apply(self, body: dict[str, Any]) -> None:
        raise KubernetesRejectedError(
            f"ConfigMap {body['metadata']['name']}: HTTP 403: cannot set blockOwnerDeletion",
            status=403,
        )


class RecordingEvents:
    def __init__(self) -> None:
        self.posted: list[tuple[str, str, str]] = []

    def post(self, ref: PipelineRef, *, warning: bool, reason: str, message: str) -> None:
        assert ref == REF
        self.posted.append(("Warning" if warning else "Normal", reason, message))

    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.posted]


def operator(
    settings: PulseSettings, configmaps: Any = None, events: RecordingEvents | None = None
) -> PipelineOperator:
    return PipelineOperator(
        settings, configmaps or RecordingConfigMaps(), events or RecordingEvents()
    )


def pipeline_spec(prefix: str, policy: str = "Retain") -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())["spec"]
    spec["resourcePrefix"] = prefix
    spec["deletionPolicy"] = policy
    return spec


def merged(status: dict[str, Any], patch: kopf.Patch) -> dict[str, Any]:
    return {**status, **patch.status}


# The status of a pipeline whose generation 1 has been reconciled: the timer measures it.
RECONCILED: dict[str, Any] = {"observedGeneration": 1}


async def reconcile(
    op: PipelineOperator, spec: dict[str, Any], status: dict[str, Any], generation: int = 1
) -> kopf.Patch:
    return await reconcile_into(op, spec, status, kopf.Patch(), generation)


async def reconcile_into(
    op: PipelineOperator,
    spec: dict[str, Any],
    status: dict[str, Any],
    patch: kopf.Patch,
    generation: int = 1,
) -> kopf.Patch:
    await op.reconcile(
        name="p",
        namespace="ns",
        spec=spec,
        meta={"generation": generation},
        status=status,
        patch=patch,
        ref=REF,
    )
    return patch


def queue_names(settings: PulseSettings) -> set[str]:
    urls = (
        aws_client("sqs", settings)
        .list_queues(QueueNamePrefix=settings.resource_prefix)
        .get("QueueUrls", [])
    )
    return {u.rsplit("/", 1)[-1] for u in urls}


def table_names(settings: PulseSettings) -> set[str]:
    # paginated: the session's emulator holds every test's tables
    pages = aws_client("dynamodb", settings).get_paginator("list_tables").paginate()
    return {
        t for page in pages for t in page["TableNames"] if t.startswith(settings.resource_prefix)
    }


async def test_reconcile_creates_reports_and_repairs(
    stack_settings: PulseSettings, stack_prefix: str
) -> None:
    configmaps = RecordingConfigMaps()
    op = operator(stack_settings, configmaps)
    spec = pipeline_spec(stack_prefix)

    patch = await reconcile(op, spec, {})
    status = merged({}, patch)
    p = stack_prefix
    assert table_names(stack_settings) == {
        f"{p}payments",
        f"{p}events",
        f"{p}leases",
        f"{p}webhooks",
        f"{p}webhook-attempts",
        f"{p}api-keys",
    }
    assert queue_names(stack_settings) == {
        f"{p}fraud",
        f"{p}fraud-dlq",
        f"{p}notify",
        f"{p}notify-dlq",
        f"{p}webhooks.fifo",
        f"{p}webhooks-dlq.fifo",
        f"{p}webhook-retries",
        f"{p}webhook-retries-dlq",
        f"{p}stream-failures",
        f"{p}stream-failures-dlq",
        f"{p}stream-replays",
    }
    (ready,) = status["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "True", "Reconciled")
    assert status["outputs"]["topicArn"].endswith(f":{p}payment-events")
    assert status["outputs"]["tables"][0]["latestStreamArn"].startswith("arn:aws:dynamodb:")
    (cm,) = configmaps.applied
    assert cm["metadata"]["name"] == "p-outputs"
    assert cm["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    sqs = aws_client("sqs", stack_settings)
    fraud_url = cm["data"]["QUEUE_URL_FRAUD"]
    assert fraud_url == sqs.get_queue_url(QueueName=f"{p}fraud")["QueueUrl"]
    assert cm["data"]["PULSE_RESOURCE_PREFIX"] == p
    assert cm["data"]["QUEUE_URL_WEBHOOKS_FIFO"].endswith(f"/{p}webhooks.fifo")
    fifo_attrs = sqs.get_queue_attributes(
        QueueUrl=cm["data"]["QUEUE_URL_WEBHOOKS_FIFO"], AttributeNames=["FifoQueue"]
    )
    assert fifo_attrs["Attributes"]["FifoQueue"] == "true"

    # a second run changes nothing and keeps the transition time
    again = merged(status, await reconcile(op, spec, status))
    assert again["conditions"][0]["message"] == "in sync"
    assert again["conditions"][0]["lastTransitionTime"] == ready["lastTransitionTime"]

    # drift made outside the operator is repaired by the next reconcile
    sqs.set_queue_attributes(QueueUrl=fraud_url, Attributes={"VisibilityTimeout": "5"})
    sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=f"{p}notify-dlq")["QueueUrl"])
    repaired = merged(again, await reconcile(op, spec, again))
    assert "updated queue" in repaired["conditions"][0]["message"]
    assert sqs.get_queue_attributes(QueueUrl=fraud_url, AttributeNames=["VisibilityTimeout"])[
        "Attributes"
    ] == {"VisibilityTimeout": "30"}
    assert f"{p}notify-dlq" in queue_names(stack_settings)

    # the timer reports depths: two waiting in fraud, one dead-lettered notification
    for body in ("a", "b"):
        sqs.send_message(QueueUrl=fraud_url, MessageBody=json.dumps({"n": body}))
    sqs.send_message(
        QueueUrl=sqs.get_queue_url(QueueName=f"{p}notify-dlq")["QueueUrl"], MessageBody="x"
    )
    timer_patch = kopf.Patch()
    await op.refresh(
        name="p", spec=spec, meta={"generation": 1}, status=repaired, patch=timer_patch
    )
    health = timer_patch.status
    assert (health["queueDepth"], health["deadLetterDepth"]) == (2, 1)
    by_queue = {q["queueName"]: q for q in health["queues"]}
    assert by_queue[f"{p}fraud"]["visible"] == 2
    assert by_queue[f"{p}notify"]["deadLetterVisible"] == 1
    assert "lastMeasuredTime" in health
    # LAG: the emulator has no CloudWatch figure for the fraud queue's two messages, so the
    # pipeline's lag is unknown - not 0; the empty notify queue's is known without it
    assert by_queue[f"{p}fraud"]["oldestMessageAgeSeconds"] is None
    assert by_queue[f"{p}notify"]["oldestMessageAgeSeconds"] == 0
    assert (health["oldestMessageAgeSeconds"], health["lag"]) == (None, "unknown")

    # once the fraud queue is drained every queue is empty: the lag is a known 0
    while msgs := sqs.receive_message(
        QueueUrl=fraud_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
    ).get("Messages"):
        for m in msgs:
            sqs.delete_message(QueueUrl=fraud_url, ReceiptHandle=m["ReceiptHandle"])
    drained = kopf.Patch()
    await op.refresh(
        name="p", spec=spec, meta={"generation": 1}, status={**repaired, **health}, patch=drained
    )
    assert (drained.status["oldestMessageAgeSeconds"], drained.status["lag"]) == (0, "0s")


async def test_events_say_what_changed_in_aws_and_nothing_else(
    stack_settings: PulseSettings, stack_prefix: str
) -> None:
    """A reconcile that changes AWS posts the changes; one that finds AWS in sync (the repair
    timer, every few minutes) posts nothing."""
    events = RecordingEvents()
    op = operator(stack_settings, events=events)
    spec = pipeline_spec(stack_prefix)
    p = stack_prefix
    status = merged({}, await reconcile(op, spec, {}))
    ((kind, reason, message),) = events.posted
    assert (kind, reason) == ("Normal", "Reconciled")
    assert f"created queue {p}fraud" in message

    status = merged(status, await reconcile(op, spec, status))
    assert len(events.posted) == 1

    sqs = aws_client("sqs", stack_settings)
    sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=f"{p}notify-dlq")["QueueUrl"])
    merged(status, await reconcile(op, spec, status))
    assert events.posted[-1][:2] == ("Normal", "Reconciled")
    assert f"created queue {p}notify-dlq" in events.posted[-1][2]


def subscription_filter(settings: PulseSettings, topic_arn: str, queue_name: str) -> Any:
    sns = aws_client("sns", settings)
    queue_arn = aws_client("sqs", settings).get_queue_attributes(
        QueueUrl=aws_client("sqs", settings).get_queue_url(QueueName=queue_name)["QueueUrl"],
        AttributeNames=["QueueArn"],
    )["Attributes"]["QueueArn"]
    (sub,) = [
        s
        for s in sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]
        if s["Endpoint"] == queue_arn
    ]
    attrs = sns.get_subscription_attributes(SubscriptionArn=sub["SubscriptionArn"])["Attributes"]
    return json.loads(attrs["FilterPolicy"])


async def test_an_edited_spec_is_applied_and_reported(
    stack_settings: PulseSettings, stack_prefix: str
) -> None:
    """`kubectl edit eventpipeline`: changed queue attributes, a changed filter policy and a new
    queue reach AWS; the Ready condition and observedGeneration follow the new generation and
    the outputs ConfigMap gains the new queue."""
    configmaps = RecordingConfigMaps()
    op = operator(stack_settings, configmaps)
    spec = pipeline_spec(stack_prefix)
    status = merged({}, await reconcile(op, spec, {}))
    p = stack_prefix

    edited = copy.deepcopy(spec)
    edited["queues"][0]["visibilityTimeout"] = 45
    edited["queues"][0]["deadLetter"]["maxReceiveCount"] = 3
    edited["queues"][1]["subscription"]["filterPolicy"] = {"type": ["updated", "created"]}
    edited["queues"].append(
        {"queueName": "audit", "subscription": {"filterPolicy": {"type": ["created"]}}}
    )
    updated = merged(status, await reconcile(op, edited, status, generation=2))

    sqs = aws_client("sqs", stack_settings)
    fraud = sqs.get_queue_attributes(
        QueueUrl=sqs.get_queue_url(QueueName=f"{p}fraud")["QueueUrl"],
        AttributeNames=["VisibilityTimeout", "RedrivePolicy"],
    )["Attributes"]
    assert fraud["VisibilityTimeout"] == "45"
    assert json.loads(fraud["RedrivePolicy"])["maxReceiveCount"] == 3
    topic_arn = updated["outputs"]["topicArn"]
    assert subscription_filter(stack_settings, topic_arn, f"{p}notify") == {
        "type": ["updated", "created"]
    }
    assert {f"{p}audit", f"{p}audit-dlq"} <= queue_names(stack_settings)
    assert subscription_filter(stack_settings, topic_arn, f"{p}audit") == {"type": ["created"]}

    (ready,) = updated["conditions"]
    assert (ready["status"], ready["reason"], ready["observedGeneration"]) == (
        "True",
        "Reconciled",
        2,
    )
    for change in (
        f"created queue {p}audit",
        f"updated queue {p}fraud",
        f"updated subscription {p}notify: FilterPolicy",
    ):
        assert change in ready["message"]
    # still ready: the transition time is the first reconcile's
    assert ready["lastTransitionTime"] == status["conditions"][0]["lastTransitionTime"]
    assert updated["observedGeneration"] == 2
    assert [q["queueName"] for q in updated["outputs"]["queues"]][-1] == f"{p}audit"
    assert (
        configmaps.applied[-1]["data"]["QUEUE_URL_AUDIT"]
        == (sqs.get_queue_url(QueueName=f"{p}audit")["QueueUrl"])
    )


async def test_invalid_spec_is_a_permanent_error_with_a_condition(
    stack_settings: PulseSettings, stack_prefix: str
) -> None:
    events = RecordingEvents()
    op = operator(stack_settings, events=events)
    spec = pipeline_spec(stack_prefix)
    spec["queues"][0]["subscription"]["rawMessageDelivery"] = False
    patch = kopf.Patch()
    with pytest.raises(kopf.PermanentError, match="rawMessageDelivery"):
        await op.reconcile(
            name="p",
            namespace="ns",
            spec=spec,
            meta={"generation": 3},
            status={},
            patch=patch,
            ref=REF,
        )
    (cond,) = patch.status["conditions"]
    assert (cond["status"], cond["reason"], cond["observedGeneration"]) == (
        "False",
        "InvalidSpec",
        3,
    )
    assert table_names(stack_settings) == set()  # nothing was created from it
    ((kind, reason, message),) = events.posted
    assert (kind, reason) == ("Warning", "InvalidSpec")
    assert "rawMessageDelivery" in message


async def test_a_kubernetes_refusal_is_kubernetes_rejected_not_aws_rejected(
    stack_settings: PulseSettings, stack_prefix: str
) -> None:
    """AWS applied the topology, then the API server refused the outputs ConfigMap: the
    condition and the Event blame Kubernetes, once; the pipeline recovers with the next
    reconcile that can write it, and says so."""
    events = RecordingEvents()
    op = operator(stack_settings, RefusingConfigMaps(), events)
    spec = pipeline_spec(stack_prefix)
    patch = kopf.Patch()
    with pytest.raises(kopf.PermanentError, match="blockOwnerDeletion"):
        await reconcile_into(op, spec, {}, patch)
    (cond,) = patch.status["conditions"]
    assert (cond["status"], cond["reason"]) == ("False", "KubernetesRejected")
    assert cond["message"].startswith("write outputs ConfigMap: ConfigMap p-outputs: HTTP 403")
    assert events.posted == [("Warning", "KubernetesRejected", cond["message"])]
    assert len(queue_names(stack_settings)) == 11  # AWS did its part

    # refused again: the condition holds, no second Event
    status = merged({}, patch)
    with pytest.raises(kopf.PermanentError):
        await reconcile_into(op, spec, status, kopf.Patch())
    assert len(events.posted) == 1

    # the role fixed: ready again, in sync with AWS, and an Event says so
    op.configmaps = RecordingConfigMaps()
    recovered = merged(status, await reconcile(op, spec, status))
    assert (recovered["conditions"][0]["status"], recovered["conditions"][0]["reason"]) == (
        "True",
        "Reconciled",
    )
    assert events.posted[-1] == ("Normal", "Reconciled", "in sync")


async def test_unreachable_aws_is_a_temporary_error(
    stack_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    settings = PulseSettings(aws_endpoint_url="http://127.0.0.1:9", resource_prefix=stack_prefix)
    op = operator(settings)
    patch = kopf.Patch()
    with pytest.raises(kopf.TemporaryError) as caught:
        await op.reconcile(
            name="p",
            namespace="ns",
            spec=pipeline_spec(stack_prefix),
            meta={},
            status={},
            patch=patch,
        )
    assert caught.value.delay is not None
    assert caught.value.delay > 0
    assert patch.status["conditions"][0]["reason"] == "Retrying"


@pytest.mark.parametrize("policy", ["Retain", "Delete"])
async def test_deletion_honours_the_policy(
    stack_settings: PulseSettings, stack_prefix: str, policy: str
) -> None:
    events = RecordingEvents()
    op = operator(stack_settings, events=events)
    spec = pipeline_spec(stack_prefix, policy)
    status = merged({}, await reconcile(op, spec, {}))
    deleted = await op.finalize(
        name="p", spec=spec, meta={}, status=status, patch=kopf.Patch(), ref=REF
    )
    kind, reason, message = events.posted[-1]
    if policy == "Retain":
        assert (kind, reason) == ("Normal", "Retained")
        assert deleted == []
        assert len(table_names(stack_settings)) == 6
        assert len(queue_names(stack_settings)) == 11
    else:
        assert (kind, reason) == ("Normal", "Deleted")
        assert message.startswith(f"deleted {len(deleted)} AWS resource(s)")
        assert table_names(stack_settings) == set()
        assert queue_names(stack_settings) == set()
        topics = aws_client("sns", stack_settings).list_topics()["Topics"]
        assert not [t for t in topics if t["TopicArn"].endswith(f":{stack_prefix}payment-events")]
        # deleting again is a no-op, not an error
        assert (
            await op.finalize(name="p", spec=spec, meta={}, status=status, patch=kopf.Patch()) == []
        )


def put_queue_age(
    settings: PulseSettings, queue_name: str, seconds: float, at: dt.datetime | None = None
) -> None:
    """ApproximateAgeOfOldestMessage into the emulator's CloudWatch, as SQS publishes it on AWS."""
    datum: dict[str, Any] = {
        "MetricName": "ApproximateAgeOfOldestMessage",
        "Dimensions": [{"Name": "QueueName", "Value": queue_name}],
        "Value": seconds,
        "Unit": "Seconds",
    }
    if at is not None:
        datum["Timestamp"] = at
    aws_client("cloudwatch", settings).put_metric_data(Namespace="AWS/SQS", MetricData=[datum])


async def test_a_spec_not_reconciled_yet_is_not_measured_or_called_degraded(
    stack_settings: PulseSettings, stack_prefix: str
) -> None:
    """The status timer can fire while a new pipeline's queues are still being made, or
    before an update's are: those are not drift, and no Degraded condition or Warning Event
    may say so. Once the generation is reconciled the timer measures, and a queue missing
    then is drift."""
    events = RecordingEvents()
    op = operator(stack_settings, events=events)
    spec = pipeline_spec(stack_prefix)
    for status in ({}, {"observedGeneration": 1}):  # never reconciled; an older generation
        patch = kopf.Patch()
        await op.refresh(
            name="p", spec=spec, meta={"generation": 2}, status=status, patch=patch, ref=REF
        )
        assert patch.status == {}
    assert events.posted == []

    reconciled = await reconcile(op, spec, {}, generation=2)
    sqs = aws_client("sqs", stack_settings)
    sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=f"{stack_prefix}notify")["QueueUrl"])
    patch = kopf.Patch()
    with pytest.raises(kopf.TemporaryError, match="measure queues"):
        await op.refresh(
            name="p",
            spec=spec,
            meta={"generation": 2},
            status=reconciled.status,
            patch=patch,
            ref=REF,
        )
    assert patch.status["conditions"][0]["reason"] == "Degraded"


async def test_lag_comes_from_cloudwatch_when_it_has_a_datapoint(
    stack_settings: PulseSettings, stack_prefix: str
) -> None:
    """A queue holding messages reports CloudWatch's ApproximateAgeOfOldestMessage (here put
    into the emulator's CloudWatch as SQS would on AWS); a queue holding messages with no
    recent datapoint makes the pipeline's LAG unknown, never 0."""
    op = operator(stack_settings)
    spec = pipeline_spec(stack_prefix)
    await reconcile(op, spec, {})
    p = stack_prefix
    sqs = aws_client("sqs", stack_settings)
    sqs.send_message(QueueUrl=sqs.get_queue_url(QueueName=f"{p}fraud")["QueueUrl"], MessageBody="m")
    put_queue_age(stack_settings, f"{p}fraud", 125.0)
    patch = kopf.Patch()
    await op.refresh(name="p", spec=spec, meta={"generation": 1}, status=RECONCILED, patch=patch)
    assert (patch.status["oldestMessageAgeSeconds"], patch.status["lag"]) == (125, "2m5s")

    # notify now holds a message too, and CloudWatch's only figure for it is an hour old:
    # too stale to stand for the queue now, so its age and the pipeline's LAG are unknown
    sqs.send_message(
        QueueUrl=sqs.get_queue_url(QueueName=f"{p}notify")["QueueUrl"], MessageBody="m"
    )
    put_queue_age(
        stack_settings, f"{p}notify", 5.0, at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    )
    patch = kopf.Patch()
    await op.refresh(name="p", spec=spec, meta={"generation": 1}, status=RECONCILED, patch=patch)
    by_queue = {q["queueName"]: q for q in patch.status["queues"]}
    assert by_queue[f"{p}fraud"]["oldestMessageAgeSeconds"] == 125
    assert by_queue[f"{p}notify"]["oldestMessageAgeSeconds"] is None
    assert (patch.status["oldestMessageAgeSeconds"], patch.status["lag"]) == (None, "unknown")
