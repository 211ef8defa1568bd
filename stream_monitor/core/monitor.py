"""The monitor's core: records in, records out, no I/O.

The Kafka shell and ``replay`` both feed :class:`MonitorCore` one record at a time
and produce what it returns. State is kept per ``model_id`` (the partition key), so
each model's state can be snapshotted to bytes and restored on whichever instance
owns its partition.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from stream_monitor.config import ModelSettings, MonitorSettings
from stream_monitor.core import codec
from stream_monitor.core.estimation import (
    EstimateSignal,
    EstimationStats,
    PerformanceEstimator,
    ReferenceEvent,
)
from stream_monitor.core.events import (
    LABELLED_EXAMPLE_TYPE,
    GroundTruth,
    InvalidRecordError,
    Memo,
    Output,
    OutputTopic,
    Prediction,
    dead_letter,
    deterministic_id,
    envelope,
    is_number,
    iso,
    iso_bytes,
    parse_promotion,
    parse_record,
)
from stream_monitor.core.features import FeatureDriftTracker, FeatureSignal, FeatureStats
from stream_monitor.core.intervals import ErrorSample, metric_interval
from stream_monitor.core.join import (
    DropReason,
    Joined,
    LabelJoin,
    MemoryStores,
    PendingKind,
    StoreViews,
)
from stream_monitor.core.performance import (
    PerformanceSignal,
    PerformanceTracker,
    Task,
    error_of,
    infer_task,
)
from stream_monitor.core.policy import (
    Decision,
    EpisodeState,
    decide,
    decide_estimated,
    decide_features,
)

InputTopic = Literal["predictions", "ground_truth"]
SNAPSHOT_MAGIC = b"stream-monitor/"
SNAPSHOT_FORMAT = 3
"""Incremented whenever a snapshot's layout changes. 1 was a bare pickle (version 0.1.0),
2 a pickle after a header (0.2.0); neither is ever unpickled. 3 is plain data, see
:mod:`stream_monitor.core.codec`."""


def snapshot_format(data: bytes) -> int:
    """The format a snapshot was written in (0 for bytes that are no snapshot)."""
    if data.startswith(SNAPSHOT_MAGIC) and len(data) > len(SNAPSHOT_MAGIC):
        return data[len(SNAPSHOT_MAGIC)]
    return 1 if data.startswith(b"\x80") else 0  # a pickle: the header-less format 1


def readable_snapshots(
    snapshots: Mapping[str, bytes], discard_unreadable: bool, where: Mapping[str, str] = {}
) -> tuple[dict[str, bytes], dict[str, int]]:
    """The snapshots this version can restore, and the format of each one it cannot
    (by model_id). Unless ``discard_unreadable``, an unreadable one raises
    :class:`IncompatibleSnapshotError` instead (naming where it was read, from
    ``where``): its model would lose its state.

    >>> readable_snapshots({"a": b"no snapshot"}, discard_unreadable=True)
    ({}, {'a': 0})
    """
    unreadable = {
        model_id: found
        for model_id, data in snapshots.items()
        if (found := snapshot_format(data)) != SNAPSHOT_FORMAT
    }
    if unreadable and not discard_unreadable:
        model_id, found = next(iter(unreadable.items()))
        raise IncompatibleSnapshotError(model_id, found, len(unreadable), where.get(model_id, ""))
    readable = {m: data for m, data in snapshots.items() if m not in unreadable}
    return readable, unreadable


class IncompatibleSnapshotError(ValueError):
    """A snapshot this version cannot read (written by another version of the monitor,
    or no snapshot at all: format 0)."""

    def __init__(self, model_id: str, found: int, count: int = 1, where: str = "") -> None:
        others = f" (and {count - 1} other models' snapshots)" if count > 1 else ""
        at = f" at {where}" if where else ""
        written_by = {
            0: " (no snapshot header: not written by the monitor, or damaged)",
            1: " (a pickle, written by 0.1)",
            2: " (a pickle, written by 0.2)",
        }
        super().__init__(
            f"the monitor-state snapshot of model {model_id!r}{at}{others} has format {found}"
            f"{written_by.get(found, '')}, and this version reads format {SNAPSHOT_FORMAT} only"
        )
        self.model_id = model_id
        self.found = found


class InvalidSnapshotError(ValueError):
    """A record of the state topic that claims the current format but is no valid
    snapshot: damaged, or not written by the monitor. ``where`` says where it was read
    (for example ``"monitor-state offset 12"``)."""

    def __init__(self, model_id: str, detail: str, where: str = "") -> None:
        at = f" at {where}" if where else ""
        super().__init__(
            f"the monitor-state record of model {model_id!r}{at} is not a valid snapshot "
            f"({detail}); nothing in it was run"
        )
        self.model_id = model_id
        self.detail = detail


@dataclass(slots=True)
class VersionState:
    """Everything known about one (model, version)."""

    tracker: PerformanceTracker
    features: FeatureDriftTracker
    origin: str
    """The time and id of the prediction this state began with: episode ids name it, so
    that a state begun afresh (its snapshot discarded or lost) never reuses the id of
    an episode the trainer has seen, while a replay of the same input repeats it."""
    episodes: EpisodeState = field(default_factory=EpisodeState)
    labelled: int = 0
    wait_until: int = 0
    """While a performance signal waits for labels (``tracker.following``): the
    observation at which it is settled, see ``MonitorCore._follow_up``."""
    deferred_request: tuple[int, dict[str, Any]] | None = None
    """A decided retrain request waiting for labels after the drift: (due at this many
    labelled events, its data)."""
    estimator: PerformanceEstimator | None = None
    """Estimated accuracy from calibrated scores (a classifier that sends scores)."""


@dataclass(slots=True)
class ModelState:
    """Everything known about one model: its join and its versions."""

    settings: ModelSettings
    join: LabelJoin
    versions: dict[str, VersionState] = field(default_factory=dict)
    applied_model_events: deque[str] = field(default_factory=lambda: deque(maxlen=100))
    """Ids of model events already applied, so a re-read of the topic changes nothing."""


@dataclass(frozen=True)
class VersionStats:
    task: Task
    windowed_metric: float
    labelled: int
    episode: int
    unmonitored_features: int
    estimation: EstimationStats | None = None


@dataclass(frozen=True)
class CoreStats:
    """Counters of this process's lifetime plus gauges of the current state."""

    invalid: Counter[tuple[str, str]]
    joined: int
    dropped: Counter[tuple[PendingKind, DropReason]]
    pending: dict[PendingKind, int]
    signals: Counter[tuple[str, str]]
    outputs: Counter[str]
    versions: dict[tuple[str, str], VersionStats]
    features: dict[tuple[str, str, str], FeatureStats]
    """By (model_id, model_version, column): the monitored columns at their last test."""


