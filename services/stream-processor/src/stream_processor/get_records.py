"""GetRecords answers read with orjson instead of botocore's model-driven parser.

botocore turns a GetRecords answer into Python by walking the API model for every value
of every record: each attribute of each image is a structure with ten possible members,
each timestamp goes through dateutil. For a batch of 100 payments that walk costs more
CPU than anything else the processor does with the batch. The wire form is already what
the processor needs — images in attribute-value form (``{"S": "…"}``), which
:func:`~stream_processor.records.image_values` converts — so a successful answer is read
with ``orjson`` and handed to botocore as its parsed result, botocore parsing only an
empty body. Two values differ from botocore's: ``ApproximateCreationDateTime`` is made a
timezone-aware ``datetime`` here as there (epoch seconds on the wire), and binary
attribute values stay base64 text (``image_values`` decodes them). Error answers are left
to botocore, so error codes and retries behave as before.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["read_records_with_orjson"]

_OK = 200


def _parse_ok_answer(
    response_dict: dict[str, Any], customized_response_dict: dict[str, Any], **_: Any
) -> None:
    """botocore ``before-parse`` hook: read a 200 answer ourselves, leave botocore ``{}``."""
    if response_dict.get("status_code") != _OK:
        return
    parsed = orjson.loads(response_dict["body"])
    for record in parsed.get("Records", ()):
        change = record.get("dynamodb")
        if change is None:
            continue
        created = change.get("ApproximateCreationDateTime")
        if isinstance(created, int | float):
            change["ApproximateCreationDateTime"] = datetime.fromtimestamp(created, UTC)
    customized_response_dict.update(parsed)
    response_dict["body"] = b"{}"


def read_records_with_orjson(streams: Any) -> Any:
    """Make the DynamoDB Streams client ``streams`` read GetRecords answers with orjson.

    Returns the client. Only GetRecords changes; every other call is untouched.
    """
    service = streams.meta.service_model.service_id.hyphenize()
    streams.meta.events.register(f"before-parse.{service}.GetRecords", _parse_ok_answer)
    return streams
