"""PutItem of a new item, its request built here and sent through botocore's own endpoint.

Of the instructions ``put_item`` runs, nearly a fifth (3.2 → 2.6 million per call) go on
work whose result is the same for every payment or that the body does not need: resolving
the endpoint rules (a dozen parameters looked up per call), walking the API model to
serialise the item, the events around the parameters and the call. :class:`ConditionalPut`
keeps the rest of botocore as it is and skips only those:

- the request (URL, headers, ``User-Agent``, the signing context the endpoint rules chose)
  is the one botocore builds for the table: captured once, from the client's own
  ``put_item`` stopped at ``before-call`` before anything is sent;
- the body is ``json.dumps`` of the parameters, which is byte for byte what botocore's
  JSON serialiser makes of items whose attribute values are strings, maps and lists (all
  ingest writes: ``S`` and ``M``; a binary ``B`` would be base64-encoded by botocore);
- the request goes through the client's endpoint, so each attempt is signed by the
  client's signer (``request-created``), retried by its retry handler (``needs-retry``:
  standard mode, the retry quota) and sent on its connection pool; an error answer raises
  the client's own ``ClientError`` class, so :mod:`pulse.aws_errors` maps it as before.

Not run per call: the ``before-call`` handlers (botocore's add a Lambda recursion header and
an API-version header, neither of which applies here) and the ``after-call`` ones (botocore
has none for DynamoDB); and with botocore's default
``User-Agent`` its list of SDK features lacks the one endpoint resolution adds (``m/…P``:
account-id endpoints). Ingest's client has a fixed ``User-Agent``: its requests are the
very ones ``put_item`` sends, which its tests hold it to.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Final

from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders

__all__ = ["ConditionalPut", "put_item_body"]

_OPERATION: Final = "PutItem"
_BEFORE_CALL: Final = "before-call.dynamodb.PutItem"
_CAPTURE_ID: Final = "pulse-ingest-conditional-put"


def put_item_body(table: str, item: dict[str, Any], condition: str) -> bytes:
    """The JSON body of ``PutItem(TableName=table, Item=item, ConditionExpression=condition)``:
    what botocore's serialiser makes of it, for items without binary attribute values."""
    return json.dumps({"TableName": table, "Item": item, "ConditionExpression": condition}).encode(
        "utf-8"
    )


class ConditionalPut:
    """``PutItem`` of items into ``table`` under ``condition``, through the client ``ddb``.

    Thread-safe, as the client is. Calling it raises what ``ddb.put_item`` raises: a
    ``ClientError`` (its ``ConditionalCheckFailedException`` when the condition fails) or a
    ``BotoCoreError``, after the client's retries.
    """

    def __init__(self, ddb: Any, table: str, condition: str) -> None:
        self._ddb = ddb
        self._table = table
        self._condition = condition
        self._operation = ddb.meta.service_model.operation_model(_OPERATION)
        self._request: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def __call__(self, item: dict[str, Any]) -> None:
        """Write ``item``; returns once DynamoDB has accepted it."""
        template = self._request or self._capture()
        request = {
            **template,
            "headers": dict(template["headers"]),
            "body": put_item_body(self._table, item, self._condition),
            # botocore writes into the context (the retry state): each call has its own.
            "context": {
                k: dict(v) if type(v) is dict else v for k, v in template["context"].items()
            },
        }
        # The client's endpoint: its signer, retry handler, connection pool and parser.
        http, parsed = self._ddb._endpoint.make_request(self._operation, request)  # noqa: SLF001
        if http.status_code >= 300:  # noqa: PLR2004 - as botocore's client decides
            code = request["context"].get("error_code_override") or parsed.get("Error", {}).get(
                "Code"
            )
            raise self._ddb.exceptions.from_code(code)(parsed, _OPERATION)

    def _capture(self) -> dict[str, Any]:
        """The request botocore builds for this table, taken at ``before-call`` and not
        sent (a handler that answers ``before-call`` ends the call there, as botocore's
        Stubber does). Only this thread's call is taken: a ``put_item`` another thread makes
        on the client meanwhile goes on as usual."""
        with self._lock:
            if self._request is not None:
                return self._request
            captured: dict[str, Any] = {}
            ours = threading.get_ident()

            def capture(
                params: dict[str, Any], **_: Any
            ) -> tuple[AWSResponse, dict[str, Any]] | None:
                if threading.get_ident() != ours:
                    return None
                captured.update(params)
                return AWSResponse(params["url"], 200, HTTPHeaders(), None), {}

            events = self._ddb.meta.events
            capture_id = f"{_CAPTURE_ID}-{id(self)}"
            events.register_first(_BEFORE_CALL, capture, unique_id=capture_id)
            try:
                self._ddb.put_item(
                    TableName=self._table, Item={}, ConditionExpression=self._condition
                )
            finally:
                events.unregister(_BEFORE_CALL, unique_id=capture_id)
            captured.pop("body", None)
            self._request = captured
            return captured
