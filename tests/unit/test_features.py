"""Feature and prediction drift: stationary streams stay quiet, changes raise one episode."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
from pydantic import ValidationError

from stream_monitor.core import codec
from stream_monitor.core.features import (
    PREDICTION,
    SCORE_PREFIX,
    FeatureDriftSettings,
    FeatureDriftTracker,
    FeatureSignal,
    FeatureValue,
)

Event = tuple[dict[str, FeatureValue], object, dict[str, float] | None]


def _events(
    rng: np.random.Generator, count: int, features: int, shift: dict[int, float] | None = None
) -> Iterator[Event]:
    """Numeric features f0.. (normal), a categorical ``colour``, a class and its scores."""
    values = rng.normal(size=(count, features))
    for j, delta in (shift or {}).items():
        values[:, j] += delta
    colours = rng.choice(["red", "green", "blue"], p=[0.5, 0.3, 0.2], size=count)
    for row, colour in zip(values.tolist(), colours.tolist(), strict=True):
        features_: dict[str, FeatureValue] = {f"f{j}": v for j, v in enumerate(row)}
        features_["colour"] = colour
        score = 1.0 / (1.0 + np.exp(-row[0]))
        yield features_, "yes" if score > 0.5 else "no", {"yes": score, "no": 1.0 - score}


def _run(tracker: FeatureDriftTracker, events: Iterator[Event]) -> list[FeatureSignal]:
    signals: list[FeatureSignal] = []
    for features, prediction, scores in events:
        signals += tracker.update(features, prediction, scores)
    return signals


def test_settings_are_validated() -> None:
    with pytest.raises(ValidationError, match="window_size"):
        FeatureDriftSettings(reference_size=500, window_size=800)
    with pytest.raises(ValidationError, match="test_every"):
        FeatureDriftSettings(window_size=100, test_every=200)
    with pytest.raises(ValidationError, match="extra"):
        FeatureDriftSettings(windowsize=100)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        FeatureDriftSettings(expected_run_time=0)


def test_no_alarm_on_a_stationary_stream_of_many_features() -> None:
    """30 numeric features, a categorical one, a class and two scores (about 130 tests per
    round) for 200,000 events: the defaults' expected run time of 100,000 events allows
    two false alarms on average (a bound; measured, they are quieter: one warning per
    500,000 stationary events in docs/performance.md, "Detection quality", and one per
    5.1 million in its "Drift decisions")."""
    rng = np.random.default_rng(11)
    settings = FeatureDriftSettings()
    tracker = FeatureDriftTracker(settings, "classification")
    signals = _run(tracker, _events(rng, 200_000, 30))
    assert tracker.tests > 120
    assert len(signals) <= 200_000 / settings.expected_run_time


def test_a_shifted_feature_raises_one_episode_until_it_recovers() -> None:
    rng = np.random.default_rng(12)
    tracker = FeatureDriftTracker(FeatureDriftSettings(), "classification")
    assert _run(tracker, _events(rng, 3000, 5)) == []
    shifted = _run(tracker, _events(rng, 5000, 5, shift={3: 0.5}))
    assert [(s.feature, s.kind) for s in shifted] == [("f3", "numeric")]
    assert shifted[0].observations <= 3000 + 600
    assert shifted[0].p_value is not None and shifted[0].p_value < tracker.alpha
    assert tracker.feature_stats()["f3"].drifted == ("numeric",)
    assert tracker.drifted_features() == ["f3"]
    # Back to normal: the episode ends, and the next shift is a new one.
    assert _run(tracker, _events(rng, 3000, 5)) == []
    assert tracker.feature_stats()["f3"].drifted == ()
    again = _run(tracker, _events(rng, 3000, 5, shift={3: -0.7}))
    assert [s.feature for s in again] == ["f3"]


def test_a_small_mean_shift_is_caught_by_adwin() -> None:
    """A 0.1 standard deviation shift after a long stable stretch: too small for a window
    of 500 against the reference, ADWIN on the block means finds it (seeded)."""
    rng = np.random.default_rng(3)
    tracker = FeatureDriftTracker(FeatureDriftSettings(), "regression")
    values = rng.normal(size=(40_000, 2))
    values[20_000:, 1] += 0.1
    signals = []
    for a, b in values.tolist():
        signals += tracker.update({"f0": a, "f1": b}, 0.0)
    assert [(s.feature, s.test) for s in signals] == [("f1", "adwin")]
    assert 20_000 < signals[0].observations < 30_000
    assert signals[0].threshold is None and signals[0].p_value is None
    assert 0 < signals[0].score < 0.2  # ADWIN's window mean, in reference standard deviations


def test_unseen_categories_are_their_own_signal() -> None:
    rng = np.random.default_rng(14)
    tracker = FeatureDriftTracker(FeatureDriftSettings(), "classification")
    _run(tracker, _events(rng, 2000, 1))
    new = [
        ({**f, "colour": "purple" if rng.random() < 0.05 else f["colour"]}, p, s)
        for f, p, s in _events(rng, 3000, 1)
    ]
    signals = _run(tracker, iter(new))
    assert ("colour", "unseen", "unseen") in [(s.feature, s.kind, s.test) for s in signals]
    stats = tracker.feature_stats()["colour"]
    assert stats.kind == "categorical"
    assert "unseen" in stats.drifted
    assert stats.tests["unseen"].score > 0.02


def test_a_missing_rate_jump_is_its_own_signal() -> None:
    rng = np.random.default_rng(15)
    tracker = FeatureDriftTracker(FeatureDriftSettings(), "classification")
    _run(tracker, _events(rng, 2000, 3))
    holes = [
        ({**f, "f1": None if rng.random() < 0.2 else f["f1"]}, p, s)
        for f, p, s in _events(rng, 3000, 3)
    ]
    signals = _run(tracker, iter(holes))
    assert [(s.feature, s.kind) for s in signals] == [("f1", "missing")]
    assert tracker.feature_stats()["f1"].missing_rate == pytest.approx(0.2, abs=0.05)
    assert tracker.feature_stats()["f1"].reference_missing_rate == 0.0


def test_text_in_a_numeric_column_counts_as_missing() -> None:
    rng = np.random.default_rng(16)
    tracker = FeatureDriftTracker(FeatureDriftSettings(), "classification")
    _run(tracker, _events(rng, 2000, 2))
    broken = [({**f, "f0": "n/a"}, p, s) for f, p, s in _events(rng, 500, 2)]
    signals = _run(tracker, iter(broken))
    assert ("f0", "missing") in [(s.feature, s.kind) for s in signals]


def test_prediction_drift_without_any_label() -> None:
    """The inputs the model leans on shift: its class balance and scores move, and the
    tracker says so from predictions alone."""
    rng = np.random.default_rng(17)
    tracker = FeatureDriftTracker(FeatureDriftSettings(), "classification")
    _run(tracker, _events(rng, 2000, 2))
    signals = _run(tracker, _events(rng, 3000, 2, shift={0: 0.6}))
    kinds = {(s.feature, s.kind) for s in signals}
    assert (PREDICTION, "prediction") in kinds
    assert (SCORE_PREFIX + "yes", "score") in kinds
    assert ("f0", "numeric") in kinds
    prediction = next(s for s in signals if s.feature == PREDICTION)
    assert prediction.test == "chi2"


def test_regression_prediction_drift() -> None:
    rng = np.random.default_rng(18)
    tracker = FeatureDriftTracker(FeatureDriftSettings(), "regression")
    for i in range(4000):
        x = float(rng.normal())
        tracker.update({"x": x}, prediction=2.0 * x + (1.0 if i >= 2000 else 0.0))
    stats = tracker.feature_stats()
    assert stats[PREDICTION].kind == "numeric"
    assert stats[PREDICTION].drifted == ("prediction",)
    assert "missing" not in stats[PREDICTION].tests


def test_feature_cap_bounds_the_monitored_columns() -> None:
    rng = np.random.default_rng(19)
    tracker = FeatureDriftTracker(FeatureDriftSettings(max_features=4), "classification")
    _run(tracker, _events(rng, 1100, 6))
    # The prediction, then inputs by name, then scores: f2 .. f5 and both scores are cut.
    assert set(tracker.feature_stats()) == {PREDICTION, "colour", "f0", "f1"}
    assert tracker.unmonitored == 6
    assert tracker.monitored_inputs == 3


def test_feature_stats_for_metrics() -> None:
    rng = np.random.default_rng(20)
    tracker = FeatureDriftTracker(FeatureDriftSettings(), "classification")
    assert tracker.feature_stats() == {}
    _run(tracker, _events(rng, 1200, 2))
    stats = tracker.feature_stats()
    assert set(stats["f0"].tests) == {"ks", "chi2", "adwin", "missing"}
    assert set(stats["colour"].tests) == {"chi2", "unseen", "missing"}
    assert set(stats[PREDICTION].tests) == {"chi2", "unseen"}
    for feature in stats.values():
        assert feature.drifted == ()
        for name, test in feature.tests.items():
            assert test.score >= 0 or name == "adwin"
            if test.p_value is not None:
                assert 0 <= test.p_value <= 1
                assert test.threshold is not None and test.threshold > 0


def test_snapshot_and_restore_mid_stream() -> None:
    rng = np.random.default_rng(21)
    events = list(_events(rng, 2000, 3)) + list(_events(rng, 2000, 3, shift={2: 1.0}))
    tracker = FeatureDriftTracker(FeatureDriftSettings(), "classification")
    first = _run(tracker, iter(events[:1525]))  # mid-round, after the reference
    copy = codec.loads(codec.dumps(tracker))
    rest = _run(tracker, iter(events[1525:]))
    assert _run(copy, iter(events[1525:])) == rest
    assert first == [] and [s.feature for s in rest] == ["f2"]


def test_a_snapshot_with_16_bit_codes_restores_to_the_same_decisions() -> None:
    # Versions before 32-bit codes stored their windows as int16.
    rng = np.random.default_rng(21)
    events = list(_events(rng, 2000, 3)) + list(_events(rng, 2000, 3, shift={2: 1.0}))
    tracker = FeatureDriftTracker(FeatureDriftSettings(), "classification")
    _run(tracker, iter(events[:1525]))
    state = codec.dumps(tracker)
    old = codec.loads(state)
    assert old._numeric is not None
    old._numeric.window = old._numeric.window.astype(np.int16)
    restored = codec.loads(codec.dumps(old))
    assert restored._numeric is not None and restored._numeric.window.dtype == np.int32
    expected = _run(codec.loads(state), iter(events[1525:]))
    assert _run(restored, iter(events[1525:])) == expected
    assert [s.feature for s in expected] == ["f2"]


def test_reset_ends_the_episodes() -> None:
    rng = np.random.default_rng(22)
    tracker = FeatureDriftTracker(FeatureDriftSettings(), "classification")
    _run(tracker, _events(rng, 1000, 2))
    assert [s.feature for s in _run(tracker, _events(rng, 1000, 2, shift={1: 2.0}))] == ["f1"]
    tracker.reset()
    assert [s.feature for s in _run(tracker, _events(rng, 100, 2, shift={1: 2.0}))] == ["f1"]


# ---- what retraining cannot fix: a broken pipeline, a schema change ------------------


def _broken(
    change: Callable[[dict[str, FeatureValue]], None], shift: dict[int, float] | None = None
) -> list[FeatureSignal]:
    """The breakage and schema signals of 3,000 normal events, then 2,000 changed ones."""
    rng = np.random.default_rng(21)
    tracker = FeatureDriftTracker(FeatureDriftSettings(), "classification")
    assert _run(tracker, _events(rng, 3000, 4)) == []
    signals = []
    for features, prediction, scores in _events(rng, 2000, 4, shift=shift):
        change(features)
        signals += tracker.update(features, prediction, scores)
    return [s for s in signals if s.kind in ("breakage", "schema")]


def _scale(name: str, factor: float) -> Callable[[dict[str, FeatureValue]], None]:
    def change(features: dict[str, FeatureValue]) -> None:
        value = features[name]
        assert isinstance(value, float)
        features[name] = value * factor

    return change


@pytest.mark.parametrize("factor", [1000.0, 0.001])
def test_a_unit_change_is_a_broken_pipeline(factor: float) -> None:
    signals = _broken(_scale("f2", factor))
    assert [(s.feature, s.test) for s in signals] == [("f2", "breakage")]
    assert signals[0].detail is not None and "unit change" in signals[0].detail


def test_a_feature_gone_missing_is_a_broken_pipeline() -> None:
    signals = _broken(lambda features: features.update(f1=None))
    assert [s.feature for s in signals] == ["f1"]
    assert signals[0].detail is not None and "missing in" in signals[0].detail
    assert signals[0].observations <= 3000 + 500


def test_renamed_categories_are_a_broken_pipeline() -> None:
    signals = _broken(lambda features: features.update(colour=str(features["colour"]).upper()))
    assert [s.feature for s in signals] == ["colour"]
    assert signals[0].detail is not None and "never seen" in signals[0].detail


def test_a_constant_where_the_reference_varied_is_a_broken_pipeline() -> None:
    signals = _broken(lambda features: features.update(f0=0.25, colour="red"))
    assert sorted(s.feature for s in signals) == ["colour", "f0"]
    assert all(s.detail is not None and "constant" in s.detail for s in signals)


def test_a_covariate_shift_is_no_broken_pipeline() -> None:
    # Every input moves by one standard deviation: drift, not breakage.
    assert _broken(lambda features: None, shift={0: 1.0, 1: -1.0, 2: 1.0, 3: 0.5}) == []


def test_a_feature_that_arrives_late_is_unmonitored_and_a_schema_change() -> None:
    rng = np.random.default_rng(22)
    tracker = FeatureDriftTracker(FeatureDriftSettings(), "classification")
    _run(tracker, _events(rng, 2000, 3))
    assert tracker.unmonitored == 0
    signals = []
    for i, (features, prediction, scores) in enumerate(_events(rng, 1000, 3)):
        features["late"] = float(i)
        signals += tracker.update(features, prediction, scores)
    assert [(s.feature, s.kind) for s in signals] == [("late", "schema")]
    assert signals[0].detail is not None and "reference does not have" in signals[0].detail
    assert tracker.unmonitored == 1
    assert "late" not in tracker.feature_stats()
