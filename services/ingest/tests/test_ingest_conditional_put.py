"""The PutItem built here is the request botocore sends for ``put_item``, byte for byte, and
keeps botocore's signing, retries and errors."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError
from botocore.serialize import create_serializer
from hypothesis import given
from hypothesis import strategies as st

from ingest.conditional_put import ConditionalPut, put_item_body
from ingest.store import NEW_PAYMENT
from pulse.aws_errors import as_pulse_error
from pulse.clients import aws_client
from pulse.errors import ConditionFailedError, ResourceNotFoundError, RetryableError
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs
from pulse_dev.emulators import AWS_TEST_CREDENTIALS, free_port
from pulse_dev.load import random_payment_item

_PUT_ITEM = botocore.session.get_session().get_service_model("dynamodb").operation_model("PutItem")
# Every attribute-value type but the binary ones (which botocore base64-encodes).
_string = {"S": st.text()}
_values = st.recursive(
    st.one_of(
        st.fixed_dictionaries(_string),
        st.fixed_dictionaries(
            {"N": st.from_regex(r"-?[0-9]{1,10}(\.[0-9]{1,5})?", fullmatch=True)}
        ),
        st.fixed_dictionaries({"BOOL": st.booleans()}),
        st.just({"NULL": True}),
        st.fixed_dictionaries({"SS": st.lists(st.text(), min_size=1, unique=True)}),
    ),
    lambda inner: st.one_of(
        st.fixed_dictionaries({"M": st.dictionaries(st.text(), inner, max_size=4)}),
        st.fixed_dictionaries({"L": st.lists(inner, max_size=4)}),
    ),
    max_leaves=12,
)
_items = st.dictionaries(st.text(min_size=1), _values, max_size=12)
# Headers that differ between any two requests: the time, the signature over it, the SDK's
# random invocation id.
_PER_REQUEST = {"X-Amz-Date", "Authorization", "amz-sdk-invocation-id"}


@given(st.text(min_size=1), _items, st.text(min_size=1))
def test_the_body_is_what_botocores_serialiser_makes(
    table: str, item: dict[str, Any], condition: str
) -> None:
    params = {"TableName": table, "Item": item, "ConditionExpression": condition}
    serialised = create_serializer("json", include_validation=False).serialize_to_request(
        params, _PUT_ITEM
    )
    assert put_item_body(table, item, condition) == serialised["body"]


def _sent(ddb: Any) -> list[Any]:
    """The requests ``ddb`` sends for PutItem, as they leave (after signing)."""
    sent: list[Any] = []
    ddb.meta.events.register(
        "before-send.dynamodb.PutItem", lambda request, **_: sent.append(request)
    )
    return sent


def test_the_request_is_the_one_put_item_sends(
    topology: TopologyOutputs, stack_settings: PulseSettings
) -> None:
    table = stack_settings.names.payments_table
    ddb = aws_client("dynamodb", stack_settings, parameter_validation=False, user_agent="t")
    sent = _sent(ddb)
    item = {**random_payment_item(), "metadata": {"M": {"order": {"S": "42 é 😀"}}}}
    ddb.put_item(TableName=table, Item=item, ConditionExpression=NEW_PAYMENT)
    with pytest.raises(ClientError) as refused:
        ConditionalPut(ddb, table, NEW_PAYMENT)(item)

    assert refused.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    assert isinstance(refused.value, ddb.exceptions.ConditionalCheckFailedException)
    reference, built = sent
    assert (built.method, built.url, built.body) == (
        reference.method,
        reference.url,
        reference.body,
    )
    same = set(reference.headers) - _PER_REQUEST
    assert set(built.headers) == set(reference.headers)
    assert {h: built.headers[h] for h in same} == {h: reference.headers[h] for h in same}
    scope = reference.headers["Authorization"].split(b"Signature=")[0]
    assert built.headers["Authorization"].startswith(scope)


def test_items_are_written_and_a_second_write_is_a_failed_condition(
    topology: TopologyOutputs, stack_settings: PulseSettings
) -> None:
    table = stack_settings.names.payments_table
    ddb = aws_client("dynamodb", stack_settings, parameter_validation=False)
    put = ConditionalPut(ddb, table, NEW_PAYMENT)
    items = [random_payment_item() for _ in range(3)]
    for item in items:
        put(item)
    for item in items:
        key = {"payment_id": item["payment_id"]}
        stored = ddb.get_item(TableName=table, Key=key, ConsistentRead=True)["Item"]
        assert stored == item

    with pytest.raises(ClientError) as refused:
        put(items[0])
    assert isinstance(as_pulse_error(refused.value, "put"), ConditionFailedError)


def test_a_put_item_of_another_thread_during_the_capture_is_sent(
    topology: TopologyOutputs, stack_settings: PulseSettings
) -> None:
    """The request is captured from the first call's own ``put_item``; another thread's
    ``put_item`` on the same client meanwhile is sent as usual, not taken for it."""
    table = stack_settings.names.payments_table
    ddb = aws_client("dynamodb", stack_settings, parameter_validation=False)
    put = ConditionalPut(ddb, table, NEW_PAYMENT)
    capturing, other_done = threading.Event(), threading.Event()
    first = threading.Thread(target=put, args=(random_payment_item(),))

    def hold_the_capture(**_: Any) -> None:  # runs before the capture's before-call
        if threading.current_thread() is first and not other_done.is_set():
            capturing.set()
            other_done.wait(timeout=30)

    ddb.meta.events.register("before-parameter-build.dynamodb.PutItem", hold_the_capture)
    first.start()
    assert capturing.wait(timeout=30)
    other = random_payment_item()
    ddb.put_item(TableName=table, Item=other, ConditionExpression=NEW_PAYMENT)
    other_done.set()
    first.join()

    key = {"payment_id": other["payment_id"]}
    assert ddb.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item") == other
    assert ddb.scan(TableName=table, ConsistentRead=True)["Count"] == 2


def test_a_missing_table_is_retryable(stack_settings: PulseSettings) -> None:
    ddb = aws_client("dynamodb", stack_settings, parameter_validation=False)
    put = ConditionalPut(ddb, f"missing-{uuid.uuid4().hex}", NEW_PAYMENT)
    with pytest.raises(ClientError) as refused:
        put(random_payment_item())
    assert isinstance(as_pulse_error(refused.value, "put"), ResourceNotFoundError)


def test_an_unreachable_endpoint_is_retried_as_by_put_item_then_retryable() -> None:
    ddb = boto3.session.Session().client(
        "dynamodb",
        endpoint_url=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        region_name="us-east-1",
        aws_access_key_id=AWS_TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        config=Config(retries={"mode": "standard", "total_max_attempts": 2}, connect_timeout=1),
    )
    sent = _sent(ddb)
    item = random_payment_item()
    with pytest.raises(EndpointConnectionError):
        ddb.put_item(TableName="payments", Item=item, ConditionExpression=NEW_PAYMENT)
    by_put_item = [request.headers["amz-sdk-request"] for request in sent]
    sent.clear()
    with pytest.raises(EndpointConnectionError) as failed:
        ConditionalPut(ddb, "payments", NEW_PAYMENT)(item)

    assert by_put_item == [b"attempt=1; max=2", b"attempt=2; max=2"]
    assert [request.headers["amz-sdk-request"] for request in sent] == by_put_item
    assert len({request.headers["amz-sdk-invocation-id"] for request in sent}) == 1
    assert isinstance(as_pulse_error(failed.value, "put"), RetryableError)
