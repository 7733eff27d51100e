import pytest

from pulse.errors import ConfigurationError
from pulse.replication import Replication
from pulse.service import run_service
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


@pytest.mark.parametrize(
    ("var", "value", "words"),
    [
        ("PULSE_RESOURCE_PREFIX", "bad prefix!", "only letters, digits, '_', '.' and '-'"),
        ("PULSE_REDIS_PREFIX", "pulse:{x}:", "must not contain { or }"),
    ],
)
def test_a_refused_prefix_is_explained_in_words_not_a_pattern(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, words: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigurationError) as info:
        load_settings(PulseSettings)
    assert words in str(info.value)
    assert "pattern" not in str(info.value)
    assert "^" not in str(info.value)


def test_overrides_take_precedence_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSE_RESOURCE_PREFIX", "from-env-")
    loaded = load_settings(PulseSettings, resource_prefix="given-", aws_region="eu-west-1")
    assert (loaded.resource_prefix, loaded.aws_region) == ("given-", "eu-west-1")


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


def test_redis_is_standalone_unless_told_otherwise() -> None:
    settings = PulseSettings()
    assert settings.redis_mode == "standalone"
    assert not settings.redis_tls


def test_sentinels_are_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSE_REDIS_MODE", "sentinel")
    monkeypatch.setenv("PULSE_REDIS_SENTINELS", "redis://s1:26380, redis://s2 ,")
    monkeypatch.setenv("PULSE_REDIS_MASTER_NAME", "pulse")
    settings = load_settings(PulseSettings)
    assert settings.redis_sentinel_addresses == [("s1", 26380), ("s2", 26379)]
    assert settings.redis_master_name == "pulse"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PULSE_REDIS_MODE": "replicated"}, "PULSE_REDIS_MODE"),
        ({"PULSE_REDIS_MODE": "sentinel", "PULSE_REDIS_MASTER_NAME": "m"}, "PULSE_REDIS_SENTINELS"),
        (
            {"PULSE_REDIS_MODE": "sentinel", "PULSE_REDIS_SENTINELS": "redis://s1:26379"},
            "PULSE_REDIS_MASTER_NAME",
        ),
        ({"PULSE_REDIS_SENTINELS": "http://s1:26379"}, "PULSE_REDIS_SENTINELS"),
        ({"PULSE_REDIS_SENTINELS": "redis://s1:26379,rediss://s2"}, "PULSE_REDIS_SENTINELS"),
        ({"PULSE_REDIS_SENTINELS": "redis://s1:port"}, "PULSE_REDIS_SENTINELS"),
        ({"REDIS_URL": "redis://s1:6379/3", "PULSE_REDIS_MODE": "cluster"}, "REDIS_URL"),
        ({"REDIS_URL": "unix:///tmp/redis.sock", "PULSE_REDIS_MODE": "cluster"}, "REDIS_URL"),
        ({"PULSE_REDIS_TLS_CA_FILE": "/nonexistent/ca.pem"}, "PULSE_REDIS_TLS_CA_FILE"),
    ],
)
def test_a_bad_redis_topology_fails_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    with pytest.raises(ConfigurationError, match=rf"(?<![A-Z_]){named}\b"):
        load_settings(PulseSettings)


def test_a_bad_redis_url_is_named_without_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "https://:hunter2@cache.example:6379")
    with pytest.raises(ConfigurationError, match=r"(?<!_)REDIS_URL: ") as failed:
        load_settings(PulseSettings)
    assert "hunter2" not in str(failed.value)


def test_a_service_with_a_bad_redis_mode_stops_at_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PULSE_REDIS_MODE", "sentinel")
    monkeypatch.setenv("PULSE_REDIS_MASTER_NAME", "pulse")
    started: list[object] = []

    async def serve(lifecycle: object) -> None:
        started.append(lifecycle)

    code = run_service(lambda: load_settings(PulseSettings), serve, package="pulse")
    assert code == 2
    assert not started
    assert "PULSE_REDIS_SENTINELS is required" in capsys.readouterr().err
