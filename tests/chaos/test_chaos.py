"""The chaos suite as a test: every fault, then no event lost or doubled anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest
from faults import run_chaos
from harness import say

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(1800)]


async def test_no_event_lost_or_duplicated_under_faults(tmp_path: Path) -> None:
    report = await run_chaos(tmp_path)
    table = report.table()
    say(table)  # shown with -s; on failure it is the assertion's message as well
    assert (report.lost, report.duplicated) == (0, 0), table
