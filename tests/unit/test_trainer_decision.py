"""Champion/challenger and the retrain budget."""

from __future__ import annotations

import pytest

from stream_monitor.trainer.decision import (
    PromotionDecision,
    check_retrain_budget,
    decide_promotion,
)


def _accuracy(
    candidate: float, champion: float | None, margin: float = 0.01, floor: float | None = None
) -> PromotionDecision:
    return decide_promotion(candidate, champion, margin=margin, floor=floor, higher_is_better=True)


def _mae(
    candidate: float, champion: float | None, margin: float = 0.1, floor: float | None = None
) -> PromotionDecision:
    return decide_promotion(candidate, champion, margin=margin, floor=floor, higher_is_better=False)


def test_candidate_that_wins_by_the_margin_is_promoted() -> None:
    decision = _accuracy(0.90, 0.80)
    assert (decision.action, decision.code, decision.escalation) == ("promote", "won", None)
    assert "0.9" in decision.reason and "0.8" in decision.reason


def test_winning_by_exactly_the_margin_is_enough() -> None:
    # 0.83 - 0.82 is 0.0099999... in binary floating point.
    assert _accuracy(0.83, 0.82).action == "promote"


def test_tie_under_the_margin_is_rejected_quietly() -> None:
    for candidate in (0.805, 0.80, 0.795):
        decision = _accuracy(candidate, 0.80)
        assert (decision.action, decision.code) == ("reject", "within_margin")
        assert decision.escalation is None


def test_zero_margin_still_needs_a_strict_improvement() -> None:
    assert _accuracy(0.8, 0.8, margin=0.0).code == "within_margin"
    assert _accuracy(0.8001, 0.8, margin=0.0).action == "promote"
    assert _accuracy(0.7999, 0.8, margin=0.0).code == "lost"


def test_candidate_that_loses_is_rejected_and_escalated() -> None:
    decision = _accuracy(0.70, 0.80)
    assert (decision.action, decision.code) == ("reject", "lost")
    assert decision.escalation is not None and "lost" in decision.escalation
    below = _accuracy(0.50, 0.60, floor=0.75).escalation
    assert below is not None and "production is below floor 0.75 too" in below


def test_tie_with_production_below_the_floor_escalates() -> None:
    decision = _accuracy(0.605, 0.60, floor=0.75)
    assert (decision.action, decision.code) == ("reject", "within_margin")
    assert decision.escalation is not None and "below floor 0.75" in decision.escalation


def test_a_winner_still_below_the_floor_is_promoted_and_escalated() -> None:
    decision = _accuracy(0.70, 0.50, floor=0.75)
    assert decision.action == "promote"
    assert decision.escalation is not None and "still below" in decision.escalation


def test_lower_is_better_metrics() -> None:
    assert _mae(1.0, 2.0).action == "promote"
    assert _mae(2.0, 1.0).code == "lost"
    assert _mae(1.95, 2.0).code == "within_margin"
    assert _mae(1.95, 2.0, floor=1.5).escalation is not None  # error above the ceiling
    assert _mae(1.0, 2.0, floor=1.5).escalation is None


def test_without_a_champion_the_floor_decides() -> None:
    assert _accuracy(0.6, None).code == "no_champion"
    assert _accuracy(0.8, None, floor=0.75).action == "promote"
    decision = _accuracy(0.6, None, floor=0.75)
    assert (decision.action, decision.code) == ("reject", "below_floor")
    assert decision.escalation is not None


def test_a_candidate_without_a_score_is_refused() -> None:
    decision = _accuracy(float("nan"), 0.8)
    assert (decision.action, decision.code) == ("reject", "no_score")
    assert decision.escalation is not None


@pytest.mark.parametrize(
    ("previous", "requests", "exceeded"),
    [
        ([], 1, False),
        ([900.0, 950.0], 3, False),
        ([900.0, 950.0, 990.0], 4, True),
        ([-5000.0, -4000.0, -3000.0, 950.0], 2, False),  # older than the window
        ([1000.0 - 3600.0], 1, False),  # exactly a window ago: out
        ([1500.0, 2000.0, 2500.0], 1, False),  # "later" requests of a replay do not count
    ],
)
def test_retrain_budget(previous: list[float], requests: int, exceeded: bool) -> None:
    check = check_retrain_budget(1000.0, previous, max_retrains=3, window_seconds=3600.0)
    assert (check.requests, check.exceeded) == (requests, exceeded)
