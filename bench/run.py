"""Pulse benchmarks. Usage: ``python bench/run.py [GROUP ...]`` (``make bench ONLY=ingest``).

Groups:
  ingest  requests/s through the ingest API vs. a bare conditional PutItem loop with the same
          concurrency against the same emulator, in the same run  -> ingest.ratio (goal >= 0.7)
  e2e     the whole stack at 50 payments/s: POST -> pulse.payment.created at a WebSocket client
          (p50, p99) and POST -> pulse.payment.updated (p99)
          -> e2e.created_p50_ms (goal <= 350), e2e.created_p99_ms (<= 1000),
             e2e.updated_p99_ms (<= 2000)

Each group prints its setup, then its figures as ``name: value`` lines; the figures of every
group run are repeated together on the last lines.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_e2e import bench_e2e
from bench_ingest import bench_ingest

GROUPS: dict[str, Callable[[], dict[str, float]]] = {"ingest": bench_ingest, "e2e": bench_e2e}


def main(argv: list[str]) -> int:
    chosen = [a for a in argv if a] or list(GROUPS)
    unknown = [g for g in chosen if g not in GROUPS]
    if unknown:
        print(f"unknown group(s): {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
        return 2
    figures: dict[str, float] = {}
    for group in chosen:
        print(f"== {group}", flush=True)
        figures.update(GROUPS[group]())
    print("== figures")
    for name, value in figures.items():
        print(f"{name}: {value:.3f}" if isinstance(value, float) else f"{name}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
