"""Records that break the input contract, for the fault campaign and its tests.

Each :class:`Case` builds one record the monitor must refuse (send it to ``dead-letter``
with the reason given) without stopping or losing anything else. :data:`CASES` holds one
case per way a single record once stopped the service, and more; :func:`mixed` draws a
reproducible stream of them for fuzzing.

>>> case = CASES["deep-top-level"]
>>> topic, key, value = case.record("m", 1, now_ms=0)
>>> topic, key, case.reason, len(value)
('predictions', b'm', 'limit', 20000)
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from stream_monitor.core.events import RefusalReason

Topic = Literal["predictions", "ground_truth"]
Record = tuple[Topic, bytes, bytes]
HOUR_MS = 3_600_000


@dataclass(frozen=True)
class Case:
    """A record the contract refuses: ``make(model_id, n, now_ms)`` gives its topic and
    value (``n`` makes its ids unique), ``reason`` is the dead letter's ``error.reason``."""

    make: Callable[[str, int, int], tuple[Topic, bytes]]
    reason: RefusalReason

    def record(self, model_id: str, n: int, now_ms: int) -> Record:
        topic, value = self.make(model_id, n, now_ms)
        return topic, model_id.encode(), value


def prediction(model_id: str, n: int, now_ms: int, **fields: Any) -> dict[str, Any]:
    """A valid prediction (two numeric features, a category, scores) with ``fields`` set."""
    value = {
        "prediction_id": f"bad-{n}",
        "model_id": model_id,
        "model_version": "1",
        "timestamp": now_ms,
        "features": {"x": 0.5, "y": 1, "colour": "red"},
        "prediction": "yes",
        "scores": {"yes": 0.7, "no": 0.3},
    }
    return {**value, **fields}


def label(model_id: str, n: int, now_ms: int, **fields: Any) -> dict[str, Any]:
    """A valid label with ``fields`` set."""
    value = {"prediction_id": f"bad-{n}", "model_id": model_id, "label": "yes"}
    return {**value, "timestamp": now_ms, **fields}


def _json(value: dict[str, Any], **raw: str) -> bytes:
    """``value`` as JSON, with each ``raw`` field's placeholder replaced by raw JSON text
    (numbers and nesting the json module would not write)."""
    text = json.dumps({**value, **{k: f"@{k}@" for k in raw}})
    for name, literal in raw.items():
        text = text.replace(f'"@{name}@"', literal)
    return text.encode()


def _features_json(features: str) -> Callable[[str, int, int], tuple[Topic, bytes]]:
    return lambda m, n, t: ("predictions", _json(prediction(m, n, t), features=features))


def _predicted(**fields: Any) -> Callable[[str, int, int], tuple[Topic, bytes]]:
    return lambda m, n, t: ("predictions", json.dumps(prediction(m, n, t, **fields)).encode())


def _labelled(**fields: Any) -> Callable[[str, int, int], tuple[Topic, bytes]]:
    return lambda m, n, t: ("ground_truth", json.dumps(label(m, n, t, **fields)).encode())


DEEP = "[" * 10_000 + "]" * 10_000
BIG_INT = "1" + "0" * 400

