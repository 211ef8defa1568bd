"""The monitor service against a real broker: drift in, one retrain request out."""

from __future__ import annotations

import json
import pickle
import threading
from typing import Any

import pytest
import requests
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import CommitFailedError
from prometheus_client import start_http_server

from stream_monitor.config import MonitorSettings
from stream_monitor.core.monitor import MonitorCore
from stream_monitor.kafka import state
from stream_monitor.kafka.service import MonitorService
from stream_monitor.kafka.topics import StartupError
from stream_monitor.metrics import MonitorMetrics
from stream_monitor.simulate import Scenario, publish, publish_events, stream
from tests.integration.helpers import (
    all_committed,
    assert_every_pair_counted_once,
    create_topics,
    free_port,
    produce,
    produce_scenario,
    read_all,
    running_monitor,
    settings_for,
    values,
    wait_until,
    with_own_store,
)

pytestmark = pytest.mark.integration

DROP = Scenario(events=6000, drift_at=3000, accuracy_before=0.92, accuracy_after=0.65)


def test_accuracy_drop_gives_exactly_one_retrain_request_with_evidence(bootstrap: str) -> None:
    settings = settings_for(bootstrap)
    produce_scenario(settings, DROP)
    with running_monitor(settings) as monitor:
        wait_until(
            lambda: len(values(bootstrap, settings.topics.labelled_examples)) == DROP.events,
            timeout=120,
            what="every prediction joined and published as a labelled example",
            monitor=monitor,
        )
    requests_ = values(bootstrap, settings.topics.retrain_requests)
    assert len(requests_) == 1
    request = requests_[0]
    assert request["type"] == "stream_monitor.retrain.requested"
    data = request["data"]
    assert (data["model_id"], data["model_version"], data["episode"]) == ("demo-model", "1", 1)
    evidence = data["evidence"]
    assert evidence["metric"] == "accuracy"
    assert evidence["before"] > 0.88
    assert evidence["before"] - evidence["after"] >= 0.02  # the default minimum drop
    # Caught after the drop at observation 3000, within a few hundred labels.
    assert 3000 < evidence["observations"] < 3600
    signals = values(bootstrap, settings.topics.drift_events)
    assert any(s["data"]["action"] == "retrain" for s in signals)
    assert all(s["data"]["evidence"]["observations"] > 3000 for s in signals)


def test_bad_records_go_to_dead_letter_and_processing_continues(bootstrap: str) -> None:
    settings = settings_for(bootstrap)
    port = free_port()
    metrics = MonitorMetrics()
    server, _ = start_http_server(port, addr="127.0.0.1", registry=metrics.registry)
    good = Scenario(events=300, drift_at=None, label_delay=10)
    bad = [
        (b"demo-model", b"{not json"),
        (b"demo-model", json.dumps({"prediction_id": "x", "model_id": "demo-model"}).encode()),
        (b"other-key", json.dumps(_prediction("k1", "demo-model")).encode()),
        (None, json.dumps(_prediction("k2", "demo-model")).encode()),
    ]
    try:
        create_topics(settings)
        produce(bootstrap, settings.topics.predictions, bad)
        produce_scenario(settings, good)
        with running_monitor(settings, metrics) as monitor:
            wait_until(
                lambda: len(values(bootstrap, settings.topics.labelled_examples)) == 300,
                timeout=120,
                what="the good records processed after the bad ones",
                monitor=monitor,
            )
            wait_until(
                lambda: "stream_monitor_joined_total 300.0" in _scrape(port),
                timeout=30,
                what="metrics to show the joins",
            )
            page = _scrape(port)
    finally:
        server.shutdown()

    dead = read_all(bootstrap, settings.topics.dead_letter)
    assert sorted(r.value for r in dead) == sorted(v for _, v in bad)
    reasons = sorted(dict(r.headers)["error.reason"].decode() for r in dead)
    assert reasons == ["invalid_json", "key_mismatch", "key_mismatch", "schema"]
    assert all(dict(r.headers)["source.topic"] == b"predictions" for r in dead)
    assert all("error.detail" in dict(r.headers) for r in dead)

    topic = settings.topics.predictions
    assert f'stream_monitor_records_consumed_total{{topic="{topic}"}} 304.0' in page
    assert (
        'stream_monitor_invalid_records_total{reason="invalid_json",topic="predictions"} 1.0'
        in (page)
    )
    assert (
        'stream_monitor_invalid_records_total{reason="key_mismatch",topic="predictions"} 2.0'
        in (page)
    )
    assert 'stream_monitor_model_accuracy_ratio{model_id="demo-model",model_version="1"}' in page
    assert "stream_monitor_batch_processing_seconds_count" in page
    assert 'stream_monitor_consumer_lag_records{topic="' in page


