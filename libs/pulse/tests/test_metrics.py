"""Stage metrics: what one call records, per message."""

from prometheus_client import REGISTRY

from pulse.metrics import StageMetrics


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_batch_is_recorded_as_its_messages() -> None:
    stage = StageMetrics("metrics-test")

    stage.observe("success", 0.02, 3)
    stage.observe("retry", 0.5)
    stage.observe_age(-1.0)  # clocks disagree: never a negative age

    labels = {"stage": "metrics-test"}
    assert _sample("pulse_stage_processed_total", outcome="success", **labels) == 3
    assert _sample("pulse_stage_processed_total", outcome="retry", **labels) == 1
    duration = "pulse_message_processing_duration_seconds"
    assert _sample(f"{duration}_count", outcome="success", **labels) == 3
    assert _sample(f"{duration}_bucket", outcome="success", le="0.025", **labels) == 3
    assert _sample(f"{duration}_bucket", outcome="retry", le="0.25", **labels) == 0
    assert _sample("pulse_message_age_seconds_bucket", le="0.01", **labels) == 1
    assert _sample("pulse_stage_last_processed_timestamp_seconds", **labels) > 0
