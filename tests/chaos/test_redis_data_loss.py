"""Redis restarted empty while payments flow: what a subscribed client is owed.

The events appended before the crash are gone (history, counters, guards: no suite can
promise them back), and the client is told so with ``recovered:false`` and a new epoch.
But every event appended *after* Redis came back is in the new epoch's history, and a
client that stayed subscribed must get each of them.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import orjson
import pytest
from harness import Poster, Stack, Topology, WatchingClient, running

from pulse.channels import ChannelKeys
from pulse_dev.testing import stream_entries

# Not marked chaos: a regression test for the gateway, short enough for every `make test`.
pytestmark = [pytest.mark.timeout(600)]


async def test_every_event_of_the_new_epoch_reaches_a_subscribed_client(tmp_path: Path) -> None:
    stack = Stack(tmp_path, Topology(1, 1, 1, 1))
    ops = WatchingClient(
        "ops", sub="ops", roles=["ops"], channels=["payments"], gateways=stack.gateway_urls
    )
    async with running(stack, [ops], []):
        poster = Poster(stack.ingest_url, ["acct-1", "acct-2"], random.Random(1))
        posting = asyncio.create_task(poster.post(200, 20, "data loss"))
        await asyncio.sleep(3)
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
    new_epoch = {orjson.loads(fields[b"e"])["id"] for _, fields in entries}
    delivered = {seen.event_id for seen in ops.seen}
    assert ops.not_recovered, "the client was not told that history was lost"
    assert new_epoch - delivered == set()
