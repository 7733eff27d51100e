"""A check, its verdict, and a run of checks that prints one PASS/FAIL line each.

A check is a name and a function of the :class:`~pulse_dev.k8s_check.repository.Repository`
that returns a :class:`Verdict`. A check that raises fails with the traceback as its output,
so a crash never passes for a success.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from pulse_dev.k8s_check.repository import Repository

# On a failure, this many of the check's last output lines go to stderr.
FAILURE_TAIL_LINES = 40


class Problems(list[str]):
    """What a check found wrong, collected as it goes."""

    def expect(self, condition: object, problem: str) -> None:
        """Record ``problem`` unless ``condition`` holds."""
        if not condition:
            self.append(problem)


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """Whether a check passed, and what it has to say (its problems, or a summary)."""

    passed: bool
    output: str

    @classmethod
    def of(cls, problems: Sequence[str], summary: str) -> Verdict:
        """Passed when there are no problems; the output lists them, or else the summary."""
        return cls(passed=not problems, output="\n".join(problems) or summary)


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[Repository], Verdict]


@dataclass(frozen=True)
class Outcome:
    check: Check
    verdict: Verdict
    seconds: float

    def line(self) -> str:
        word = "PASS" if self.verdict.passed else "FAIL"
        return f"{word}  {self.check.name} ({self.seconds:.1f}s)"


def judge(check: Check, repository: Repository) -> Outcome:
    """Run one check, timing it; an exception is a failure with its traceback."""
    started = time.monotonic()
    try:
        verdict = check.run(repository)
    except Exception:
        verdict = Verdict(passed=False, output=traceback.format_exc())
    return Outcome(check, verdict, time.monotonic() - started)


def run_checks(
    checks: Sequence[Check],
    repository: Repository,
    *,
    verbose: bool,
    out: TextIO,
    err: TextIO,
) -> list[Outcome]:
    """Run the checks in order; a failure's last output lines go to ``err`` at once."""
    outcomes = []
    for check in checks:
        outcome = judge(check, repository)
        outcomes.append(outcome)
        text = outcome.verdict.output.rstrip("\n")
        if not outcome.verdict.passed:
            out.flush()  # what passing checks printed comes first
            print(f"---- FAIL: {check.name}", file=err)
            print("\n".join(text.splitlines()[-FAILURE_TAIL_LINES:]), file=err)
        elif verbose and text:
            print(text, file=out)
    return outcomes


def summary(headline: str, outcomes: Sequence[Outcome], seconds: float) -> list[str]:
    """The summary lines: the total time, the tools, then one PASS/FAIL line per check."""
    return [
        "",
        f"k8s-check summary ({seconds:.0f}s):",
        f"  PASS  {headline}",
        *(f"  {o.line()}" for o in outcomes),
    ]


def all_passed(outcomes: Sequence[Outcome]) -> bool:
    return all(o.verdict.passed for o in outcomes)


def select(checks: Sequence[Check], wanted: Sequence[str]) -> list[Check]:
    """The checks whose name contains one of ``wanted`` (every check when it is empty).

    Raises ValueError naming a pattern that matches no check.
    """
    if not wanted:
        return list(checks)
    for pattern in wanted:
        if not any(pattern in c.name for c in checks):
            raise ValueError(f"no check named like {pattern!r}")
    return [c for c in checks if any(pattern in c.name for pattern in wanted)]
