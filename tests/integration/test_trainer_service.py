"""The trainer service against a real broker, fed by the real monitor.

Each test runs the monitor service over a simulated serving app, so the retrain
request and the labelled examples are exactly what the monitor publishes (batch
records stamped with label time, the request's training window), then the trainer.
Production is seeded with a model the trainer's own code trained on the examples
labelled before the drift: the champion a retrained candidate must beat.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
import yaml
from kafka import KafkaProducer

from stream_monitor.config import MonitorSettings
from stream_monitor.core.events import Output
from stream_monitor.core.monitor import MonitorCore
from stream_monitor.simulate import Scenario, SimTopic, stream
from stream_monitor.trainer.metrics import TrainerMetrics
from stream_monitor.trainer.registry import HandledRequest, ModelRegistry
from stream_monitor.trainer.service import TrainerService, read_between
from stream_monitor.trainer.settings import TrainerSettings
from stream_monitor.trainer.training import Outcome, RetrainRequest, handle_request
from tests.integration.helpers import (
    committed,
    create_topics,
    free_port,
    produce,
    produce_stream,
    read_all,
    running_monitor,
    running_service,
    settings_for,
    values,
    wait_until,
)

pytestmark = pytest.mark.integration

MODEL = "demo-model"
WINDOW_SECONDS = 60.0
"""The monitor's training window: 600 predictions at one every 0.1 s."""

ROTATED = Scenario(events=3000, drift_at=1500, label_delay=20, features=4, seed=0)
"""After the drift the truth is ``f0 + 1.2 * f1 > 0``: the serving model (``f0 > 0``)
drops to about 0.72, and a model trained on the new labels can learn it."""

NOISE = Scenario(events=3000, drift_at=1500, label_delay=20, features=4, accuracy_after=0.7, seed=0)
"""After the drift 30 % of the labels disagree with any function of the features:
``f0 > 0`` stays the best model there is, so no retraining can beat production."""


def _drift_time(scenario: Scenario) -> float:
    return (scenario.start_ms + scenario.drift_at * scenario.seconds_between * 1000) / 1000


def _rotated(scenario: Scenario) -> Iterator[tuple[SimTopic, str, dict[str, Any]]]:
    """``scenario`` with every label of a prediction after the drift replaced by the
    rotated concept."""
    features: dict[str, dict[str, Any]] = {}
    for topic, key, value in stream(scenario):
        if topic == "predictions":
            features[value["prediction_id"]] = value["features"]
            yield topic, key, value
            continue
        f = features.pop(value["prediction_id"])
        if int(value["prediction_id"][len(scenario.id_prefix) :]) < scenario.drift_at:
            yield topic, key, value
        else:
            yield topic, key, {**value, "label": "yes" if f["f0"] + 1.2 * f["f1"] > 0 else "no"}


def _monitored(
    bootstrap: str, events: Iterator[tuple[SimTopic, str, dict[str, Any]]], count: int
) -> MonitorSettings:
    """Run the monitor service until ``count`` predictions were labelled; its topics."""
    settings = settings_for(
        bootstrap, defaults={"policy": {"training_window_seconds": WINDOW_SECONDS}}
    )
    produce_stream(settings, events)
    with running_monitor(settings) as monitor:
        wait_until(
            lambda: len(values(bootstrap, settings.topics.labelled_examples)) == count,
            timeout=120,
            what="every prediction labelled",
            monitor=monitor,
        )
    return settings


def _trainer_settings(
    monitor: MonitorSettings, registry: Path, kafka: dict[str, Any] | None = None, **model: Any
) -> TrainerSettings:
    """The monitor's broker and topics, the trainer's own group; ``kafka`` overrides
    Kafka settings and ``model`` the training settings of ``MODEL``."""
    kafka = {
        "bootstrap_servers": monitor.kafka.bootstrap_servers,
        "group_id": f"trainer-{monitor.kafka.group_id}",
        "partitions": monitor.kafka.partitions,
        **(kafka or {}),
    }
    return TrainerSettings(
        kafka=kafka,
        topics=monitor.topics,
        registry_dir=registry,
        metrics_port=0,
        models={MODEL: model},
    )


def _seed_production(
    settings: TrainerSettings, examples: list[dict[str, Any]], until: float
) -> None:
    """Production: version 1, trained by the trainer's own code on ``examples``
    labelled up to ``until`` (before the drift)."""
    initial = RetrainRequest.model_validate(
        {
            "id": "initial-training",
            "type": "stream_monitor.retrain.requested",
            "time": until * 1000,
            "data": {
                "model_id": MODEL,
                "model_version": "0",
                "episode": 0,
                "training_window": {"start": 0, "end": until * 1000},
            },
        }
    )
    registry = ModelRegistry(settings.registry_dir)
    record, _ = handle_request(registry, initial, examples, settings.for_model(MODEL))
    assert (record.outcome, record.version) == ("promoted", 1)


