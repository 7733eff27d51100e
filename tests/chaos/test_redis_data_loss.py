"""Redis restarted empty while payments flow: what a subscribed client is owed.

The events appended before the crash are gone from Redis (history, counters, guards). An
operator on ``payments`` is told so with ``recovered:false`` and a new epoch, and gets
every event appended *after* Redis came back. An account's owner loses nothing: its
channel's events are in the audit table with the place each had in the channel, so the
gateway replays those it had not delivered and answers ``recovered:true`` — the payment
events' audit rows and the notify worker's rows of its notifications alike.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import orjson
import pytest
from harness import Poster, Stack, Topology, WatchingClient, running

from pulse.channels import ChannelKeys
from pulse.clients import aws_client
from pulse.topology import AUDIT_OFFSET_INDEX
from pulse_dev.testing import stream_entries

# Not marked chaos: a regression test for the gateway, short enough for every `make test`.
pytestmark = [pytest.mark.timeout(600)]

ACCOUNTS = ["acct-1", "acct-2"]


async def test_every_event_of_the_new_epoch_reaches_a_subscribed_client(tmp_path: Path) -> None:
    stack = Stack(tmp_path, Topology(1, 1, 1, 1))
    ops = WatchingClient(
        "ops", sub="ops", roles=["ops"], channels=["payments"], gateways=stack.gateway_urls
    )
    owners = [WatchingClient.owner(account, stack.gateway_urls) for account in ACCOUNTS]
    async with running(stack, [ops, *owners], []):
        poster = Poster(stack.ingest_url, ACCOUNTS, random.Random(1))
        posting = asyncio.create_task(poster.post(200, 20, "data loss"))
        await asyncio.sleep(3)
        epochs = [dict(owner.epochs) for owner in owners]
        server = stack.redis.server
        server.kill()
        server.forget()
        await asyncio.to_thread(server.start)
        await posting
        redis = stack.redis_client()
        history_key = ChannelKeys(f"pulse:{stack.prefix}").history("payments")
        async with asyncio.timeout(120):
            while True:  # until the stream processor caught up: every payment updated
                entries = stream_entries(await redis.xrange(history_key))
                if sum(b'"pulse.payment.updated"' in f[b"e"] for _, f in entries) >= 100:
                    break
                await asyncio.sleep(1)
        await asyncio.sleep(5)
        entries = stream_entries(await redis.xrange(history_key))
        await redis.aclose()
        recorded = {account: _audit_event_ids(stack, account) for account in ACCOUNTS}
    new_epoch = {orjson.loads(fields[b"e"])["id"] for _, fields in entries}
    delivered = {seen.event_id for seen in ops.seen}
    assert ops.not_recovered, "the client was not told that history was lost"
    assert new_epoch - delivered == set()
    for owner, account, before in zip(owners, ACCOUNTS, epochs, strict=True):
        # told of the new epoch, and that nothing was lost
        assert owner.epochs[f"account:{account}"] != before[f"account:{account}"], account
        assert owner.not_recovered == [], f"{account}: told recovered:false"
        assert len(recorded[account]) >= 50  # both epochs' events: 400 payment events in all
        assert recorded[account] - {seen.event_id for seen in owner.seen} == set(), account


def _audit_event_ids(stack: Stack, account: str) -> set[str]:
    """Every event id of ``account`` that the audit table places in its channel."""
    ddb = aws_client("dynamodb", stack.settings())
    ids: set[str] = set()
    query = {
        "TableName": stack.settings().names.events_table,
        "IndexName": AUDIT_OFFSET_INDEX,
        "KeyConditionExpression": "account_id = :a",
        "ExpressionAttributeValues": {":a": {"S": account}},
    }
    while True:
        page = ddb.query(**query)
        ids |= {item["event_id"]["S"] for item in page["Items"]}
        if "LastEvaluatedKey" not in page:
            return ids
        query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
