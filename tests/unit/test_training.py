"""Retraining end to end without a broker: request and examples in, outcome and events out."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, get_args

import orjson
import pytest

from stream_monitor.core.events import InvalidRecordError, Output, iso
from stream_monitor.trainer.dataset import Dataset, FeatureSchema
from stream_monitor.trainer.registry import ARTEFACT, HandledRequest, ModelRegistry, StoredModel
from stream_monitor.trainer.settings import (
    ESTIMATORS,
    EstimatorName,
    EstimatorSettings,
    MetricName,
    TrainingSettings,
)
from stream_monitor.trainer.training import (
    METRICS,
    IncompleteExamplesError,
    build_estimator,
    handle_request,
    parse_request,
    retrain,
)

from .trainer_examples import STEP, T0, as_bytes, concept, labelled, noise, request

SETTINGS = TrainingSettings(min_train_examples=100, min_holdout_examples=40)


def _handle(
    registry: ModelRegistry, req: Any, examples: Any, settings: TrainingSettings = SETTINGS
) -> HandledRequest:
    record, _ = handle_request(registry, req, examples, settings)
    return record


def _champion(tmp_path: Path, examples: list[dict[str, Any]]) -> StoredModel:
    """Production trained (through the trainer itself) on ``examples``."""
    registry = ModelRegistry(tmp_path / "seed")
    record = _handle(registry, request(0, len(examples) - 1, episode=0), examples)
    assert record.outcome == "promoted" and record.version is not None
    production = registry.load_production("m")
    assert production is not None
    return production


def _body(event: Output) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(event.value)
    return body


def _bodies(events: tuple[Output, ...]) -> dict[str, dict[str, Any]]:
    return {_body(event)["type"]: _body(event) for event in events}


def test_first_model_is_promoted_without_a_champion() -> None:
    outcome = retrain(request(0, 299), concept(300), None, SETTINGS)
    assert (outcome.promote, outcome.code, outcome.escalation) == (True, "no_champion", None)
    assert outcome.candidate is not None and outcome.candidate.score > 0.85
    bodies = _bodies(outcome.events(1))
    assert list(bodies) == ["stream_monitor.model.promoted"]
    data = bodies["stream_monitor.model.promoted"]["data"]
    assert data["production_version"] == "1" and data["candidate"]["version"] == "1"
    assert data["champion"] is None and data["metric"] == "accuracy"
    assert data["data"]["train"]["examples"] == 240 and data["data"]["holdout"]["examples"] == 60


def test_candidate_beats_a_champion_from_before_the_drift(tmp_path: Path) -> None:
    champion = _champion(tmp_path, concept(300))
    after = concept(300, start=300, flip=True, seed=2)
    outcome = retrain(request(300, 599, version="1"), as_bytes(after), champion, SETTINGS)
    assert (outcome.promote, outcome.code) == (True, "won")
    assert outcome.champion_score is not None and outcome.champion_score < 0.2
    data = _bodies(outcome.events(2))["stream_monitor.model.promoted"]["data"]
    assert data["champion"] == {"version": "1", "score": outcome.champion_score}
    assert data["candidate"]["score"] > 0.85
    assert data["production_version"] == "2"
    assert data["request"]["model_version"] == "1"


def test_candidate_no_better_than_the_champion_is_rejected(tmp_path: Path) -> None:
    examples = concept(300)
    champion = _champion(tmp_path, examples)
    # Same data, same estimator, same random_state: the same model, a tie.
    outcome = retrain(request(0, 299, episode=2), examples, champion, SETTINGS)
    assert outcome.candidate is not None
    assert outcome.champion_score == outcome.candidate.score
    assert (outcome.promote, outcome.code, outcome.escalation) == (False, "within_margin", None)
    bodies = _bodies(outcome.events(2))
    assert list(bodies) == ["stream_monitor.model.rejected"]
    assert bodies["stream_monitor.model.rejected"]["data"]["production_version"] == "1"


def test_candidate_that_loses_is_escalated(tmp_path: Path) -> None:
    champion = _champion(tmp_path, concept(300))
    # Wrong labels in the training part of the window, right ones in the holdout.
    examples = concept(240, start=300, flip=True, seed=3) + concept(60, start=540, seed=4)
    outcome = retrain(request(300, 599), examples, champion, SETTINGS)
    assert (outcome.promote, outcome.code) == (False, "lost")
    bodies = _bodies(outcome.events(2))
    escalation = bodies["stream_monitor.escalation"]
    assert escalation["data"]["kind"] == "retraining"
    assert escalation["data"]["severity"] == "critical"
    assert "labels" in escalation["data"]["advice"]
    assert escalation["data"]["evidence"] == bodies["stream_monitor.model.rejected"]["data"]


def test_shift_retraining_cannot_fix_escalates(tmp_path: Path) -> None:
    champion = _champion(tmp_path, concept(300))
    settings = SETTINGS.model_copy(update={"floor": 0.8, "promotion_margin": 0.25})
    outcome = retrain(request(300, 599), noise(300, start=300), champion, settings)
    assert not outcome.promote
    assert outcome.escalation is not None and "below floor 0.8" in outcome.escalation
    assert outcome.advice is not None and "drift-events" in outcome.advice


def test_too_little_data_is_a_rejection_with_the_reason() -> None:
    outcome = retrain(request(0, 49), concept(50), None, SETTINGS)
    assert (outcome.promote, outcome.code, outcome.candidate) == (False, "insufficient_data", None)
    with pytest.raises(ValueError, match="version"):
        outcome.events(1)
    (event,) = outcome.events(None)
    data = _body(event)["data"]
    assert event.topic == "model_events" and data["reason_code"] == "insufficient_data"
    assert "50 usable examples" in data["reason"] and data["candidate"] is None
    assert data["escalated"] is False


def test_retrain_budget_escalates_without_training() -> None:
    req = request(0, 299)
    earlier = [req.time - 3600.0 * k for k in (1, 2, 3)]
    outcome = retrain(req, concept(300), None, SETTINGS, earlier)
    assert (outcome.code, outcome.candidate) == ("retrain_budget", None)
    bodies = _bodies(outcome.events(None))
    assert bodies["stream_monitor.escalation"]["data"]["kind"] == "retrain_budget"
    assert "4 retrain requests" in bodies["stream_monitor.escalation"]["data"]["reason"]


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"estimator": EstimatorSettings(name="logistic_regression", params={"C": -1.0})}, "C"),
        ({"estimator": EstimatorSettings(name="linear_regression")}, "cannot do classification"),
        ({"metric": "mae"}, "metric mae is for regression"),
    ],
)
def test_training_errors_are_escalated_rejections(update: dict[str, Any], message: str) -> None:
    outcome = retrain(request(0, 299), concept(300), None, SETTINGS.model_copy(update=update))
    assert (outcome.promote, outcome.code) == (False, "training_failed")
    assert outcome.escalation is not None and message in outcome.escalation


def test_regression() -> None:
    examples = [
        labelled(
            i,
            {"x": float(i % 17), "kind": "ab"[i % 2]},
            3.0 * (i % 17) + (i % 2),
            task="regression",
        )
        for i in range(300)
    ]
    settings = SETTINGS.model_copy(update={"estimator": EstimatorSettings(name="ridge")})
    outcome = retrain(request(0, 299), examples, None, settings)
    assert outcome.promote and outcome.metric is not None
    assert (outcome.metric.name, outcome.metric.higher_is_better) == ("mae", False)
    assert outcome.candidate is not None and outcome.candidate.score < 0.1


def test_a_champion_that_cannot_score_is_reported(tmp_path: Path) -> None:
    champion = _champion(tmp_path, concept(300))
    # Its schema now names a column the pipeline was not fitted on.
    broken = replace(champion, schema=FeatureSchema(champion.schema.columns[:1]))
    outcome = retrain(request(300, 599), concept(300, start=300), broken, SETTINGS)
    assert outcome.promote and outcome.code == "no_champion"
    assert outcome.escalation is not None and "could not score" in outcome.escalation
    data = _bodies(outcome.events(2))["stream_monitor.model.promoted"]["data"]
    assert data["champion"] == {"version": "1", "score": None}


def test_event_ids_derive_from_the_request() -> None:
    req = request(0, 299)
    first = retrain(req, concept(300), None, SETTINGS).events(1)
    again = retrain(req, concept(300), None, SETTINGS).events(1)
    assert first == again  # a replay is byte-identical
    rejected = retrain(req, concept(10), None, SETTINGS).events(None)
    assert _body(rejected[0])["id"] == _body(first[0])["id"]  # one answer per request
    other = retrain(request(0, 299, episode=2), concept(300), None, SETTINGS).events(1)
    assert _body(other[0])["id"] != _body(first[0])["id"]
    event = first[0]
    assert (event.topic, event.key, event.timestamp) == ("model_events", b"m", req.time)
    assert _body(event)["time"] == _body(event)["data"]["request"]["time"]


def test_same_request_twice_trains_once(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    req = request(0, 299)
    record, outcome = handle_request(registry, req, concept(300), SETTINGS)
    assert (record.outcome, record.code, record.version, record.done) == (
        "promoted",
        "no_champion",
        1,
        False,
    )
    assert outcome is not None and record.events == outcome.events(1)
    assert registry.production_version("m") == 1
    metadata = registry.metadata("m", 1)
    assert metadata["request"]["id"] == req.id and metadata["decision"] == "promoted"
    assert metadata["features"] == [
        {"name": "colour", "kind": "categorical"},
        {"name": "count", "kind": "numeric"},
        {"name": "x", "kind": "numeric"},
    ]

    # Crash before the events were published: the recorded answer is replayed, untrained.
    assert handle_request(registry, req, iter(()), SETTINGS) == (record, None)
    registry.record_request(replace(record, done=True))

    def unread() -> Any:
        raise AssertionError("a duplicate must not read examples")
        yield

    duplicate, outcome = handle_request(registry, req, unread(), SETTINGS)
    assert duplicate.done and duplicate.events == record.events and outcome is None
    assert registry.versions("m") == [1]


def test_rejected_candidates_are_kept_for_inspection(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    examples = concept(300)
    _handle(registry, request(0, 299), examples)
    record = _handle(registry, request(0, 299, episode=2), examples)
    assert (record.outcome, record.version) == ("rejected", 2)
    assert registry.production_version("m") == 1
    assert registry.metadata("m", 2)["reason_code"] == "within_margin"
    assert sorted(registry.request_times("m")) == [request(0, 299).time] * 2


@pytest.mark.parametrize(
    ("name", "task"), [(n, t) for n, by_task in ESTIMATORS.items() for t in by_task]
)
def test_every_allowed_estimator_trains_and_round_trips(
    tmp_path: Path, name: EstimatorName, task: str
) -> None:
    if task == "classification":
        examples = concept(200)
    else:
        examples = [
            labelled(i, {"x": float(i % 7), "c": "ab"[i % 2]}, float(i % 7), task="regression")
            for i in range(200)
        ]
    settings = SETTINGS.model_copy(update={"estimator": EstimatorSettings(name=name)})
    outcome = retrain(request(0, 199), examples, None, settings)
    assert outcome.candidate is not None, outcome.reason
    registry = ModelRegistry(tmp_path)
    version = registry.register("m", outcome.candidate.pipeline, outcome.metadata())
    loaded = registry.load("m", version)
    rows = [e["data"]["prediction"]["features"] for e in examples[:5]]
    assert (
        loaded.predict(rows)
        == outcome.candidate.pipeline.predict(loaded.schema.matrix(rows)).tolist()
    )


def test_random_state_defaults_to_zero_unless_configured() -> None:
    assert build_estimator(EstimatorSettings(name="random_forest"), "regression").random_state == 0
    seeded = EstimatorSettings(name="random_forest", params={"random_state": 7})
    assert build_estimator(seeded, "classification").random_state == 7


def test_every_metric_name_has_a_metric() -> None:
    assert set(METRICS) == set(get_args(MetricName))
    assert set(ESTIMATORS) == set(get_args(EstimatorName))


def test_requests_that_break_the_contract() -> None:
    with pytest.raises(InvalidRecordError) as bad_json:
        parse_request(b"{")
    assert bad_json.value.reason == "invalid_json"
    valid = json.loads(json.dumps(request(0, 1).model_dump(mode="json")))
    for broken in (
        {**valid, "type": "stream_monitor.escalation"},
        {**valid, "data": {**valid["data"], "training_window": {"start": 2e12, "end": 1e12}}},
        {**valid, "data": {k: v for k, v in valid["data"].items() if k != "model_id"}},
        # Ids name registry entries: a path must not escape the registry.
        {**valid, "data": {**valid["data"], "model_id": "../../etc"}},
        {**valid, "id": "a/b"},
    ):
        with pytest.raises(InvalidRecordError) as schema:
            parse_request(json.dumps(broken).encode())
        assert schema.value.reason == "schema"


def test_a_tampered_production_model_is_escalated_not_raised(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    _handle(registry, request(0, 299, episode=0), concept(300))
    artefact = tmp_path / "m" / "versions" / "1" / ARTEFACT
    artefact.write_bytes(artefact.read_bytes()[:-1])

    def unread() -> Any:
        raise AssertionError("nothing is trained against an unusable production model")
        yield

    record, outcome = handle_request(registry, request(300, 599), unread(), SETTINGS)
    assert (record.outcome, record.code, record.version) == (
        "rejected",
        "production_invalid",
        None,
    )
    assert outcome is not None and outcome.escalation is not None
    assert "SHA-256" in outcome.escalation and "refusing a modified artefact" in outcome.escalation
    bodies = _bodies(record.events)
    escalation = bodies["stream_monitor.escalation"]["data"]
    assert escalation["kind"] == "registry_integrity"
    assert escalation["evidence"]["reason_code"] == "production_invalid"
    assert "integrity check" in escalation["advice"]
    assert registry.production_version("m") == 1  # nothing switched


def test_a_candidate_tampered_before_promotion_is_not_promoted(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    req = request(0, 299)
    record, _ = handle_request(registry, req, concept(300), SETTINGS)
    # As if the trainer had crashed after journaling, and the artefact changed meanwhile.
    registry.root.joinpath("m", "production.json").unlink()
    registry.record_request(record)
    artefact = tmp_path / "m" / "versions" / "1" / ARTEFACT
    artefact.write_bytes(artefact.read_bytes() + b"\0")
    replayed, outcome = handle_request(registry, req, iter(()), SETTINGS)
    assert (replayed.outcome, replayed.code, replayed.version) == (
        "rejected",
        "candidate_invalid",
        1,
    )
    assert outcome is not None and outcome.escalation is not None
    assert registry.production_version("m") is None
    assert registry.handled_request("m", req.id) == replayed
    (answer, escalation) = replayed.events
    assert _body(answer)["id"] == _body(record.events[0])["id"]  # still one answer
    assert _body(answer)["type"] == "stream_monitor.model.rejected"
    assert escalation.topic == "escalations"


def test_request_window_bounds_the_examples() -> None:
    # Labels after the window's end (read past it by the shell) are not trained on.
    outcome = retrain(request(0, 249), concept(300), None, SETTINGS)
    assert isinstance(outcome.dataset, Dataset)
    assert len(outcome.dataset.train) + len(outcome.dataset.holdout) == 250
    assert outcome.dataset.holdout.prediction_times[-1] == T0 + 249 * STEP


# ---- hostile requests -----------------------------------------------------------------


def _restated(req: Any, **fields: Any) -> Any:
    """``req`` with envelope fields or its window replaced, as a forged request would be."""
    body = json.loads(req.model_dump_json())
    # Numbers in the contract are epoch milliseconds; the model holds seconds.
    body["time"] = iso(req.time)
    start, end = req.data.training_window.start, req.data.training_window.end
    body["data"]["training_window"] = fields.pop(
        "training_window", {"start": iso(start), "end": iso(end)}
    )
    body["data"].update(fields.pop("data", {}))
    return parse_request(json.dumps({**body, **fields}).encode())


def test_a_training_window_too_long_is_cut_to_its_most_recent_part() -> None:
    req = _restated(request(0, 299), training_window={"start": 0, "end": (T0 + 3000) * 1000})
    settings = SETTINGS.model_copy(update={"max_window_seconds": 2000.0})
    outcome = retrain(req, concept(300), None, settings)
    # Labels 10 s apart, the first at T0 + 60: [T0 + 1000, T0 + 3000] holds 201 of them.
    assert outcome.code == "no_champion"
    data = _body(outcome.events(1)[0])["data"]
    used = data["data"]["train"]["examples"] + data["data"]["holdout"]["examples"]
    assert used == 201
    assert data["training_window"]["start"] == "2023-11-14T22:30:00.000+00:00"
    assert data["requested_window"]["start"] == "1970-01-01T00:00:00.000+00:00"


def test_the_retrain_budget_counts_arrivals_not_the_times_requests_state(
    tmp_path: Path,
) -> None:
    registry = ModelRegistry(tmp_path)
    settings = SETTINGS.model_copy(update={"max_retrains": 1})
    first = request(0, 299)
    # A second request claiming to come from a year later, arriving a minute after.
    forged = _restated(request(0, 299, episode=2), time=(first.time + 365 * 86_400) * 1000)
    examples = concept(300)
    record, _ = handle_request(registry, first, examples, settings, arrived_at=5000.0)
    assert record.code == "no_champion" and record.requested_at == 5000.0
    record, _ = handle_request(registry, forged, examples, settings, arrived_at=5060.0)
    assert (record.code, record.version) == ("retrain_budget", None)
    # A third, a day after the second arrival, is within the budget again.
    later = request(0, 299, episode=3)
    record, _ = handle_request(registry, later, examples, settings, arrived_at=5060 + 86_401)
    assert record.code != "retrain_budget"


def test_a_request_for_a_model_the_trainer_does_not_configure_is_rejected(
    tmp_path: Path,
) -> None:
    def unread() -> Any:
        raise AssertionError("nothing is read for a model the trainer does not train")
        yield

    registry = ModelRegistry(tmp_path)
    req = request(0, 299, model_id="stranger")
    record, outcome = handle_request(registry, req, unread(), SETTINGS, configured=False)
    assert (record.outcome, record.code, record.version) == ("rejected", "unknown_model", None)
    assert outcome is not None and not outcome.escalation
    (event,) = record.events
    data = _body(event)["data"]
    assert "model 'stranger' is not configured in this trainer" in data["reason"]
    assert registry.versions("stranger") == []


def test_a_crash_between_registering_and_journalling_does_not_train_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = ModelRegistry(tmp_path)
    req = request(0, 299)

    def killed(record: HandledRequest) -> None:
        raise SystemExit("SIGKILL")  # the process dies right after registering

    with monkeypatch.context() as patched:
        patched.setattr(registry, "record_request", killed)
        with pytest.raises(SystemExit):
            handle_request(registry, req, concept(300), SETTINGS, arrived_at=7000.0)
    assert registry.versions("m") == [1] and registry.handled_request("m", req.id) is None

    def unread() -> Any:
        raise AssertionError("the registered version answers the request")
        yield

    record, outcome = handle_request(registry, req, unread(), SETTINGS, arrived_at=9000.0)
    assert outcome is None and registry.versions("m") == [1]
    assert (record.outcome, record.version, record.requested_at) == ("promoted", 1, 7000.0)
    assert registry.production_version("m") == 1
    assert registry.handled_request("m", req.id) == record
    assert _body(record.events[0])["data"]["candidate"]["version"] == "1"


@pytest.mark.parametrize(
    ("offsets", "message"),
    [
        ({"0": -1}, "must not be negative"),
        ({"-1": 10}, "must not be negative"),
        ({str(p): 1 for p in range(10_001)}, "more than 10000 partitions"),
        ({"zero": 1}, "labelled_examples"),
    ],
)
def test_a_request_naming_impossible_offsets_is_refused(
    offsets: dict[str, int], message: str
) -> None:
    with pytest.raises(InvalidRecordError, match=message):
        _restated(request(0, 299), data={"labelled_examples": offsets})


def test_the_offsets_a_request_names_are_read_as_partition_numbers() -> None:
    req = _restated(request(0, 299), data={"labelled_examples": {"1": 1234}})
    assert req.data.labelled_examples == {1: 1234}
    assert request(0, 299).data.labelled_examples is None  # an older monitor's request


def test_examples_that_never_became_readable_reject_the_request() -> None:
    def incomplete() -> Any:
        yield from as_bytes(concept(50))
        raise IncompleteExamplesError("partition 0 reaches offset 50, not the 300 named")

    outcome = retrain(request(0, 299), incomplete(), None, SETTINGS)
    assert (outcome.code, outcome.promote, outcome.candidate) == ("incomplete_data", False, None)
    assert outcome.reason == (
        "incomplete training data: partition 0 reaches offset 50, not the 300 named"
    )
    assert outcome.escalation == outcome.reason and outcome.advice
