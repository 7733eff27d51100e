import pytest

from pulse.errors import ConfigurationError
from pulse.history_limits import DEFAULT_LIMITS, HistoryLimit, HistoryLimits, channel_kind
from pulse.settings import PulseSettings, load_settings


@pytest.mark.parametrize(
    ("channel", "kind"),
    [("payments", "payments"), ("account:A-1", "account"), ("account:x:y", "account")],
)
def test_a_channels_kind_is_its_name_up_to_the_first_colon(channel: str, kind: str) -> None:
    assert channel_kind(channel) == kind


def test_every_kind_has_a_default_and_a_kind_added_later_takes_default() -> None:
    limits = HistoryLimits()
    assert limits.of("account:A") == HistoryLimit(size=100, ttl_seconds=86_400)
    assert limits.of("payments") == DEFAULT_LIMITS["payments"]
    assert limits.of("health") == DEFAULT_LIMITS["health"]
    assert limits.of("invoices:7") == DEFAULT_LIMITS["default"]


def test_pulse_history_changes_the_kinds_it_names_and_keeps_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "PULSE_HISTORY",
        '{"account": {"size": 20, "ttl_seconds": 600}, "default": {"size": 5, "ttl_seconds": 60}}',
    )
    limits = load_settings(PulseSettings).history
    assert limits.of("account:A") == HistoryLimit(size=20, ttl_seconds=600)
    assert limits.of("later:1") == HistoryLimit(size=5, ttl_seconds=60)
    assert limits.of("payments") == DEFAULT_LIMITS["payments"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{account", "PULSE_HISTORY: not JSON"),
        ('[{"size": 1}]', "PULSE_HISTORY: must be a JSON object"),
        (
            '{"acount": {"size": 1, "ttl_seconds": 1}}',
            "PULSE_HISTORY: unknown kind of channel acount (the kinds are payments, alerts,",
        ),
        ('{"account": {"size": 0, "ttl_seconds": 60}}', "PULSE_HISTORY.ACCOUNT.SIZE:"),
        ('{"account": {"size": 10, "ttl_seconds": -1}}', "PULSE_HISTORY.ACCOUNT.TTL_SECONDS:"),
        ('{"account": {"size": 10}}', "PULSE_HISTORY.ACCOUNT.TTL_SECONDS: Field required"),
        ('{"account": {"size": "many", "ttl_seconds": 1}}', "PULSE_HISTORY.ACCOUNT.SIZE:"),
        ('{"account": {"size": 1, "ttl_seconds": 1, "age": 2}}', "PULSE_HISTORY.ACCOUNT.AGE:"),
    ],
)
def test_a_bad_pulse_history_stops_the_process_naming_what_is_wrong(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("PULSE_HISTORY", value)
    with pytest.raises(ConfigurationError, match=r"^invalid configuration: ") as raised:
        load_settings(PulseSettings)
    assert message in str(raised.value)
