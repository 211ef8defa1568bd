"""A simulated serving app: predictions and late labels, with an accuracy drop.

Used by the demo, ``stream-monitor simulate`` (docker-compose), the integration tests
and the throughput benchmark. Events follow the contracts in
:mod:`stream_monitor.core.events`; labels follow their prediction ``label_delay``
events later (in arrival order and in event time).
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from kafka import KafkaProducer

from stream_monitor.config import MonitorSettings
from stream_monitor.kafka.topics import check_access

SimTopic = Literal["predictions", "ground_truth"]


@dataclass(frozen=True)
class Scenario:
    events: int = 20_000
    model_id: str = "demo-model"
    model_version: str = "1"
    drift_at: int | None = 10_000
    """Index of the first prediction after the drift (None: stationary)."""
    accuracy_before: float = 0.92
    accuracy_after: float = 0.70
    label_delay: int = 200
    features: int = 10
    seconds_between: float = 0.1
    start_ms: int = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    seed: int = 0
    id_prefix: str = "p"
    shifted_features: tuple[str, ...] = ()
    """Input features whose mean moves by ``shift`` at ``drift_at`` (covariate drift)."""
    shift: float = 1.0
    with_labels: bool = True
    """False: labels are withheld, as when ground truth is days away."""


def stream(s: Scenario) -> Iterator[tuple[SimTopic, str, dict[str, Any]]]:
    """Yield ``(topic, key, value)`` in arrival order, every label after its prediction."""
    rng = random.Random(s.seed)
    waiting: deque[dict[str, Any]] = deque()
    for i in range(s.events):
        now_ms = s.start_ms + int(i * s.seconds_between * 1000)
        drifted = s.drift_at is not None and i >= s.drift_at
        features = {f"f{j}": round(rng.gauss(0.0, 1.0), 4) for j in range(s.features)}
        for name in s.shifted_features if drifted else ():
            features[name] = round(features[name] + s.shift, 4)
        predicted = "yes" if features["f0"] > 0 else "no"
        accuracy = s.accuracy_after if drifted else s.accuracy_before
        truth = predicted if rng.random() < accuracy else ("no" if predicted == "yes" else "yes")
        prediction_id = f"{s.id_prefix}{i}"
        yield (
            "predictions",
            s.model_id,
            {
                "prediction_id": prediction_id,
                "model_id": s.model_id,
                "model_version": s.model_version,
                "timestamp": now_ms,
                "features": features,
                "prediction": predicted,
            },
        )
        if s.with_labels:
            waiting.append({"prediction_id": prediction_id, "model_id": s.model_id, "label": truth})
        if len(waiting) > s.label_delay:
            yield "ground_truth", s.model_id, {**waiting.popleft(), "timestamp": now_ms}
    end_ms = s.start_ms + int(s.events * s.seconds_between * 1000)
    while waiting:
        yield "ground_truth", s.model_id, {**waiting.popleft(), "timestamp": end_ms}


def publish(settings: MonitorSettings, scenario: Scenario, rate: float = 0.0) -> int:
    """Write the scenario to the configured input topics at ``rate`` predictions/s
    (0: as fast as possible); returns the number of records written."""
    return publish_events(settings, stream(scenario), rate)


def publish_events(
    settings: MonitorSettings,
    events: Iterable[tuple[SimTopic, str, dict[str, Any]]],
    rate: float = 0.0,
) -> int:
    """Write ``(topic, key, value)`` events, as :func:`stream` yields them, in order."""
    check_access(settings.kafka)  # a StartupError naming the setting, not a 30 s traceback
    producer = KafkaProducer(**settings.kafka.client(), linger_ms=20)
    topics = {
        "predictions": settings.topics.predictions,
        "ground_truth": settings.topics.ground_truth,
    }
    started = time.monotonic()
    count = 0
    for count, (topic, key, value) in enumerate(events, start=1):
        producer.send(topics[topic], key=key.encode(), value=orjson.dumps(value))
        if rate and count % 100 == 0:
            # Two records (prediction + label) per simulated prediction.
            ahead = count / (2 * rate) - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    producer.flush()
    producer.close()
    return count
