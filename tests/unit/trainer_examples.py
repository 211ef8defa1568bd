"""Labelled examples and retrain requests made by the monitor's own code.

Streams that the monitor accepts (:func:`concept`, :func:`noise`) go through a real
:class:`MonitorCore`; single examples the monitor would refuse to score (a text
label for a regression model) are made by the same function the core uses to write
them. Predictions carry ISO 8601 timestamps and labels epoch milliseconds, the two
forms the contract allows.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from typing import Any

from stream_monitor.config import MonitorSettings
from stream_monitor.core.events import (
    FeatureValue,
    GroundTruth,
    Output,
    Prediction,
    Scalar,
    batched,
    decode,
    iso,
    unbatch,
)
from stream_monitor.core.join import Joined
from stream_monitor.core.monitor import MonitorCore, _episode_event, _labelled_example
from stream_monitor.core.performance import Task
from stream_monitor.trainer.training import RetrainRequest, parse_request

T0 = 1_700_000_000.0
STEP = 10.0
"""Seconds between predictions; labels arrive ``LABEL_DELAY`` later."""
LABEL_DELAY = 60.0

Row = tuple[int, dict[str, FeatureValue], Scalar]
"""Index of the example, features, label."""


def _events(
    i: int, features: dict[str, FeatureValue], label: Scalar, model_id: str
) -> tuple[bytes, bytes]:
    """The serving app's prediction (it guesses from ``x`` alone) and the ground truth."""
    x = features.get("x")
    positive = isinstance(x, int | float) and x > 0
    guess: Scalar = ("yes" if positive else "no") if isinstance(label, str) else label
    prediction = {
        "prediction_id": f"p{i}",
        "model_id": model_id,
        "model_version": "1",
        "timestamp": iso(T0 + i * STEP),
        "features": features,
        "prediction": guess,
    }
    truth = {
        "prediction_id": f"p{i}",
        "model_id": model_id,
        "label": label,
        "timestamp": int((T0 + i * STEP + LABEL_DELAY) * 1000),
    }
    return json.dumps(prediction).encode(), json.dumps(truth).encode()


def labelled(
    i: int,
    features: dict[str, FeatureValue],
    label: Scalar,
    *,
    model_id: str = "m",
    task: Task = "classification",
) -> dict[str, Any]:
    """The ``i``-th labelled example of a model, predicted at ``T0 + i * STEP``, as the
    monitor writes it (whether or not the monitor could score it)."""
    prediction, truth = _events(i, features, label, model_id)
    joined = Joined(
        decode(Prediction, prediction),
        decode(GroundTruth, truth),
        prediction,
        truth,
    )
    (event,) = unbatch(_labelled_example(joined, task).value)
    return event


def monitored(rows: Iterable[Row], model_id: str = "m") -> list[dict[str, Any]]:
    """The labelled examples a real monitor core publishes for these predictions, each
    labelled ``LABEL_DELAY`` after it was made."""
    core = MonitorCore(MonitorSettings())
    examples = []
    for i, features, label in rows:
        prediction, truth = _events(i, features, label, model_id)
        assert core.process("predictions", model_id.encode(), prediction) == []
        for output in core.process("ground_truth", model_id.encode(), truth):
            assert output.topic != "dead_letter", output
            if output.topic == "labelled_examples":
                examples += unbatch(output.value)
    return examples


def concept(
    n: int, *, start: int = 0, flip: bool = False, seed: int = 0, model_id: str = "m"
) -> list[dict[str, Any]]:
    """A classification stream with a numeric, a categorical and a count feature, each
    missing now and then. The label is "yes" when ``x > 0`` xor the colour is red
    (inverted with ``flip``), so both kinds of feature are needed to learn it."""
    rng = random.Random(seed)
    rows: list[Row] = []
    for i in range(start, start + n):
        x = rng.uniform(-1, 1)
        colour = rng.choice(["red", "green", "blue"])
        positive = (x > 0) != (colour == "red")
        features: dict[str, FeatureValue] = {
            "x": None if rng.random() < 0.05 else x,
            "colour": None if rng.random() < 0.05 else colour,
            "count": rng.randint(0, 5),
        }
        rows.append((i, features, "yes" if positive != flip else "no"))
    return monitored(rows, model_id)


def noise(n: int, *, start: int = 0, seed: int = 1) -> list[dict[str, Any]]:
    """Labels that no feature explains: what retraining cannot fix."""
    rng = random.Random(seed)
    rows: list[Row] = [
        (
            i,
            {"x": rng.uniform(-1, 1), "colour": rng.choice(["red", "blue"])},
            rng.choice(["yes", "no"]),
        )
        for i in range(start, start + n)
    ]
    return monitored(rows)


def request(
    first: int, last: int, *, model_id: str = "m", episode: int = 1, version: str = "1"
) -> RetrainRequest:
    """A retrain request from the monitor covering the labels of examples ``first..last``,
    built by the monitor's own code and parsed back from bytes."""
    end = T0 + last * STEP + LABEL_DELAY
    data = {
        "model_id": model_id,
        "model_version": version,
        "kind": "performance",
        "severity": "drift",
        "action": "retrain",
        "episode": episode,
        "reason": "change 0.3 >= 0.03",
        "evidence": {"detector": "adwin"},
        "training_window": {"start": iso(T0 + first * STEP + LABEL_DELAY), "end": iso(end)},
    }
    output = _episode_event("retrain_requests", "retrain.requested", data, end, "origin")
    return parse_request(output.value)


def as_bytes(examples: list[dict[str, Any]]) -> list[bytes]:
    """One Kafka record value per example."""
    return [json.dumps(e).encode() for e in examples]


def as_batches(examples: list[dict[str, Any]], max_bytes: int) -> list[bytes]:
    """CloudEvents batch record values, packed as the monitor's shell packs them."""
    outputs = [Output.event("labelled_examples", e["subject"], e, timestamp=0.0) for e in examples]
    return [record.value for record in batched(outputs, max_bytes)]
