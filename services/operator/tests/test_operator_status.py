"""Status building: conditions keep their transition time; health sums the queues."""

from __future__ import annotations

from pulse.topology import QueueSpec, TableSpec, TopologyOutputs, TopologySpec
from pulse_operator.status import (
    QueueDepth,
    config_map_data,
    health_status,
    lag_text,
    outputs_status,
    set_condition,
)

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def test_condition_transition_time_moves_only_when_the_status_changes() -> None:
    first = set_condition(
        [], type_="Ready", status=False, reason="Retrying", message="x", generation=1, now=T0
    )
    same = set_condition(
        first, type_="Ready", status=False, reason="Retrying", message="y", generation=2, now=T1
    )
    flipped = set_condition(
        same, type_="Ready", status=True, reason="Reconciled", message="ok", generation=2, now=T1
    )
    assert same == [
        {
            "type": "Ready",
            "status": "False",
            "reason": "Retrying",
            "message": "y",
            "lastTransitionTime": T0,
            "observedGeneration": 2,
        }
    ]
    assert (flipped[0]["status"], flipped[0]["lastTransitionTime"]) == ("True", T1)


def test_other_conditions_are_kept() -> None:
    other = {
        "type": "Synced",
        "status": "True",
        "reason": "r",
        "message": "",
        "lastTransitionTime": T0,
    }
    out = set_condition(
        [other], type_="Ready", status=True, reason="R", message="", generation=None, now=T1
    )
    assert out[0] == other
    assert "observedGeneration" not in out[1]


def test_health_sums_depths_and_keeps_unknown_age_unknown() -> None:
    depths = [
        QueueDepth("p-fraud", 3, 1, "p-fraud-dlq", 2, None),
        QueueDepth("p-notify", 0, 0, "p-notify-dlq", 1, None),
    ]
    health = health_status(depths)
    assert (health["queueDepth"], health["deadLetterDepth"], health["oldestMessageAgeSeconds"]) == (
        4,
        3,
        None,
    )
    assert health["queues"][0]["inFlight"] == 1
    assert health["lag"] == "unknown"
    # a known age elsewhere does not hide the unknown one: it may be the oldest
    depths.append(QueueDepth("p-x", 5, 0, "p-x-dlq", 0, 42))
    assert health_status(depths)["oldestMessageAgeSeconds"] is None
    known = [QueueDepth("p-x", 5, 0, "p-x-dlq", 0, 42), QueueDepth("p-y", 0, 0, "p-y-dlq", 0, 0)]
    assert (health_status(known)["oldestMessageAgeSeconds"], health_status(known)["lag"]) == (
        42,
        "42s",
    )
    assert health_status([])["lag"] == "0s"


def test_lag_reads_like_a_kubectl_age() -> None:
    assert [lag_text(s) for s in (None, 0, 59, 60, 185, 3599, 7800)] == [
        "unknown",
        "0s",
        "59s",
        "1m0s",
        "3m5s",
        "59m59s",
        "2h10m",
    ]


def _topology() -> tuple[TopologySpec, TopologyOutputs]:
    spec = TopologySpec(
        tables=[TableSpec("p-payments", "payment_id", stream_view_type="NEW_AND_OLD_IMAGES")],
        topic_name="p-payment-events",
        queues=[QueueSpec("p-fraud", "p-fraud-dlq", {"type": ["created"]})],
    )
    outputs = TopologyOutputs(
        stream_arns={"p-payments": "arn:stream"},
        topic_arn="arn:topic",
        queue_urls={"p-fraud": "http://q/p-fraud", "p-fraud-dlq": "http://q/p-fraud-dlq"},
        queue_arns={"p-fraud": "arn:fraud", "p-fraud-dlq": "arn:fraud-dlq"},
        subscription_arns={"p-fraud": "arn:sub"},
    )
    return spec, outputs


def test_config_map_keys_are_environment_variables_without_the_prefix() -> None:
    spec, outputs = _topology()
    assert config_map_data(outputs, spec, "p-") == {
        "PULSE_RESOURCE_PREFIX": "p-",
        "TOPIC_ARN": "arn:topic",
        "TABLE_NAME_PAYMENTS": "p-payments",
        "STREAM_ARN_PAYMENTS": "arn:stream",
        "QUEUE_URL_FRAUD": "http://q/p-fraud",
        "QUEUE_ARN_FRAUD": "arn:fraud",
        "QUEUE_URL_FRAUD_DLQ": "http://q/p-fraud-dlq",
        "QUEUE_ARN_FRAUD_DLQ": "arn:fraud-dlq",
    }


def test_outputs_status_lists_every_resource() -> None:
    spec, outputs = _topology()
    status = outputs_status(outputs, spec, "p-outputs")
    assert status["tables"] == [{"tableName": "p-payments", "latestStreamArn": "arn:stream"}]
    assert status["queues"][0]["deadLetterQueueARN"] == "arn:fraud-dlq"
    assert status["queues"][0]["subscriptionARN"] == "arn:sub"
