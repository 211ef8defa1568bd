"""Training data: labelled examples in, a time-ordered training set and holdout out.

Pure: no I/O. The input is what the monitor published to ``labelled-examples``:
Kafka record values (one event or a CloudEvents batch, read with
:func:`~stream_monitor.core.events.unbatch`) or events already decoded, of type
``stream_monitor.labelled_example``. Each carries the original prediction and ground
truth verbatim; they are validated with the monitor's own schemas, so timestamps and
values mean exactly what they meant to the monitor. :func:`build_dataset` keeps the
requested model's examples whose label time falls in the requested window, drops
duplicates (the monitor delivers at least once) and events that break the contract,
orders them by prediction time and holds out the most recent slice. Too little usable
data is an :class:`InsufficientData` value, not an exception, so the trainer can
answer the request with the reason.

Feature kinds are inferred from the values: a feature with any text value is
categorical, one with only numbers is numeric (configuration can force a numeric
code to be categorical), one never present is ignored. :class:`FeatureSchema` keeps
the result so a model is always fed columns in the order and kind it was trained on,
including a production model trained months ago on other features.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import numpy as np
import orjson
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from stream_monitor.core.events import (
    LABELLED_EXAMPLE_TYPE,
    FeatureValue,
    GroundTruth,
    InvalidRecordError,
    NonEmpty,
    Prediction,
    Scalar,
    decode,
    is_number,
    iso,
    unbatch,
)
from stream_monitor.core.performance import Task
from stream_monitor.trainer.settings import TrainingSettings

MISSING_CATEGORY = "(missing)"

FeatureKind = Literal["numeric", "categorical"]
_KINDS: dict[str, FeatureKind] = {"numeric": "numeric", "categorical": "categorical"}
Features = Mapping[str, FeatureValue]


class LabelledExample(msgspec.Struct, frozen=True, gc=False):
    """The ``data`` of a labelled-example event (fields the trainer does not use are ignored)."""

    model_id: NonEmpty
    prediction_id: NonEmpty
    task: Task
    prediction: Prediction
    ground_truth: GroundTruth

    def __post_init__(self) -> None:
        # The envelope names the pair; both events must be that pair.
        p, y = self.prediction, self.ground_truth
        if {self.prediction_id, p.prediction_id, y.prediction_id} != {self.prediction_id}:
            raise ValueError("prediction_id differs between the example and its events")
        if {self.model_id, p.model_id, y.model_id} != {self.model_id}:
            raise ValueError("model_id differs between the example and its events")

    @property
    def prediction_time(self) -> float:
        return self.prediction.timestamp

    @property
    def label_time(self) -> float:
        return self.ground_truth.timestamp

    @property
    def features(self) -> dict[str, FeatureValue]:
        return self.prediction.features

    @property
    def label(self) -> Scalar:
        return self.ground_truth.label


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: FeatureKind


@dataclass(frozen=True, slots=True)
class FeatureSchema:
    """The feature columns of a model, in order, each numeric or categorical.

    >>> schema = FeatureSchema.infer([{"age": 31, "plan": "pro"}, {"age": None, "plan": 3}])
    >>> [(c.name, c.kind) for c in schema.columns]
    [('age', 'numeric'), ('plan', 'categorical')]
    >>> schema.matrix([{"plan": "free", "new_feature": 1}]).tolist()
    [[nan, 'free']]
    """

    columns: tuple[Column, ...]

    @classmethod
    def infer(cls, rows: Iterable[Features], categorical: Collection[str] = ()) -> FeatureSchema:
        kinds: dict[str, FeatureKind] = {}
        for row in rows:
            for name, value in row.items():
                if value is None:
                    continue
                text = isinstance(value, str | bool) or name in categorical
                if text or name not in kinds:
                    kinds[name] = "categorical" if text else "numeric"
        return cls(tuple(Column(name, kinds[name]) for name in sorted(kinds)))

    def matrix(self, rows: Sequence[Features]) -> np.ndarray[Any, Any]:
        """Rows as an object array in column order; absent, null or ill-typed cells are NaN.

        Unknown features are ignored; categories are text, so ``3`` and ``"3"`` agree.
        """
        out = np.full((len(rows), len(self.columns)), np.nan, dtype=object)
        for j, column in enumerate(self.columns):
            for i, row in enumerate(rows):
                value = row.get(column.name)
                if value is None:
                    continue
                if column.kind == "categorical":
                    out[i, j] = str(value)
                elif is_number(value):
                    out[i, j] = float(value)
        return out

    def preprocessor(self, max_categories: int) -> ColumnTransformer:
        """Numeric: median imputation plus a missing-indicator, then scaling (linear models
        need it, trees ignore it). Categorical: missing becomes its own category, then
        one-hot with rare categories grouped and categories unseen in training ignored."""
        numeric = [j for j, c in enumerate(self.columns) if c.kind == "numeric"]
        categorical = [j for j, c in enumerate(self.columns) if c.kind == "categorical"]
        transformers: list[tuple[str, Any, list[int]]] = []
        if numeric:
            numeric_steps = make_pipeline(
                SimpleImputer(strategy="median", add_indicator=True), StandardScaler()
            )
            transformers.append(("numeric", numeric_steps, numeric))
        if categorical:
            categorical_steps = make_pipeline(
                SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY),
                OneHotEncoder(
                    handle_unknown="ignore", max_categories=max_categories, sparse_output=False
                ),
            )
            transformers.append(("categorical", categorical_steps, categorical))
        # Dense output: histogram gradient boosting does not take sparse input.
        return ColumnTransformer(transformers, sparse_threshold=0.0)

    def to_json(self) -> list[dict[str, str]]:
        return [{"name": c.name, "kind": c.kind} for c in self.columns]

    @classmethod
    def from_json(cls, data: Iterable[Mapping[str, str]]) -> FeatureSchema:
        columns = []
        for item in data:
            kind = _KINDS.get(item["kind"])
            if kind is None:
                raise ValueError(f"unknown feature kind {item['kind']!r} for {item['name']!r}")
            columns.append(Column(item["name"], kind))
        return cls(tuple(columns))


@dataclass(frozen=True, slots=True)
class Split:
    """Examples in prediction-time order."""

    rows: tuple[Features, ...]
    labels: tuple[Scalar, ...]
    prediction_times: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.rows)

    def y(self, task: Task) -> np.ndarray[Any, Any]:
        return np.asarray(self.labels, dtype=float if task == "regression" else None)

    def summary(self) -> dict[str, Any]:
        """Size and prediction-time range, for events and metadata."""
        return {
            "examples": len(self.rows),
            "start": iso(self.prediction_times[0]),
            "end": iso(self.prediction_times[-1]),
        }


@dataclass(frozen=True, slots=True)
class Dataset:
    task: Task
    schema: FeatureSchema
    train: Split
    holdout: Split
    skipped: int
    """Records read that break the labelled-example contract (any model's: they cannot
    be attributed), plus this model's regression examples without a numeric label."""
    duplicates: int


