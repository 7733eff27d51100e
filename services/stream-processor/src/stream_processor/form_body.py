"""SNS PublishBatch bodies flattened and form-encoded here rather than by botocore.

SNS speaks the Query protocol. botocore flattens a ``PublishBatch`` by walking the API
model for every value (``PublishBatchRequestEntries.member.1.MessageAttributes.entry.2.
Value.StringValue``: some 170 fields for ten events with five attributes each) and
form-encodes it with ``urllib.parse.urlencode``, whose ``quote_plus`` calls a Python
function for every byte of several kilobytes of JSON. Both were the largest share of the
processor's CPU per record once the rest was trimmed.

:func:`encode_sns_forms_fast` has a client send its ``PublishBatch`` bodies made here,
byte for byte what botocore and ``urlencode`` make: entries of plain strings (what
:func:`~stream_processor.effects.publish_entries` builds) are taken out of the parameters
before botocore serialises them (``before-parameter-build``) and flattened straight into
the encoded form afterwards (``before-call``); anything else (binary attributes) is left
to botocore's serialiser, and the form it makes is still encoded here. :func:`form_value`
escapes a value with one ``str.replace`` per distinct character that needs it.
"""

from __future__ import annotations

import re
from typing import Any, Final

__all__ = ["encode_entries", "encode_form", "encode_sns_forms_fast", "form_value"]

_SAFE: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")
_ALL_SAFE: Final = re.compile(r"[A-Za-z0-9_.~-]*")
# '%' is escaped first, so the escapes put in afterwards are left alone, and '+' before
# the spaces become '+'.
_FIRST: Final = ("%", "+")
_ENTRIES: Final = "PublishBatchRequestEntries"
_ATTRIBUTES: Final = "MessageAttributes"
_ENTRY_MEMBERS: Final = frozenset(
    {
        "Id",
        "Message",
        "Subject",
        "MessageStructure",
        "MessageDeduplicationId",
        "MessageGroupId",
        _ATTRIBUTES,
    }
)
_ATTRIBUTE_STRINGS: Final = frozenset({"DataType", "StringValue"})
_CONTEXT_KEY: Final = "pulse_publish_batch_entries"


def _escape(char: str) -> str:
    """What ``quote_plus(char, safe="")`` makes of one character."""
    if char == " ":
        return "+"
    return "".join(f"%{byte:02X}" for byte in char.encode("utf-8"))


# The ASCII ones, made once (other characters are rare, and a cache of them could grow).
_ASCII_ESCAPES: Final = {chr(code): _escape(chr(code)) for code in range(128)}


def form_value(text: str) -> str:
    """``urllib.parse.quote_plus(text, safe="")`` (UTF-8), in C-level passes."""
    if _ALL_SAFE.fullmatch(text):
        return text
    unsafe = set(text).difference(_SAFE)
    for char in _FIRST:
        if char in unsafe:
            text = text.replace(char, _ASCII_ESCAPES[char])
            unsafe.discard(char)
    for char in unsafe:
        text = text.replace(char, _ASCII_ESCAPES.get(char) or _escape(char))
    return text


def encode_form(body: dict[str, Any]) -> str:
    """``urlencode(body, doseq=True)`` of a flat form as botocore builds it (str values)."""
    return "&".join(
        f"{form_value(str(name))}={form_value(str(value))}" for name, value in body.items()
    )


def _is_plain(entry: Any) -> bool:
    """Does ``entry`` hold only what :func:`encode_entries` takes: string members and
    string message attributes (values are strings, as the API model says)?"""
    if type(entry) is not dict or not entry.keys() <= _ENTRY_MEMBERS:
        return False
    attributes = entry.get(_ATTRIBUTES, {})
    return type(attributes) is dict and all(
        type(typed) is dict and typed.keys() <= _ATTRIBUTE_STRINGS for typed in attributes.values()
    )


def encode_entries(entries: list[dict[str, Any]]) -> str:
    """The ``PublishBatchRequestEntries`` fields of the form, encoded, for plain entries:
    what botocore's Query serialiser and ``urlencode`` make of them (fields in the order
    the dicts hold them, as botocore's)."""
    fields: list[str] = []
    for index, entry in enumerate(entries, 1):
        member = f"{_ENTRIES}.member.{index}."
        for name, value in entry.items():
            if name != _ATTRIBUTES:
                fields.append(f"{member}{name}={form_value(str(value))}")
                continue
            for number, (attribute, typed) in enumerate(value.items(), 1):
                prefix = f"{member}{_ATTRIBUTES}.entry.{number}."
                fields.append(f"{prefix}Name={form_value(str(attribute))}")
                fields.extend(
                    f"{prefix}Value.{kind}={form_value(str(text))}" for kind, text in typed.items()
                )
    return "&".join(fields)


def _take_entries(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    """botocore ``before-parameter-build`` hook: keep plain entries from the serialiser."""
    entries = params.get(_ENTRIES)
    if isinstance(entries, list) and entries and all(_is_plain(entry) for entry in entries):
        context[_CONTEXT_KEY] = params.pop(_ENTRIES)


def _encode_body(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    """botocore ``before-call`` hook: the serialised form, encoded, and the entries taken
    out after it (where botocore puts them when ``TopicArn`` comes first, as it does in
    :class:`~stream_processor.effects.TopicPublisher`)."""
    body = params.get("body")
    if not isinstance(body, dict):
        return
    encoded = encode_form(body)
    entries = context.pop(_CONTEXT_KEY, None)
    if entries is not None:
        encoded = f"{encoded}&{encode_entries(entries)}"
    params["body"] = encoded.encode("ascii")


def encode_sns_forms_fast(sns: Any) -> Any:
    """Make the SNS client ``sns`` build and encode its ``PublishBatch`` bodies here (see
    the module's docstring); returns the client.

    Only for a client made without parameter validation
    (``aws_client(..., parameter_validation=False)``): botocore's check runs after the
    entries are taken out, and would refuse every request for want of them.
    """
    sns.meta.events.register("before-parameter-build.sns.PublishBatch", _take_entries)
    sns.meta.events.register("before-call.sns.PublishBatch", _encode_body)
    return sns
