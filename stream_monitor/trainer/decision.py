"""What the trainer decides: promote a candidate or not, and when a human must look.

Pure functions of scores and times; nothing here trains or reads anything.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

# Scores are compared in float; differences below this are equality, so "wins by
# exactly the margin" does not depend on rounding (0.83 - 0.82 < 0.01 in binary).
_TOLERANCE = 1e-9

PromotionCode = Literal["won", "no_champion", "within_margin", "lost", "below_floor", "no_score"]


@dataclass(frozen=True, slots=True)
class PromotionDecision:
    action: Literal["promote", "reject"]
    code: PromotionCode
    reason: str
    escalation: str | None
    """Why a human must look, or None when automation handled it."""


def decide_promotion(
    candidate: float,
    champion: float | None,
    *,
    margin: float,
    floor: float | None,
    higher_is_better: bool,
) -> PromotionDecision:
    """Champion/challenger on one holdout.

    With ``gain`` the candidate's improvement over the champion (in metric units,
    positive when better whatever the metric's direction):

    * ``gain >= margin`` (and > 0): **promote**; escalate too if the new model is still
      below the floor (better, but not good enough);
    * ``gain <= -margin`` (and < 0): the candidate **lost**: reject and escalate, since
      retraining on recent data made things worse (label or pipeline problems, or a
      concept the estimator cannot learn), whether or not production meets the floor;
    * in between, a tie under the margin: **reject**; escalate only if the champion is
      below the floor (production is bad and retraining cannot fix it).

    Without a champion (nothing in production yet, or it could not be scored) the
    candidate is promoted if it reaches the floor. A candidate without a finite score
    is rejected and escalated.

    >>> decide_promotion(0.90, 0.80, margin=0.01, floor=None, higher_is_better=True).action
    'promote'
    >>> d = decide_promotion(0.805, 0.80, margin=0.01, floor=0.85, higher_is_better=True)
    >>> d.code, d.escalation is not None
    ('within_margin', True)
    >>> decide_promotion(3.0, 2.0, margin=0.1, floor=None, higher_is_better=False).code  # MAE
    'lost'
    """
    c = _fmt(candidate)

    def below(score: float) -> bool:
        if floor is None:
            return False
        return score < floor - _TOLERANCE if higher_is_better else score > floor + _TOLERANCE

    floor_text = f"floor {floor:g}" if floor is not None else "no floor"
    if not math.isfinite(candidate):
        reason = f"the candidate has no finite holdout score ({c})"
        return PromotionDecision("reject", "no_score", reason, reason)
    if champion is None:
        reason = f"no production model to compare with: candidate {c}, {floor_text}"
        if below(candidate):
            return PromotionDecision("reject", "below_floor", reason, reason)
        return PromotionDecision("promote", "no_champion", reason, None)
    gain = candidate - champion if higher_is_better else champion - candidate
    comparison = f"candidate {c} vs production {_fmt(champion)} (margin {margin:g})"
    if gain > _TOLERANCE and gain >= margin - _TOLERANCE:
        escalation = (
            f"the promoted model ({c}) is still below {floor_text}" if below(candidate) else None
        )
        return PromotionDecision("promote", "won", f"candidate won: {comparison}", escalation)
    if gain < -_TOLERANCE and gain <= -margin + _TOLERANCE:
        reason = f"candidate lost: {comparison}"
        also = f"; production is below {floor_text} too" if below(champion) else ""
        return PromotionDecision("reject", "lost", reason, reason + also)
    reason = f"no improvement beyond the margin: {comparison}"
    escalation = (
        f"production ({_fmt(champion)}) is below {floor_text} and retraining did not beat it"
        if below(champion)
        else None
    )
    return PromotionDecision("reject", "within_margin", reason, escalation)


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    requests: int
    """Retrain requests of the model within the window, this one included."""
    max_retrains: int
    window_seconds: float

    @property
    def exceeded(self) -> bool:
        return self.requests > self.max_retrains


def check_retrain_budget(
    now: float, previous: Iterable[float], *, max_retrains: int, window_seconds: float
) -> BudgetCheck:
    """Count this request and the ``previous`` ones (their arrival times) within
    ``(now - window_seconds, now]``. More than ``max_retrains`` means the model keeps
    drifting after retraining: automation is not converging and a human should look.

    >>> check_retrain_budget(100.0, [10.0, 50.0, 90.0], max_retrains=3,
    ...                      window_seconds=60).exceeded  # 50, 90 and 100
    False
    >>> check_retrain_budget(100.0, [50.0, 90.0, 95.0], max_retrains=3,
    ...                      window_seconds=60).exceeded
    True
    """
    since = now - window_seconds
    # Times "after" now (a clock set back) do not count against it.
    in_window = sum(1 for t in previous if since < t <= now)
    return BudgetCheck(in_window + 1, max_retrains, window_seconds)


def _fmt(score: float) -> str:
    return f"{score:.4g}"
