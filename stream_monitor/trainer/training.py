"""Retraining: a retrain request and labelled examples in, an outcome and its events out.

:func:`retrain` is pure apart from the fit itself: it builds the training set and
holdout, fits the configured estimator, scores candidate and production model on the
same holdout and applies :func:`~stream_monitor.trainer.decision.decide_promotion`.
Its :class:`Outcome` holds everything the trainer stores and publishes.
:func:`handle_request` adds the registry around it (idempotency, registration,
promotion), so the Kafka shell only reads requests and examples, publishes the
recorded events and commits. A production model or candidate that fails the
registry's integrity check is an escalated rejection, never an exception, so a
tampered registry cannot make the service crash and retry forever.

Event ids derive from the request id, so a replayed or duplicated request can never
put two different answers on the topics.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, model_validator
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    mean_absolute_error,
    r2_score,
    root_mean_squared_error,
)
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # sklearn's own

from stream_monitor.core.events import (
    EventTime,
    InvalidRecordError,
    NonEmpty,
    Output,
    OutputTopic,
    describe_briefly,
    deterministic_id,
    envelope,
    iso,
)
from stream_monitor.core.performance import Task
from stream_monitor.trainer.dataset import Dataset, InsufficientData, build_dataset
from stream_monitor.trainer.decision import (
    PromotionCode,
    check_retrain_budget,
    decide_promotion,
)
from stream_monitor.trainer.registry import (
    HandledRequest,
    ModelRegistry,
    RegistryError,
    StoredModel,
    check_name,
)
from stream_monitor.trainer.settings import (
    ESTIMATORS,
    EstimatorSettings,
    MetricName,
    TrainingSettings,
)

OutcomeCode = (
    PromotionCode
    | Literal[
        "insufficient_data",
        "retrain_budget",
        "training_failed",
        "production_invalid",
        "candidate_invalid",
        "unknown_model",
        "incomplete_data",
    ]
)

# ---- the request ---------------------------------------------------------------------


class _Contract(BaseModel):
    # The monitor may add fields; the trainer relies on these only.
    model_config = ConfigDict(frozen=True, extra="ignore")


class TrainingWindow(_Contract):
    start: EventTime
    end: EventTime

    @model_validator(mode="after")
    def _ordered(self) -> TrainingWindow:
        if self.start > self.end:
            raise ValueError("training_window.start is after its end")
        return self


def _registry_name(value: str) -> str:
    try:
        return check_name("this", value)
    except RegistryError as exc:
        raise ValueError(str(exc)) from None


RegistryName = Annotated[str, AfterValidator(_registry_name)]
"""An id the registry can store: it names a directory or a file there."""


MAX_PARTITIONS = 10_000


def _offsets(value: dict[int, int] | None) -> dict[int, int] | None:
    if value is None:
        return None
    if len(value) > MAX_PARTITIONS:
        raise ValueError(f"labelled_examples names more than {MAX_PARTITIONS} partitions")
    if any(p < 0 or o < 0 for p, o in value.items()):
        raise ValueError("labelled_examples partitions and offsets must not be negative")
    return value


class RetrainRequestData(_Contract):
    model_id: RegistryName
    model_version: NonEmpty
    episode: int
    training_window: TrainingWindow
    labelled_examples: Annotated[dict[int, int] | None, AfterValidator(_offsets)] = None
    """How far the model's labelled examples reach when the monitor asked: the end
    offset (exclusive) of each ``labelled-examples`` partition holding them, after the
    monitor's flush of the examples before the request. The trainer reads exactly to
    there. Absent (an older monitor): up to the topic's end when the read begins."""


class IncompleteExamplesError(Exception):
    """The labelled examples a request names did not become readable in time; the
    message says which and how far they reached."""


class RetrainRequest(_Contract):
    """A ``stream_monitor.retrain.requested`` envelope from the monitor."""

    id: RegistryName
    type: Literal["stream_monitor.retrain.requested"]
    time: EventTime
    data: RetrainRequestData