def test_refuses_to_start_when_inputs_are_not_co_partitioned(bootstrap: str) -> None:
    settings = settings_for(bootstrap)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics(
        [
            NewTopic(settings.topics.predictions, num_partitions=2, replication_factor=1),
            NewTopic(settings.topics.ground_truth, num_partitions=3, replication_factor=1),
        ]
    )
    admin.close()
    with pytest.raises(StartupError, match="co-partitioned"):
        MonitorService(settings, MonitorMetrics()).run()


def test_refuses_to_start_on_a_state_topic_that_is_not_compacted(bootstrap: str) -> None:
    settings = settings_for(bootstrap)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics(
        [NewTopic(settings.topics.monitor_state, num_partitions=1, replication_factor=1)]
    )
    admin.close()
    with pytest.raises(StartupError, match=r"cleanup\.policy=delete.*cleanup\.policy=compact"):
        MonitorService(settings, MonitorMetrics()).run()


def _prediction(prediction_id: str, model_id: str) -> dict[str, object]:
    return {
        "prediction_id": prediction_id,
        "model_id": model_id,
        "model_version": "1",
        "timestamp": 1_767_225_600_000,
        "features": {"f0": 1.0},
        "prediction": "yes",
    }


def _scrape(port: int) -> str:
    return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text


def test_promotion_resets_the_new_version_and_ends_the_old_cooldown(bootstrap: str) -> None:
    settings = settings_for(bootstrap)
    metrics = MonitorMetrics()
    registry = metrics.registry
    canary = Scenario(events=500, drift_at=None, model_version="2", id_prefix="c")

    def labelled(version: str) -> float | None:
        return registry.get_sample_value(
            "stream_monitor_model_labelled_events",
            {"model_id": "demo-model", "model_version": version},
        )

    with running_monitor(settings, metrics) as monitor:
        produce_scenario(settings, DROP)
        produce_scenario(settings, canary)
        wait_until(
            lambda: labelled("1") == DROP.events and labelled("2") == canary.events,
            timeout=120,
            what="version 1 drifted and the canary version 2 seen",
            monitor=monitor,
        )
        assert len(values(bootstrap, settings.topics.retrain_requests)) == 1

        promoted = {
            "specversion": "1.0",
            "id": "promotion-1",
            "type": "stream_monitor.model.promoted",
            "source": "stream-monitor",
            "subject": "demo-model",
            "time": "2026-01-01T00:12:00+00:00",
            "data": {"model_id": "demo-model", "production_version": "2"},
        }
        produce(
            bootstrap,
            settings.topics.model_events,
            [(b"demo-model", json.dumps(promoted).encode())],
        )
        wait_until(
            lambda: labelled("2") is None,
            timeout=60,
            what="version 2 to start again with fresh detectors",
            monitor=monitor,
        )
        # Version 1 still serves some traffic and degrades further, ten minutes later:
        # inside the old one-hour cooldown, but the promotion ended it.
        worse = Scenario(
            events=6000,
            drift_at=3000,
            accuracy_before=0.65,
            accuracy_after=0.35,
            start_ms=DROP.start_ms + 700_000,
            id_prefix="w",
        )
        produce_scenario(settings, worse)
        produce_scenario(
            settings,
            Scenario(
                events=300,
                drift_at=None,
                model_version="2",
                id_prefix="n",
                start_ms=DROP.start_ms + 700_000,
            ),
        )
        wait_until(
            lambda: len(values(bootstrap, settings.topics.retrain_requests)) == 2,
            timeout=120,
            what="a second retrain request for version 1",
            monitor=monitor,
        )
        wait_until(lambda: labelled("2") == 300, 60, "version 2 counted afresh", monitor)
    second = values(bootstrap, settings.topics.retrain_requests)[1]["data"]
    assert (second["model_version"], second["episode"]) == ("1", 2)


