"""A binary model with calibrated scores, for the estimated-performance tests."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

from stream_monitor.simulate import SimTopic

EPOCH_MS = 1_767_225_600_000


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def binary_stream(
    seed: int,
    events: int,
    shift_at: int | None = None,
    label_delay: int = 200,
    labels_from: int | None = None,
    concept_at: int | None = None,
) -> Iterator[tuple[SimTopic, str, dict[str, Any]]]:
    """A binary model whose score of "yes" is P(yes | x) = sigmoid(3 x): calibrated.

    ``shift_at``: inputs move towards the boundary (x ~ N(0, 0.3) instead of N(0, 1)),
    where the model is less sure: accuracy falls, the relation x -> y holds.
    ``labels_from``: labels of predictions from there on are withheld.
    ``concept_at``: from there on the labels of every input are flipped with
    probability 0.3 (concept drift: inputs and scores as before)."""
    rng = random.Random(seed)
    waiting: list[dict[str, Any]] = []
    for i in range(events):
        spread = 0.3 if shift_at is not None and i >= shift_at else 1.0
        x = rng.gauss(0.0, spread)
        p = _sigmoid(3 * x)
        label = "yes" if rng.random() < p else "no"
        if concept_at is not None and i >= concept_at and rng.random() < 0.3:
            label = "no" if label == "yes" else "yes"
        now = EPOCH_MS + i * 100
        yield (
            "predictions",
            "m",
            {
                "prediction_id": f"p{i}",
                "model_id": "m",
                "model_version": "1",
                "timestamp": now,
                "features": {"x": round(x, 5)},
                "prediction": "yes" if p > 0.5 else "no",
                "scores": {"yes": p, "no": 1.0 - p},
            },
        )
        if labels_from is None or i < labels_from:
            waiting.append({"prediction_id": f"p{i}", "model_id": "m", "label": label})
        if len(waiting) > label_delay:
            yield "ground_truth", "m", {**waiting.pop(0), "timestamp": now}


def labelled_reference(seed: int, events: int) -> list[dict[str, Any]]:
    """Prediction events of :func:`binary_stream` with their ``label``: the lines of a
    reference file that calibrates the estimate."""
    reference = []
    prediction: dict[str, Any] = {}
    for topic, _key, value in binary_stream(seed, events, label_delay=0):
        if topic == "predictions":
            prediction = value
        else:
            reference.append({**prediction, "label": value["label"]})
    return reference