class MonitorCore:
    """Turns prediction and ground-truth records into drift events, retrain requests,
    escalations, labelled examples and dead letters.

    >>> import json
    >>> core = MonitorCore(MonitorSettings())
    >>> p = {"prediction_id": "p1", "model_id": "m", "model_version": "1",
    ...      "timestamp": 1_700_000_000_000, "features": {"x": 1.5}, "prediction": "cat"}
    >>> core.process("predictions", b"m", json.dumps(p).encode())
    []
    >>> y = {"prediction_id": "p1", "model_id": "m", "label": "dog",
    ...      "timestamp": "2023-11-15T00:00:00Z"}
    >>> [o.topic for o in core.process("ground_truth", b"m", json.dumps(y).encode())]
    ['labelled_examples']
    >>> [o.topic for o in core.process("ground_truth", b"m", b"not json")]
    ['dead_letter']
    """

    def __init__(
        self,
        settings: MonitorSettings,
        references: Mapping[str, Sequence[Prediction]] | None = None,
        stores: StoreViews | None = None,
    ) -> None:
        """``references``: by model_id, the prediction events of its ``reference_file``
        (see :func:`stream_monitor.reference.load_references`); ``stores``: where the
        joins keep pending entries past a checkpoint (default: in memory)."""
        self.settings = settings
        self._stores = stores or MemoryStores()
        self._references = references or {}
        self._models: dict[str, ModelState] = {}
        self._unapplied: dict[str, list[bytes]] = {}
        self._invalid: Counter[tuple[str, str]] = Counter()
        self._dropped: Counter[tuple[PendingKind, DropReason]] = Counter()
        self._signals: Counter[tuple[str, str]] = Counter()
        self._outputs: Counter[str] = Counter()
        self._joined = 0

    # ---- records -------------------------------------------------------------------

    def process(
        self, topic: InputTopic, key: bytes | None, value: bytes, clock: float | None = None
    ) -> list[Output]:
        """Handle one record of ``predictions`` or ``ground_truth``. ``clock`` (epoch
        seconds) is the shell's time, against which ``settings.limits`` bound event time;
        None (a replay of recorded data) checks no window.

        No error of one record escapes: a record the contract refuses goes to dead-letter
        with its reason, and so would one that failed in a way no check foresaw
        (reason ``unexpected``), so that one record never stops the service."""
        try:
            return self._process(topic, key, value, clock)
        except InvalidRecordError as exc:
            return [self._dead_letter(topic, key, value, exc)]
        except Exception as exc:  # a defect, not bad input: reported in the dead letter
            detail = f"{type(exc).__name__}: {exc}"
            return [self._dead_letter(topic, key, value, InvalidRecordError("unexpected", detail))]

    def _process(
        self, topic: InputTopic, key: bytes | None, value: bytes, clock: float | None
    ) -> list[Output]:
        event = self.parse(topic, key, value, clock)
        model = self._model(event.model_id)
        if isinstance(event, Prediction):
            outputs = self._on_prediction(model, event)
            joined = model.join.add_prediction(event, value)
        else:
            outputs = []
            joined = model.join.add_label(event, value)
        if model.join.has_dropped:
            self._dropped.update(model.join.take_dropped())
        if joined is None:
            return self._counted(outputs)
        try:
            outputs += self._on_joined(model, joined)
        except InvalidRecordError as exc:
            # The pair cannot be scored (a text label for a regression model, say): the
            # record at fault goes to dead-letter, whichever of the two it is.
            if is_number(joined.prediction.prediction):
                bad = self._dead_letter("ground_truth", key, joined.label_raw, exc)
            else:
                bad = self._dead_letter("predictions", key, joined.prediction_raw, exc)
            return [*self._counted(outputs), bad]
        return self._counted(outputs)

    def parse(
        self, topic: InputTopic, key: bytes | None, value: bytes, clock: float | None = None
    ) -> Prediction | GroundTruth:
        """One record of an input topic as its event, checked against the contract and
        ``settings.limits`` (event time around ``clock``); :class:`InvalidRecordError`
        says why not."""
        if topic == "predictions":
            return parse_record(Prediction, key, value, self.settings.limits, clock)
        return parse_record(GroundTruth, key, value, self.settings.limits, clock)

    def _counted(self, outputs: list[Output]) -> list[Output]:
        for output in outputs:
            self._outputs[output.topic] += 1
        return outputs

    def _model(self, model_id: str) -> ModelState:
        model = self._models.get(model_id)
        if model is None:
            join = self.settings.join
            store = self._stores.view(model_id)
            model = ModelState(
                self.settings.for_model(model_id),
                LabelJoin(join.ttl_seconds, join.max_skew_seconds, store),
            )
            self._models[model_id] = model
            # A new model has no detectors to reset: promotions seen before it are moot.
            self._unapplied.pop(model_id, None)
        return model

    def _version(self, model: ModelState, prediction: Prediction) -> VersionState:
        version = model.versions.get(prediction.model_version)
        if version is None:
            settings = model.settings
            task = settings.performance.task
            if task == "auto":
                task = infer_task(prediction.prediction, prediction.scores is not None)
            estimator = None
            if (
                settings.estimation.enabled
                and task == "classification"
                and prediction.scores is not None
            ):
                estimator = PerformanceEstimator(
                    settings.estimation,
                    settings.features.test_every,
                    settings.features.expected_run_time,
                    settings.features.recovery_p_value,
                )
            features = FeatureDriftTracker(
                settings.features, task, shared_tests=1 if estimator else 0
            )
            # Labelled reference events calibrate the estimate before any live label.
            for event in self._references.get(prediction.model_id, ()):
                if estimator and isinstance(event, ReferenceEvent) and event.label is not None:
                    estimator.observe_label(
                        event.prediction, event.label, event.scores, event.timestamp
                    )
            # A reference given in a file takes the place of the version's first events.
            for event in self._references.get(prediction.model_id, ())[
                : settings.features.reference_size
            ]:
                features.update(event.features, event.prediction, event.scores)
            origin = f"{prediction.timestamp!r}/{prediction.prediction_id}"
            version = VersionState(
                PerformanceTracker(settings.performance, task),
                features,
                origin,
                estimator=estimator,
            )
            model.versions[prediction.model_version] = version
        return version

    def _on_prediction(self, model: ModelState, prediction: Prediction) -> list[Output]:
        """Feature and prediction drift: the label-free early warning."""
        version = self._version(model, prediction)
        outputs = []
        if version.estimator is not None:
            estimated = version.estimator.observe_prediction(
                prediction.prediction,
                prediction.scores,
                prediction.timestamp,
                version.features.tests,
            )
            if estimated is not None:
                outputs = self._on_estimated(model, version, prediction, estimated)
        signals = version.features.update(
            prediction.features, prediction.prediction, prediction.scores
        )
        if not signals:
            return outputs
        decision = decide_features(
            model.settings.policy,
            version.episodes,
            len(version.features.drifted_features()),
            version.features.monitored_inputs,
            [s.detail for s in signals if s.detail is not None],
            prediction.timestamp,
        )
        for signal in signals:
            self._signals[signal.test, decision.severity] += 1
        return outputs + _feature_outputs(model, version, prediction, signals, decision)

    def _on_estimated(
        self,
        model: ModelState,
        version: VersionState,
        prediction: Prediction,
        signal: EstimateSignal,
    ) -> list[Output]:
        """A confirmed drop of the estimated accuracy: see ``policy.decide_estimated``."""
        decision = decide_estimated(
            model.settings.policy,
            version.episodes,
            signal.drop,
            model.settings.estimation.retrain_on_drop,
            prediction.timestamp,
        )
        self._signals["estimated_performance", decision.severity] += 1
        return _estimated_outputs(model, version, prediction, signal, decision)

    def _on_joined(self, model: ModelState, joined: Joined) -> list[Output]:
        prediction, label = joined.prediction, joined.label
        version = self._version(model, prediction)
        try:
            error = error_of(version.tracker.task, prediction.prediction, label.label)
        except TypeError as exc:
            raise InvalidRecordError("schema", f"cannot score this pair: {exc}") from None
        version.labelled += 1
        self._joined += 1
        if version.estimator is not None:
            version.estimator.observe_label(
                prediction.prediction, label.label, prediction.scores, prediction.timestamp
            )

        outputs = [_labelled_example(joined, version.tracker.task)]
        if version.deferred_request and version.labelled >= version.deferred_request[0]:
            request = _retrain_request(model, version, version.deferred_request[1], label.timestamp)
            outputs.append(request)
            version.deferred_request = None
        signals = version.tracker.update(error)
        if version.tracker.following:
            # Another detector's view of a change being followed adds nothing: its
            # "before" would hold errors of the change, and its "after" would be chosen
            # again from the worst-looking stretch. The followed comparison grows instead.
            self._follow_up(model, version, joined, outputs)
            return outputs
        for signal in signals:
            self._decide(model, version, joined, signal, outputs)
        return outputs

    def _decide(
        self,
        model: ModelState,
        version: VersionState,
        joined: Joined,
        signal: PerformanceSignal,
        outputs: list[Output],
        final: bool = False,
    ) -> Decision:
        """Ask the policy about a signal and emit what it decided. A signal whose change
        is unclear is followed up (one drift event says so); a settled one ends the
        follow-up."""
        tracker = version.tracker
        decision = decide(
            model.settings.policy,
            version.episodes,
            tracker.task,
            signal,
            version.labelled,
            joined.label.timestamp,
            final,
        )
        followed = tracker.following
        if decision.waiting and not followed:
            tracker.follow(signal)
            version.wait_until = tracker.observations + model.settings.policy.max_wait_labels
        elif not decision.waiting:
            tracker.stop_following()
        if decision.waiting and followed and decision.action == "none":
            return decision  # still waiting: nothing new to say
        self._signals[signal.detector, decision.severity] += 1
        outputs.extend(_decision_outputs(model, version, joined, signal, decision))
        return decision

    def _follow_up(
        self, model: ModelState, version: VersionState, joined: Joined, outputs: list[Output]
    ) -> None:
        """Detectors fire as soon as a change is significant, often when few labels
        after it are in: the policy then waits. At every later label the followed signal
        (its after grown by the new errors) is decided again, silently until the
        decision is settled, and settled at the latest after ``max_wait_labels``."""
        tracker = version.tracker
        signal = tracker.followed()
        assert signal is not None
        final = tracker.observations >= version.wait_until
        self._decide(model, version, joined, signal, outputs, final)

    def _dead_letter(
        self, topic: InputTopic, key: bytes | None, value: bytes, exc: InvalidRecordError
    ) -> Output:
        self._invalid[topic, exc.reason] += 1
        self._outputs["dead_letter"] += 1
        return dead_letter(topic, key, value, exc, self.settings.limits.dead_letter_max_bytes)

    # ---- state ---------------------------------------------------------------------

    def models(self) -> list[str]:
        return list(self._models)

    def snapshot(self, model_id: str) -> bytes:
        """One model's whole state as bytes (join, detectors, episodes): a header and
        the state as plain data (:mod:`stream_monitor.core.codec`)."""
        return SNAPSHOT_MAGIC + bytes([SNAPSHOT_FORMAT]) + codec.dumps(self._models[model_id])

    def restore(self, model_id: str, data: bytes, where: str = "") -> None:
        """Replace one model's state with a snapshot from :meth:`snapshot`.

        Raises :class:`IncompatibleSnapshotError` for a snapshot of another format (the
        pickles of 0.1 and 0.2 are refused unread), and :class:`InvalidSnapshotError`
        (naming the model and ``where``) for bytes that are no valid snapshot. Reading
        one runs no code named by the data: only the classes on the codec's allowlist
        are made, from plain data.

        The model's settings and its join's bounds come from this process (pending
        events past tighter bounds are dropped and counted); its detectors keep the
        settings they were built with.
        """
        found = snapshot_format(data)
        if found != SNAPSHOT_FORMAT:
            raise IncompatibleSnapshotError(model_id, found, where=where)
        try:
            state = codec.loads(data[len(SNAPSHOT_MAGIC) + 1 :])
        except codec.CodecError as exc:
            raise InvalidSnapshotError(model_id, str(exc), where) from None
        if not isinstance(state, ModelState):
            held = type(state).__name__
            raise InvalidSnapshotError(model_id, f"it holds a {held}, not a model's state", where)
        state.settings = self.settings.for_model(model_id)
        state.join.bound(self.settings.join.ttl_seconds, self.settings.join.max_skew_seconds)
        state.join.attach(self._stores.view(model_id))  # see LabelJoin.needs_rebuild
        self._dropped.update(state.join.take_dropped())
        self._models[model_id] = state
        for value in self._unapplied.pop(model_id, []):
            self.apply_model_event(value)

    def apply_model_event(self, value: bytes) -> str | None:
        """Apply a ``model.promoted`` event from the trainer; returns what it did.

        The promoted version starts with fresh detectors (and, with them, a fresh
        reference), and every other version's cooldown ends (and any change it still
        followed), so a version still serving traffic can ask again. Events are applied
        once per id; an event for a model this instance has not loaded yet waits until
        the model is restored or created.
        """
        promotion = parse_promotion(value)
        if promotion is None:
            return None  # a rejection, or not ours to judge: the trainer validates its events
        event_id, model_id, version = promotion.event_id, promotion.model_id, promotion.version
        model = self._models.get(model_id)
        if model is None:
            self._unapplied.setdefault(model_id, []).append(value)
            return f"model {model_id} not loaded here; promotion to {version} kept for later"
        if event_id in model.applied_model_events:
            return None
        model.applied_model_events.append(event_id)
        model.versions.pop(version, None)
        for state in model.versions.values():
            state.episodes.cooldown_until = float("-inf")
            # A change still followed belongs to the episode the promotion answered.
            state.tracker.stop_following()
        return f"model {model_id}: version {version} promoted, detectors reset"

    def join(self, model_id: str) -> LabelJoin:
        return self._models[model_id].join

    def checkpoint_join(self, model_id: str) -> int:
        """Write what the model's join changed to its store (before :meth:`snapshot`,
        which then names this checkpoint); returns the checkpoint's number."""
        join = self._models[model_id].join
        sequence = join.checkpoint()
        self._dropped.update(join.take_dropped())
        return sequence

    def forget(self, model_id: str) -> None:
        """Drop a model's state (its partition moved to another instance)."""
        self._models.pop(model_id, None)

    def stats(self) -> CoreStats:
        pending: dict[PendingKind, int] = {"prediction": 0, "label": 0}
        versions = {}
        features = {}
        for model_id, model in self._models.items():
            pending["prediction"] += model.join.pending("prediction")
            pending["label"] += model.join.pending("label")
            for name, version in model.versions.items():
                versions[model_id, name] = VersionStats(
                    version.tracker.task,
                    version.tracker.windowed_metric,
                    version.labelled,
                    version.episodes.episode,
                    version.features.unmonitored,
                    version.estimator.stats() if version.estimator else None,
                )
                for column, column_stats in version.features.feature_stats().items():
                    features[model_id, name, column] = column_stats
        return CoreStats(
            invalid=Counter(self._invalid),
            joined=self._joined,
            dropped=Counter(self._dropped),
            pending=pending,
            signals=Counter(self._signals),
            outputs=Counter(self._outputs),
            versions=versions,
            features=features,
        )


