"""Estimated performance through a real broker: a drop seen before any label arrives."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from stream_monitor.kafka.service import MonitorService
from stream_monitor.metrics import MonitorMetrics
from stream_monitor.reference import load_references
from tests.integration.helpers import (
    produce_stream,
    running_service,
    settings_for,
    values,
    wait_until,
)
from tests.unit.estimation_streams import binary_stream, labelled_reference

pytestmark = pytest.mark.integration

SHIFT_AT = 2000
EVENTS = 5000


def test_covariate_shift_gives_an_estimated_drop_and_its_metric_before_any_label(
    bootstrap: str, tmp_path: Path
) -> None:
    # The calibration pairs come from a labelled reference file; on the topics, every
    # prediction carries scores and no label is ever sent.
    reference = tmp_path / "reference.jsonl"
    reference.write_bytes(b"\n".join(orjson.dumps(e) for e in labelled_reference(11, 2000)))
    settings = settings_for(bootstrap, models={"m": {"reference_file": str(reference)}})
    metrics = MonitorMetrics()
    version = {"model_id": "m", "model_version": "1"}

    def sample(name: str) -> float | None:
        return metrics.registry.get_sample_value(f"stream_monitor_model_{name}", version)

    service = MonitorService(settings, metrics, references=load_references(settings))
    with running_service(service) as monitor:
        produce_stream(settings, binary_stream(12, EVENTS, shift_at=SHIFT_AT, labels_from=0))
        wait_until(
            lambda: sample("estimated_drop_confirmed") == 1.0,
            timeout=120,
            what="the metrics to show a confirmed estimated drop",
            monitor=monitor,
        )
        estimate = sample("estimated_accuracy_ratio")
        reference_accuracy = sample("estimated_reference_accuracy_ratio")
        low, high = (
            sample("estimated_accuracy_lower_ratio"),
            sample("estimated_accuracy_upper_ratio"),
        )
        assert estimate is not None and reference_accuracy is not None
        assert low is not None and high is not None and low < estimate < high
        assert estimate < reference_accuracy - 0.05
        assert sample("labelled_events") in (None, 0.0)

    events = [e["data"] for e in values(bootstrap, settings.topics.drift_events)]
    estimated = [e for e in events if e["kind"] == "estimated_performance"]
    assert len(estimated) == 1, events
    event = estimated[0]
    assert (event["model_id"], event["model_version"]) == ("m", "1")
    assert (event["severity"], event["action"]) == ("warning", "none")
    evidence = event["evidence"]
    assert evidence["labelled"] == 0  # no label had arrived
    assert evidence["estimate"] < evidence["reference"]
    assert evidence["interval"][0] < evidence["estimate"] < evidence["interval"][1]
    assert evidence["window"]["size"] == settings.defaults.estimation.window_size
    # The first window that holds shifted predictions enough to tell.
    assert SHIFT_AT < evidence["window"]["last"] <= SHIFT_AT + 1500
    assert values(bootstrap, settings.topics.labelled_examples) == []
    assert values(bootstrap, settings.topics.retrain_requests) == []
