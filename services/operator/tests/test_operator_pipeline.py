"""The EventPipeline spec maps to the same topology ``make run`` applies; bad specs are refused."""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import pytest
import yaml

from pulse.settings import ResourceNames
from pulse.topology import pulse_spec
from pulse_operator.pipeline import InvalidPipelineError, parse_pipeline, to_topology

EXAMPLE = pathlib.Path(__file__).parents[3] / "k8s" / "examples" / "eventpipeline.yaml"


def example_spec() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())["spec"]
    return spec


def test_the_example_resource_is_everything_pulse_needs() -> None:
    assert to_topology(example_spec()) == pulse_spec(ResourceNames("pulse-"))


def test_prefix_defaults_and_outputs_config_map() -> None:
    spec = example_spec()
    spec["resourcePrefix"] = "stage-"
    del spec["queues"][0]["deadLetter"]
    pipeline = parse_pipeline(spec, name="stage")
    fraud = pipeline.topology.queues[0]
    assert (fraud.name, fraud.dlq_name, fraud.max_receive_count) == (
        "stage-fraud",
        "stage-fraud-dlq",
        5,
    )
    assert pipeline.topology.topic_name == "stage-payment-events"
    assert pipeline.deletion_policy == "Retain"
    assert pipeline.config_map_name == "stage-outputs"
    hooks = pipeline.topology.queues[2]
    assert (hooks.fifo, hooks.filter_policy) == (True, None)  # FIFO, not subscribed to the topic
    del spec["queues"][2]["deadLetter"]
    assert (
        parse_pipeline(spec, name="stage").topology.queues[2].dlq_name == "stage-webhooks-dlq.fifo"
    )


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            ("tables", 0, "keySchema"),
            [{"attributeName": "a", "keyType": "RANGE"}],
            "exactly one HASH",
        ),
        (("tables", 0, "keySchema"), [], "exactly one HASH"),
        (("tables", 1, "timeToLive"), {"enabled": True}, "attributeName is required"),
        (("tables", 0, "streamSpecification", "streamViewType"), "ALL", "streamViewType"),
        (("queues", 0, "visibilityTimeout"), "30", "must be int"),
        (("queues", 0, "visibilityTimeout"), True, "must be int"),
        (("queues", 0, "fifoQueue"), True, "ends in .fifo"),
        (("queues", 2, "fifoQueue"), False, "ends in .fifo"),
        (("queues", 2, "deadLetter", "queueName"), "hooks-dlq", "DLQ is FIFO too"),
        (("queues", 2, "subscription"), {"filterPolicy": {}}, "cannot feed a FIFO queue"),
        (
            ("queues", 0, "subscription", "rawMessageDelivery"),
            False,
            "rawMessageDelivery must be true",
        ),
        (("queues", 0, "subscription", "filterPolicyScope"), "MessageBody", "MessageAttributes"),
        (("queues", 1, "queueName"), "fraud", "declared twice"),
        (("queues", 1, "deadLetter", "queueName"), "fraud-dlq", "declared twice"),
        (("queues", 0, "deadLetter", "queueName"), "fraud", "its own dead-letter queue"),
        (("queues", 5, "deadLetter", "messageRetentionPeriod"), 60, "messageRetentionPeriod"),
        (("topic",), {}, "spec.topic.name is required"),
        (("deletionPolicy",), "Orphan", "Retain or Delete"),
        (("tables",), [], "at least one table"),
        (
            ("tables", 0, "globalSecondaryIndexes", 0, "projection"),
            {"projectionType": "KEYS_ONLY"},
            "projectionType must be ALL",
        ),
        (
            ("tables", 0, "globalSecondaryIndexes", 0, "keySchema"),
            [{"attributeName": "a", "keyType": "RANGE"}],
            r"globalSecondaryIndexes\[0\].keySchema needs exactly one HASH key",
        ),
        (("tables", 0, "globalSecondaryIndexes", 0, "indexName"), "", "indexName is required"),
    ],
)
def test_invalid_specs_are_refused_with_the_field_named(
    path: tuple[Any, ...], value: Any, message: str
) -> None:
    spec = copy.deepcopy(example_spec())
    target = spec
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(InvalidPipelineError, match=message):
        parse_pipeline(spec, name="p")
