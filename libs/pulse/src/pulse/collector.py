"""Keeping CPython's cyclic garbage collector off what a process holds for its whole life.

A full collection walks every tracked object. Imported modules, classes, clients' service
models (and, in the AWS emulator, every stored item) are never garbage, yet at CPython's
default thresholds each full collection walks them all again: a tenth of a busy process's
CPU, or, with thousands of WebSocket connections, a stall for every client.
:func:`settle_collector` runs once start-up is done.
"""

from __future__ import annotations

import gc

__all__ = ["BATCH_YOUNG_THRESHOLD", "settle_collector"]

# Container objects allocated, net of those freed, between two young collections (CPython's
# default: 700). Work that holds thousands of objects at once (a batch of 100 stream
# records, a BatchWriteItem of 25 rows) crosses 700 several times over; at that default its
# objects were promoted to the older generations and full collections followed.
BATCH_YOUNG_THRESHOLD = 10_000


def settle_collector(young_threshold: int | None = None) -> None:
    """Collect once, then freeze everything alive out of later collections (nothing that
    is garbage now gets frozen); with ``young_threshold``, also raise the young
    generation's threshold so a unit of work's objects die young."""
    gc.collect()
    gc.freeze()
    if young_threshold is not None:
        gc.set_threshold(young_threshold, *gc.get_threshold()[1:])
