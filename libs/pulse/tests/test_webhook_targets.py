"""pulse.webhook_targets, judged without a network: which addresses and URLs are refused."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from pulse.errors import ConfigurationError, PermanentError
from pulse.settings import load_settings
from pulse.webhook_targets import (
    ALLOW_HTTP_SETTING,
    ALLOWED_NETWORKS_SETTING,
    SsrfPolicy,
    TargetRefused,
    WebhookTargetSettings,
    check_url,
)

STRICT = SsrfPolicy()

REFUSED = [
    # IPv4: what a target inside the cluster, the node or the cloud would be
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("10.0.0.1", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "cloud metadata"),
    ("169.254.1.1", "link-local"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("100.100.100.200", "carrier-grade NAT"),  # Alibaba Cloud's metadata service
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("255.255.255.255", "broadcast"),
    ("240.0.0.1", "reserved"),
    ("192.0.0.192", "IETF protocol assignments"),  # Oracle Cloud's metadata service
    ("192.0.2.1", "documentation"),
    ("198.18.0.1", "benchmarking"),
    # IPv6
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("fc00::1", "unique local"),
    ("fd00:ec2::254", "unique local"),  # AWS's metadata service over IPv6
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
    ("2001:db8::1", "documentation"),
    ("2001::1", "IETF protocol assignments"),
    ("100::1", "discard-only"),
    ("2002:7f00:1::1", "6to4"),
    ("::7f00:1", "IPv4-compatible"),
    ("64:ff9b:1::a00:1", "local-use NAT64"),
    ("5f00::1", "not a public address"),
    # IPv6 forms carrying an internal IPv4 address
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:169.254.169.254", "cloud metadata"),
    ("::ffff:10.0.0.1", "private"),
    ("64:ff9b::a9fe:a9fe", "cloud metadata"),  # NAT64 of 169.254.169.254
    ("64:ff9b::7f00:1", "loopback"),
]
PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.215.14",
    "2606:4700::1111",
    "2001:4860:4860::8888",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",  # NAT64 of a public address: an IPv6-only cluster's way out
]


@pytest.mark.parametrize(("address", "what"), REFUSED)
def test_internal_addresses_are_refused_with_their_range_named(address: str, what: str) -> None:
    why = STRICT.refusal(address)
    assert why is not None
    assert what in why


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert STRICT.refusal(address) is None


def test_allowed_networks_let_exactly_their_addresses_through() -> None:
    policy = SsrfPolicy(
        allowed_networks=(ip_network("127.0.0.0/8"), ip_network("::1"), ip_network("10.1.2.0/24"))
    )
    for address in ("127.0.0.1", "::1", "::ffff:127.0.0.1", "10.1.2.3"):
        assert policy.refusal(address) is None, address
    for address in ("10.1.3.3", "169.254.169.254", "::ffff:10.1.3.3", "fe80::1"):
        assert policy.refusal(address) is not None, address


def test_https_only_unless_http_is_allowed() -> None:
    with pytest.raises(TargetRefused) as refused:
        check_url("http://hooks.example.com/x", STRICT)
    assert refused.value.setting == ALLOW_HTTP_SETTING
    assert f"{ALLOW_HTTP_SETTING}=true would allow it" in str(refused.value)
    check_url("https://hooks.example.com/x", STRICT)
    check_url("http://hooks.example.com/x", SsrfPolicy(allow_http=True))
    for url in ("ftp://hooks.example.com/x", "file:///etc/passwd", "hooks.example.com/x"):
        with pytest.raises(TargetRefused, match="https:// URLs only"):
            check_url(url, SsrfPolicy(allow_http=True))


@pytest.mark.parametrize(
    ("url", "what"),
    [
        ("https://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("https://10.0.0.5:8443/hook", "private"),
        ("https://[::1]:9000/hook", "loopback"),
        ("https://[::ffff:169.254.169.254]/", "cloud metadata"),
        ("https://[fe80::1%25eth0]/", "link-local"),
        # what getaddrinfo reads as 127.0.0.1: decimal, short, hex and octal forms
        ("https://2130706433/", "loopback"),
        ("https://127.1/", "loopback"),
        ("https://0x7f.1/", "loopback"),
        ("https://017700000001/", "loopback"),
        ("https://localhost/", "loopback"),
        ("https://LocalHost./", "loopback"),
        ("https://api.localhost:8080/", "loopback"),
    ],
)
def test_literal_internal_targets_are_refused_without_resolving(url: str, what: str) -> None:
    with pytest.raises(TargetRefused) as refused:
        check_url(url, STRICT)
    assert what in refused.value.reason
    assert refused.value.setting == ALLOWED_NETWORKS_SETTING
    assert f"in {ALLOWED_NETWORKS_SETTING} would allow it" in str(refused.value)
    assert isinstance(refused.value, PermanentError)  # a delivery to it is never retried


def test_names_pass_the_literal_check_and_are_judged_when_resolved() -> None:
    for url in ("https://hooks.example.com/x", "https://10.0.0.5.nip.io/", "https://ex.am.ple"):
        check_url(url, STRICT)


def test_urls_without_a_host_or_unparseable_are_refused() -> None:
    for url in ("https:///hook", "https://[::1/hook", "https://hooks.example.com:port/"):
        with pytest.raises(TargetRefused):
            check_url(url, STRICT)


def test_the_settings_read_comma_separated_cidrs_and_name_a_bad_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ALLOW_HTTP_SETTING, "true")
    monkeypatch.setenv(ALLOWED_NETWORKS_SETTING, "127.0.0.0/8, ::1/128,10.1.2.0/24")
    policy = SsrfPolicy.from_settings(load_settings(WebhookTargetSettings))
    assert policy.allow_http
    assert policy.allowed_networks == (
        ip_network("127.0.0.0/8"),
        ip_network("::1/128"),
        ip_network("10.1.2.0/24"),
    )
    monkeypatch.delenv(ALLOW_HTTP_SETTING)
    monkeypatch.delenv(ALLOWED_NETWORKS_SETTING)
    assert SsrfPolicy.from_settings(load_settings(WebhookTargetSettings)) == SsrfPolicy()
    monkeypatch.setenv(ALLOWED_NETWORKS_SETTING, "10.1.2.3/8")  # host bits: a typo, not /8
    with pytest.raises(ConfigurationError, match=f"{ALLOWED_NETWORKS_SETTING}: '10.1.2.3/8'"):
        load_settings(WebhookTargetSettings)
