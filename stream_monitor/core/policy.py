"""What counts as drift: the one place that turns detector signals into actions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from stream_monitor.config import PolicySettings
from stream_monitor.core.performance import PerformanceSignal, Task

Severity = Literal["info", "warning", "drift", "critical"]
Action = Literal["none", "retrain", "escalate"]


@dataclass(frozen=True, slots=True)
class Decision:
    severity: Severity
    action: Action
    episode: int
    """The drift episode this signal belongs to (0: none opened yet)."""
    change: float
    """Accuracy drop (classification), relative MAE increase (regression), or the share
    of drifting input features."""
    reason: str


@dataclass(slots=True)
class EpisodeState:
    """Per (model, version): episodes opened, when the last one cools down, what was escalated."""

    episode: int = 0
    cooldown_until: float = float("-inf")
    escalated_episode: int = 0
    last_performance_signal: float = float("-inf")
    """Event time of the last signal that the error rose (corroborates feature drift)."""


def performance_change(task: Task, signal: PerformanceSignal) -> float:
    """Accuracy drop for classification; relative MAE increase for regression."""
    if task == "classification":
        return signal.error_after - signal.error_before
    if signal.error_before <= 0:
        return float("inf") if signal.error_after > 0 else 0.0
    return signal.error_after / signal.error_before - 1.0


def decide(
    settings: PolicySettings,
    state: EpisodeState,
    task: Task,
    signal: PerformanceSignal,
    labelled: int,
    now: float,
) -> Decision:
    """Classify one performance signal and say what to do; updates ``state``.

    * the error fell or stayed: ``info``; it rose less than the minimum change:
      ``warning``; too few labelled events so far to trust it: ``warning``;
    * it rose by at least the minimum: ``drift``. Outside a cooldown this opens a new
      episode and asks for one retrain; inside it, the signal joins the open episode;
    * it rose by at least the critical change: ``critical``, escalated to a human
      once per episode (a new episode is opened if none is cooling down).

    ``now`` is event time, so a replay decides exactly as the live run did.

    >>> s, state = PolicySettings(cooldown_seconds=100), EpisodeState()
    >>> sig = PerformanceSignal("adwin", error_before=0.1, error_after=0.2, observations=900)
    >>> decide(s, state, "classification", sig, labelled=900, now=0).action
    'retrain'
    >>> decide(s, state, "classification", sig, labelled=950, now=50).action  # cooling down
    'none'
    >>> d = decide(s, state, "classification", sig, labelled=990, now=150)
    >>> d.action, d.episode
    ('retrain', 2)
    """
    change = performance_change(task, signal)
    minimum, critical = (
        (settings.min_accuracy_drop, settings.critical_accuracy_drop)
        if task == "classification"
        else (settings.min_mae_increase, settings.critical_mae_increase)
    )
    if change <= 0:
        return Decision("info", "none", state.episode, change, "error did not increase")
    state.last_performance_signal = now
    if change < minimum:
        return Decision(
            "warning", "none", state.episode, change, f"change {change:.4g} below {minimum:g}"
        )
    if labelled < settings.min_labelled:
        return Decision(
            "warning",
            "none",
            state.episode,
            change,
            f"only {labelled} labelled events, {settings.min_labelled} needed to act",
        )
    if change >= critical:
        return _act(
            settings, state, "critical", now, change, f"change {change:.4g} >= {critical:g}"
        )
    return _act(settings, state, "drift", now, change, f"change {change:.4g} >= {minimum:g}")


def decide_features(
    settings: PolicySettings,
    state: EpisodeState,
    drifting: int,
    monitored: int,
    now: float,
) -> Decision:
    """Classify a round of feature or prediction drift signals; updates ``state``.

    ``drifting`` of the ``monitored`` input features are in a drift episode now (the
    prediction and class scores are not input features). Feature or prediction drift
    alone is ``settings.feature_drift_severity`` (``warning`` by default: labels will
    tell whether the model suffers); it is ``drift`` when the same version had a
    performance signal within the last ``cooldown_seconds``; it is ``critical`` when at
    least two input features and at least ``critical_feature_share`` of them drift.
    ``change`` is the share of drifting input features.

    >>> s, state = PolicySettings(), EpisodeState()
    >>> decide_features(s, state, drifting=1, monitored=10, now=0).severity
    'warning'
    >>> decide_features(s, state, drifting=6, monitored=10, now=0).action
    'escalate'
    """
    share = drifting / monitored if monitored else 0.0
    if drifting >= 2 and share >= settings.critical_feature_share:
        reason = f"{drifting} of {monitored} input features drift at once"
        return _act(settings, state, "critical", now, share, reason)
    if now - state.last_performance_signal <= settings.cooldown_seconds:
        reason = "feature drift with a recent performance signal"
        return _act(settings, state, "drift", now, share, reason)
    if settings.feature_drift_severity == "drift":
        return _act(settings, state, "drift", now, share, "feature drift (configured to act)")
    return Decision("warning", "none", state.episode, share, "feature drift alone")


def _act(
    settings: PolicySettings,
    state: EpisodeState,
    severity: Literal["drift", "critical"],
    now: float,
    change: float,
    reason: str,
) -> Decision:
    """One retrain request (drift) or escalation (critical) per episode."""
    cooling = now < state.cooldown_until
    if not cooling:
        state.episode += 1
        state.cooldown_until = now + settings.cooldown_seconds
    if severity == "critical":
        if state.escalated_episode == state.episode:
            return Decision("critical", "none", state.episode, change, "episode already escalated")
        state.escalated_episode = state.episode
        return Decision("critical", "escalate", state.episode, change, reason)
    if cooling:
        return Decision(
            "drift", "none", state.episode, change, f"episode {state.episode} is cooling down"
        )
    return Decision("drift", "retrain", state.episode, change, reason)


def decide_estimated(
    settings: PolicySettings, state: EpisodeState, drop: float, retrain: bool, now: float
) -> Decision:
    """Classify a confirmed drop of the estimated accuracy (no label has spoken yet).

    Like a performance ``warning``: the estimate rests on calibrated scores, which
    concept drift can fool. With ``retrain`` (``estimation.retrain_on_drop``) a drop of
    at least ``min_accuracy_drop`` is a ``drift`` that asks for a retrain once per
    episode; an estimate never escalates (the labels decide whether it is critical).
    It does not corroborate feature drift either.

    >>> s, state = PolicySettings(), EpisodeState()
    >>> decide_estimated(s, state, drop=0.05, retrain=False, now=0).severity
    'warning'
    >>> decide_estimated(s, state, drop=0.05, retrain=True, now=0).action
    'retrain'
    """
    if not retrain:
        return Decision("warning", "none", state.episode, drop, "estimated drop, labels pending")
    if drop < settings.min_accuracy_drop:
        reason = f"estimated drop {drop:.4g} below {settings.min_accuracy_drop:g}"
        return Decision("warning", "none", state.episode, drop, reason)
    return _act(
        settings, state, "drift", now, drop, f"estimated drop {drop:.4g} (configured to act)"
    )