def _with_an_unreadable_snapshot(bootstrap: str, **overrides: Any) -> MonitorSettings:
    """Settings whose state topic holds model m's snapshot as version 0.1.0 wrote it."""
    settings = settings_for(bootstrap, **overrides)
    create_topics(settings)
    legacy = pickle.dumps((1, {"join": "of an older layout"}), protocol=5)
    produce(bootstrap, settings.topics.monitor_state, [(b"m", state.encode(legacy))])
    return settings


def test_refuses_to_start_on_a_snapshot_written_in_another_format(bootstrap: str) -> None:
    settings = _with_an_unreadable_snapshot(bootstrap)
    with pytest.raises(StartupError, match="discard_incompatible_state") as refused:
        MonitorService(settings, MonitorMetrics()).run()
    message = str(refused.value)
    assert f"model 'm' at {settings.topics.monitor_state} partition 0 offset 0" in message
    assert "has format 1 (a pickle, written by 0.1)" in message


def test_can_start_the_models_of_unreadable_snapshots_afresh(bootstrap: str) -> None:
    settings = _with_an_unreadable_snapshot(
        bootstrap, checkpoint={"discard_incompatible_state": True}
    )
    metrics = MonitorMetrics()
    with running_monitor(settings, metrics) as monitor:
        produce(
            bootstrap,
            settings.topics.predictions,
            [(b"m", json.dumps(_prediction("p1", "m")).encode())],
        )
        label = {
            "prediction_id": "p1",
            "model_id": "m",
            "label": "yes",
            "timestamp": 1_767_225_660_000,
        }
        produce(bootstrap, settings.topics.ground_truth, [(b"m", json.dumps(label).encode())])
        wait_until(
            lambda: metrics.registry.get_sample_value("stream_monitor_joined_total") == 1,
            60,
            "the pair to join in the fresh model",
            monitor,
        )
    assert metrics.registry.get_sample_value("stream_monitor_state_discarded_total") == 1


def test_a_key_that_is_not_utf8_does_not_stop_a_restart(bootstrap: str) -> None:
    # b"m\xff" decodes, with replacement, to a real model's name. Its record is refused
    # (the key is not the model_id), but the key is seen, and the state topic must still
    # hold only names the next start can read.
    model = "m\ufffd"
    settings = settings_for(bootstrap, kafka={"partitions": 1})
    create_topics(settings)
    metrics = MonitorMetrics()

    def pending() -> float | None:
        return metrics.registry.get_sample_value(
            "stream_monitor_join_pending", {"kind": "prediction"}
        )

    records = [
        (model.encode(), json.dumps(_prediction("p1", model)).encode()),
        (b"m\xff", json.dumps(_prediction("p2", model)).encode()),
    ]
    produce(bootstrap, settings.topics.predictions, records)
    with running_monitor(settings, metrics) as monitor:
        wait_until(lambda: pending() == 1, 60, "the valid prediction to wait", monitor)
    assert len(read_all(bootstrap, settings.topics.dead_letter)) == 1

    metrics = MonitorMetrics()
    with running_monitor(settings, metrics) as monitor:
        label = {
            "prediction_id": "p1",
            "model_id": model,
            "label": "yes",
            "timestamp": 1_767_225_660_000,
        }
        produce(
            bootstrap, settings.topics.ground_truth, [(model.encode(), json.dumps(label).encode())]
        )
        wait_until(
            lambda: metrics.registry.get_sample_value("stream_monitor_joined_total") == 1,
            60,
            "the label to join the restored prediction",
            monitor,
        )


