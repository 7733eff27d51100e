"""The ledger that says, per payment, where each of its events arrived and how often: it
reads every sink (the subscribed clients, the webhook receiver, the channel histories in
Redis, the audit trail through ingest) and counts, in a ``Tally``, each event missing or
extra there; ``CounterReading`` is what the event counters say.

Imported through ``harness``, which re-exports it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Final

import aiohttp
import orjson
from chaos_clients import Posted, WatchingClient, WebhookReceiver, ingest_client
from chaos_stack import Stack

from pulse.channels import ChannelKeys
from pulse.clients import RedisClient, aws_client
from pulse_dev.testing import stream_entries
from ws_gateway.offsets import StreamId

CREATED: Final = "pulse.payment.created"
UPDATED: Final = "pulse.payment.updated"
NOTIFICATION: Final = "pulse.notification"
DECISION: Final = "pulse.fraud.decision"
APPROVED: Final = "APPROVED"


# -- the ledger -----------------------------------------------------------------------------


@dataclass
class Tally:
    """What a check of a set of payments found: deliveries missing and deliveries extra."""

    lost: int = 0
    duplicated: int = 0
    redelivered: int = 0  # webhook retries with the same webhook-id (receivers drop them)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    lost_at: Counter[str] = field(default_factory=Counter)  # by sink: "ops-1 payments", …

    def expect(self, where: str, count: int) -> None:
        """One event expected once at ``where`` ("<sink> <payment> <type>"), seen ``count``."""
        if count == 0:
            self.lost += 1
            words = where.split()
            self.lost_at[
                " ".join(words[:1] if words[0] in ("audit", "webhook") else words[:2])
            ] += 1
            if len(self.missing) < 12:
                self.missing.append(where)
        elif count > 1:
            self.duplicated += count - 1
            if len(self.extra) < 12:
                self.extra.append(f"{where} x{count}")


@dataclass
class CounterReading:
    created: int
    updated: int
    pending: int

    def events_off(self, expected: int) -> dict[str, int]:
        """The event counters (``created``, ``updated``) that do not count ``expected``
        payments: name → their count."""
        counts = {"created": self.created, "updated": self.updated}
        return {name: count for name, count in counts.items() if count != expected}


class Ledger:
    """Reads every sink and checks each payment's events there: exactly once each."""

    def __init__(
        self,
        stack: Stack,
        clients: list[WatchingClient],
        receiver: WebhookReceiver | None,
        *,
        check_history: bool = True,
        audit_concurrency: int = 8,
    ) -> None:
        self.stack = stack
        self.audit_concurrency = audit_concurrency
        self.clients = clients
        self.receiver = receiver
        self.check_history = check_history
        self._audit_done: dict[str, Counter[str]] = {}
        self._status: dict[str, str] = {}
        self._seen_read: dict[str, int] = {}
        self.keys_prefix = f"pulse:{stack.prefix}"

    async def _entries(self, redis: RedisClient, channel: str) -> list[tuple[str, str, str]]:
        """(offset, payment id, event type) of each payment event in the channel's history."""
        key = ChannelKeys(self.keys_prefix).history(channel)
        entries = []
        for entry_id, fields in stream_entries(await redis.xrange(key)):
            event = orjson.loads(fields[b"e"])
            payment = (event.get("data") or {}).get("payment_id")
            if payment:
                entries.append((entry_id.decode(), payment, event["type"]))
        return entries

    async def _history(self, redis: RedisClient, channel: str) -> dict[tuple[str, str], int]:
        """(payment id, event type) → entries in the channel's history stream."""
        return Counter((payment, kind) for _, payment, kind in await self._entries(redis, channel))

    async def explain(self, missing: list[str]) -> list[str]:
        """For each event a client missed ("<client> <channel> <payment> <type>"): where its
        channel's history holds it, and the offsets the client read just before and after
        it, with how often it reconnected (diagnostics of a round that did not settle)."""
        lines: list[str] = []
        redis = self.stack.redis_client()
        try:
            for where in missing:
                name, *rest = where.split()
                client = next((c for c in self.clients if c.name == name), None)
                if client is None or len(rest) != 3:
                    continue
                channel, payment, kind = rest
                held = [
                    offset
                    for offset, paid, typed in await self._entries(redis, channel)
                    if (paid, typed) == (payment, kind)
                ]
                read = [StreamId.parse(s.offset) for s in client.seen if s.channel == channel]
                line = f"{where}: in history at {held or 'no offset'}"
                if held:
                    at = StreamId.parse(held[0])
                    before = [str(o) for o in read if o < at][-2:]
                    after = [str(o) for o in read if o > at][:2]
                    line += f"; the client read {before} before it and {after} after"
                lines.append(f"{line}; {client.reconnects} reconnects")
        finally:
            await redis.aclose()
        return lines

    async def counters(self) -> CounterReading:
        redis = self.stack.redis_client()
        try:
            fields = await redis.hgetall(ChannelKeys(self.keys_prefix).counter("totals"))
            totals = {
                (k.decode() if isinstance(k, bytes) else k): int(v) for k, v in fields.items()
            }
        finally:
            await redis.aclose()
        return CounterReading(
            created=totals.get("events:created", 0),
            updated=totals.get("events:updated", 0),
            pending=sum(v for k, v in totals.items() if k.startswith("count:PENDING:")),
        )

    async def _audit(self, http: aiohttp.ClientSession, payment_id: str) -> Counter[str] | None:
        """The trail's event types, counted; None when ingest could not read it (moto's
        Query scans the whole table, so a long run's trails get slow to read)."""
        done = self._audit_done.get(payment_id)
        if done is not None:
            return done
        url = f"{self.stack.ingest_url}/v1/payments/{payment_id}/events"
        try:
            async with http.get(url, timeout=aiohttp.ClientTimeout(total=60)) as resp:
                if resp.status != 200:
                    return None
                body = await resp.json()
        except (aiohttp.ClientError, TimeoutError):
            return None
        counts = Counter(e["type"] for e in body["events"])
        if counts[CREATED] and counts[UPDATED]:
            self._audit_done[payment_id] = counts
        return counts

    async def _audits(
        self, http: aiohttp.ClientSession, payments: list[Posted]
    ) -> list[tuple[Posted, Counter[str] | None]]:
        """Every payment's trail, a few at a time; unreadable ones retried one by one."""
        limit = asyncio.Semaphore(self.audit_concurrency)

        async def one(p: Posted) -> tuple[Posted, Counter[str] | None]:
            async with limit:
                return p, await self._audit(http, p.payment_id)

        results = list(await asyncio.gather(*(one(p) for p in payments)))
        for i, (p, first) in enumerate(results):
            counts = first
            for _ in range(3):
                if counts is not None:
                    break
                await asyncio.sleep(1.0)
                counts = await self._audit(http, p.payment_id)
            results[i] = (p, counts)
        return results

    async def _statuses(self, http: aiohttp.ClientSession, payments: list[Posted]) -> None:
        """Each payment's decided status: from an updated event a client saw, else ingest."""
        for client in self.clients:
            for seen in client.seen[self._seen_read.get(client.name, 0) :]:
                if seen.type == UPDATED and seen.payment_id and seen.status:
                    self._status[seen.payment_id] = seen.status
            self._seen_read[client.name] = len(client.seen)
        limit = asyncio.Semaphore(16)

        async def one(payment_id: str) -> None:
            url = f"{self.stack.ingest_url}/v1/payments/{payment_id}"
            async with limit:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(url, timeout=aiohttp.ClientTimeout(total=20)) as resp:
                        status = (await resp.json())["status"] if resp.status == 200 else None
                        if status not in (None, "PENDING"):
                            self._status[payment_id] = status

        await asyncio.gather(
            *(one(p.payment_id) for p in payments if p.payment_id not in self._status)
        )

    def audit_rows(self, payment_id: str) -> list[str]:
        """The payment's audit rows read straight from the events table (diagnostics)."""
        ddb = aws_client("dynamodb", self.stack.settings())
        items = ddb.query(
            TableName=self.stack.settings().names.events_table,
            KeyConditionExpression="payment_id = :p",
            ExpressionAttributeValues={":p": {"S": payment_id}},
            ConsistentRead=True,
        )["Items"]
        return [f"{i['sk']['S']} {i['type']['S']}" for i in items]

    def forget_audit(self) -> None:
        """Read every audit trail afresh at the next check (the final one)."""
        self._audit_done.clear()

    async def check(self, payments: list[Posted], *, audit: bool = True) -> Tally:
        """Every sink's deliveries for ``payments``; cheap sinks first, so a poll that
        already misses something there does not read 200 audit trails."""
        tally = Tally()
        async with ingest_client() as http:
            await self._statuses(http, payments)
            self._check_clients(payments, tally)
            self._check_webhooks(payments, tally)
            if self.check_history:
                redis = self.stack.redis_client()
                try:
                    await self._check_history(redis, payments, tally)
                finally:
                    await redis.aclose()
            if audit and tally.lost == 0:
                for p, counts in await self._audits(http, payments):
                    if counts is None:
                        tally.expect(f"audit {p.payment_id} (unreadable: ingest answered 503)", 0)
                        continue
                    for kind in (CREATED, UPDATED):
                        tally.expect(f"audit {p.payment_id} {kind}", counts[kind])
            elif audit:
                tally.lost += 1  # not read yet: count it as missing until it is
                tally.missing.append("audit trails (not read: other sinks incomplete)")
        return tally

    def _status_of(self, p: Posted) -> str | None:
        return self._status.get(p.payment_id)

    def _check_clients(self, payments: list[Posted], tally: Tally) -> None:
        for client in self.clients:
            counts: Counter[tuple[str, str | None, str]] = Counter(
                (s.channel, s.payment_id, s.type) for s in client.seen
            )
            for p in payments:
                wanted: list[tuple[str, str]] = []
                if "payments" in client.channels:
                    wanted += [("payments", CREATED), ("payments", UPDATED)]
                if "alerts" in client.channels and self._status_of(p) not in (None, APPROVED):
                    wanted.append(("alerts", DECISION))
                account = f"account:{p.account_id}"
                if account in client.channels:
                    wanted += [(account, CREATED), (account, UPDATED), (account, NOTIFICATION)]
                for channel, kind in wanted:
                    tally.expect(
                        f"{client.name} {channel} {p.payment_id} {kind}",
                        counts[channel, p.payment_id, kind],
                    )

    def _check_webhooks(self, payments: list[Posted], tally: Tally) -> None:
        if self.receiver is None:
            return
        ids: dict[str | None, set[str]] = defaultdict(set)
        posts: Counter[str | None] = Counter()
        for _account, webhook_id, payment in self.receiver.deliveries:
            ids[payment].add(webhook_id)
            posts[payment] += 1
        for p in payments:
            if p.account_id not in self.receiver.secrets:
                continue
            distinct = len(ids.get(p.payment_id, ()))
            tally.expect(f"webhook {p.payment_id} notification", distinct)
            tally.redelivered += posts[p.payment_id] - distinct

    async def _check_history(
        self, redis: RedisClient, payments: list[Posted], tally: Tally
    ) -> None:
        feed = await self._history(redis, "payments")
        accounts: dict[str, dict[tuple[str, str], int]] = {}
        for p in payments:
            for kind in (CREATED, UPDATED):
                tally.expect(
                    f"history payments {p.payment_id} {kind}", feed.get((p.payment_id, kind), 0)
                )
            if p.account_id not in accounts:
                accounts[p.account_id] = await self._history(redis, f"account:{p.account_id}")
            mine = accounts[p.account_id]
            for kind in (CREATED, UPDATED, NOTIFICATION):
                tally.expect(
                    f"history account:{p.account_id} {p.payment_id} {kind}",
                    mine.get((p.payment_id, kind), 0),
                )
