"""Labelled examples to a training set and holdout: order, window, duplicates, kinds."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from stream_monitor.config import MonitorSettings
from stream_monitor.core.events import batched
from stream_monitor.core.monitor import MonitorCore
from stream_monitor.trainer.dataset import (
    Dataset,
    FeatureSchema,
    InsufficientData,
    build_dataset,
)
from stream_monitor.trainer.settings import TrainingSettings

from .trainer_examples import (
    LABEL_DELAY,
    STEP,
    T0,
    as_batches,
    as_bytes,
    concept,
    labelled,
)

SMALL = TrainingSettings(min_train_examples=8, min_holdout_examples=2, holdout_fraction=0.2)
WHOLE = (T0, T0 + 1e6)


def _build(
    records: list[Any],
    settings: TrainingSettings = SMALL,
    window: tuple[float, float] = WHOLE,
) -> Dataset | InsufficientData:
    return build_dataset(records, "m", window[0], window[1], settings)


def test_holdout_is_the_most_recent_slice_in_prediction_time_order() -> None:
    examples = concept(50)
    dataset = _build(list(reversed(examples)))  # arrival order must not matter
    assert isinstance(dataset, Dataset)
    assert (len(dataset.train), len(dataset.holdout)) == (40, 10)
    times = dataset.train.prediction_times + dataset.holdout.prediction_times
    assert list(times) == sorted(times)
    assert dataset.holdout.prediction_times[0] == T0 + 40 * STEP
    assert dataset.holdout.summary()["examples"] == 10


def test_holdout_size_rounds_up() -> None:
    dataset = _build(concept(11))
    assert isinstance(dataset, Dataset)
    assert len(dataset.holdout) == math.ceil(11 * 0.2) == 3


def test_window_is_on_label_time_and_other_models_are_ignored() -> None:
    examples = concept(40) + concept(40, model_id="other")
    # Labels of examples 10..29 only (label time = prediction time + delay).
    window = (T0 + 10 * STEP + LABEL_DELAY, T0 + 29 * STEP + LABEL_DELAY)
    dataset = _build(examples, window=window)
    assert isinstance(dataset, Dataset)
    assert len(dataset.train) + len(dataset.holdout) == 20
    assert dataset.skipped == 0


def _with(example: dict[str, Any], event: str, **changes: Any) -> dict[str, Any]:
    """``example`` with fields of its embedded ``prediction`` or ``ground_truth`` changed
    (a value of None removes the field)."""
    inner = {**example["data"][event], **changes}
    inner = {k: v for k, v in inner.items() if v is not None}
    return {**example, "data": {**example["data"], event: inner}}


def test_duplicates_and_broken_records_are_counted_not_fatal() -> None:
    examples = concept(30)
    broken = [
        {**examples[0], "type": "stream_monitor.drift.signal"},
        _with(examples[1], "ground_truth", label=None),
        _with(examples[2], "ground_truth", prediction_id="someone-else"),
        _with(examples[3], "prediction", model_id="other"),
        # The monitor's timestamp rules: ISO 8601 needs an offset.
        _with(examples[4], "prediction", timestamp="2023-11-15T00:00:00"),
        {**examples[5], "data": {**examples[5]["data"], "task": "ranking"}},
    ]
    records = [
        *as_bytes(examples[6:]),
        *as_bytes(examples[6:11]),
        b"{not json",
        b"[1]",
        *broken,
    ]
    dataset = _build(records)
    assert isinstance(dataset, Dataset)
    assert dataset.duplicates == 5
    assert dataset.skipped == 2 + len(broken)
    assert len(dataset.train) + len(dataset.holdout) == 24


def test_batch_records_are_unpacked() -> None:
    examples = concept(50)
    batches = as_batches(examples, max_bytes=4000)
    assert 1 < len(batches) < 50
    assert _build(batches) == _build(as_bytes(examples))
    # A batch delivered again (the monitor replayed a poll) holds only duplicates.
    again = _build([*batches, batches[0]])
    assert isinstance(again, Dataset)
    assert again.duplicates == len(json.loads(batches[0]))


def test_times_follow_the_monitors_rules() -> None:
    # Prediction time is ISO 8601 with an offset, label time epoch milliseconds; both
    # may come in either form.
    example = labelled(0, {"x": 1.0}, "yes")
    assert example["data"]["prediction"]["timestamp"] == "2023-11-14T22:13:20.000+00:00"
    assert example["data"]["ground_truth"]["timestamp"] == int((T0 + LABEL_DELAY) * 1000)
    swapped = _with(
        _with(example, "prediction", timestamp=int(T0 * 1000)),
        "ground_truth",
        timestamp="2023-11-14T23:14:20+01:00",
    )
    rows = [swapped, *concept(20, start=1)]
    dataset = _build(rows, window=(T0 + LABEL_DELAY, T0 + LABEL_DELAY))
    assert isinstance(dataset, InsufficientData) and dataset.usable == 1
    full = _build(rows)
    assert isinstance(full, Dataset) and full.train.prediction_times[0] == T0


def test_max_examples_keeps_the_most_recent() -> None:
    dataset = _build(concept(100), SMALL.model_copy(update={"max_examples": 20}))
    assert isinstance(dataset, Dataset)
    assert dataset.train.prediction_times[0] == T0 + 80 * STEP


def test_too_little_data_is_an_outcome_with_the_numbers() -> None:
    settings = TrainingSettings(min_train_examples=100, min_holdout_examples=10)
    result = _build(concept(60), settings)
    assert isinstance(result, InsufficientData)
    assert result.usable == 60
    assert "48 for training (at least 100 needed)" in result.reason
    assert "12 for the holdout" in result.reason


def test_no_examples_at_all() -> None:
    result = _build([])
    assert isinstance(result, InsufficientData)
    assert result.usable == 0


def test_a_single_class_cannot_train_a_classifier() -> None:
    examples = [labelled(i, {"x": float(i)}, "yes") for i in range(20)]
    result = _build(examples)
    assert isinstance(result, InsufficientData)
    assert "single class" in result.reason


def test_labels_mixing_text_and_numbers_are_refused() -> None:
    examples = [labelled(i, {"x": float(i)}, "yes" if i % 2 else 1) for i in range(20)]
    result = _build(examples)
    assert isinstance(result, InsufficientData)
    assert "labels mix numbers and text" in result.reason


def test_regression_drops_non_numeric_labels() -> None:
    examples = [labelled(i, {"x": float(i)}, float(i) * 2, task="regression") for i in range(20)]
    examples.append(labelled(20, {"x": 1.0}, "oops", task="regression"))
    dataset = _build(examples)
    assert isinstance(dataset, Dataset)
    assert dataset.task == "regression"
    assert dataset.skipped == 1
    assert dataset.train.y("regression").dtype == np.float64


def test_examples_that_disagree_on_the_task_are_refused() -> None:
    examples = [labelled(i, {"x": 1.0}, 1.5, task="regression") for i in range(10)]
    examples += [labelled(i, {"x": 1.0}, "a") for i in range(10, 20)]
    result = _build(examples)
    assert isinstance(result, InsufficientData)
    assert "disagree on the task" in result.reason


def test_column_kinds_are_inferred_from_values() -> None:
    rows: list[dict[str, Any]] = [
        {"age": 31, "plan": "pro", "zip": 75001, "mixed": 1, "flag": True, "never": None},
        {"age": None, "plan": None, "zip": 10115, "mixed": "one"},
    ]
    schema = FeatureSchema.infer(rows, categorical={"zip"})
    assert {c.name: c.kind for c in schema.columns} == {
        "age": "numeric",
        "flag": "categorical",
        "mixed": "categorical",
        "plan": "categorical",
        "zip": "categorical",
    }
    assert FeatureSchema.from_json(json.loads(json.dumps(schema.to_json()))) == schema


def test_matrix_maps_missing_and_ill_typed_cells_to_nan() -> None:
    schema = FeatureSchema.infer([{"age": 3.5, "plan": "pro"}])
    matrix = schema.matrix([{"age": "old", "plan": 7}, {"extra": 1}, {"age": 2, "plan": None}])
    assert matrix.dtype == object
    assert math.isnan(matrix[0, 0]) and matrix[0, 1] == "7"
    assert math.isnan(matrix[1, 0]) and math.isnan(matrix[1, 1])
    assert matrix[2, 0] == 2.0 and math.isnan(matrix[2, 1])


def test_preprocessor_handles_missing_and_unseen_categories() -> None:
    rows = [{"x": float(i) if i % 3 else None, "c": ["a", "b", None][i % 3]} for i in range(30)]
    schema = FeatureSchema.infer(rows)
    pre = schema.preprocessor(max_categories=10).fit(schema.matrix(rows))
    out = pre.transform(schema.matrix([{"x": None, "c": "never seen"}, {}, {"x": 1e9, "c": "a"}]))
    assert isinstance(out, np.ndarray)  # dense: every estimator takes it
    assert np.isfinite(out.astype(float)).all()
    # x, its missing indicator, then a / b / (missing); an unseen category is all zeros.
    assert out.shape == (3, 5)
    assert out[0, 2:].tolist() == [0.0, 0.0, 0.0]


def test_rare_categories_are_grouped() -> None:
    rows = [{"c": f"v{i}"} for i in range(100)] + [{"c": "common"}] * 100
    schema = FeatureSchema.infer(rows)
    out = schema.preprocessor(max_categories=5).fit_transform(schema.matrix(rows))
    assert out.shape[1] <= 5


def test_reads_what_the_monitor_publishes() -> None:
    core = MonitorCore(MonitorSettings())
    outputs = []
    for i in range(20):
        prediction = {
            "prediction_id": f"p{i}",
            "model_id": "m",
            "model_version": "1",
            "timestamp": int((T0 + i) * 1000),
            "features": {"x": float(i), "colour": "red" if i % 2 else None},
            "prediction": "yes",
        }
        label = {
            "prediction_id": f"p{i}",
            "model_id": "m",
            "label": "yes" if i % 3 else "no",
            "timestamp": int((T0 + i + 5) * 1000),
        }
        core.process("predictions", b"m", json.dumps(prediction).encode())
        outputs += [
            o
            for o in core.process("ground_truth", b"m", json.dumps(label).encode())
            if o.topic == "labelled_examples"
        ]
    # Packed into batch records exactly as the monitor's shell produces them.
    dataset = _build([record.value for record in batched(outputs, max_bytes=2000)])
    assert isinstance(dataset, Dataset)
    assert (dataset.skipped, len(dataset.train) + len(dataset.holdout)) == (0, 20)
    assert {c.name: c.kind for c in dataset.schema.columns} == {
        "colour": "categorical",
        "x": "numeric",
    }


@pytest.mark.parametrize("fraction", [0.1, 0.5])
def test_holdout_fraction_is_respected(fraction: float) -> None:
    settings = TrainingSettings(
        min_train_examples=1, min_holdout_examples=1, holdout_fraction=fraction
    )
    dataset = _build(concept(40), settings)
    assert isinstance(dataset, Dataset)
    assert len(dataset.holdout) == math.ceil(40 * fraction)
