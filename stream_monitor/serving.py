"""A simulated serving app for the closed-loop demo: a real model from the registry.

Unlike :mod:`stream_monitor.simulate`, whose "model" is a fixed rule with a chosen
accuracy, this app serves the registry's production model on a river synthetic
stream (SEA: three uniform features, the label says whether ``x1 + x2`` exceeds a
threshold), so what it predicts depends on which model is in production. At
``drift_at`` the stream switches to another concept. The app writes each prediction
stamped with the production version and, ``label_delay`` predictions later, its label
(through :mod:`stream_monitor.client`, paced); it reads
``model-events`` as it goes and reloads production from the registry when the
trainer promotes a new version of its model, so a promotion changes what it predicts.

It also keeps, per prediction, the version that made it and whether it was right:
the accuracy the demo reports is the app's own, not the monitor's estimate.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer
from river.datasets import synth
from sklearn.pipeline import Pipeline

from stream_monitor.client import LabelReporter, PredictionLogger
from stream_monitor.config import MonitorSettings
from stream_monitor.core.events import parse_promotion
from stream_monitor.kafka.topics import assign_all
from stream_monitor.simulate import SimTopic
from stream_monitor.trainer.dataset import FeatureSchema
from stream_monitor.trainer.registry import ModelRegistry, StoredModel
from stream_monitor.trainer.settings import TrainingSettings
from stream_monitor.trainer.training import build_estimator, metric_for

MICRO_BATCH = 50
"""Predictions computed at once: a scikit-learn pipeline costs about as much for one
row as for fifty. Promotions are checked between micro-batches."""

Row = dict[str, float]


@dataclass(frozen=True)
class Concept:
    """A river SEA concept: the label is ``x1 + x2 > threshold`` of ``variant``
    (0: 8, 1: 9, 2: 7, 3: 9.5), with a share ``noise`` of labels flipped at random."""

    variant: int
    noise: float = 0.0

    def sample(self, seed: int) -> Iterator[tuple[Row, bool]]:
        """Endless ``(features, label)`` pairs."""
        for x, y in synth.SEA(variant=self.variant, noise=self.noise, seed=seed):
            yield {f"x{i + 1}": round(v, 4) for i, v in x.items()}, bool(y)


@dataclass(frozen=True)
class Stream:
    """What the serving app sees: ``before`` until prediction ``drift_at``, then ``after``."""

    before: Concept
    after: Concept
    events: int
    drift_at: int
    start_ms: int
    """Event time of the first prediction (epoch ms)."""
    label_delay: int = 100
    seconds_between: float = 0.1
    """Event time between predictions."""
    seed: int = 0
    model_id: str = "demo-model"

    def index_at(self, epoch_seconds: float) -> int:
        """The prediction index whose event time this is."""
        return round((epoch_seconds * 1000 - self.start_ms) / (self.seconds_between * 1000))

    def time_ms(self, index: int) -> int:
        """Event time of prediction ``index`` (epoch ms)."""
        return self.start_ms + int(index * self.seconds_between * 1000)


def train_initial_model(
    registry: ModelRegistry, stream: Stream, settings: TrainingSettings, examples: int = 2000
) -> StoredModel:
    """Train version 1 on ``examples`` of the pre-drift concept, register and promote it.

    It is built as the trainer builds its candidates (the same feature preprocessing
    and allow-listed estimator, scored on the most recent ``holdout_fraction`` with
    the same metric), so the champion a retrained candidate must beat is the same
    kind of model.
    """
    rows, labels = zip(*itertools.islice(stream.before.sample(stream.seed), examples), strict=True)
    n_train = examples - math.ceil(examples * settings.holdout_fraction)
    schema = FeatureSchema.infer(rows)
    pipeline = Pipeline(
        [
            ("features", schema.preprocessor(settings.max_categories)),
            ("estimator", build_estimator(settings.estimator, "classification")),
        ]
    )
    pipeline.fit(schema.matrix(rows[:n_train]), list(labels[:n_train]))
    metric = metric_for(settings, "classification")
    score = metric.score(list(labels[n_train:]), pipeline.predict(schema.matrix(rows[n_train:])))
    metadata = {
        "features": schema.to_json(),
        "task": "classification",
        "estimator": settings.estimator.model_dump(),
        "metric": metric.name,
        "candidate": {"score": float(score)},
        "data": {"train": {"examples": n_train}, "holdout": {"examples": examples - n_train}},
        "decision": "promoted",
        "reason": "initial model, trained on pre-drift data before serving",
    }
    version = registry.register(stream.model_id, pipeline, metadata)
    registry.promote(stream.model_id, version)
    return registry.load(stream.model_id, version)


class ServingApp:
    """Serves the production model of ``stream.model_id`` over ``stream``.

    :meth:`run` blocks until every prediction and label is written or ``stop`` is set.
    The attributes below are read by the demo while it runs.
    """

    def __init__(
        self,
        settings: MonitorSettings,
        registry: ModelRegistry,
        stream: Stream,
        stop: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.stream = stream
        self.stop = stop or threading.Event()
        model = registry.load_production(stream.model_id)
        if model is None:
            raise ValueError(f"model {stream.model_id!r} has no production version to serve")
        self.model = model
        self.versions: list[int] = []
        """The version that made each prediction, by prediction index."""
        self.correct: list[bool] = []
        """Whether each prediction matched its label."""
        self.switched_at: dict[int, int] = {model.version: 0}
        """Each version served, with the index of its first prediction."""

    @property
    def served(self) -> int:
        return len(self.versions)

    def run(self, rate: float) -> int:
        """Write the stream at ``rate`` predictions per second (0: no limit) through
        :mod:`stream_monitor.client`, as a real serving app would; the records written."""
        s = self.stream
        predictions = PredictionLogger(
            self.settings, model_id=s.model_id, model_version=str(self.model.version)
        )
        labels = LabelReporter(self.settings, model_id=s.model_id, producer=predictions.producer)
        started = time.monotonic()
        count = 0
        try:
            for count, (topic, _key, event) in enumerate(self.events(), start=1):
                seconds = event["timestamp"] / 1000  # the stream's own event time
                if topic == "predictions":
                    predictions.log(
                        event["features"],
                        event["prediction"],
                        prediction_id=event["prediction_id"],
                        model_version=event["model_version"],
                        timestamp=seconds,
                    )
                else:
                    labels.report(event["prediction_id"], event["label"], timestamp=seconds)
                # Two records (a prediction and, later, its label) per prediction.
                ahead = count / (2 * rate) - (time.monotonic() - started) if rate else 0.0
                if ahead > 0:
                    time.sleep(ahead)
        finally:
            predictions.close()
        return count

    def events(self) -> Iterator[tuple[SimTopic, str, dict[str, Any]]]:
        """Predictions and delayed labels in arrival order, as :func:`simulate.stream`."""
        s = self.stream
        before, after = s.before.sample(s.seed + 1), s.after.sample(s.seed + 2)
        waiting: deque[dict[str, Any]] = deque()
        promotions = self._model_events()
        try:
            for start in range(0, s.events, MICRO_BATCH):
                if self.stop.is_set():
                    return
                self._reload_on_promotion(promotions)
                batch = [
                    next(after if i >= s.drift_at else before)
                    for i in range(start, min(start + MICRO_BATCH, s.events))
                ]
                predicted = self.model.predict([row for row, _ in batch])
                for offset, ((row, label), guess) in enumerate(zip(batch, predicted, strict=True)):
                    i = start + offset
                    now_ms = s.time_ms(i)
                    prediction_id = f"p{i}"
                    self.versions.append(self.model.version)
                    self.correct.append(guess == label)
                    yield (
                        "predictions",
                        s.model_id,
                        {
                            "prediction_id": prediction_id,
                            "model_id": s.model_id,
                            "model_version": str(self.model.version),
                            "timestamp": now_ms,
                            "features": row,
                            "prediction": guess,
                        },
                    )
                    waiting.append(
                        {"prediction_id": prediction_id, "model_id": s.model_id, "label": label}
                    )
                    if len(waiting) > s.label_delay:
                        yield "ground_truth", s.model_id, {**waiting.popleft(), "timestamp": now_ms}
            end_ms = s.time_ms(s.events)
            while waiting:
                yield "ground_truth", s.model_id, {**waiting.popleft(), "timestamp": end_ms}
        finally:
            promotions.close()

    def _model_events(self) -> KafkaConsumer:
        """A consumer of every partition of ``model-events`` from the start: a promotion
        published before the app read it must still be applied (reloading the same
        production version again changes nothing)."""
        consumer = KafkaConsumer(
            **self.settings.kafka.client(),
            group_id=None,
            enable_auto_commit=False,
        )
        assign_all(consumer, self.settings.topics.model_events, from_beginning=True)
        return consumer

    def _reload_on_promotion(self, consumer: KafkaConsumer) -> None:
        for records in consumer.poll(timeout_ms=0).values():
            for record in records:
                promotion = parse_promotion(record.value)
                if promotion is None or promotion.model_id != self.stream.model_id:
                    continue
                model = self.registry.load_production(self.stream.model_id)
                if model is not None and model.version != self.model.version:
                    self.model = model
                    self.switched_at.setdefault(model.version, self.served)

    def accuracy(self, start: int, end: int | None = None) -> float | None:
        """Share of correct predictions among those indexed ``[start, end)``; None if none."""
        window = self.correct[start:end]
        return sum(window) / len(window) if window else None
