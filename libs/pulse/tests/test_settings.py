import pytest

from pulse.errors import ConfigurationError
from pulse.replication import Replication
from pulse.settings import PulseSettings, load_settings


def test_defaults_name_every_resource_under_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSE_RESOURCE_PREFIX", "dev1-")
    names = load_settings(PulseSettings).names
    assert names.payments_table == "dev1-payments"
    assert names.fraud_dlq == "dev1-fraud-dlq"
    assert names.topic == "dev1-payment-events"


def test_standard_aws_and_redis_variables_are_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    monkeypatch.setenv("REDIS_URL", "redis://example:6380/2")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.delenv("AWS_REGION", raising=False)
    settings = load_settings(PulseSettings)
    assert settings.aws_endpoint_url == "http://127.0.0.1:4566"
    assert settings.redis_url == "redis://example:6380/2"
    assert settings.aws_region == "eu-west-1"


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("PULSE_HTTP_PORT", "not-a-port"),
        ("PULSE_HTTP_PORT", "70000"),
        ("PULSE_LOG_LEVEL", "loud"),
        ("PULSE_JWT_SECRET", "too-short"),
        ("PULSE_RESOURCE_PREFIX", "bad prefix!"),
        ("PULSE_REDIS_PREFIX", "pulse:{x}:"),  # a brace would become the keys' hash tag
        ("PULSE_REDIS_PREFIX", "pulse}"),
        ("PULSE_REDIS_WAIT_REPLICAS", "-1"),
        ("PULSE_REDIS_WAIT_TIMEOUT_MS", "0"),  # WAIT 0 would block forever
    ],
)
def test_bad_values_fail_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigurationError, match=var):
        load_settings(PulseSettings)


def test_replicas_must_acknowledge_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Replication.of(load_settings(PulseSettings)) == Replication(0, 1000)
    monkeypatch.setenv("PULSE_REDIS_WAIT_REPLICAS", "1")
    monkeypatch.setenv("PULSE_REDIS_WAIT_TIMEOUT_MS", "250")
    assert Replication.of(load_settings(PulseSettings)) == Replication(1, 250)


def test_settings_are_frozen() -> None:
    settings = PulseSettings()
    with pytest.raises(ValueError, match="frozen"):
        settings.http_port = 1  # type: ignore[misc]


def test_secret_is_not_shown_in_repr() -> None:
    assert "pulse-dev-secret" not in repr(PulseSettings())
