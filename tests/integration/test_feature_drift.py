"""Feature drift with labels withheld: the label-free warning, through a real broker."""

from __future__ import annotations

import pytest

from stream_monitor.metrics import MonitorMetrics
from stream_monitor.simulate import Scenario
from tests.integration.helpers import (
    produce_scenario,
    running_monitor,
    settings_for,
    values,
    wait_until,
)

pytestmark = pytest.mark.integration

SHIFT = Scenario(
    events=6000,
    drift_at=3000,
    accuracy_after=0.92,  # the model is no worse: only its inputs moved
    shifted_features=("f3", "f7"),
    with_labels=False,
)


def test_shifted_features_give_a_warning_naming_them(bootstrap: str) -> None:
    settings = settings_for(bootstrap)
    metrics = MonitorMetrics()

    def drifted(feature: str) -> float | None:
        return metrics.registry.get_sample_value(
            "stream_monitor_feature_drifted",
            {"model_id": "demo-model", "model_version": "1", "feature": feature},
        )

    with running_monitor(settings, metrics) as monitor:
        produce_scenario(settings, SHIFT)
        wait_until(
            lambda: drifted("f3") == 1.0 and drifted("f7") == 1.0,
            timeout=120,
            what="the metrics to show f3 and f7 drifting",
            monitor=monitor,
        )
        assert drifted("f0") == 0.0
        score = metrics.registry.get_sample_value(
            "stream_monitor_feature_drift_score",
            {"model_id": "demo-model", "model_version": "1", "feature": "f3", "test": "ks"},
        )
        assert score is not None and score > 0

    events = [e["data"] for e in values(bootstrap, settings.topics.drift_events)]
    assert events, "no drift event"
    named = {f["feature"] for e in events for f in e["evidence"]["features"]}
    assert named == {"f3", "f7"}
    assert {e["kind"] for e in events} == {"feature"}
    assert {e["severity"] for e in events} == {"warning"}
    assert all(e["evidence"]["observations"] > SHIFT.drift_at for e in events)
    # A warning alone asks for nothing, and with labels withheld nothing was joined.
    assert values(bootstrap, settings.topics.retrain_requests) == []
    assert values(bootstrap, settings.topics.labelled_examples) == []