def training_window(request: RetrainRequest, settings: TrainingSettings) -> tuple[float, float]:
    """The window to train on: the request's, cut to its most recent
    ``settings.max_window_seconds`` (a request may ask for years of data).

    >>> request = RetrainRequest.model_validate({"id": "r", "time": 0,
    ...     "type": "stream_monitor.retrain.requested", "data": {"model_id": "m",
    ...     "model_version": "1", "episode": 1,
    ...     "training_window": {"start": 0, "end": 100_000_000_000}}})
    >>> training_window(request, TrainingSettings(max_window_seconds=86_400))
    (99913600.0, 100000000.0)
    """
    window = request.data.training_window
    return max(window.start, window.end - settings.max_window_seconds), window.end


def parse_request(value: bytes) -> RetrainRequest:
    """Validate one ``retrain-requests`` value; :class:`InvalidRecordError` if it is not one."""
    try:
        return RetrainRequest.model_validate_json(value)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise InvalidRecordError("invalid_json", str(exc.errors()[0]["msg"])) from None
        raise InvalidRecordError("schema", describe_briefly(exc)) from None


# ---- metrics and estimators ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Metric:
    name: MetricName
    task: Task
    higher_is_better: bool
    score: Callable[[Any, Any], float]


def _f1_macro(y_true: Any, y_pred: Any) -> float:
    return float(f1_score(y_true, y_pred, average="macro", zero_division=0))


METRICS: dict[MetricName, Metric] = {
    "accuracy": Metric("accuracy", "classification", True, accuracy_score),
    "balanced_accuracy": Metric(
        "balanced_accuracy", "classification", True, balanced_accuracy_score
    ),
    "f1_macro": Metric("f1_macro", "classification", True, _f1_macro),
    "mae": Metric("mae", "regression", False, mean_absolute_error),
    "rmse": Metric("rmse", "regression", False, root_mean_squared_error),
    "r2": Metric("r2", "regression", True, r2_score),
}
DEFAULT_METRIC: dict[Task, MetricName] = {"classification": "accuracy", "regression": "mae"}


def metric_for(settings: TrainingSettings, task: Task) -> Metric:
    """The configured metric, or the task's default; ValueError if it does not fit the task."""
    metric = METRICS[settings.metric or DEFAULT_METRIC[task]]
    if metric.task != task:
        raise ValueError(f"metric {metric.name} is for {metric.task}, this model does {task}")
    return metric


def build_estimator(settings: EstimatorSettings, task: Task) -> Any:
    """A fresh estimator from the allow-list; ValueError if the name has none for ``task``.

    ``random_state`` is 0 unless configured, so the same data gives the same model.
    """
    cls = ESTIMATORS[settings.name].get(task)
    if cls is None:
        fitting = sorted(name for name, by_task in ESTIMATORS.items() if task in by_task)
        raise ValueError(f"estimator {settings.name} cannot do {task}; use one of {fitting}")
    estimator = cls(**settings.params)
    if "random_state" in estimator.get_params() and "random_state" not in settings.params:
        estimator.set_params(random_state=0)
    return estimator


# ---- the outcome ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Candidate:
    pipeline: Any
    score: float
    fit_seconds: float


