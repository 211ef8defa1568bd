"""The drift policy: what a performance signal leads to."""

from __future__ import annotations

import math

import pytest

from stream_monitor.config import PolicySettings
from stream_monitor.core.performance import PerformanceSignal, Task
from stream_monitor.core.policy import Decision, EpisodeState, decide, performance_change

HOUR = 3600.0
SETTINGS = PolicySettings(
    min_labelled=200,
    min_accuracy_drop=0.02,
    critical_accuracy_drop=0.25,
    min_mae_increase=0.1,
    critical_mae_increase=1.0,
    cooldown_seconds=HOUR,
)


def _signal(before: float, after: float) -> PerformanceSignal:
    return PerformanceSignal("adwin", error_before=before, error_after=after, observations=1000)


def _decide(
    state: EpisodeState,
    before: float,
    after: float,
    now: float = 0.0,
    labelled: int = 1000,
    task: Task = "classification",
    settings: PolicySettings = SETTINGS,
) -> Decision:
    return decide(settings, state, task, _signal(before, after), labelled, now)


# ---- severity -----------------------------------------------------------------------


@pytest.mark.parametrize("after", [0.10, 0.05])
def test_error_that_did_not_rise_is_info_and_opens_nothing(after: float) -> None:
    state = EpisodeState()
    decision = _decide(state, 0.10, after)
    assert (decision.severity, decision.action, decision.episode) == ("info", "none", 0)
    assert state == EpisodeState()


def test_rise_below_the_minimum_drop_is_a_warning() -> None:
    state = EpisodeState()
    decision = _decide(state, 0.10, 0.11)
    assert (decision.severity, decision.action) == ("warning", "none")
    assert decision.change == pytest.approx(0.01)
    # No episode opened (the rise is remembered to corroborate feature drift).
    assert (state.episode, state.cooldown_until) == (0, float("-inf"))


def test_drift_with_too_few_labelled_events_is_only_a_warning() -> None:
    state = EpisodeState()
    decision = _decide(state, 0.10, 0.20, labelled=199)
    assert (decision.severity, decision.action) == ("warning", "none")
    assert "199" in decision.reason
    # No episode opened (the rise is remembered to corroborate feature drift).
    assert (state.episode, state.cooldown_until) == (0, float("-inf"))


def test_drift_with_enough_labelled_events_asks_for_a_retrain() -> None:
    decision = _decide(EpisodeState(), 0.10, 0.20, labelled=200)
    assert (decision.severity, decision.action, decision.episode) == ("drift", "retrain", 1)
    assert decision.change == pytest.approx(0.10)


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
    _decide(state, 0.10, 0.11, now=0)
    _decide(state, 0.10, 0.05, now=1)
    _decide(state, 0.10, 0.30, now=2, labelled=10)
    decision = _decide(state, 0.10, 0.20, now=3)
    assert (decision.action, decision.episode) == ("retrain", 1)


def test_zero_cooldown_makes_every_drift_a_new_episode() -> None:
    settings = PolicySettings(cooldown_seconds=0)
    state = EpisodeState()
    decisions = [_decide(state, 0.1, 0.2, now=t, settings=settings) for t in (0, 0, 1)]
    assert [(d.action, d.episode) for d in decisions] == [
        ("retrain", 1),
        ("retrain", 2),
        ("retrain", 3),
    ]


# ---- critical -----------------------------------------------------------------------


def test_drop_beyond_the_critical_threshold_is_escalated() -> None:
    state = EpisodeState()
    decision = _decide(state, 0.10, 0.40)
    assert (decision.severity, decision.action, decision.episode) == ("critical", "escalate", 1)
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


# ---- regression ---------------------------------------------------------------------


def test_regression_change_is_relative_to_the_mae_before() -> None:
    assert performance_change("regression", _signal(2.0, 2.5)) == pytest.approx(0.25)
    assert performance_change("regression", _signal(200.0, 250.0)) == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("before", "after", "severity", "action"),
    [
        (10.0, 9.0, "info", "none"),
        (10.0, 10.5, "warning", "none"),  # +5 %
        (10.0, 12.0, "drift", "retrain"),  # +20 %
        (10.0, 20.0, "critical", "escalate"),  # doubled
    ],
)
def test_regression_thresholds_apply_to_the_relative_mae_increase(
    before: float, after: float, severity: str, action: str
) -> None:
    decision = _decide(EpisodeState(), before, after, task="regression")
    assert (decision.severity, decision.action) == (severity, action)


def test_regression_from_a_perfect_model_is_an_infinite_increase() -> None:
    assert math.isinf(performance_change("regression", _signal(0.0, 0.1)))
    assert performance_change("regression", _signal(0.0, 0.0)) == 0.0


def test_classification_change_is_the_absolute_accuracy_drop() -> None:
    # 2 points of accuracy matter the same at 90 % as at 60 %.
    assert performance_change("classification", _signal(0.10, 0.12)) == pytest.approx(0.02)
    assert performance_change("classification", _signal(0.40, 0.42)) == pytest.approx(0.02)