def _the_request(monitor: MonitorSettings) -> dict[str, Any]:
    (request,) = values(monitor.kafka.bootstrap_servers, monitor.topics.retrain_requests)
    data = request["data"]
    assert (data["model_id"], data["action"]) == (MODEL, "retrain")
    return request


def _answers(settings: TrainerSettings) -> list[dict[str, Any]]:
    return values(settings.kafka.bootstrap_servers, settings.topics.model_events)


def _sample(metrics: TrainerMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(f"stream_monitor_trainer_{name}", labels) or 0.0


def _run_until_answered(settings: TrainerSettings, metrics: TrainerMetrics, requests: int) -> None:
    """Run the trainer until it consumed ``requests`` requests and committed them."""
    with running_service(TrainerService(settings, metrics)) as trainer:
        wait_until(
            lambda: (
                trainer.healthy()
                and committed(settings.kafka.bootstrap_servers, settings.kafka.group_id) == requests
            ),
            timeout=180,  # generous: a loaded 2-core machine fits slowly
            what=f"{requests} requests answered and committed",
        )


def test_a_fixable_drift_ends_in_a_promotion(bootstrap: str, tmp_path: Path) -> None:
    monitor = _monitored(bootstrap, _rotated(ROTATED), ROTATED.events)
    request = _the_request(monitor)
    settings = _trainer_settings(monitor, tmp_path / "registry")
    examples = values(bootstrap, monitor.topics.labelled_examples)
    _seed_production(settings, examples, until=_drift_time(ROTATED))
    window = request["data"]["training_window"]
    start, end = (datetime.fromisoformat(window[edge]) for edge in ("start", "end"))
    # An example's event time is its label time.
    in_window = [e for e in examples if start <= datetime.fromisoformat(e["time"]) <= end]
    post_drift = [e for e in in_window if int(e["data"]["prediction_id"][1:]) >= ROTATED.drift_at]
    # A precondition, not the trainer's doing: the monitor asked late enough for the
    # window to hold the new concept beyond the holdout (its most recent fifth).
    assert len(post_drift) >= 300, f"the monitor asked after {len(post_drift)} new labels"

    metrics = TrainerMetrics()
    _run_until_answered(settings, metrics, requests=1)

    (event,) = _answers(settings)
    assert event["type"] == "stream_monitor.model.promoted"
    assert (event["subject"], event["time"]) == (MODEL, request["time"])
    data = event["data"]
    assert (data["model_id"], data["reason_code"], data["production_version"]) == (
        MODEL,
        "won",
        "2",
    )
    assert data["request"]["id"] == request["id"]
    assert data["training_window"] == {"start": window["start"], "end": window["end"]}
    # Sought by timestamp and filtered by label time: exactly the window's examples.
    used = data["data"]["train"]["examples"] + data["data"]["holdout"]["examples"]
    assert (used, data["data"]["duplicates"]) == (len(in_window), 0)
    assert data["champion"]["version"] == "1" and data["candidate"]["version"] == "2"
    assert data["candidate"]["score"] > 0.9 > data["champion"]["score"]
    assert values(bootstrap, monitor.topics.escalations) == []
    (record,) = read_all(bootstrap, monitor.topics.model_events)
    assert record.key == MODEL.encode()

    registry = ModelRegistry(settings.registry_dir)
    production = registry.load_production(MODEL)
    assert production is not None and production.version == 2
    assert production.metadata["request"]["id"] == request["id"]
    # Where the old concept (f0 > 0) and the new one (f0 + 0.6 f1 > 0) disagree.
    rows = [{"f0": 0.3, "f1": -1.5, "f2": 0.0, "f3": 0.0}, {"f0": -0.3, "f1": 1.5, "f2": 0.0}]
    assert production.predict(rows) == ["no", "yes"]

    assert _sample(metrics, "requests_received_total") == 1
    assert _sample(metrics, "promotions_total", reason="won") == 1
    assert _sample(metrics, "training_seconds_count") == 1
    scores = {"model_id": MODEL, "metric": "accuracy"}
    assert _sample(metrics, "candidate_holdout_score", **scores) == data["candidate"]["score"]
    assert _sample(metrics, "champion_holdout_score", **scores) == data["champion"]["score"]


def test_the_same_request_twice_trains_once(bootstrap: str, tmp_path: Path) -> None:
    monitor = _monitored(bootstrap, _rotated(ROTATED), ROTATED.events)
    (original,) = read_all(bootstrap, monitor.topics.retrain_requests)
    # As a monitor's producer retry, a replay or a second instance would send it.
    produce(bootstrap, monitor.topics.retrain_requests, [(original.key, original.value)])
    settings = _trainer_settings(monitor, tmp_path / "registry")

    metrics = TrainerMetrics()
    _run_until_answered(settings, metrics, requests=2)

    assert [e["type"] for e in _answers(settings)] == ["stream_monitor.model.promoted"]
    assert _sample(metrics, "requests_received_total") == 2
    assert _sample(metrics, "duplicate_requests_total") == 1
    assert _sample(metrics, "training_seconds_count") == 1
    assert ModelRegistry(settings.registry_dir).versions(MODEL) == [1]

    # A restarted trainer reading the topic from the start acknowledges both again.
    again = TrainerMetrics()
    restarted = settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(
                update={"group_id": f"{settings.kafka.group_id}-restarted"}
            )
        }
    )
    _run_until_answered(restarted, again, requests=2)
    assert _sample(again, "duplicate_requests_total") == 2
    assert len(_answers(settings)) == 1