def _labelled_example(joined: Joined, task: Task) -> Output:
    """The prediction and its ground truth, both exactly as the serving app sent them."""
    p, y = joined.prediction, joined.label
    key, head, after_id, after_time, after_pid, between, tail = _templates[
        p.model_id, p.model_version, task
    ]
    pid = orjson.dumps(p.prediction_id)[1:-1]  # escaped, without its quotes
    body = b"".join(
        (
            head,
            pid,
            after_id,
            iso_bytes(y.timestamp),
            after_time,
            pid,
            after_pid,
            # Byte for byte, unparsed: fields the monitor does not know are kept too.
            joined.prediction_raw,
            between,
            joined.label_raw,
            tail,
        )
    )
    # Positional: a named tuple made with keywords takes twice as long.
    return Output("labelled_examples", key, body, (), y.timestamp)


# Stand-ins for the fields that change from one labelled example to the next.
_PID, _TIME, _PREDICTION, _LABEL = "\0prediction_id\0", "\0time\0", "\0prediction\0", "\0label\0"


def _labelled_template(version: tuple[str, str, Task]) -> tuple[bytes, ...]:
    """The labelled examples of a model version as their record key and the bytes
    around their varying parts: its :func:`envelope` with stand-ins, split at them.
    Joining bytes costs half as much as building and serialising the envelope for each
    example."""
    model_id, model_version, task = version
    data = {
        "model_id": model_id,
        "model_version": model_version,
        "prediction_id": _PID,
        "task": task,
        "prediction": _PREDICTION,
        "ground_truth": _LABEL,
    }
    # prediction_id is unique per model, so this id is unique and deterministic; a
    # uuid5 would cost more than the rest of the event on this hot path.
    event_id = f"labelled/{model_id}/{_PID}"
    body = orjson.dumps(envelope(LABELLED_EXAMPLE_TYPE, event_id, _TIME, model_id, data))
    pid, time = (orjson.dumps(mark)[1:-1] for mark in (_PID, _TIME))
    prediction, label = (orjson.dumps(mark) for mark in (_PREDICTION, _LABEL))
    parts = []
    for mark in (pid, time, pid, prediction, label):  # in the order envelope() writes them
        part, found, body = body.partition(mark)
        if not found:
            raise AssertionError(f"labelled example template: {mark!r} not where expected")
        parts.append(part)
    return (model_id.encode(), *parts, body)