@dataclass(frozen=True, slots=True)
class Outcome:
    """The answer to one retrain request.

    ``candidate`` is the trained model (None when nothing was trained). The caller
    registers it (promoted or not, so a data scientist can inspect a rejected one),
    then asks :meth:`events` for what to publish, naming the registered version.
    """

    request: RetrainRequest
    settings: TrainingSettings
    code: OutcomeCode
    reason: str
    promote: bool = False
    escalation: str | None = None
    """Why a human must look; None when automation handled it."""
    advice: str | None = None
    """What a data scientist should look at, with the escalation."""
    dataset: Dataset | InsufficientData | None = None
    metric: Metric | None = None
    candidate: Candidate | None = None
    champion: StoredModel | None = None
    champion_score: float | None = None
    """None when there is no champion or it could not be scored."""

    @property
    def model_id(self) -> str:
        return self.request.data.model_id

    def metadata(self) -> dict[str, Any]:
        """What the registry stores beside the candidate's artefact."""
        if self.candidate is None or not isinstance(self.dataset, Dataset):
            raise ValueError("nothing was trained for this request")
        return {
            **self._summary(),
            "candidate": {"score": self.candidate.score},
            "task": self.dataset.task,
            "features": self.dataset.schema.to_json(),
            "fit_seconds": round(self.candidate.fit_seconds, 3),
        }

    def events(self, candidate_version: int | None) -> tuple[Output, ...]:
        """``model.promoted`` or ``model.rejected`` to ``model_events``, and an
        ``escalation`` to ``escalations`` when a human must look.

        ``candidate_version`` is the registry version of the candidate (None exactly
        when nothing was trained).
        """
        if (candidate_version is None) != (self.candidate is None):
            raise ValueError("pass the registered candidate's version, and only if one exists")
        candidate = None
        if self.candidate is not None:
            candidate = {"version": str(candidate_version), "score": self.candidate.score}
        champion_version = None if self.champion is None else str(self.champion.version)
        data = {
            **self._summary(),
            "production_version": str(candidate_version) if self.promote else champion_version,
            "candidate": candidate,
        }
        kind = "model.promoted" if self.promote else "model.rejected"
        # One id for either answer: consumers see at most one answer per request.
        answer = self._event("model_events", kind, "model.decision", data)
        if self.escalation is None:
            return (answer,)
        escalation = {
            "model_id": self.model_id,
            "model_version": self.request.data.model_version,
            "kind": _ESCALATION_KIND.get(self.code, "retraining"),
            "severity": "critical",
            "action": "escalate",
            "episode": self.request.data.episode,
            "request_id": self.request.id,
            "reason": self.escalation,
            "advice": self.advice,
            "evidence": data,
        }
        return answer, self._event("escalations", "escalation", "trainer.escalation", escalation)

    def _event(self, topic: OutputTopic, kind: str, id_kind: str, data: dict[str, Any]) -> Output:
        # Keyed by model_id and stamped with the request's event time, like the monitor's.
        when = self.request.time
        event_id = deterministic_id(id_kind, self.request.id)
        body = envelope(f"stream_monitor.{kind}", event_id, when, self.model_id, data)
        return Output.event(topic, self.model_id, body, when)

    def _summary(self) -> dict[str, Any]:
        """Everything about the decision except the candidate's registry version."""
        request, window = self.request, self.request.data.training_window
        start, end = training_window(request, self.settings)
        champion = None
        if self.champion is not None:
            champion = {"version": str(self.champion.version), "score": self.champion_score}
        return {
            "model_id": self.model_id,
            "decision": "promoted" if self.promote else "rejected",
            "reason_code": self.code,
            "reason": self.reason,
            "champion": champion,
            "metric": None if self.metric is None else self.metric.name,
            "higher_is_better": None if self.metric is None else self.metric.higher_is_better,
            "margin": self.settings.promotion_margin,
            "floor": self.settings.floor,
            "request": {
                "id": request.id,
                "model_version": request.data.model_version,
                "episode": request.data.episode,
                "time": iso(request.time),
            },
            "training_window": {"start": iso(start), "end": iso(end)},
            **(
                {"requested_window": {"start": iso(window.start), "end": iso(window.end)}}
                if start > window.start
                else {}
            ),
            "data": self._data_summary(),
            "estimator": self.settings.estimator.model_dump(),
            "escalated": self.escalation is not None,
        }

    def _data_summary(self) -> dict[str, Any]:
        dataset = self.dataset
        if isinstance(dataset, Dataset):
            return {
                "train": dataset.train.summary(),
                "holdout": dataset.holdout.summary(),
                "skipped": dataset.skipped,
                "duplicates": dataset.duplicates,
            }
        if isinstance(dataset, InsufficientData):
            return {
                "usable": dataset.usable,
                "skipped": dataset.skipped,
                "duplicates": dataset.duplicates,
            }
        return {}


