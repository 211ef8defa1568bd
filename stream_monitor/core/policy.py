r"""What counts as drift: the one place that turns detector signals into actions.

**Performance.** A signal compares the mean error before a change with the mean error
after it (:class:`~stream_monitor.core.performance.PerformanceSignal`). The change is
the accuracy drop (classification) or the relative MAE increase (regression), with its
interval at ``confidence`` (:func:`~stream_monitor.core.intervals.change_interval`).
With $[L, U]$ that interval, $m$ the minimum change and $c$ the critical one:

* fewer than ``min_observations`` labels on either side, or fewer than
  ``min_labelled`` in all: ``warning``, and the signal waits for more labels;
* the point change is not positive: ``info``;
* $L \ge c$: ``critical``, a human is paged (the drop is beyond what retraining is
  trusted with);
* $L \ge m$: ``drift``, one retrain request per episode (while $U \ge c$ the signal is
  still followed: it may yet prove critical);
* $U < m$: ``warning`` (too small to act on);
* otherwise the change is unclear: ``warning``, waiting; once ``max_wait_labels``
  labels have come it is settled as a ``warning``.

**Inputs.** Feature or prediction drift alone is a ``warning`` (labels will tell whether
the model suffers), a ``drift`` with a real performance drop, and ``critical`` only for
what retraining cannot fix: a broken pipeline (see
:mod:`~stream_monitor.core.features`). How many inputs drift at once is evidence, not a
reason to page: a covariate shift moves many inputs, and retraining absorbs it.

**Retrains that do not help.** A version still serving after ``retrain_budget`` retrain
requests (the trainer rejected the candidates, or they did not come) escalates at its
next drift instead of asking again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from stream_monitor.config import PolicySettings
from stream_monitor.core.intervals import Change, change_interval
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
    interval: tuple[float, float] | None = None
    """The change's confidence interval (performance decisions)."""
    waiting: bool = False
    """The change is not clear yet: decide again with more labels."""


@dataclass(slots=True)
class EpisodeState:
    """Per (model, version): episodes opened, when the last one cools down, what was
    escalated, how many retrains were asked for."""

    episode: int = 0
    cooldown_until: float = float("-inf")
    escalated_episode: int = 0
    last_performance_signal: float = float("-inf")
    """Event time of the last real performance drop (corroborates feature drift)."""
    retrains: int = 0
    """Retrain requests decided for this version."""


def performance_change(task: Task, signal: PerformanceSignal, confidence: float) -> Change:
    """Accuracy drop (classification) or relative MAE increase (regression), with its
    interval at ``confidence``."""
    return change_interval(signal.before, signal.after, task == "classification", confidence)


def decide(
    settings: PolicySettings,
    state: EpisodeState,
    task: Task,
    signal: PerformanceSignal,
    labelled: int,
    now: float,
    final: bool = False,
) -> Decision:
    """Classify one performance signal and say what to do; updates ``state``.

    ``final``: the signal waited ``max_wait_labels`` labels, settle it now. ``now`` is
    event time, so a replay decides exactly as the live run did.

    >>> from stream_monitor.core.intervals import ErrorSample
    >>> s, state = PolicySettings(cooldown_seconds=100), EpisodeState()
    >>> before = ErrorSample(5000, 0.05, 0.22)
    >>> tiny = PerformanceSignal("adwin", before, ErrorSample(2, 0.5, 0.7), 5002)
    >>> d = decide(s, state, "classification", tiny, labelled=5002, now=0)
    >>> d.severity, d.action, d.waiting
    ('warning', 'none', True)
    >>> clear = PerformanceSignal("adwin", before, ErrorSample(1000, 0.15, 0.36), 6000)
    >>> decide(s, state, "classification", clear, labelled=6000, now=0).action
    'retrain'
    >>> decide(s, state, "classification", clear, labelled=6050, now=50).action  # cooling down
    'none'
    """
    classification = task == "classification"
    change = performance_change(task, signal, settings.confidence)
    interval = (change.low, change.high)
    minimum, critical = (
        (settings.min_accuracy_drop, settings.critical_accuracy_drop)
        if classification
        else (settings.min_mae_increase, settings.critical_mae_increase)
    )
    few = min(signal.before.count, signal.after.count)

    def warning(reason: str, waiting: bool = False) -> Decision:
        return Decision("warning", "none", state.episode, change.value, reason, interval, waiting)

    if change.value <= 0:
        return Decision(
            "info", "none", state.episode, change.value, "error did not increase", interval
        )
    if few < settings.min_observations or labelled < settings.min_labelled:
        reason = (
            f"{signal.before.count} labels before and {signal.after.count} after the change, "
            f"{labelled} in all: {settings.min_observations} on each side and "
            f"{settings.min_labelled} in all are needed to decide"
        )
        return warning(reason, waiting=not final)
    if change.low > 0:
        state.last_performance_signal = now
    span = f"change {change.value:.4g} [{change.low:.4g}, {change.high:.4g}]"
    if change.low >= critical:
        reason = f"{span}: even its lower bound is beyond {critical:g}"
        return _act(settings, state, "critical", now, change.value, reason, interval)
    if change.low >= minimum:
        reason = f"{span}: its lower bound is at least {minimum:g}"
        decision = _act(settings, state, "drift", now, change.value, reason, interval)
        # Retrain now; while the drop may still prove critical, keep following it.
        return replace(decision, waiting=change.high >= critical and not final)
    if change.high < minimum:
        return warning(f"{span}: below {minimum:g} even at its upper bound")
    if final:
        return warning(f"{span}: not clearly beyond {minimum:g} after waiting")
    return warning(f"{span}: unclear, waiting for more labels", waiting=True)


