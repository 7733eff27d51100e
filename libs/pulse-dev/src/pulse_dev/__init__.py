"""Pulse's development tooling, apart from the runtime library ``pulse``.

- :mod:`pulse_dev.devstack` — ``pulse dev`` / ``make run``: the whole system on one machine
  (its children spawned and stopped by :mod:`pulse_dev.devstack_children`;
  :mod:`pulse_dev.devstack_process` runs it as a child process of a test or a benchmark);
- :mod:`pulse_dev.load` — ``pulse load``: payments at a steady rate, latency percentiles;
- :mod:`pulse_dev.aws_emulator` — moto in server mode behind waitress
  (``python -m pulse_dev.aws_emulator``), whose DynamoDB streams have shards that close and
  split, iterators that expire and records trimmed after the retention window
  (:mod:`pulse_dev.stream_emulation`: flags ``--stream-shards``, ``--stream-split-seconds``,
  ``--stream-iterator-seconds``, ``--stream-retention-seconds`` or their
  ``PULSE_EMULATOR_STREAM_*`` variables, and ``POST /_pulse/streams/split`` to split now;
  by default one shard that never splits), kept by :mod:`pulse_dev.stream_store`;
- :mod:`pulse_dev.emulators` — starting and finding that emulator and a Redis;
- :mod:`pulse_dev.testing` — the pytest plugin every test directory loads;
  :mod:`pulse_dev.service_processes` holds the service and ws-gateway processes its
  fixtures start;
- :mod:`pulse_dev.redis_servers` — real Redis Cluster and Sentinel groups (nodes in
  :mod:`pulse_dev.redis_nodes`), with TLS and a password when asked, whose masters tests kill;
  :mod:`pulse_dev.redis_fixtures` is their pytest plugin, loaded beside ``testing``;
- :mod:`pulse_dev.payments_fixtures` — payments written as ingest writes them, and the events
  the stream processor makes of them, for tests of the stages after ingest;
- :mod:`pulse_dev.stream_scaling` — stream-processor replicas through splits, a crash and a
  join, and the checks of what reached Redis and the leases table (tests, ``bench scale``).

No service depends on this package, so no service image carries it.
"""
