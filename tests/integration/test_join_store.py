"""The label join on its local store, against a real broker: labels far beyond the old
capacity, a backlog read with one topic ahead, a partition that moves to another
instance, and outputs the broker refuses for good."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import orjson
import pytest

from stream_monitor.config import MonitorSettings
from stream_monitor.core.events import unbatch
from stream_monitor.kafka.output import DEAD_LETTER_MAX_BYTES
from stream_monitor.metrics import MonitorMetrics
from stream_monitor.simulate import Scenario, SimTopic, publish_events, stream
from tests.integration.helpers import (
    RunningService,
    all_committed,
    assert_every_pair_counted_once,
    create_topics,
    produce_stream,
    read_all,
    running_monitor,
    settings_for,
    values,
    wait_until,
    with_own_store,
)

pytestmark = pytest.mark.integration

Event = tuple[SimTopic, str, dict[str, Any]]


def _joined_ids(settings: MonitorSettings) -> set[str]:
    records = read_all(settings.kafka.bootstrap_servers, settings.topics.labelled_examples, 120)
    return {e["data"]["prediction_id"] for r in records for e in unbatch(r.value)}


def _wait_for_all(
    settings: MonitorSettings, total: int, monitor: RunningService, timeout: float
) -> None:
    # The group has a coordinator once the monitor has read something.
    wait_until(lambda: monitor.service.processed > 0, 120, "a first record", monitor)
    wait_until(lambda: all_committed(settings, total), timeout, "every record", monitor)


def _metric(metrics: MonitorMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(f"stream_monitor_{name}", labels) or 0.0


def test_labels_far_beyond_the_old_capacity_all_join(bootstrap: str) -> None:
    # 110,000 predictions, each label 105,000 predictions late: the old join held at
    # most 100,000 and lost the oldest.
    scenario = Scenario(events=110_000, drift_at=None, label_delay=105_000, features=3)
    settings = settings_for(bootstrap, kafka={"partitions": 1})
    total = produce_stream(settings, stream(scenario))
    metrics = MonitorMetrics()
    with running_monitor(settings, metrics) as monitor:
        _wait_for_all(settings, total, monitor, 300)
    assert _joined_ids(settings) == {f"p{i}" for i in range(scenario.events)}
    assert _metric(metrics, "join_dropped_total", kind="prediction", reason="ttl") == 0
    assert_every_pair_counted_once(settings, ["demo-model"], scenario.events)


def test_a_backlog_read_with_the_predictions_ahead_loses_no_label(bootstrap: str) -> None:
    # A day of predictions, one a second, then their labels, each a minute after its
    # prediction, with a TTL of an hour: read as a backlog, the predictions topic runs
    # hours ahead of the labels. Expiry follows the labels, so every one joins.
    scenario = Scenario(events=20_000, drift_at=None, label_delay=0, seconds_between=1.0)
    events = list(stream(scenario))
    predictions = [e for e in events if e[0] == "predictions"]
    labels = [
        (topic, key, {**value, "timestamp": value_time + 60_000})
        for (topic, key, value), value_time in zip(
            (e for e in events if e[0] == "ground_truth"),
            (p[2]["timestamp"] for p in predictions),
            strict=True,
        )
    ]
    settings = settings_for(
        bootstrap,
        kafka={"partitions": 1},
        join={"ttl_seconds": 3600.0, "max_skew_seconds": 7 * 86_400.0},
    )
    total = produce_stream(settings, predictions + labels)
    metrics = MonitorMetrics()
    with running_monitor(settings, metrics) as monitor:
        _wait_for_all(settings, total, monitor, 180)
    assert _joined_ids(settings) == {f"p{i}" for i in range(scenario.events)}
    assert _metric(metrics, "join_dropped_total", kind="prediction", reason="ttl") == 0


def test_a_partition_that_moves_keeps_its_pending_predictions(bootstrap: str) -> None:
    # Two models on the two partitions. The first instance reads their predictions
    # (labels withheld) and checkpoints; a second instance, on another disk, joins the
    # group and takes one partition: it rebuilds that partition's pending predictions
    # from the input topics. Then the labels come, and every prediction joins once.
    models = ["model-0", "model-1", "model-2", "model-4"]
    per_model = 2_000
    settings = settings_for(bootstrap)
    create_topics(settings)
    scenarios = [
        Scenario(events=per_model, model_id=m, drift_at=None, seed=i, label_delay=per_model)
        for i, m in enumerate(models)
    ]
    streams = [list(stream(s)) for s in scenarios]
    predictions = [e for events in streams for e in events if e[0] == "predictions"]
    labels = [e for events in streams for e in events if e[0] == "ground_truth"]
    publish_events(settings, predictions)
    first_metrics, second_metrics = MonitorMetrics(), MonitorMetrics()
    with running_monitor(settings, first_metrics) as first:
        _wait_for_all(settings, len(predictions), first, 120)
        with running_monitor(with_own_store(settings), second_metrics) as second:
            wait_until(
                lambda: _assigned(second) and _assigned(first),
                120,
                "the two instances to share the partitions",
                second,
            )
            publish_events(settings, labels)
            total = len(predictions) + len(labels)
            wait_until(lambda: all_committed(settings, total), 120, "every label", second)
            first.healthy()
    assert _metric(second_metrics, "join_rebuilds_total") >= 1
    pairs = {
        (e["data"]["model_id"], e["data"]["prediction_id"])
        for e in values(bootstrap, settings.topics.labelled_examples)
    }
    assert len(pairs) == len(models) * per_model
    assert_every_pair_counted_once(settings, models, per_model)


def _assigned(monitor: RunningService) -> bool:
    consumer = monitor.service._consumer
    return consumer is not None and bool(consumer.assignment())


def _pair(pid: str, at_ms: int) -> list[Event]:
    prediction = {
        "prediction_id": pid,
        "model_id": "demo-model",
        "model_version": "1",
        "timestamp": at_ms,
        "features": {"f0": 0.5},
        "prediction": "yes",
    }
    label = {"prediction_id": pid, "model_id": "demo-model", "label": "yes", "timestamp": at_ms}
    return [("predictions", "demo-model", prediction), ("ground_truth", "demo-model", label)]


def test_an_output_the_broker_refuses_sends_its_input_to_dead_letter(bootstrap: str) -> None:
    # A 600 kB prediction_id: each input fits in a record, their labelled example (1.2
    # MB) does not. The input that made the pair goes to dead-letter with its size,
    # offset and hash; the examples around it are delivered, and the service goes on.
    # An id this long passes the input limits only when they allow it.
    settings = settings_for(bootstrap, kafka={"partitions": 1}, limits={"max_id_length": 1_000_000})
    now_ms = int(time.time() * 1000)
    big = "x" * 600_000
    events = [e for i in range(200) for e in _pair(f"p{i}", now_ms - 60_000 + i)]
    events += _pair(big, now_ms)
    events += [e for i in range(200, 400) for e in _pair(f"p{i}", now_ms + i)]
    total = produce_stream(settings, events)
    metrics = MonitorMetrics()
    with running_monitor(settings, metrics) as monitor:
        _wait_for_all(settings, total, monitor, 120)
    assert _joined_ids(settings) == {f"p{i}" for i in range(400)}
    assert _metric(metrics, "undeliverable_outputs_total") == 1
    dead = [
        r
        for r in read_all(bootstrap, settings.topics.dead_letter)
        if dict(r.headers).get("error.reason") == b"undeliverable"
    ]
    assert len(dead) == 1
    headers = dict(dead[0].headers)
    # The pair's second record made it: the label, or the prediction if read after it.
    topic = headers["source.topic"].decode()
    source = orjson.dumps(events[400 if topic == "predictions" else 401][2])
    assert headers["source.offset"] == b"200"  # the 201st record of either topic
    assert int(headers["original.size"]) == len(source)
    assert headers["original.sha256"] == hashlib.sha256(source).hexdigest().encode()
    assert dead[0].value == source[:DEAD_LETTER_MAX_BYTES]  # cut to fit, hash of the whole


def test_an_output_stamped_beyond_what_the_broker_accepts_goes_to_dead_letter(
    bootstrap: str,
) -> None:
    # A pair stamped two hours ahead of the broker's clock: the broker refuses its
    # labelled example's timestamp, with every other record of the same produce batch.
    # The others are sent again one by one and delivered; the one at fault is not.
    settings = settings_for(bootstrap, kafka={"partitions": 1})
    now_ms = int(time.time() * 1000)
    events = [e for i in range(100) for e in _pair(f"p{i}", now_ms + i)]
    events += _pair("ahead", now_ms + 2 * 3_600_000)
    events += [e for i in range(100, 200) for e in _pair(f"p{i}", now_ms + 3_600_000 * 2 + i)]
    total = produce_stream(settings, events)
    with running_monitor(settings) as monitor:
        _wait_for_all(settings, total, monitor, 120)
    # Every pair is either delivered or its input is in dead-letter: none lost silently.
    joined = _joined_ids(settings)
    dead = read_all(bootstrap, settings.topics.dead_letter)
    dead_ids = {orjson.loads(r.value)["prediction_id"] for r in dead}
    assert joined | dead_ids == {f"p{i}" for i in range(200)} | {"ahead"}
    assert "ahead" in dead_ids and "ahead" not in joined
    assert {f"p{i}" for i in range(100)} <= joined


def test_the_store_past_its_disk_limit_says_so_and_keeps_everything(bootstrap: str) -> None:
    scenario = Scenario(events=3_000, drift_at=None, label_delay=3_000)
    settings = settings_for(bootstrap, kafka={"partitions": 1}, join={"max_disk_bytes": 1})
    total = produce_stream(settings, stream(scenario))
    metrics = MonitorMetrics()
    with running_monitor(settings, metrics) as monitor:
        _wait_for_all(settings, total, monitor, 120)
    assert _metric(metrics, "join_store_over_limit") == 1
    escalations = values(bootstrap, settings.topics.escalations)
    assert [e["type"] for e in escalations] == ["stream_monitor.join.disk_limit"]
    assert _joined_ids(settings) == {f"p{i}" for i in range(scenario.events)}
