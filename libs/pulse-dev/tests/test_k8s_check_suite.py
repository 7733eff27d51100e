"""pulse_dev.k8s_check.suite: verdicts, the PASS/FAIL lines, choosing checks by name."""

import io
from typing import cast

import pytest

from pulse_dev.k8s_check.repository import Repository
from pulse_dev.k8s_check.suite import (
    FAILURE_TAIL_LINES,
    Check,
    Problems,
    Verdict,
    all_passed,
    judge,
    run_checks,
    select,
    summary,
)

# The checks here look at nothing.
NOWHERE = cast("Repository", object())


def passing(_: object) -> Verdict:
    return Verdict(passed=True, output="all good")


def failing(_: object) -> Verdict:
    return Verdict.of([f"problem {i}" for i in range(60)], "unused")


def crashing(_: object) -> Verdict:
    raise KeyError("spec")


def test_a_verdict_passes_only_without_problems() -> None:
    assert Verdict.of([], "ok") == Verdict(passed=True, output="ok")
    assert Verdict.of(["a", "b"], "ok") == Verdict(passed=False, output="a\nb")


def test_problems_record_what_was_not_as_expected() -> None:
    problems = Problems()
    problems.expect([1], "never")
    problems.expect({}, "an empty mapping is not there")
    assert problems == ["an empty mapping is not there"]


def test_a_check_that_raises_fails_with_its_traceback() -> None:
    outcome = judge(Check("crash", crashing), NOWHERE)
    assert not outcome.verdict.passed
    assert "KeyError: 'spec'" in outcome.verdict.output
    assert outcome.line().startswith("FAIL  crash (")


def test_a_failure_prints_its_last_lines_at_once_and_the_summary_keeps_the_shape() -> None:
    out, err = io.StringIO(), io.StringIO()
    checks = [Check("fine", passing), Check("broken", failing)]
    outcomes = run_checks(checks, NOWHERE, verbose=False, out=out, err=err)
    assert not all_passed(outcomes)
    assert out.getvalue() == ""
    lines = err.getvalue().splitlines()
    assert lines[0] == "---- FAIL: broken"
    assert lines[1:] == [f"problem {i}" for i in range(60 - FAILURE_TAIL_LINES, 60)]
    text = summary("tools: helm, kubectl", outcomes, 3.2)
    assert text[:3] == ["", "k8s-check summary (3s):", "  PASS  tools: helm, kubectl"]
    assert text[3].startswith("  PASS  fine (")
    assert text[3].endswith("s)")
    assert text[4].startswith("  FAIL  broken (")


def test_verbose_prints_what_passing_checks_say() -> None:
    out = io.StringIO()
    run_checks([Check("fine", passing)], NOWHERE, verbose=True, out=out, err=io.StringIO())
    assert out.getvalue() == "all good\n"


def test_checks_are_chosen_by_part_of_their_name() -> None:
    checks = [
        Check("helm lint (a)", passing),
        Check("helm lint (b)", passing),
        Check("docs", passing),
    ]
    assert select(checks, []) == checks
    assert [c.name for c in select(checks, ["lint"])] == ["helm lint (a)", "helm lint (b)"]
    assert [c.name for c in select(checks, ["(b)", "docs"])] == ["helm lint (b)", "docs"]
    with pytest.raises(ValueError, match="no check named like 'nope'"):
        select(checks, ["nope"])
