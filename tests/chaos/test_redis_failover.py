"""A Redis master killed under load, in cluster and in sentinel mode: nothing lost, nothing
doubled.

Payments flow through the whole stack (two replicas of each service, clients on two
gateways, a webhook receiver) while ``kill -9`` takes the Redis master down (in a cluster,
the master serving the ``payments`` channel). Its replica is promoted and the old master
rejoins as a replica. Then every payment's events must be, exactly once, in the channel
histories, at every subscribed client, in the counters, on the audit trail and at the
webhook receiver: the services acknowledge an append only once a replica holds it.

Not marked chaos: one round per mode, short enough for every `make test`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from faults import run_chaos
from harness import say
from redis_modes import RedisMode

pytestmark = [pytest.mark.timeout(600)]


@pytest.mark.parametrize("mode", ["cluster", "sentinel"])
async def test_a_killed_redis_master_loses_and_doubles_nothing(
    mode: RedisMode, tmp_path: Path
) -> None:
    report = await run_chaos(
        tmp_path, only=["kill -9 redis master"], payments_per_round=80, rate=20, redis_mode=mode
    )
    table = report.table()
    say(table)
    assert [r.fault for r in report.rounds] == ["kill -9 redis master"]
    assert report.rounds[0].payments, table
    assert (report.lost, report.duplicated) == (0, 0), table
