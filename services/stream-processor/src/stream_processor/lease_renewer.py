"""Renews the leases this worker holds on a thread of its own, as KCL's lease renewer does.

Renewals must not wait for anything the shard readers do. The readers' AWS calls fill the
event loop's executor and the hot path's connection pool, and turning a batch into events
holds the event loop; a renewal queued behind them lets the lease expire under a worker
that is alive. So the renewer is a thread with its own schedule
(:func:`~stream_processor.lease_renewal.plan_renewals`), its own few threads for the calls
(the leases are renewed concurrently, each one renewal at a time) and, from the server, its
own DynamoDB client. It touches the event loop only to report a lease it gave up.

A lease is given up when its renewal is refused (another worker took it:
:class:`~stream_processor.leases.LeaseLostError`) or when no renewal succeeded before its
deadline (:mod:`stream_processor.lease_renewal` says why that deadline is safe): it is
marked lost, counted (``lease_lost`` or ``lease_expired``), and ``on_lost(shard_id)`` runs on
the event loop, which stops the shard's reader at once. A renewal that fails otherwise
(throttled, timed out) is counted (``renewal``), logged, and tried again an interval later.
"""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final

from pulse.logging import get_logger
from stream_processor.lease_renewal import RenewalState, plan_renewals
from stream_processor.leases import LeaseLostError
from stream_processor.metrics import FAILURES

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

    from stream_processor.leases import HeldLease, LeaseTable

__all__ = ["RENEWAL_THREADS", "LeaseRenewer"]

RENEWAL_THREADS: Final = 8  # renewals running at once (KCL's default allows 20)


def _log() -> Any:
    return get_logger("stream_processor.lease_renewer")


class LeaseRenewer:
    """Keeps the held leases renewed every ``failover_seconds / 3`` (see the module doc)."""

    def __init__(
        self,
        leases: LeaseTable,
        *,
        failover_seconds: float,
        loop: asyncio.AbstractEventLoop,
        on_lost: Callable[[str], None],
    ) -> None:
        self._leases = leases
        self._failover = failover_seconds
        self._interval = failover_seconds / 3
        self._loop = loop
        self._on_lost = on_lost
        self._lock = threading.Lock()  # guards the three collections below
        self._held: dict[str, HeldLease] = {}
        self._attempted: dict[str, float] = {}
        self._in_flight: set[str] = set()
        self._poke = threading.Event()
        self._stopping = threading.Event()
        self._calls = ThreadPoolExecutor(RENEWAL_THREADS, thread_name_prefix="lease-renewal")
        self._thread = threading.Thread(target=self._run, name="lease renewer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing (blocks until the renewals running now end)."""
        self._stopping.set()
        self._poke.set()
        if self._thread.is_alive():
            self._thread.join()
        self._calls.shutdown(wait=True)

    def hold(self, held: HeldLease) -> None:
        """Renew ``held`` from now on."""
        with self._lock:
            self._held[held.shard_id] = held
            self._attempted[held.shard_id] = held.renewed_at
        self._poke.set()

    def forget(self, shard_id: str) -> None:
        """Stop renewing ``shard_id`` (its reader ended, or the lease was released)."""
        with self._lock:
            self._held.pop(shard_id, None)
            self._attempted.pop(shard_id, None)

    # -- the renewer's thread -----------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping.is_set():
            self._poke.clear()
            now = time.monotonic()
            with self._lock:
                states = {
                    shard_id: RenewalState(
                        held.renewed_at, self._attempted[shard_id], shard_id in self._in_flight
                    )
                    for shard_id, held in self._held.items()
                }
            plan = plan_renewals(
                states, now, interval=self._interval, failover_seconds=self._failover
            )
            for shard_id in plan.expired:
                self._give_up(shard_id, "lease_expired")
            for shard_id in plan.renew:
                self._start_renewal(shard_id, now)
            self._poke.wait(max(plan.wake_at - time.monotonic(), 0.0))

    def _start_renewal(self, shard_id: str, now: float) -> None:
        with self._lock:
            held = self._held.get(shard_id)
            if held is None:
                return
            self._attempted[shard_id] = now
            self._in_flight.add(shard_id)
        try:
            self._calls.submit(self._renew, held)
        except RuntimeError:  # shut down meanwhile
            with self._lock:
                self._in_flight.discard(shard_id)

    def _renew(self, held: HeldLease) -> None:
        try:
            self._leases.renew(held)
        except LeaseLostError:
            self._give_up(held.shard_id, "lease_lost")
        except Exception as exc:
            FAILURES.labels("renewal").inc()
            _log().warning(
                "lease renewal failed; trying again",
                shard_id=held.shard_id,
                error=f"{type(exc).__name__}: {exc}",
            )
        finally:
            with self._lock:
                self._in_flight.discard(held.shard_id)
            self._poke.set()

    def _give_up(self, shard_id: str, reason: str) -> None:
        with self._lock:
            held = self._held.pop(shard_id, None)
            self._attempted.pop(shard_id, None)
        if held is None:
            return
        if held.lose():
            FAILURES.labels(reason).inc()
            _log().warning(
                "lease refused at renewal; stopping the shard"
                if reason == "lease_lost"
                else "lease not renewed within the failover time; stopping the shard",
                shard_id=shard_id,
                seconds_since_renewal=round(time.monotonic() - held.renewed_at, 3),
            )
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing left to stop
            self._loop.call_soon_threadsafe(self._on_lost, shard_id)