def test_a_drift_retraining_cannot_fix_is_rejected_and_escalated(
    bootstrap: str, tmp_path: Path
) -> None:
    monitor = _monitored(bootstrap, stream(NOISE), NOISE.events)
    request = _the_request(monitor)
    # Per-model settings: another estimator, a floor production must reach, and a
    # margin that chance does not bridge on a holdout of 120 labels.
    settings = _trainer_settings(
        monitor,
        tmp_path / "registry",
        estimator={"name": "logistic_regression"},
        floor=0.8,
        promotion_margin=0.05,
    )
    examples = values(bootstrap, monitor.topics.labelled_examples)
    _seed_production(settings, examples, until=_drift_time(NOISE))

    metrics = TrainerMetrics()
    _run_until_answered(settings, metrics, requests=1)

    (answer,) = _answers(settings)
    assert answer["type"] == "stream_monitor.model.rejected"
    data = answer["data"]
    assert data["reason_code"] in {"within_margin", "lost"}, data["reason"]
    assert data["production_version"] == "1" and data["candidate"]["version"] == "2"
    assert data["champion"]["score"] < 0.8 and data["escalated"] is True
    assert data["estimator"]["name"] == "logistic_regression"

    (escalation,) = values(bootstrap, monitor.topics.escalations)
    assert escalation["type"] == "stream_monitor.escalation"
    assert escalation["subject"] == MODEL
    details = escalation["data"]
    assert (details["kind"], details["severity"], details["request_id"]) == (
        "retraining",
        "critical",
        request["id"],
    )
    assert "floor 0.8" in details["reason"] or "lost" in details["reason"]
    assert details["advice"] and details["evidence"] == data

    registry = ModelRegistry(settings.registry_dir)
    assert registry.production_version(MODEL) == 1  # production untouched
    assert registry.metadata(MODEL, 2)["decision"] == "rejected"  # kept for inspection
    code = data["reason_code"]
    assert _sample(metrics, "rejections_total", reason=code) == 1
    assert _sample(metrics, "escalations_total", reason=code) == 1
    assert _sample(metrics, "promotions_total", reason="won") == 0


def _requests_from_the_monitor(monitor: MonitorSettings, *models: str) -> list[Output]:
    """One real retrain request per model, from the monitor's core replaying a drop."""
    core = MonitorCore(monitor)
    return [
        output
        for model_id in models
        for topic, key, value in stream(
            Scenario(events=6000, drift_at=3000, accuracy_after=0.65, model_id=model_id)
        )
        for output in core.process(topic, key.encode(), orjson.dumps(value))
        if output.topic == "retrain_requests"
    ]


class _StopDuringTheAnswer(TrainerMetrics):
    """Sets ``stop`` while a request is being answered, as a SIGTERM arriving then would."""

    def __init__(self, stop: threading.Event) -> None:
        super().__init__()
        self.stop = stop

    def answered(self, record: HandledRequest, outcome: Outcome | None) -> None:
        super().answered(record, outcome)
        self.stop.set()


