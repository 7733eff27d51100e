"""Pulse's development tooling, apart from the runtime library ``pulse``.

- :mod:`pulse_dev.devstack` — ``pulse dev`` / ``make run``: the whole system on one machine;
- :mod:`pulse_dev.load` — ``pulse load``: payments at a steady rate, latency percentiles;
- :mod:`pulse_dev.aws_emulator` — moto in server mode behind waitress
  (``python -m pulse_dev.aws_emulator``);
- :mod:`pulse_dev.emulators` — starting and finding that emulator and a Redis;
- :mod:`pulse_dev.testing` — the pytest plugin every test directory loads;
- :mod:`pulse_dev.payments_fixtures` — payments written as ingest writes them, and the events
  the stream processor makes of them, for tests of the stages after ingest.

No service depends on this package, so no service image carries it.
"""
