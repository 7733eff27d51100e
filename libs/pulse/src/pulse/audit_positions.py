"""Where an audit row's event sits in its account channel: the durable record that lets the
gateway replay an account's events after Redis no longer holds them.

The stream processor writes each payment event's row after appending the event to its
account channel, and stores there the position the append gave it
(:class:`~pulse.channels.ChannelPosition`): the epoch, the offset — as
:func:`sortable_offset`, the range key of the events table's index
:data:`~pulse.topology.AUDIT_OFFSET_INDEX` (hash ``account_id``), so one query reads an
account's events in stream order — and the entry's number in its epoch's stream, which
tells a complete run of rows from one with a hole.

Events that only an account channel carries (``pulse.notification``,
``pulse.webhook.endpoint_disabled``, appended by the notify worker) get a row of their own,
:func:`channel_event_item`: keyed ``channel-event:{event id}`` so that no payment's audit
trail lists it, without ``time`` so that the index of an account's events by time (webhook
replays) does not hold it, and with its position, so the gateway recovers it in its place.
Pure: no I/O.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from pulse.channels import ChannelPosition
    from pulse.events import CloudEvent

__all__ = [
    "ACCOUNT_EPOCH",
    "ACCOUNT_NUMBER",
    "ACCOUNT_OFFSET",
    "CHANNEL_EVENT_KEY",
    "channel_event_item",
    "position_attributes",
    "sortable_offset",
]

ACCOUNT_OFFSET: Final = "account_offset"
ACCOUNT_EPOCH: Final = "account_epoch"
ACCOUNT_NUMBER: Final = "account_number"
CHANNEL_EVENT_KEY: Final = "channel-event:"  # the hash key's start of a channel event's row

_OFFSET_RE: Final = re.compile(r"^(\d{1,20})-(\d{1,20})$")


def sortable_offset(offset: str) -> str:
    """A channel offset ``"<ms>-<seq>"`` as text that sorts as offsets do: both numbers
    padded to 20 digits. Raises ``ValueError`` for anything else."""
    match = _OFFSET_RE.match(offset)
    if match is None:
        raise ValueError(f"not a channel offset: {offset[:40]!r}")
    return f"{int(match.group(1)):020d}-{int(match.group(2)):020d}"


def position_attributes(position: ChannelPosition) -> dict[str, dict[str, Any]]:
    """The audit row's attributes (attribute-value form) recording ``position``."""
    return {
        ACCOUNT_OFFSET: {"S": sortable_offset(position.offset)},
        ACCOUNT_EPOCH: {"S": position.epoch},
        ACCOUNT_NUMBER: {"N": str(position.number)},
    }


def channel_event_item(
    event: CloudEvent, account_id: str, position: ChannelPosition, *, expires_at: int
) -> dict[str, dict[str, Any]]:
    """The events-table row (attribute-value form) of an event only ``account_id``'s channel
    carries, at ``position`` there; it expires at ``expires_at`` (epoch seconds)."""
    return {
        "payment_id": {"S": f"{CHANNEL_EVENT_KEY}{event.id}"},
        "sk": {"S": "0" * 40},
        "event_id": {"S": event.id},
        "type": {"S": event.type},
        "event": {"S": event.to_json().decode()},
        "account_id": {"S": account_id},
        "expires_at": {"N": str(expires_at)},
        **position_attributes(position),
    }