def test_a_stop_finishes_the_request_in_progress_and_leaves_the_rest(
    bootstrap: str, tmp_path: Path
) -> None:
    monitor = settings_for(bootstrap)
    create_topics(monitor)
    requests_ = _requests_from_the_monitor(monitor, "model-a", "model-b")
    produce(bootstrap, monitor.topics.retrain_requests, [(r.key, r.value) for r in requests_])
    # Up to two requests a poll: the stop must also leave one that was already fetched.
    settings = _trainer_settings(monitor, tmp_path / "registry", kafka={"max_poll_records": 2})
    stop = threading.Event()
    service = TrainerService(settings, _StopDuringTheAnswer(stop), stop)
    with running_service(service) as first:
        wait_until(lambda: first.healthy() and stop.is_set(), 60, "the first answer")
    assert len(_answers(settings)) == 1
    assert committed(bootstrap, settings.kafka.group_id) == 1

    _run_until_answered(settings, TrainerMetrics(), requests=2)
    answered = {e["data"]["model_id"] for e in _answers(settings)}
    assert answered == {"model-a", "model-b"}


def test_reading_a_window_seeks_by_timestamp(bootstrap: str) -> None:
    monitor = settings_for(bootstrap)
    create_topics(monitor)  # three partitions, like labelled-examples in production
    topic = monitor.topics.labelled_examples
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for second in range(100):
        for key in (b"m", b"other"):
            value = f"{key.decode()}-{second}".encode()
            producer.send(topic, key=key, value=value, timestamp_ms=(1000 + second) * 1000)
    producer.flush()
    producer.close()
    client = {"bootstrap_servers": bootstrap}

    read = list(read_between(client, topic, start=1020.0, end=1029.5, key=b"m"))
    # The first record past the end comes too: a batch is stamped with its newest event.
    assert read == [f"m-{s}".encode() for s in range(20, 31)]
    assert list(read_between(client, topic, start=2000.0, end=3000.0)) == []
    everything = list(read_between(client, topic, start=0.0, end=5000.0))
    assert len(everything) == 200


# ---- the command ---------------------------------------------------------------------


def _scrape(port: int) -> str:
    return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text


def test_command_dead_letters_bad_requests_serves_metrics_and_stops_on_sigterm(
    bootstrap: str, tmp_path: Path
) -> None:
    monitor = settings_for(bootstrap)
    create_topics(monitor)
    # No labelled examples on the topic: the answer is a rejection for too little data.
    (request,) = _requests_from_the_monitor(monitor, MODEL)
    produce(
        bootstrap,
        monitor.topics.retrain_requests,
        [(MODEL.encode(), b"{not json"), (request.key, request.value)],
    )
    port = free_port()
    settings = _trainer_settings(monitor, tmp_path / "registry").model_copy(
        update={"metrics_port": port}
    )
    config = tmp_path / "trainer.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    log = tmp_path / "trainer.log"
    trainer = subprocess.Popen(
        [sys.executable, "-m", "stream_monitor.cli", "trainer", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )

    def running() -> bool:
        if trainer.poll() is not None:
            raise AssertionError(f"the trainer exited with {trainer.returncode}: {log.read_text()}")
        return True

    try:
        wait_until(
            lambda: running() and len(_answers(settings)) == 1,
            60,
            "the answer to the valid request",
        )
        wait_until(
            lambda: "stream_monitor_trainer_rejections_total" in _scrape(port),
            30,
            "metrics to show the rejection",
        )
        page = _scrape(port)
    finally:
        trainer.send_signal(signal.SIGTERM)
        assert trainer.wait(timeout=60) == 0, log.read_text()

    (answer,) = _answers(settings)
    assert answer["type"] == "stream_monitor.model.rejected"
    assert answer["data"]["reason_code"] == "insufficient_data"
    assert "0 usable examples" in answer["data"]["reason"]
    (dead,) = read_all(bootstrap, monitor.topics.dead_letter)
    headers = {k: v.decode() for k, v in dead.headers}
    assert dead.value == b"{not json"
    assert (headers["error.reason"], headers["source.topic"]) == (
        "invalid_json",
        "retrain_requests",
    )
    bad = read_all(bootstrap, monitor.topics.retrain_requests)[0]
    assert bad.value == b"{not json"
    assert (headers["source.partition"], headers["source.offset"]) == (
        str(bad.partition),
        str(bad.offset),
    )
    assert headers["error.detail"]
    assert committed(bootstrap, settings.kafka.group_id) == 2

    assert "stream_monitor_trainer_requests_received_total 2.0" in page
    assert 'stream_monitor_trainer_invalid_requests_total{reason="invalid_json"} 1.0' in page
    assert 'stream_monitor_trainer_rejections_total{reason="insufficient_data"} 1.0' in page
    assert "stream_monitor_trainer_training_seconds_count 0.0" in page
    assert "trainer stopped cleanly" in log.read_text()