# By (model_id, model_version, task).
_templates = Memo(_labelled_template)


def _decision_outputs(
    model: ModelState,
    version: VersionState,
    joined: Joined,
    signal: PerformanceSignal,
    decision: Decision,
) -> list[Output]:
    p = joined.prediction
    now = joined.label.timestamp
    task = version.tracker.task
    metric = "accuracy" if task == "classification" else "mae"

    confidence = model.settings.policy.confidence

    def as_metric(error: float) -> float:
        return 1.0 - error if task == "classification" else error

    def interval(sample: ErrorSample) -> list[float]:
        return list(metric_interval(sample, task == "classification", confidence))

    evidence = {
        "detector": signal.detector,
        "metric": metric,
        "before": as_metric(signal.error_before),
        "before_observations": signal.before.count,
        "before_interval": interval(signal.before),
        "after": as_metric(signal.error_after),
        "after_observations": signal.after.count,
        "after_interval": interval(signal.after),
        "confidence": confidence,
        "change": decision.change,
        "change_interval": list(decision.interval) if decision.interval else None,
        "windowed": version.tracker.windowed_metric,
        "window_size": model.settings.performance.window_size,
        "observations": signal.observations,
        "labelled": version.labelled,
        "detected_at": iso(now),
    }
    advice = (
        f"{metric} moved from {evidence['before']:.4g} (n={signal.before.count}) to "
        f"{evidence['after']:.4g} (n={signal.after.count}): {decision.reason}. Check the "
        "input data, upstream changes and the last retrains of this model."
    )
    signal_id = ("performance", signal.detector, signal.observations)
    return _signal_events(
        model, version, p, now, "performance", signal_id, evidence, decision, advice
    )