@dataclass(frozen=True, slots=True)
class InsufficientData:
    """No trustworthy training set could be built; ``reason`` says why, for a human."""

    reason: str
    usable: int
    skipped: int
    duplicates: int


def build_dataset(
    records: Iterable[Mapping[str, Any] | bytes],
    model_id: str,
    start: float,
    end: float,
    settings: TrainingSettings,
) -> Dataset | InsufficientData:
    """The training set and holdout for ``model_id`` from examples labelled in
    ``[start, end]`` (epoch seconds).

    ``records`` are ``labelled-examples`` record values (bytes: one event or a batch)
    or decoded events (mappings), in any order.

    Of the usable examples only the ``max_examples`` most recent are kept; the most
    recent ``holdout_fraction`` of those (by prediction time) is the holdout, the rest
    the training set. Records of other models and outside the window are ignored:
    the topic is shared and the shell may read past the window's edges.
    """
    examples: dict[str, LabelledExample] = {}
    skipped = duplicates = 0
    for example in _examples(records):
        if example is None:
            skipped += 1
            continue
        if example.model_id != model_id:
            continue
        if not start <= example.label_time <= end:
            continue
        if example.prediction_id in examples:
            duplicates += 1
            continue
        examples[example.prediction_id] = example

    def insufficient(reason: str) -> InsufficientData:
        return InsufficientData(reason, len(examples), skipped, duplicates)

    tasks = {e.task for e in examples.values()}
    if len(tasks) > 1:
        return insufficient(f"examples disagree on the task ({sorted(tasks)})")
    task: Task = tasks.pop() if tasks else "classification"
    if task == "regression":
        numeric = {k: e for k, e in examples.items() if is_number(e.label)}
        skipped += len(examples) - len(numeric)
        examples = numeric
    else:
        label_types = sorted({_label_type(e.label) for e in examples.values()})
        if len(label_types) > 1:
            return insufficient(f"labels mix {' and '.join(label_types)}")

    ordered = sorted(examples.values(), key=lambda e: (e.prediction_time, e.prediction_id))
    ordered = ordered[-settings.max_examples :]
    n_holdout = math.ceil(len(ordered) * settings.holdout_fraction)
    n_train = len(ordered) - n_holdout
    if n_train < settings.min_train_examples or n_holdout < settings.min_holdout_examples:
        return insufficient(
            f"{len(ordered)} usable examples labelled between {iso(start)} and {iso(end)}: "
            f"{n_train} for training (at least {settings.min_train_examples} needed) and "
            f"{n_holdout} for the holdout (at least {settings.min_holdout_examples} needed)"
        )
    train, holdout = _split(ordered[:n_train]), _split(ordered[n_train:])
    if task == "classification" and len(set(train.labels)) < 2:
        return insufficient(f"the training set has a single class ({train.labels[0]!r})")
    schema = FeatureSchema.infer(train.rows, settings.categorical_features)
    if not schema.columns:
        return insufficient("no feature has a value in the training set")
    return Dataset(task, schema, train, holdout, skipped, duplicates)


def _examples(
    records: Iterable[Mapping[str, Any] | bytes],
) -> Iterator[LabelledExample | None]:
    """Every labelled example in ``records``; None for each that breaks the contract (a
    record that is not JSON at all counts once: its events cannot be counted)."""
    for record in records:
        if isinstance(record, bytes):
            try:
                events: list[Any] = unbatch(record)
            except orjson.JSONDecodeError:
                yield None
                continue
        else:
            events = [record]
        for event in events:
            yield _parse(event)


def _parse(event: object) -> LabelledExample | None:
    if not isinstance(event, Mapping) or event.get("type") != LABELLED_EXAMPLE_TYPE:
        return None
    try:
        return decode(LabelledExample, event.get("data"))
    except InvalidRecordError:
        return None


def _label_type(value: object) -> str:
    if isinstance(value, str):
        return "text"
    return "booleans" if isinstance(value, bool) else "numbers"


def _split(examples: Sequence[LabelledExample]) -> Split:
    return Split(
        tuple(e.features for e in examples),
        tuple(e.label for e in examples),
        tuple(e.prediction_time for e in examples),
    )
