"""Training data that is complete: a retrain request says how far its model's labelled
examples reach, and the trainer reads exactly to there, waiting a bounded time."""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from stream_monitor.config import MonitorSettings
from stream_monitor.core.events import iso
from stream_monitor.simulate import Scenario
from stream_monitor.trainer.metrics import TrainerMetrics
from stream_monitor.trainer.service import TrainerService
from stream_monitor.trainer.settings import TrainerSettings
from tests.integration.helpers import (
    create_topics,
    produce_scenario,
    read_all,
    running_monitor,
    running_service,
    settings_for,
    values,
    wait_until,
)
from tests.unit.trainer_examples import as_bytes, concept, request

pytestmark = pytest.mark.integration

MODEL = "m"
LATE = 150
"""Examples that reach the broker only after the request."""


def test_the_monitors_request_names_where_the_examples_before_it_end(bootstrap: str) -> None:
    scenario = Scenario(events=3000, drift_at=1500, label_delay=20, features=4)
    settings = settings_for(bootstrap, defaults={"policy": {"training_window_seconds": 60.0}})
    produce_scenario(settings, scenario)
    with running_monitor(settings) as monitor:
        wait_until(
            lambda: len(values(bootstrap, settings.topics.labelled_examples)) == scenario.events,
            timeout=120,
            what="every prediction labelled",
            monitor=monitor,
        )
    (request,) = values(bootstrap, settings.topics.retrain_requests)
    ((partition, end),) = request["data"]["labelled_examples"].items()
    records = read_all(bootstrap, settings.topics.labelled_examples)
    assert {r.partition for r in records} == {int(partition)}  # one model, one key
    named = [e for r in records if r.offset < end for e in orjson.loads(r.value)]
    asked = datetime.fromisoformat(request["time"])
    labelled_before = [
        e
        for r in records
        for e in orjson.loads(r.value)
        if datetime.fromisoformat(e["time"]) <= asked
    ]
    # Every example labelled up to the request is within the offsets it names.
    assert labelled_before and {e["id"] for e in labelled_before} <= {e["id"] for e in named}


def _trainer(settings: MonitorSettings, registry: Path, wait: float) -> TrainerSettings:
    return TrainerSettings(
        kafka={
            "bootstrap_servers": settings.kafka.bootstrap_servers,
            "group_id": f"trainer-{settings.kafka.group_id}",
        },
        topics=settings.topics,
        registry_dir=registry,
        metrics_port=0,
        examples_wait_seconds=wait,
        models={MODEL: {"min_train_examples": 100, "min_holdout_examples": 40}},
    )


def _put_request(
    settings: MonitorSettings, examples: list[dict[str, Any]], window_last: int | None = None
) -> int:
    """Produce every example but the ``LATE`` last, and a request naming all of them
    (its window ends with the label of example ``window_last``, by default the last);
    return how many examples it names."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    topic = settings.topics.labelled_examples
    early = as_bytes(examples)[:-LATE]
    delivered = [producer.send(topic, value, key=MODEL.encode()).get(30) for value in early]
    partition, end = delivered[-1].partition, delivered[-1].offset + 1 + LATE
    asked = request(0, len(examples) - 1 if window_last is None else window_last)
    window = asked.data.training_window
    body = {
        "id": asked.id,
        "type": asked.type,
        "time": iso(asked.time),
        "data": {
            "model_id": MODEL,
            "model_version": "1",
            "episode": 1,
            "training_window": {"start": iso(window.start), "end": iso(window.end)},
            "labelled_examples": {str(partition): end},
        },
    }
    producer.send(settings.topics.retrain_requests, orjson.dumps(body), key=MODEL.encode())
    producer.flush()
    producer.close()
    return len(examples)


def _produce_late(settings: MonitorSettings, examples: list[dict[str, Any]]) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    for value in as_bytes(examples)[-LATE:]:
        producer.send(settings.topics.labelled_examples, value, key=MODEL.encode())
    producer.flush()
    producer.close()


def _answer(settings: TrainerSettings) -> dict[str, Any]:
    with running_service(TrainerService(settings, TrainerMetrics())) as trainer:
        wait_until(
            lambda: trainer.healthy() and bool(values(
                settings.kafka.bootstrap_servers, settings.topics.model_events
            )),
            timeout=120,
            what="the request answered",
        )  # fmt: skip
    (answer,) = values(settings.kafka.bootstrap_servers, settings.topics.model_events)
    return answer


def test_examples_arriving_after_the_request_are_waited_for_and_all_trained_on(
    bootstrap: str, tmp_path: Path
) -> None:
    settings = settings_for(bootstrap)
    create_topics(settings)
    examples = concept(400, model_id=MODEL)
    named = _put_request(settings, examples)
    late = threading.Timer(3.0, _produce_late, (settings, examples))
    late.start()
    try:
        answer = _answer(_trainer(settings, tmp_path / "registry", wait=60.0))
    finally:
        late.join()
    data = answer["data"]
    assert data["reason_code"] == "no_champion", data["reason"]
    assert data["data"]["train"]["examples"] + data["data"]["holdout"]["examples"] == named


def test_examples_that_never_arrive_reject_the_request_with_the_reason(
    bootstrap: str, tmp_path: Path
) -> None:
    settings = settings_for(bootstrap)
    create_topics(settings)
    _put_request(settings, concept(400, model_id=MODEL))
    answer = _answer(_trainer(settings, tmp_path / "registry", wait=2.0))
    assert answer["type"] == "stream_monitor.model.rejected"
    data = answer["data"]
    assert data["reason_code"] == "incomplete_data"
    assert "not the" in data["reason"] and "after waiting 2 s" in data["reason"]
    assert data["candidate"] is None


def test_the_trainer_reads_no_further_than_the_request_names(
    bootstrap: str, tmp_path: Path
) -> None:
    settings = settings_for(bootstrap)
    create_topics(settings)
    examples = concept(400, model_id=MODEL)
    named = _put_request(settings, examples, window_last=499)
    _produce_late(settings, examples)
    # Examples beyond the named offsets, labelled within the window: not read.
    _produce_late(settings, concept(100, start=400, seed=7, model_id=MODEL))
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    ends = consumer.end_offsets(
        [TopicPartition(settings.topics.labelled_examples, p) for p in (0, 1)]
    )
    consumer.close()
    assert sum(ends.values()) == named + 100
    data = _answer(_trainer(settings, tmp_path / "registry", wait=10.0))["data"]
    assert data["data"]["train"]["examples"] + data["data"]["holdout"]["examples"] == named