_ESCALATION_KIND: dict[OutcomeCode, str] = {
    "retrain_budget": "retrain_budget",
    "production_invalid": "registry_integrity",
    "candidate_invalid": "registry_integrity",
}
"""What an escalation is about, when it is not the retraining itself."""

# ---- retraining ----------------------------------------------------------------------

_ADVICE: dict[OutcomeCode, str] = {
    "lost": "Retraining on the recent window made the model worse. Check the labels in the "
    "window (delays, errors, a changed labelling rule), upstream changes to the features, "
    "and whether the window mixes data from before and after the change.",
    "within_margin": "Production is below the floor and a model retrained on recent data "
    "does no better: the shift is beyond what this estimator learns from these features. "
    "See this model's drift-events for what moved; consider new features, another "
    "estimator or another training window.",
    "below_floor": "The best model retraining could produce is below the floor: see this "
    "model's drift-events for what moved; consider new features or another estimator.",
    "won": "The new model is better and now in production, but still below the floor: see "
    "this model's drift-events for what moved; consider new features or another estimator.",
    "no_score": "The candidate's holdout score is not a number: check the holdout labels and "
    "the configured metric.",
    "training_failed": "Fix the estimator or metric in the trainer settings for this model "
    "(models.<model_id>), or the labelled data, then ask for a retrain again.",
    "retrain_budget": "Every retrain is followed by new drift: look for an upstream data "
    "problem (a broken feature, a unit or encoding change) or a concept changing faster "
    "than retraining follows; automatic retraining resumes once the window has passed.",
    "production_invalid": "The registry's production model fails its integrity check: its "
    "artefact or metadata changed after registration. Find out who or what wrote to the "
    "registry before any serving app reloads it, restore the version from a backup or "
    "promote a verified one, then ask for a retrain again. No candidate was trained.",
    "candidate_invalid": "The candidate's artefact changed between registration and "
    "promotion: find out who or what writes to the registry, then ask for a retrain again.",
    "unknown_model": "Add the model under models: in the trainer's settings (an empty "
    "entry takes the defaults) if it should be retrained automatically.",
    "incomplete_data": "The labelled examples the monitor wrote before asking are not "
    "readable on the broker: check the labelled-examples topic (under-replicated "
    "partitions, a broker away, retention), then ask for a retrain again.",
}
_CHAMPION_ADVICE = (
    "Compare the production model's features (its registry metadata) with what serving "
    "apps send now."
)


