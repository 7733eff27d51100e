"""Where an audit row's event sits in its account channel: the durable record that lets the
gateway replay an account's events after Redis no longer holds them.

The stream processor writes each payment event's row after appending the event to its
account channel, and stores there the position the append gave it
(:class:`~pulse.channels.ChannelPosition`): the epoch, the offset — as
:func:`sortable_offset`, the range key of the events table's index
:data:`~pulse.topology.AUDIT_OFFSET_INDEX` (hash ``account_id``), so one query reads an
account's events in stream order — and the entry's number in its epoch's stream, which
tells a complete run of rows from one with a hole. Pure: no I/O.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from pulse.channels import ChannelPosition

__all__ = [
    "ACCOUNT_EPOCH",
    "ACCOUNT_NUMBER",
    "ACCOUNT_OFFSET",
    "position_attributes",
    "sortable_offset",
]

ACCOUNT_OFFSET: Final = "account_offset"
ACCOUNT_EPOCH: Final = "account_epoch"
ACCOUNT_NUMBER: Final = "account_number"

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