CASES: dict[str, Case] = {
    # JSON nested 10,000 deep: at top level, in an unknown field, in features.
    "deep-top-level": Case(lambda m, n, t: ("predictions", DEEP.encode()), "limit"),
    "deep-unknown-field": Case(
        lambda m, n, t: ("predictions", _json(prediction(m, n, t), extra=DEEP)), "limit"
    ),
    "deep-features": Case(_features_json('{"x": ' + DEEP + "}"), "limit"),
    # Numbers beyond float range, as a feature, a score, a prediction, a label.
    "int-beyond-float-feature": Case(_features_json('{"x": ' + BIG_INT + "}"), "schema"),
    "float-beyond-range-feature": Case(_features_json('{"x": 1e400}'), "schema"),
    "int-beyond-float-score": Case(
        lambda m, n, t: ("predictions", _json(prediction(m, n, t), scores='{"yes": 1e400}')),
        "schema",
    ),
    "int-beyond-float-prediction": Case(
        lambda m, n, t: ("predictions", _json(prediction(m, n, t), prediction=BIG_INT)),
        "schema",
    ),
    "int-beyond-float-label": Case(
        lambda m, n, t: ("ground_truth", _json(label(m, n, t), label=BIG_INT)), "schema"
    ),
    "nan-feature": Case(_features_json('{"x": NaN}'), "invalid_json"),
    "infinity-score": Case(
        lambda m, n, t: ("predictions", _json(prediction(m, n, t), scores='{"yes": Infinity}')),
        "invalid_json",
    ),
    # A wrong-typed feature, then something the describing of the error once choked on.
    "wrong-type-then-nan": Case(_features_json('{"x": [1], "y": NaN}'), "schema"),
    "wrong-type-then-huge": Case(_features_json('{"x": [1], "y": 1e400}'), "schema"),
    # Timestamps ahead of the clock: now + 2 h, year 9999, an ISO time in year 10000.
    "timestamp-2h-ahead": Case(
        lambda m, n, t: _predicted(timestamp=t + 2 * HOUR_MS)(m, n, t), "timestamp"
    ),
    "timestamp-year-9999": Case(_predicted(timestamp=253_402_300_799_000), "timestamp"),
    "timestamp-iso-9999": Case(_labelled(timestamp="9999-12-31T23:59:59+00:00"), "timestamp"),
    "timestamp-iso-year-10000": Case(_predicted(timestamp="+10000-01-01T00:00:00+00:00"), "schema"),
    "timestamp-int-beyond-float": Case(
        lambda m, n, t: ("predictions", _json(prediction(m, n, t), timestamp=BIG_INT)), "schema"
    ),
    # Strings past the limits: a 900 KB prediction_id (its label too), a long category.
    "huge-prediction-id": Case(
        lambda m, n, t: _predicted(prediction_id=f"{n}-" + "p" * 900_000)(m, n, t), "limit"
    ),
    "huge-prediction-id-label": Case(
        lambda m, n, t: _labelled(prediction_id=f"{n}-" + "p" * 900_000)(m, n, t), "limit"
    ),
    "long-category": Case(_features_json('{"colour": "' + "r" * 5_000 + '"}'), "limit"),
    "long-feature-name": Case(_features_json('{"' + "f" * 5_000 + '": 1.0}'), "limit"),
    # An invalid record just under the input topic's 1 MB limit: its dead letter must fit.
    "invalid-1mb": Case(lambda m, n, t: ("predictions", b"{" + b"x" * 1_048_399), "invalid_json"),
}
"""By name: every row of the fault table, and neighbours of each."""


def mixed(rng: random.Random, count: int, model_ids: list[str], now_ms: int) -> Iterator[Record]:
    """``count`` records drawn from :data:`CASES` (the 1 MB ones rarely: they cost the
    broker) plus small fuzz: valid predictions with one field replaced by garbage."""
    large = ("invalid-1mb", "huge-prediction-id", "huge-prediction-id-label")
    names = [n for n in CASES if n not in large]
    for n in range(count):
        model_id = rng.choice(model_ids)
        draw = rng.random()
        if draw < 0.002:
            case = CASES[rng.choice(["invalid-1mb", "huge-prediction-id"])]
            yield case.record(model_id, n, now_ms)
        elif draw < 0.6:
            yield CASES[rng.choice(names)].record(model_id, n, now_ms)
        else:
            yield "predictions", model_id.encode(), _garbled(rng, prediction(model_id, n, now_ms))


# By field, values its schema refuses.
_WRONG: dict[str, list[object]] = {
    "prediction_id": [None, [], {}, "", 1, True],
    "model_id": [None, [], {}, "", 1, True],
    "model_version": [None, [], {}, "", 1.5],
    "timestamp": [None, [], {}, "", "yesterday", True, "2026-01-01T00:00:00"],
    "features": [None, [], "", 1, [1], {"a": {"b": 1}}, {"a": [1]}, {"a": True, "b": {}}],
    "prediction": [None, [], {}, [1], {"yes": 1}],
}


def _garbled(rng: random.Random, value: dict[str, Any]) -> bytes:
    """A prediction the schema refuses: a required field dropped or given a wrong-typed
    value, or its JSON cut short."""
    field = rng.choice(list(_WRONG))
    choice = rng.random()
    if choice < 0.3:
        del value[field]
    elif choice < 0.8:
        value[field] = rng.choice(_WRONG[field])
    else:
        text = json.dumps(value).encode()
        return text[: rng.randrange(1, len(text) - 1)]
    return json.dumps(value).encode()
