"""A quick run of the realistic scenario suite (benchmarks/scenarios.py): the decisions,
not the timing. One seed per scenario, short streams, labels on time or 300 events late."""

from __future__ import annotations

import pytest

from benchmarks import scenarios

QUICK = (
    "stationary",
    "covariate x10",
    "concept 10 pts",
    "concept 40 pts",
    "breakage: unit x1000",
    "breakage: nulls",
    "breakage: renamed categories",
    "breakage: renamed input",
)


@pytest.fixture(scope="module")
def results() -> list[scenarios.RunResult]:
    # Seeds 0 and 1: a binary and another dataset, labels 0 and 300 events late.
    return scenarios.run(seeds=2, before=3000, after=4000, workers=1, only=QUICK)


def test_every_quick_scenario_takes_its_expected_decision(
    results: list[scenarios.RunResult],
) -> None:
    assert len(results) == 2 * (2 * len(QUICK) - 2)  # concept 10/40 pts: classification only
    assert scenarios.misses(results) == []


def test_pipeline_breakage_escalates_and_plain_shift_does_not(
    results: list[scenarios.RunResult],
) -> None:
    for result in results:
        broken = result.scenario.startswith("breakage")
        assert (result.decision == "escalate") == (broken or "escalate" in result.expected)


def test_the_stationary_parts_take_no_decision(results: list[scenarios.RunResult]) -> None:
    assert sum(r.false_decisions for r in results) == 0
    assert sum(r.stationary_events for r in results) >= len(results) * 3000
