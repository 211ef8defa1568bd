"""The drift policy: what a performance or feature signal leads to, decided on intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stream_monitor.config import PolicySettings
from stream_monitor.core.intervals import ErrorSample, change_interval, wilson
from stream_monitor.core.performance import PerformanceSignal, Task
from stream_monitor.core.policy import (
    Decision,
    EpisodeState,
    decide,
    decide_features,
    performance_change,
)

HOUR = 3600.0
SETTINGS = PolicySettings(cooldown_seconds=HOUR)


def _sample(task: Task, mean: float, count: int) -> ErrorSample:
    # 0/1 errors have sd sqrt(p (1 - p)); absolute normal errors about 0.75 of their mean.
    sd = math.sqrt(mean * (1 - mean)) if task == "classification" else 0.75 * mean
    return ErrorSample(count, mean, sd)


def _signal(
    before: float,
    after: float,
    task: Task = "classification",
    n_before: int = 5000,
    n_after: int = 1000,
) -> PerformanceSignal:
    return PerformanceSignal(
        "adwin", _sample(task, before, n_before), _sample(task, after, n_after), n_before + n_after
    )


def _decide(
    state: EpisodeState,
    before: float,
    after: float,
    now: float = 0.0,
    labelled: int = 6000,
    task: Task = "classification",
    settings: PolicySettings = SETTINGS,
    n_before: int = 5000,
    n_after: int = 1000,
    final: bool = False,
) -> Decision:
    signal = _signal(before, after, task, n_before, n_after)
    return decide(settings, state, task, signal, labelled, now, final)


# ---- intervals ----------------------------------------------------------------------


def test_wilson_interval_covers_the_true_rate_as_often_as_stated() -> None:
    # 2,000 seeded samples of 50 labels at 5 % error: coverage within 1.5 points of 95 %.
    rng = np.random.default_rng(0)
    hits = rng.binomial(50, 0.05, size=2000)
    covered = [low <= 0.05 <= high for low, high in (wilson(h, 50, 0.95) for h in hits)]
    assert abs(float(np.mean(covered)) - 0.95) <= 0.015


def test_accuracy_drop_interval_covers_the_true_drop_as_often_as_stated() -> None:
    rng = np.random.default_rng(1)
    covered = 0
    for _ in range(1000):
        before = rng.binomial(1, 0.08, size=3000).astype(float)
        after = rng.binomial(1, 0.11, size=400).astype(float)
        change = change_interval(
            *(ErrorSample.from_sums(len(x), x.sum(), x.sum()) for x in (before, after)), True, 0.95
        )
        covered += change.low <= 0.03 <= change.high
    assert 0.93 <= covered / 1000 <= 0.98


def test_relative_mae_interval_is_the_same_at_every_scale() -> None:
    intervals = {
        scale: change_interval(
            ErrorSample(2000, 1.0 * scale, 0.75 * scale),
            ErrorSample(300, 1.2 * scale, 0.9 * scale),
            False,
            0.95,
        )
        for scale in (1e-4, 1.0, 1e4)
    }
    first = intervals[1.0]
    for change in intervals.values():
        assert (change.value, change.low, change.high) == pytest.approx(
            (first.value, first.low, first.high)
        )


# ---- severity -----------------------------------------------------------------------


@pytest.mark.parametrize("after", [0.10, 0.05])
def test_error_that_did_not_rise_is_info_and_opens_nothing(after: float) -> None:
    state = EpisodeState()
    decision = _decide(state, 0.10, after)
    assert (decision.severity, decision.action, decision.episode) == ("info", "none", 0)
    assert state == EpisodeState()


def test_the_false_critical_page_of_a_tiny_after_window_is_gone() -> None:
    # Accuracy "from 0.949 to 0.5": an after window of two labels, one of them wrong.
    state = EpisodeState()
    decision = _decide(state, 0.051, 0.5, n_after=2)
    assert (decision.severity, decision.action, decision.waiting) == ("warning", "none", True)
    assert "100 on each side" in decision.reason
    # Three labels, two wrong ("0.944 to 0.667"): still too few, still waiting.
    assert _decide(state, 0.056, 1 / 3, n_after=3).waiting
    # Even without the minimum, the interval alone keeps it from paging.
    anyhow = PolicySettings(min_observations=2, min_labelled=0)
    decision = _decide(state, 0.051, 2 / 3, n_after=3, settings=anyhow)
    assert decision.action != "escalate"
    assert decision.interval is not None and decision.interval[0] < anyhow.critical_accuracy_drop
    assert state.escalated_episode == 0


def test_a_waiting_signal_is_settled_as_a_warning_when_its_wait_runs_out() -> None:
    decision = _decide(EpisodeState(), 0.05, 0.5, n_after=3, final=True)
    assert (decision.severity, decision.action, decision.waiting) == ("warning", "none", False)


def test_too_few_labelled_events_in_all_wait() -> None:
    decision = _decide(EpisodeState(), 0.10, 0.20, labelled=199)
    assert (decision.severity, decision.action, decision.waiting) == ("warning", "none", True)
    assert "199" in decision.reason


def test_a_drop_whose_upper_bound_is_below_the_minimum_is_a_settled_warning() -> None:
    state = EpisodeState()
    decision = _decide(state, 0.100, 0.102, n_before=50_000, n_after=50_000)
    assert (decision.severity, decision.action, decision.waiting) == ("warning", "none", False)
    assert decision.interval is not None and decision.interval[1] < SETTINGS.min_accuracy_drop
    assert (state.episode, state.cooldown_until) == (0, float("-inf"))


def test_an_unclear_drop_waits_and_is_decided_once_clear() -> None:
    # 3 points after 300 labels: the interval still reaches below the minimum.
    state = EpisodeState()
    early = _decide(state, 0.05, 0.08, n_after=300)
    assert (early.severity, early.action, early.waiting) == ("warning", "none", True)
    assert early.interval is not None and early.interval[0] < 0.01 < early.interval[1]
    later = _decide(state, 0.05, 0.08, n_after=2000)
    assert (later.severity, later.action, later.waiting) == ("drift", "retrain", False)


def test_a_real_drop_that_may_be_critical_retrains_and_is_still_followed() -> None:
    # A drop of 0.26: surely beyond 1 point, not surely beyond the critical 0.25.
    state = EpisodeState()
    first = _decide(state, 0.05, 0.31, n_after=500)
    assert (first.action, first.waiting) == ("retrain", True)
    settled = _decide(state, 0.05, 0.31, n_after=500, final=True)
    assert (settled.severity, settled.action, settled.waiting) == ("drift", "none", False)
    # With more labels its lower bound passes the critical drop: paged, same episode.
    worse = _decide(state, 0.05, 0.36, n_after=3000)
    assert (worse.action, worse.episode) == ("escalate", 1)


def test_drop_with_enough_labels_asks_for_a_retrain() -> None:
    decision = _decide(EpisodeState(), 0.10, 0.20, labelled=200)
    assert (decision.severity, decision.action, decision.episode) == ("drift", "retrain", 1)
    assert decision.change == pytest.approx(0.10)
    assert decision.interval is not None
    assert decision.interval[0] < 0.10 < decision.interval[1]


# ---- episodes and cooldown ----------------------------------------------------------


def test_one_retrain_per_episode() -> None:
    state = EpisodeState()
    decisions = [_decide(state, 0.10, 0.20, now=t) for t in (0, 60, 600, HOUR - 1)]
    assert [d.action for d in decisions] == ["retrain", "none", "none", "none"]
    assert {d.episode for d in decisions} == {1}
    assert all(d.severity == "drift" for d in decisions)


def test_cooldown_runs_on_event_time() -> None:
    # A replay sees the same timestamps as the live run, so it decides the same.
    state = EpisodeState()
    _decide(state, 0.10, 0.20, now=1_000_000)
    assert _decide(state, 0.10, 0.20, now=1_000_000 + HOUR - 0.001).action == "none"
    assert state.cooldown_until == 1_000_000 + HOUR


def test_new_episode_after_the_cooldown() -> None:
    state = EpisodeState()
    _decide(state, 0.10, 0.20, now=0)
    decision = _decide(state, 0.10, 0.20, now=HOUR)
    assert (decision.action, decision.episode) == ("retrain", 2)


def test_signals_inside_the_cooldown_do_not_extend_it() -> None:
    state = EpisodeState()
    _decide(state, 0.10, 0.20, now=0)
    _decide(state, 0.10, 0.20, now=HOUR - 1)
    assert _decide(state, 0.10, 0.20, now=HOUR).episode == 2


def test_warnings_and_info_do_not_start_a_cooldown() -> None:
    state = EpisodeState()
    _decide(state, 0.10, 0.102, now=0, n_before=50_000, n_after=50_000)
    _decide(state, 0.10, 0.05, now=1)
    _decide(state, 0.10, 0.30, now=2, labelled=10)
    decision = _decide(state, 0.10, 0.20, now=3)
    assert (decision.action, decision.episode) == ("retrain", 1)


def test_zero_cooldown_makes_every_drift_a_new_episode() -> None:
    settings = PolicySettings(cooldown_seconds=0, retrain_budget=5)
    state = EpisodeState()
    decisions = [_decide(state, 0.1, 0.2, now=t, settings=settings) for t in (0, 0, 1)]
    assert [(d.action, d.episode) for d in decisions] == [
        ("retrain", 1),
        ("retrain", 2),
        ("retrain", 3),
    ]


# ---- critical: what retraining cannot fix -------------------------------------------


def test_drop_whose_lower_bound_is_beyond_the_critical_threshold_is_escalated() -> None:
    state = EpisodeState()
    decision = _decide(state, 0.10, 0.40)
    assert (decision.severity, decision.action, decision.episode) == ("critical", "escalate", 1)
    assert decision.interval is not None and decision.interval[0] >= 0.25
    assert state.escalated_episode == 1


def test_critical_is_escalated_once_per_episode() -> None:
    state = EpisodeState()
    decisions = [_decide(state, 0.10, 0.40, now=t) for t in (0, 10, 20)]
    assert [d.action for d in decisions] == ["escalate", "none", "none"]
    assert all(d.severity == "critical" for d in decisions)


def test_critical_inside_a_retrain_episode_is_escalated_in_that_episode() -> None:
    state = EpisodeState()
    assert _decide(state, 0.10, 0.20, now=0).action == "retrain"
    decision = _decide(state, 0.10, 0.40, now=10)
    assert (decision.action, decision.episode) == ("escalate", 1)
    assert _decide(state, 0.10, 0.40, now=20).action == "none"


def test_critical_after_the_cooldown_is_escalated_again() -> None:
    state = EpisodeState()
    _decide(state, 0.10, 0.40, now=0)
    decision = _decide(state, 0.10, 0.40, now=HOUR)
    assert (decision.action, decision.episode) == ("escalate", 2)


def test_a_version_past_its_retrain_budget_escalates_instead() -> None:
    state = EpisodeState()
    actions = [_decide(state, 0.10, 0.20, now=t * HOUR).action for t in range(4)]
    assert actions == ["retrain", "retrain", "escalate", "escalate"]
    assert state.retrains == SETTINGS.retrain_budget


def test_many_drifting_inputs_alone_page_nobody() -> None:
    state = EpisodeState()
    decision = decide_features(SETTINGS, state, drifting=4, monitored=7, breakages=[], now=0)
    assert (decision.severity, decision.action) == ("warning", "none")
    assert decision.change == pytest.approx(4 / 7)  # still in the evidence


def test_a_broken_pipeline_is_escalated_once_per_episode() -> None:
    state = EpisodeState()
    broken = ["amount's spread moved by a factor 1e+03 (a unit change?)"]
    first = decide_features(SETTINGS, state, drifting=1, monitored=7, breakages=broken, now=0)
    assert (first.severity, first.action) == ("critical", "escalate")
    assert "unit change" in first.reason
    again = decide_features(SETTINGS, state, drifting=1, monitored=7, breakages=broken, now=60)
    assert again.action == "none"


def test_covariate_shift_with_a_real_performance_drop_gets_one_retrain() -> None:
    state = EpisodeState()
    # A real drop (lower bound above 0), not yet clear enough to act on by itself.
    assert _decide(state, 0.05, 0.08, n_after=300, now=0).waiting
    decisions = [
        decide_features(SETTINGS, state, drifting=4, monitored=7, breakages=[], now=t)
        for t in (10, 20, 30)
    ]
    assert [d.action for d in decisions] == ["retrain", "none", "none"]
    # The performance signal, once clear, joins the same episode.
    assert _decide(state, 0.05, 0.08, n_after=2000, now=40).action == "none"


def test_feature_drift_without_a_real_drop_stays_a_warning() -> None:
    state = EpisodeState()
    _decide(state, 0.10, 0.102, now=0, n_before=50_000, n_after=50_000)  # not significant
    decision = decide_features(SETTINGS, state, drifting=2, monitored=7, breakages=[], now=10)
    assert decision.action == "none"


# ---- regression ---------------------------------------------------------------------


def test_regression_change_is_relative_to_the_mae_before() -> None:
    def change(before: float, after: float) -> float:
        return performance_change("regression", _signal(before, after, "regression"), 0.95).value

    assert change(2.0, 2.5) == pytest.approx(0.25)
    assert change(200.0, 250.0) == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("before", "after", "severity", "action"),
    [
        (10.0, 9.0, "info", "none"),
        (10.0, 10.5, "warning", "none"),  # +5 %
        (10.0, 12.0, "drift", "retrain"),  # +20 %
        (10.0, 25.0, "critical", "escalate"),  # x 2.5
    ],
)
def test_regression_thresholds_apply_to_the_relative_mae_increase(
    before: float, after: float, severity: str, action: str
) -> None:
    decision = _decide(EpisodeState(), before, after, task="regression", n_after=5000)
    assert (decision.severity, decision.action) == (severity, action)


def test_regression_mae_that_fell_is_info_at_any_scale() -> None:
    # The hidden regression stream: MAE from about 850 to about 700.
    for scale in (1e-4, 1.0, 1e4):
        decision = _decide(EpisodeState(), 850 * scale, 700 * scale, task="regression")
        assert (decision.severity, decision.action) == ("info", "none")


def test_regression_from_a_perfect_model_is_an_infinite_increase() -> None:
    def change(before: float, after: float) -> float:
        return performance_change("regression", _signal(before, after, "regression"), 0.95).value

    assert math.isinf(change(0.0, 0.1))
    assert change(0.0, 0.0) == 0.0


def test_classification_change_is_the_absolute_accuracy_drop() -> None:
    # 2 points of accuracy matter the same at 90 % as at 60 %.
    def change(before: float, after: float) -> float:
        return performance_change("classification", _signal(before, after), 0.95).value

    assert change(0.10, 0.12) == pytest.approx(0.02)
    assert change(0.40, 0.42) == pytest.approx(0.02)