def retrain(
    request: RetrainRequest,
    examples: Iterable[Mapping[str, Any] | bytes],
    champion: StoredModel | None,
    settings: TrainingSettings,
    previous_requests: Iterable[float] = (),
    arrived_at: float | None = None,
) -> Outcome:
    """Answer one retrain request.

    ``examples`` are ``labelled-examples`` values (envelopes as dicts or JSON bytes),
    at least those labelled within the request's :func:`training_window`; their
    iteration may raise :class:`IncompleteExamplesError` (rejected, escalated); ``champion``
    is the production model, if any; ``previous_requests`` the arrival times of the
    model's earlier requests and ``arrived_at`` this one's (default: the time the
    request states, for offline use), for the retrain budget. Nothing is trained when
    the budget is
    exceeded or the data is insufficient; training errors (a bad parameter value, a
    metric that does not fit the task) are a rejected, escalated outcome, not an
    exception.
    """
    budget = check_retrain_budget(
        request.time if arrived_at is None else arrived_at,
        previous_requests,
        max_retrains=settings.max_retrains,
        window_seconds=settings.retrain_budget_seconds,
    )
    if budget.exceeded:
        reason = (
            f"{budget.requests} retrain requests within {budget.window_seconds:g} s, "
            f"more than {budget.max_retrains}: not retraining automatically"
        )
        return _refused(request, settings, "retrain_budget", reason, champion)

    start, end = training_window(request, settings)
    try:
        dataset = build_dataset(examples, request.data.model_id, start, end, settings)
    except IncompleteExamplesError as exc:
        reason = f"incomplete training data: {exc}"
        return _refused(request, settings, "incomplete_data", reason, champion)
    if isinstance(dataset, InsufficientData):
        reason = f"too little data: {dataset.reason}"
        return Outcome(
            request, settings, "insufficient_data", reason, dataset=dataset, champion=champion
        )

    # OpenMP and BLAS would start a thread per core each, and fight the broker and the
    # monitor for them: oversubscribed, a fit takes several times longer.
    with threadpool_limits(limits=settings.threads):
        try:
            metric = metric_for(settings, dataset.task)
            candidate = _fit(dataset, metric, settings)
        except Exception as exc:  # scikit-learn raises many types for bad parameters or data
            reason = f"training failed: {type(exc).__name__}: {exc}"
            return Outcome(
                request,
                settings,
                "training_failed",
                reason,
                escalation=reason,
                advice=_ADVICE["training_failed"],
                dataset=dataset,
                champion=champion,
            )
        champion_score, champion_problem = _score_champion(champion, dataset, metric)
    decision = decide_promotion(
        candidate.score,
        champion_score,
        margin=settings.promotion_margin,
        floor=settings.floor,
        higher_is_better=metric.higher_is_better,
    )
    escalations, advice = [], []
    if champion_problem:
        escalations.append(champion_problem)
        advice.append(_CHAMPION_ADVICE)
    if decision.escalation:
        escalations.append(decision.escalation)
        advice.append(_ADVICE[decision.code])
    return Outcome(
        request,
        settings,
        decision.code,
        decision.reason,
        promote=decision.action == "promote",
        escalation="; ".join(escalations) or None,
        advice=" ".join(advice) or None,
        dataset=dataset,
        metric=metric,
        candidate=candidate,
        champion=champion,
        champion_score=champion_score,
    )


def _refused(
    request: RetrainRequest,
    settings: TrainingSettings,
    code: OutcomeCode,
    reason: str,
    champion: StoredModel | None = None,
) -> Outcome:
    """Nothing trained, and a human must look."""
    return Outcome(
        request,
        settings,
        code,
        reason,
        escalation=reason,
        advice=_ADVICE[code],
        champion=champion,
    )


def _fit(dataset: Dataset, metric: Metric, settings: TrainingSettings) -> Candidate:
    schema, task = dataset.schema, dataset.task
    pipeline = Pipeline(
        [
            ("features", schema.preprocessor(settings.max_categories)),
            ("estimator", build_estimator(settings.estimator, task)),
        ]
    )
    started = time.perf_counter()
    pipeline.fit(schema.matrix(dataset.train.rows), dataset.train.y(task))
    fit_seconds = time.perf_counter() - started
    predicted = pipeline.predict(schema.matrix(dataset.holdout.rows))
    return Candidate(pipeline, float(metric.score(dataset.holdout.y(task), predicted)), fit_seconds)


def _score_champion(
    champion: StoredModel | None, dataset: Dataset, metric: Metric
) -> tuple[float | None, str | None]:
    """The champion's holdout score, or None and why it has none."""
    if champion is None:
        return None, None
    try:
        predicted = champion.predict(dataset.holdout.rows)
        score = float(metric.score(dataset.holdout.y(dataset.task), predicted))
    except Exception as exc:  # an old model may not fit today's data
        return None, (
            f"production version {champion.version} could not score the holdout "
            f"({type(exc).__name__}: {exc})"
        )
    if not math.isfinite(score):
        return None, f"production version {champion.version} has no finite holdout score"
    return score, None