def test_a_second_instance_shares_the_partitions_and_every_pair_counts_once(
    bootstrap: str,
) -> None:
    # Two models on each of the two partitions (kafka-python's default partitioner).
    models = ["model-0", "model-1", "model-2", "model-4"]
    per_model = 3_000
    settings = settings_for(bootstrap)
    create_topics(settings)
    streams = [
        stream(Scenario(events=per_model, model_id=m, drift_at=None, seed=i, label_delay=50))
        for i, m in enumerate(models)
    ]
    interleaved = [event for events in zip(*streams, strict=True) for event in events]
    # About eight seconds of traffic: the second instance joins while there is work left.
    producer = threading.Thread(target=publish_events, args=(settings, interleaved, 1_500))
    producer.start()
    with running_monitor(settings) as first:
        wait_until(lambda: first.service.processed > 0, 60, "the first instance", first)
        with running_monitor(with_own_store(settings)) as second:
            producer.join()
            wait_until(
                lambda: first.healthy() and all_committed(settings, len(interleaved)),
                120,
                "every input record committed",
                second,
            )
    assert first.service.processed > 0 and second.service.processed > 0
    assert_every_pair_counted_once(settings, models, per_model)
    examples = values(bootstrap, settings.topics.labelled_examples)  # at least once
    pairs = {(e["data"]["model_id"], e["data"]["prediction_id"]) for e in examples}
    assert len(pairs) == len(models) * per_model


@pytest.mark.parametrize("failure", ["crash", "refused"])
def test_a_failed_commit_after_the_snapshots_counts_nothing_twice(
    bootstrap: str, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    # Checkpoints every 1,000 records; the second one's snapshots are written, then the
    # process dies before its commit ("crash": a restart replays from the first), or the
    # group refuses the commit, as it does to a member it has moved on from ("refused":
    # the service goes on). Live traffic, so the records in between hold both sides.
    settings = settings_for(bootstrap, kafka={"partitions": 1}, checkpoint={"every_records": 1_000})
    create_topics(settings)
    scenario = Scenario(events=3_000, drift_at=None, label_delay=50)
    producer = threading.Thread(target=publish, args=(settings, scenario, 1_000))
    producer.start()
    commit = KafkaConsumer.commit
    commits = 0

    def second_commit_fails(self: KafkaConsumer, *args: Any, **kwargs: Any) -> None:
        nonlocal commits
        commits += 1
        if commits == 2 and failure == "crash":
            raise RuntimeError("injected crash")
        if commits == 2:
            raise CommitFailedError("injected: the group moved on")
        commit(self, *args, **kwargs)

    monkeypatch.setattr(KafkaConsumer, "commit", second_commit_fails)
    if failure == "crash":
        with pytest.raises(RuntimeError, match="injected"), running_monitor(settings) as crashed:
            wait_until(lambda: commits >= 2, 60, "the second commit", crashed)
        monkeypatch.undo()
    metrics = MonitorMetrics()
    with running_monitor(settings, metrics) as monitor:
        producer.join()
        total = 2 * scenario.events
        wait_until(lambda: all_committed(settings, total), 60, "every record committed", monitor)
    refused = metrics.registry.get_sample_value("stream_monitor_commits_refused_total")
    assert refused == (1 if failure == "refused" else 0)
    assert_every_pair_counted_once(settings, ["demo-model"], 3_000)


def test_snapshot_positions_past_a_partition_end_skip_nothing(bootstrap: str) -> None:
    # As after the input topics were deleted and created again: the model's snapshot says
    # it has read 10,000 records of partitions that now hold one each.
    settings = settings_for(bootstrap, kafka={"partitions": 1})
    create_topics(settings)
    writer = MonitorCore(settings)
    writer.process("predictions", b"m", json.dumps(_prediction("p0", "m")).encode())
    positions = {
        TopicPartition(t, 0): 10_000
        for t in (settings.topics.predictions, settings.topics.ground_truth)
    }
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    producer.send(
        settings.topics.monitor_state,
        key=b"m",
        value=state.encode(writer.snapshot("m")),
        headers=[state.positions_header(positions)],
    )
    producer.flush()
    producer.close()
    label = {"prediction_id": "p1", "model_id": "m", "label": "yes", "timestamp": 1_767_225_660_000}
    produce(
        bootstrap,
        settings.topics.predictions,
        [(b"m", json.dumps(_prediction("p1", "m")).encode())],
    )
    produce(bootstrap, settings.topics.ground_truth, [(b"m", json.dumps(label).encode())])
    with running_monitor(settings) as monitor:
        wait_until(
            lambda: len(values(bootstrap, settings.topics.labelled_examples)) == 1,
            60,
            "the new pair to join",
            monitor,
        )
