"""Standard Webhooks signing and the retry verdicts: pure code."""

from __future__ import annotations

import time

import pytest

from notify_worker.webhooks import Delivery, delivery_verdict, sign, signature_headers
from pulse.errors import PermanentError


def test_signature_matches_the_standard_webhooks_reference_vector() -> None:
    # The example of the Standard Webhooks reference libraries.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    assert sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == (
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_headers_carry_id_timestamp_and_signature() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    headers = signature_headers(secret, "evt-1", 1700000000, b"{}")
    assert headers["webhook-id"] == "evt-1"
    assert headers["webhook-timestamp"] == "1700000000"
    assert headers["webhook-signature"] == sign(secret, "evt-1", 1700000000, b"{}")
    assert sign(secret, "evt-1", 1700000001, b"{}") != headers["webhook-signature"]


def test_a_malformed_secret_is_permanent() -> None:
    with pytest.raises(PermanentError):
        sign("whsec_not base64!", "evt-1", 1, b"{}")


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, "delivered"),
        (204, "delivered"),
        (500, "retry"),
        (503, "retry"),
        (408, "retry"),
        (429, "retry"),
        (400, "failed"),
        (410, "failed"),
        (301, "failed"),
    ],
)
def test_only_server_errors_and_throttling_are_retried(status: int, verdict: str) -> None:
    assert delivery_verdict(status) == verdict


def test_a_delivery_round_trips_and_garbage_is_permanent() -> None:
    delivery = Delivery("ep_1", "acct-1", "http://x/hook", "/p/ep_1/secret", {"id": "e"})
    assert Delivery.from_json(delivery.to_json()) == delivery
    with pytest.raises(PermanentError):
        Delivery.from_json(b"{}")


def test_during_a_rotation_each_secret_verifies_with_a_standard_webhooks_receiver() -> None:
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError  # noqa: PLC0415

    new, old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_" + "QUFBQUFBQUFBQUFBQUFBQQ=="
    body = b'{"id": "evt-1"}'
    now = int(time.time())
    headers = signature_headers((new, old), "evt-1", now, body)
    assert headers["webhook-signature"] == " ".join(
        (sign(new, "evt-1", now, body), sign(old, "evt-1", now, body))
    )
    # the official library, configured with either secret, accepts the request
    assert Webhook(new).verify(body, headers) == {"id": "evt-1"}
    assert Webhook(old).verify(body, headers) == {"id": "evt-1"}
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "QkJCQkJCQkJCQkJCQkJCQg==").verify(body, headers)
    # once the overlap is over, only the new one signs
    after = signature_headers((new,), "evt-1", now, body)
    assert Webhook(new).verify(body, after) == {"id": "evt-1"}
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(body, after)