def _estimated_outputs(
    model: ModelState,
    version: VersionState,
    prediction: Prediction,
    signal: EstimateSignal,
    decision: Decision,
) -> list[Output]:
    estimate = signal.estimate
    evidence: dict[str, Any] = {
        "metric": "accuracy",
        "estimate": estimate.accuracy,
        "interval": [estimate.low, estimate.high],
        "interval_level": model.settings.estimation.interval_level,
        "reference": signal.reference,
        "drop": signal.drop,
        "z": signal.z,
        "threshold": signal.threshold,
        "p_value": signal.p_value,
        "window": {
            "size": estimate.size,
            "first": estimate.first,
            "last": estimate.last,
            "start": iso(estimate.start),
            "end": iso(estimate.end),
        },
        "labelled": version.labelled,
        "detected_at": iso(prediction.timestamp),
    }
    for name in ("precision", "recall", "f1", "roc_auc"):
        value = getattr(estimate, name)
        if value is not None:
            evidence[f"estimated_{name}"] = value
    advice = "an estimate is not escalated"  # decide_estimated never escalates
    signal_id = ("estimated", estimate.last)
    return _signal_events(
        model,
        version,
        prediction,
        prediction.timestamp,
        "estimated_performance",
        signal_id,
        evidence,
        decision,
        advice,
    )