def decide_features(
    settings: PolicySettings,
    state: EpisodeState,
    drifting: int,
    monitored: int,
    breakages: Sequence[str],
    now: float,
) -> Decision:
    """Classify a round of feature or prediction drift signals; updates ``state``.

    ``drifting`` of the ``monitored`` input features are in a drift episode now (the
    prediction and class scores are not input features); ``breakages`` describe the
    signatures of a broken pipeline among this round's signals. A breakage is
    ``critical``; otherwise feature drift is ``drift`` when the same version had a real
    performance drop within the last ``cooldown_seconds`` and
    ``settings.feature_drift_severity`` (``warning`` by default) when it did not.
    ``change`` is the share of drifting input features: evidence only.

    >>> s, state = PolicySettings(), EpisodeState()
    >>> decide_features(s, state, drifting=6, monitored=10, breakages=[], now=0).severity
    'warning'
    >>> broken = ["x: missing in 100 % of the window"]
    >>> decide_features(s, state, drifting=1, monitored=10, breakages=broken, now=0).action
    'escalate'
    """
    share = drifting / monitored if monitored else 0.0
    if breakages:
        reason = "broken pipeline: " + "; ".join(breakages)
        return _act(settings, state, "critical", now, share, reason)
    if now - state.last_performance_signal <= settings.cooldown_seconds:
        reason = "feature drift with a real performance drop"
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
    interval: tuple[float, float] | None = None,
) -> Decision:
    """One retrain request (drift) or escalation (critical) per episode; a drift past the
    retrain budget escalates."""
    cooling = now < state.cooldown_until
    if not cooling:
        state.episode += 1
        state.cooldown_until = now + settings.cooldown_seconds
        if severity == "drift" and state.retrains >= settings.retrain_budget:
            severity = "critical"
            reason += (
                f"; {state.retrains} retrain requests did not replace this version "
                "(rejected or not helping)"
            )
    if severity == "critical":
        if state.escalated_episode == state.episode:
            reason = "episode already escalated"
            return Decision("critical", "none", state.episode, change, reason, interval)
        state.escalated_episode = state.episode
        return Decision("critical", "escalate", state.episode, change, reason, interval)
    if cooling:
        reason = f"episode {state.episode} is cooling down"
        return Decision("drift", "none", state.episode, change, reason, interval)
    state.retrains += 1
    return Decision("drift", "retrain", state.episode, change, reason, interval)


def decide_estimated(
    settings: PolicySettings, state: EpisodeState, drop: float, retrain: bool, now: float
) -> Decision:
    """Classify a confirmed drop of the estimated accuracy (no label has spoken yet).

    Like a performance ``warning``: the estimate rests on calibrated scores, which
    concept drift can fool. With ``retrain`` (``estimation.retrain_on_drop``) a drop of
    at least ``min_accuracy_drop`` is a ``drift`` that asks for a retrain once per
    episode; an estimate is never ``critical`` by its size (the labels decide that),
    though like any drift it escalates past the retrain budget. It does not corroborate
    feature drift either.

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
