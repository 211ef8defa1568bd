"""docs/metrics.md lists every metric the monitor and the trainer expose, with its labels."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from stream_monitor.config import MonitorSettings
from stream_monitor.core.monitor import MonitorCore
from stream_monitor.metrics import MonitorMetrics
from stream_monitor.simulate import Scenario, stream
from stream_monitor.trainer.metrics import TrainerMetrics

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
ROW = re.compile(r"^\| `(?P<name>[a-z0-9_]+)` \| (?P<type>[a-z]+) \|(?P<labels>[^|]*)\|", re.M)
SUFFIXES = {"counter": "_total", "histogram": "", "gauge": "", "summary": ""}


def documented() -> dict[str, tuple[str, set[str]]]:
    """Metric name -> (type, label names), from the tables of docs/metrics.md."""
    return {
        m["name"]: (m["type"], {label.strip() for label in m["labels"].split(",") if label.strip()})
        for m in ROW.finditer(DOC.read_text(encoding="utf-8"))
    }


def exposed(registry: CollectorRegistry) -> dict[str, tuple[str, set[str] | None]]:
    """Metric name as scraped -> (type, label names; None when it has no sample yet)."""
    found: dict[str, tuple[str, set[str] | None]] = {}
    for family in registry.collect():
        name = family.name + SUFFIXES.get(family.type, "")
        samples = [s for s in family.samples if not s.name.endswith(("_created", "_bucket"))]
        labels = {k for s in samples for k in s.labels if k != "le"} if samples else None
        found[name] = (family.type, labels)
    return found


def _monitor_registry() -> CollectorRegistry:
    """A monitor's metrics after a drifting stream, a regression model and a bad record."""
    core = MonitorCore(MonitorSettings())
    classes = Scenario(events=3000, drift_at=1500, accuracy_after=0.5, label_delay=50)
    for topic, key, value in stream(classes):
        core.process(topic, key.encode(), json.dumps(value).encode())
    core.process(
        "predictions",
        b"reg",
        b'{"prediction_id": "r1", "model_id": "reg", "model_version": "1", '
        b'"timestamp": 1767225600000, "features": {"x": 1.0}, "prediction": 0.5}',
    )
    core.process("predictions", b"bad", b"{not json")
    metrics = MonitorMetrics()
    metrics.core.stats = core.stats()
    metrics.consumed.labels(topic="predictions").inc()
    metrics.lag.labels(topic="predictions").set(0)
    return metrics.registry


def _check(registry: CollectorRegistry) -> list[str]:
    doc = documented()
    problems = []
    for name, (kind, labels) in exposed(registry).items():
        if name not in doc:
            problems.append(f"{name} ({kind}) is not in docs/metrics.md")
            continue
        doc_kind, doc_labels = doc[name]
        if doc_kind != kind:
            problems.append(f"{name}: documented as {doc_kind}, exposed as {kind}")
        if labels is not None and labels != doc_labels:
            problems.append(f"{name}: documented labels {doc_labels}, exposed {labels}")
    return problems


def test_every_monitor_metric_is_documented_with_its_labels() -> None:
    registry = _monitor_registry()
    assert _check(registry) == []
    # The stream above exercised the labelled families the table documents.
    with_samples = [n for n, (_, labels) in exposed(registry).items() if labels]
    assert "stream_monitor_feature_drift_score" in with_samples
    assert "stream_monitor_model_accuracy_ratio" in with_samples


def test_every_trainer_metric_is_documented() -> None:
    assert _check(TrainerMetrics().registry) == []


def test_an_undocumented_metric_is_reported() -> None:
    from prometheus_client import Counter

    registry = CollectorRegistry()
    Counter("stream_monitor_something_new", "not in the docs", registry=registry)
    assert _check(registry) == [
        "stream_monitor_something_new_total (counter) is not in docs/metrics.md"
    ]


def test_every_documented_metric_exists() -> None:
    names = set(exposed(_monitor_registry())) | set(exposed(TrainerMetrics().registry))
    assert sorted(set(documented()) - names) == []