def _feature_outputs(
    model: ModelState,
    version: VersionState,
    prediction: Prediction,
    signals: list[FeatureSignal],
    decision: Decision,
) -> list[Output]:
    now = prediction.timestamp
    drifted = version.features.drifted_features()
    evidence = {
        "features": [
            {
                "feature": s.feature,
                "kind": s.kind,
                "test": s.test,
                "score": s.score,
                "threshold": s.threshold,
                "p_value": s.p_value,
                "psi": s.psi,
                "detail": s.detail,
            }
            for s in signals
        ],
        "drifting_inputs": drifted,
        "monitored_inputs": version.features.monitored_inputs,
        "share": decision.change,
        "observations": version.features.observations,
        "detected_at": iso(now),
    }
    advice = (
        f"{decision.reason}. {len(drifted)} of {version.features.monitored_inputs} input "
        "features drift now. Retraining cannot fix a broken input: look for the upstream "
        "change (a schema, a unit, a pipeline) first."
    )
    kind = (
        "feature" if any(s.kind not in ("prediction", "score") for s in signals) else "prediction"
    )
    signal_id = ("features", version.features.observations)
    return _signal_events(
        model, version, prediction, now, kind, signal_id, evidence, decision, advice
    )


def _signal_events(
    model: ModelState,
    version: VersionState,
    prediction: Prediction,
    now: float,
    kind: str,
    signal_id: tuple[object, ...],
    evidence: dict[str, Any],
    decision: Decision,
    advice: str,
) -> list[Output]:
    """The drift event of a signal, and the retrain request or escalation it decided."""
    model_id, model_version = prediction.model_id, prediction.model_version
    data: dict[str, Any] = {
        "model_id": model_id,
        "model_version": model_version,
        "kind": kind,
        "severity": decision.severity,
        "action": decision.action,
        "episode": decision.episode,
        "reason": decision.reason,
        "evidence": evidence,
    }
    wait = model.settings.policy.retrain_after_labels
    if decision.action == "retrain":
        data["retrain_after_labels"] = wait
    event_id = deterministic_id("signal", model_id, model_version, *signal_id)
    outputs = [
        Output.event(
            "drift_events",
            model_id,
            envelope("stream_monitor.drift.signal", event_id, now, model_id, data),
            timestamp=now,
        )
    ]
    if decision.action == "retrain" and wait:
        version.deferred_request = (version.labelled + wait, data)
    elif decision.action == "retrain":
        outputs.append(_retrain_request(model, version, data, now))
    elif decision.action == "escalate":
        data["advice"] = advice
        outputs.append(_episode_event("escalations", "escalation", data, now, version.origin))
    return outputs


def _retrain_request(
    model: ModelState, version: VersionState, data: dict[str, Any], now: float
) -> Output:
    """The episode's retrain request, asking for the labelled data up to ``now``."""
    window = model.settings.policy.training_window_seconds
    request = {**data, "training_window": {"start": iso(now - window), "end": iso(now)}}
    return _episode_event("retrain_requests", "retrain.requested", request, now, version.origin)


def _episode_event(
    topic: OutputTopic, kind: str, data: dict[str, Any], now: float, origin: str
) -> Output:
    """An event that must be sent once per drift episode: its id names the episode and
    the start of the version's state (``origin``, see :attr:`VersionState.origin`)."""
    model_id = data["model_id"]
    parts = (kind, model_id, data["model_version"], origin, data["episode"])
    event_id = deterministic_id(*parts)
    body = envelope(f"stream_monitor.{kind}", event_id, now, model_id, data)
    return Output.event(topic, model_id, body, timestamp=now)
