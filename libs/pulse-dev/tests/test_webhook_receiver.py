"""The tests' webhook receiver: the spec's signature check, scripted answers, down and up."""

from __future__ import annotations

import base64
import hashlib
import hmac

import aiohttp
import pytest

from pulse_dev.webhook_receiver import ScriptedReceiver, verify_signature

# The example of the Standard Webhooks reference libraries.
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
HEADERS = {
    "webhook-id": MSG_ID,
    "webhook-timestamp": "1614265330",
    "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
}


def _signed(body: bytes) -> dict[str, str]:
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    digest = hmac.new(key, f"{MSG_ID}.1614265330.".encode() + body, hashlib.sha256).digest()
    return {**HEADERS, "webhook-signature": "v1," + base64.b64encode(digest).decode()}


def test_the_reference_vector_verifies_and_one_changed_byte_does_not() -> None:
    body = b'{"test": 2432232314}'
    assert verify_signature(SECRET, HEADERS, body)
    two = {**HEADERS, "webhook-signature": "v1,bm9wZQ== " + HEADERS["webhook-signature"]}
    assert verify_signature(SECRET, two, body)  # any one of several signatures
    assert not verify_signature(SECRET, HEADERS, body.replace(b"2", b"3"))
    assert not verify_signature(SECRET, {**HEADERS, "webhook-timestamp": "1614265331"}, body)


async def test_answers_as_scripted_records_every_request_and_refuses_when_down() -> None:
    body = b'{"id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "data": {"payment_id": "p-1"}}'
    receiver = ScriptedReceiver(lambda _name, _id, before: 503 if before == 0 else 200)
    receiver.secrets["a"] = SECRET
    statuses = []
    await receiver.start()
    try:
        async with aiohttp.ClientSession() as http:
            for headers in (_signed(body), _signed(body), HEADERS):
                async with http.post(receiver.url("a"), data=body, headers=headers) as got:
                    statuses.append(got.status)
            await receiver.stop()
            with pytest.raises(aiohttp.ClientConnectionError):  # refused, or a kept one reset
                await http.post(receiver.url("a"), data=body, headers=_signed(body))
            await receiver.start()
            async with http.post(receiver.url("a"), data=body, headers=_signed(body)) as again:
                statuses.append(again.status)
    finally:
        await receiver.stop()
    assert statuses == [503, 200, 401, 200]
    assert receiver.delivered("a") == [MSG_ID, MSG_ID]
    assert receiver.tries("a") == {MSG_ID: 4}
    assert [h.verified for h in receiver.hits] == [True, True, False, True]
    assert receiver.hits[0].payment_id == "p-1"
