"""Pulse benchmarks. Usage: ``python bench/run.py [GROUP ...]`` (``make bench ONLY=ingest``).

Groups (each in bench/bench_<group>.py):
  ingest  requests/s through the ingest API (authenticated, throttled) vs. a bare conditional
          PutItem loop with the same concurrency against the same emulator, in the same run
          -> ingest.ratio (goal >= 0.8), ingest.cpu_us_per_request
  e2e     the whole stack at 20 payments/s: POST -> pulse.payment.created at a WebSocket client
          (p50, p99) and POST -> pulse.payment.updated (p99); above the figures, a stage
          breakdown of both paths from the times each event carries
          -> e2e.created_p50_ms (goal <= 150), e2e.created_p99_ms (<= 400),
             e2e.updated_p99_ms (<= 800)
  stream  lag at 200 writes/s (PutItem -> Redis publish), and draining a 10,000-record backlog
          vs. a bare GetRecords + PublishBatch loop -> stream.lag_p50_ms (<= 300),
          stream.lag_p99_ms (<= 600), stream.drain_ratio (>= 0.8)
  workers the SQS consumer runtime vs. a bare receive + batch delete loop
          -> worker.ratio (>= 0.8), worker.cpu_us_per_msg
  gateway connections held, fan-out to every subscriber (until it arrives at each client's
          socket, and until each client read it), deliveries/s, memory per connection,
          mass reconnect -> gateway.connections (>= 10,000), gateway.fanout_p50_ms,
          gateway.fanout_p99_ms (<= 100), gateway.fanout_p99_floor_ratio (p99 against one
          core sending to every subscriber in the same run: gateway.send_floor_us x the
          connections), gateway.fanout_read_p50_ms / _p99_ms,
          gateway.deliveries_per_s (written, >= 100,000), gateway.deliveries_read_per_s (read
          by the clients; a delivery is one event frame to one connection),
          gateway.rss_kb_per_conn (<= 10), gateway.reconnect_missed (0)
  peer    the gateway's fan-out to 10,000 subscribers against Nchan (nginx's pub/sub module,
          in C) with one worker and with one per usable CPU, on the same load clients, three
          rounds with the servers in turn (nginx and the module: make peer-tools)
          -> peer.pulse_p99_ms, peer.nchan_1_p99_ms, peer.nchan_<cpus>_p99_ms (medians of
             the rounds), peer.pulse_vs_nchan_1_p99_ratio, peer.pulse_vs_nchan_<cpus>_p99_ratio
             (goal <= 1: Pulse at least as fast as Nchan on the same machine)
  scale   three stream-processor replicas on an emulator stream of four shards that splits
          five times while payments flow, through a SIGKILL and a new replica; the whole
          stack with a 3-master Redis Cluster vs. one Redis, same load; a Redis master
          killed under load in a cluster and in a sentinel group
          -> scale.shards (>= 4), scale.split_lost (0), scale.split_duplicated (0),
             scale.lease_imbalance (<= 1), scale.cluster_ratio (>= 0.8),
             scale.cluster_failover_lost (0), scale.cluster_failover_duplicated (0),
             scale.cluster_failover_s, scale.sentinel_failover_lost (0)
  redis   channel appends/s on a master with one replica, WAIT 0 vs WAIT 1
          (PULSE_REDIS_WAIT_REPLICAS): batches as the stream processor sends them, and
          single appends as the workers do -> redis.batch_wait1_ratio, redis.single_wait1_ratio
  history 1,000 idle account channels (a few payment events each, the default size, the
          lifetime shortened): Redis memory per account before expiry, keys left after it
          -> history.redis_bytes_per_idle_account, history.keys_left_after_ttl (0);
          then 60 subscribers whose offsets predate their account's Redis history (trimmed,
          expired, lost) recovered by a gateway from the audit table, 100 events each
          -> history.durable_recovered_ratio (1.0), history.durable_replay_ms_p99 (against
             history.redis_replay_ms_p99, the same replay from Redis)

Each group prints its setup, then its figures as ``name: value`` lines; the figures of every
group run are repeated together on the last lines.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

GROUPS = ("ingest", "e2e", "stream", "workers", "gateway", "peer", "scale", "redis", "history")


def _runner(group: str) -> Callable[[], dict[str, float]]:
    module = importlib.import_module(f"bench_{group}")
    runner: Callable[[], dict[str, float]] = getattr(module, f"bench_{group}")
    return runner


def main(argv: list[str]) -> int:
    chosen = [a for a in argv if a] or list(GROUPS)
    unknown = [g for g in chosen if g not in GROUPS]
    if unknown:
        print(f"unknown group(s): {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
        return 2
    figures: dict[str, float] = {}
    for group in chosen:
        print(f"== {group}", flush=True)
        figures.update(_runner(group)())
    print("== figures")
    for name, value in figures.items():
        print(f"{name}: {value:.3f}" if isinstance(value, float) else f"{name}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