def handle_request(
    registry: ModelRegistry,
    request: RetrainRequest,
    examples: Iterable[Mapping[str, Any] | bytes],
    settings: TrainingSettings,
    *,
    arrived_at: float | None = None,
    configured: bool = True,
) -> tuple[HandledRequest, Outcome | None]:
    """Answer a request at most once: retrain, register, record, promote.

    ``arrived_at``: when the request reached the trainer (the retrain budget counts
    arrivals; default: the time it states). A request for a model the trainer is not
    ``configured`` for is rejected with the reason, and nothing is read or trained.

    Returns the journal record, and the outcome when this call decided it (None when
    the decision was already recorded). When the record is ``done`` the request is a
    duplicate and nothing was done (``examples`` is not even iterated, so the shell
    may pass a lazy reader). Otherwise the caller publishes ``record.events``,
    flushes, records ``dataclasses.replace(record, done=True)`` and commits the
    offset. After a crash anywhere in between, the recorded events are published
    again (same ids) instead of training again.
    """
    model_id = request.data.model_id
    arrived = request.time if arrived_at is None else arrived_at
    record = registry.handled_request(model_id, request.id)
    if record is not None and record.done:
        return record, None
    if record is None and configured:
        # Killed between registering the candidate and journalling the request: the
        # version holds the record; training again would register a second one.
        record = registry.registered_for(model_id, request.id)
        if record is not None:
            registry.record_request(record)
    outcome = None
    if record is None:
        outcome = _decide(registry, request, examples, settings, arrived, configured)
        version = None
        if outcome.candidate is not None:
            decided = outcome
            version = registry.register(
                model_id,
                outcome.candidate.pipeline,
                outcome.metadata(),
                journal=lambda number: _journal(decided, number, arrived),
            )
        record = _journal(outcome, version, arrived)
        # Recorded before the switch: a crash in between promotes on the next attempt
        # rather than training a second candidate against the first.
        registry.record_request(record)
    if record.outcome == "promoted" and record.version is not None:
        try:
            registry.promote(model_id, record.version)  # idempotent: the same pointer again
        except RegistryError as exc:
            reason = f"candidate version {record.version} cannot be promoted: {exc}"
            outcome = _refused(request, settings, "candidate_invalid", reason)
            # The registered candidate stays on record for inspection, unpromoted.
            record = replace(_journal(outcome, None, arrived), version=record.version)
            registry.record_request(record)
    return record, outcome


def _decide(
    registry: ModelRegistry,
    request: RetrainRequest,
    examples: Iterable[Mapping[str, Any] | bytes],
    settings: TrainingSettings,
    arrived_at: float,
    configured: bool,
) -> Outcome:
    model_id = request.data.model_id
    if not configured:
        reason = (
            f"model {model_id!r} is not configured in this trainer (its models: setting): "
            "not retraining it"
        )
        return Outcome(request, settings, "unknown_model", reason, advice=_ADVICE["unknown_model"])
    try:
        champion = registry.load_production(model_id)
    except RegistryError as exc:
        reason = f"the production model cannot be used: {exc}"
        return _refused(request, settings, "production_invalid", reason)
    previous = registry.request_times(model_id)
    return retrain(request, examples, champion, settings, previous, arrived_at)


def _journal(outcome: Outcome, version: int | None, arrived_at: float) -> HandledRequest:
    """The journal record of ``outcome``, whose candidate is registry ``version``."""
    request = outcome.request
    return HandledRequest(
        request_id=request.id,
        model_id=outcome.model_id,
        requested_at=arrived_at,
        outcome="promoted" if outcome.promote else "rejected",
        code=outcome.code,
        version=version,
        events=outcome.events(version),
        done=False,
    )
