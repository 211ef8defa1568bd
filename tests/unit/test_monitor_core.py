"""MonitorCore driven directly: records in, records out, no broker."""

from __future__ import annotations

import json
import math
import pickle
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import orjson
import pytest

from stream_monitor.config import MonitorSettings
from stream_monitor.core.events import LABELLED_EXAMPLE_TYPE, Output, envelope
from stream_monitor.core.join import MemoryStores
from stream_monitor.core.monitor import (
    SNAPSHOT_FORMAT,
    SNAPSHOT_MAGIC,
    IncompatibleSnapshotError,
    InputTopic,
    MonitorCore,
    readable_snapshots,
    snapshot_format,
)
from stream_monitor.simulate import Scenario, stream
from stream_monitor.trainer.dataset import Dataset, build_dataset
from stream_monitor.trainer.settings import TrainingSettings

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in ms
# 0.92 -> 0.70 accuracy at event 3000 of 6000; labels 50 events late; 600 s of event time.
DRIFT_AT = 3_000
DROP = Scenario(events=6_000, drift_at=DRIFT_AT, label_delay=50, features=3)
# Its drift elsewhere, another seed, from the same first prediction.
ELSEWHERE = Scenario(events=6_000, drift_at=2_500, label_delay=80, features=3, seed=5)
Record = tuple[InputTopic, bytes | None, bytes]


def _records(scenario: Scenario) -> list[Record]:
    return [(t, k.encode(), json.dumps(v).encode()) for t, k, v in stream(scenario)]


def _run(core: MonitorCore, records: Iterable[Record]) -> list[Output]:
    return [out for topic, key, value in records for out in core.process(topic, key, value)]


def _events(outputs: list[Output], topic: str) -> list[dict[str, Any]]:
    return [json.loads(o.value) for o in outputs if o.topic == topic]


def _prediction(pid: str, prediction: object, model: str = "m", version: str = "1") -> bytes:
    value = {
        "prediction_id": pid,
        "model_id": model,
        "model_version": version,
        "timestamp": T0,
        "features": {"x": 1.0, "colour": "red"},
        "prediction": prediction,
    }
    return json.dumps(value).encode()


def _label(pid: str, label: object, model: str = "m", at_ms: int = T0 + 60_000) -> bytes:
    return json.dumps(
        {"prediction_id": pid, "model_id": model, "label": label, "timestamp": at_ms}
    ).encode()


def _pair(core: MonitorCore, pid: str, prediction: object, label: object) -> list[Output]:
    return core.process("predictions", b"m", _prediction(pid, prediction)) + core.process(
        "ground_truth", b"m", _label(pid, label)
    )


@pytest.fixture(scope="module")
def drop_records() -> list[Record]:
    return _records(DROP)


@pytest.fixture(scope="module")
def drop_outputs(drop_records: list[Record]) -> list[Output]:
    return _run(MonitorCore(MonitorSettings()), drop_records)


# ---- the accuracy path ---------------------------------------------------------------


def test_accuracy_drop_gives_exactly_one_retrain_request(drop_outputs: list[Output]) -> None:
    requests = [o for o in drop_outputs if o.topic == "retrain_requests"]
    assert len(requests) == 1
    assert requests[0].key == b"demo-model"
    assert not [o for o in drop_outputs if o.topic == "escalations"]


def test_retrain_request_carries_the_evidence(drop_outputs: list[Output]) -> None:
    (request,) = _events(drop_outputs, "retrain_requests")
    assert request["type"] == "stream_monitor.retrain.requested"
    assert request["subject"] == "demo-model"
    data = request["data"]
    assert (data["model_id"], data["model_version"], data["kind"]) == (
        "demo-model",
        "1",
        "performance",
    )
    assert (data["severity"], data["action"], data["episode"]) == ("drift", "retrain", 1)
    evidence = data["evidence"]
    assert evidence["detector"] in ("adwin", "page_hinkley")
    assert evidence["metric"] == "accuracy"
    assert evidence["before"] == pytest.approx(0.92, abs=0.03)
    assert evidence["before"] - evidence["after"] >= 0.02
    assert evidence["change"] == pytest.approx(evidence["before"] - evidence["after"])
    assert evidence["window_size"] == 1000
    assert DRIFT_AT < evidence["observations"] <= evidence["labelled"] < DRIFT_AT + 1000
    # Asked for once 500 more labels arrived, so the window holds the new behaviour.
    assert data["retrain_after_labels"] == 500
    assert evidence["detected_at"] < request["time"]
    assert data["training_window"]["end"] == request["time"]
    assert data["training_window"]["start"] < data["training_window"]["end"]


def test_without_a_wait_the_request_comes_with_the_detection(drop_records: list[Record]) -> None:
    settings = MonitorSettings(defaults={"policy": {"retrain_after_labels": 0}})
    (request,) = _events(_run(MonitorCore(settings), drop_records), "retrain_requests")
    assert request["data"]["evidence"]["detected_at"] == request["time"]


def test_a_promotion_cancels_a_waiting_request(drop_records: list[Record]) -> None:
    core = MonitorCore(MonitorSettings())
    detected = next(
        i
        for i in range(len(drop_records))
        if any(o.topic == "drift_events" for o in core.process(*drop_records[i]))
        and core.stats().versions["demo-model", "1"].episode == 1
    )
    promoted = {
        "id": "e1",
        "type": "stream_monitor.model.promoted",
        "data": {"model_id": "demo-model", "production_version": "1"},
    }
    assert core.apply_model_event(json.dumps(promoted).encode())
    later = _run(core, drop_records[detected + 1 :])
    assert _events(later, "retrain_requests") == []


def test_retrain_request_is_also_recorded_as_a_drift_event(drop_outputs: list[Output]) -> None:
    (request,) = _events(drop_outputs, "retrain_requests")
    signals = _events(drop_outputs, "drift_events")
    assert [s["data"]["evidence"] for s in signals if s["data"]["action"] == "retrain"] == [
        request["data"]["evidence"]
    ]
    assert all(s["type"] == "stream_monitor.drift.signal" for s in signals)


def test_every_joined_pair_becomes_one_labelled_example(drop_outputs: list[Output]) -> None:
    examples = _events(drop_outputs, "labelled_examples")
    assert len(examples) == DROP.events
    assert len({e["id"] for e in examples}) == DROP.events
    assert all(e["type"] == "stream_monitor.labelled_example" for e in examples)


def test_labelled_example_passes_on_the_prediction_and_its_label() -> None:
    core = MonitorCore(MonitorSettings())
    (example,) = _pair(core, "p1", "a", "b")
    assert (example.topic, example.key, example.timestamp) == (
        "labelled_examples",
        b"m",
        60 + T0 / 1000,
    )
    body = json.loads(example.value)
    assert body["time"] == "2026-01-01T00:01:00.000+00:00"  # when the label arrived
    data = body["data"]
    assert (data["model_id"], data["model_version"], data["task"]) == ("m", "1", "classification")
    assert data["prediction"] == json.loads(_prediction("p1", "a"))
    assert data["ground_truth"] == json.loads(_label("p1", "b"))


@pytest.mark.parametrize(
    ("model", "version", "pid"),
    [
        ("m", "1", "p1"),
        ('quote"d\\model', "v/2", 'id "with" \\ and /'),
        ("modèle-ü", "版本", "\u2028\u0000\t"),
    ],
)
def test_labelled_example_bytes_are_its_envelope_serialised(
    model: str, version: str, pid: str
) -> None:
    # The example is joined from a template: byte for byte what serialising envelope()
    # gives, whatever the ids hold (quotes, backslashes, slashes, non-ASCII, control).
    core = MonitorCore(MonitorSettings())
    prediction = _prediction(pid, "a", model, version)
    label = _label(pid, "b", model)
    core.process("predictions", model.encode(), prediction)
    (example,) = core.process("ground_truth", model.encode(), label)
    data = {
        "model_id": model,
        "model_version": version,
        "prediction_id": pid,
        "task": "classification",
        "prediction": orjson.Fragment(prediction),
        "ground_truth": orjson.Fragment(label),
    }
    event_id = f"labelled/{model}/{pid}"
    expected = envelope(LABELLED_EXAMPLE_TYPE, event_id, 60 + T0 / 1000, model, data)
    assert example.value == orjson.dumps(expected)


def test_labelled_examples_are_what_the_trainer_reads(drop_outputs: list[Output]) -> None:
    # The contract between the two services: every labelled example the monitor writes
    # must be usable by the trainer's dataset builder (it skips what it cannot parse).
    values = [o.value for o in drop_outputs if o.topic == "labelled_examples"]
    dataset = build_dataset(values, "demo-model", 0, 2 * T0 / 1000, TrainingSettings())
    assert isinstance(dataset, Dataset), dataset
    assert dataset.skipped == 0
    assert len(dataset.train) + len(dataset.holdout) == DROP.events


def test_stationary_stream_gives_no_drift_event() -> None:
    outputs = _run(MonitorCore(MonitorSettings()), _records(Scenario(events=6_000, drift_at=None)))
    assert Counter(o.topic for o in outputs) == Counter({"labelled_examples": 6_000})


# ---- determinism and state ----------------------------------------------------------


def test_same_stream_through_two_fresh_cores_gives_byte_identical_outputs(
    drop_records: list[Record], drop_outputs: list[Output]
) -> None:
    again = _run(MonitorCore(MonitorSettings()), drop_records)
    assert again == drop_outputs  # topic, key, value bytes, headers and timestamp


def test_a_replay_of_the_same_drift_asks_with_the_same_id(drop_outputs: list[Output]) -> None:
    # A different stream with its drift elsewhere, from the same first prediction: the
    # same episode of the same state, so the trainer sees the same id and trains once.
    (again,) = _events(
        _run(MonitorCore(MonitorSettings()), _records(ELSEWHERE)), "retrain_requests"
    )
    (first,) = _events(drop_outputs, "retrain_requests")
    assert again["id"] == first["id"]
    assert (again["data"]["model_version"], again["data"]["episode"]) == ("1", 1)


def test_a_new_drift_after_the_state_was_rebuilt_never_reuses_an_id(
    drop_outputs: list[Output],
) -> None:
    # The version's state is lost (a discarded snapshot, a lost state topic): the stream
    # goes on from a later prediction, and the next drift is episode 1 again.
    later = replace(ELSEWHERE, start_ms=T0 + 86_400_000, id_prefix="later-")
    rebuilt = MonitorCore(MonitorSettings())
    (request,) = _events(_run(rebuilt, _records(later)), "retrain_requests")
    (first,) = _events(drop_outputs, "retrain_requests")
    assert (request["data"]["model_version"], request["data"]["episode"]) == ("1", 1)
    assert request["id"] != first["id"]


# Records 6257 and 7183 give the retrain request and a later signal of the same episode.
@pytest.mark.parametrize("split", [1_001, 6_200, 6_800], ids=["before", "in-drift", "cooling"])
def test_snapshot_and_restore_mid_stream_continue_as_if_uninterrupted(
    drop_records: list[Record], drop_outputs: list[Output], split: int
) -> None:
    stores = MemoryStores()  # the local disk both processes share
    first = MonitorCore(MonitorSettings(), stores=stores)
    before = _run(first, drop_records[:split])
    for model in first.models():
        first.checkpoint_join(model)
    snapshots = {model: first.snapshot(model) for model in first.models()}
    assert first.stats().pending["prediction"] > 0  # the join state travels too

    second = MonitorCore(MonitorSettings(), stores=stores)
    for model, data in snapshots.items():
        second.restore(model, data)
    after = _run(second, drop_records[split:])
    assert before + after == drop_outputs


def test_restore_takes_settings_from_this_process_not_the_snapshot() -> None:
    first = MonitorCore(MonitorSettings())
    first.process("predictions", b"m", _prediction("p1", 3))  # waits for its label
    counts = MonitorSettings(models={"m": {"performance": {"task": "regression"}}})
    second = MonitorCore(counts)
    second.restore("m", first.snapshot("m"))
    second.process("ground_truth", b"m", _label("p1", 5))
    # Version 1's detectors travel in the snapshot with the settings they were built with;
    # a version first seen here is built with this process's settings.
    assert second.stats().versions["m", "1"].task == "classification"
    second.process("predictions", b"m", _prediction("p2", 3, version="2"))
    second.process("ground_truth", b"m", _label("p2", 5))
    version = second.stats().versions["m", "2"]
    assert (version.task, version.windowed_metric) == ("regression", 2.0)


def test_restore_bounds_the_join_by_this_process_settings() -> None:
    stores = MemoryStores()
    first = MonitorCore(MonitorSettings(), stores=stores)
    for pid in ("p1", "p2", "p3"):
        first.process("predictions", b"m", _prediction(pid, 3))  # wait for their labels
    first.checkpoint_join("m")
    # A restart with a shorter TTL reaches models restored from a snapshot too.
    join = {"ttl_seconds": 30, "max_skew_seconds": 0}
    second = MonitorCore(MonitorSettings(join=join), stores=stores)
    second.restore("m", first.snapshot("m"))
    assert second.stats().pending["prediction"] == 3
    # The label 60 s later expires all three under the new TTL, each counted once.
    assert second.process("ground_truth", b"m", _label("p1", 3)) == []
    second.checkpoint_join("m")
    assert second.stats().dropped == Counter({("prediction", "ttl"): 3})
    assert second.stats().pending == {"prediction": 0, "label": 1}


@pytest.mark.parametrize(
    ("data", "found"),
    [
        # Version 0.1.0 wrote a bare pickle; this one would no longer unpickle.
        (pickle.dumps((1, {"a model state": "of another layout"}), protocol=5), 1),
        (SNAPSHOT_MAGIC + bytes([2]) + pickle.dumps({"written by": "0.2"}, protocol=5), 2),
        (SNAPSHOT_MAGIC + bytes([SNAPSHOT_FORMAT + 1]) + b"from a newer version", 4),
        (b"", 0),
    ],
    ids=["bare-pickle", "pickle-of-0.2", "newer", "empty"],
)
def test_a_snapshot_of_another_format_is_refused_before_it_is_unpickled(
    data: bytes, found: int
) -> None:
    core = MonitorCore(MonitorSettings())
    with pytest.raises(IncompatibleSnapshotError, match=f"format {found}") as refused:
        core.restore("m", data)
    assert (refused.value.model_id, refused.value.found, core.models()) == ("m", found, [])
    assert snapshot_format(data) == found


def test_unreadable_snapshots_refuse_the_start_unless_their_models_may_start_afresh() -> None:
    core = MonitorCore(MonitorSettings())
    _pair(core, "p1", "a", "a")
    snapshots = {"m": core.snapshot("m"), "old": pickle.dumps((1, {}), 5), "odd": b"?"}
    with pytest.raises(IncompatibleSnapshotError, match="and 1 other models'"):
        readable_snapshots(snapshots, discard_unreadable=False)
    readable, discarded = readable_snapshots(snapshots, discard_unreadable=True)
    assert (readable, discarded) == ({"m": snapshots["m"]}, {"old": 1, "odd": 0})
    assert readable_snapshots({"m": snapshots["m"]}, discard_unreadable=False)[1] == {}


def test_forget_drops_a_models_state() -> None:
    core = MonitorCore(MonitorSettings())
    _pair(core, "p1", "a", "a")
    core.forget("m")
    assert core.models() == []
    assert core.stats().versions == {}


# ---- bad input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "key", "value", "reason"),
    [
        ("predictions", b"m", b"{not json", "invalid_json"),
        ("predictions", b"m", b'{"prediction_id": "p1"}', "schema"),
        ("ground_truth", b"other", _label("p1", "a"), "key_mismatch"),
        ("ground_truth", None, _label("p1", "a"), "key_mismatch"),
    ],
)
def test_invalid_record_goes_to_dead_letter_as_it_came_with_the_reason(
    topic: InputTopic, key: bytes | None, value: bytes, reason: str
) -> None:
    core = MonitorCore(MonitorSettings())
    (dead,) = core.process(topic, key, value)
    assert (dead.topic, dead.key, dead.value) == ("dead_letter", key, value)
    headers = dict(dead.headers)
    assert headers["error.reason"] == reason.encode()
    assert headers["error.detail"]
    assert headers["source.topic"] == topic.encode()
    assert core.stats().invalid == Counter({(topic, reason): 1})


def test_processing_continues_after_invalid_records() -> None:
    core = MonitorCore(MonitorSettings())
    core.process("predictions", b"m", b"\x00\x01garbage")
    core.process("ground_truth", b"m", b"[]")
    outputs = _pair(core, "p1", "a", "a")
    assert [o.topic for o in outputs] == ["labelled_examples"]
    assert core.stats().joined == 1


def test_bad_label_for_a_regression_model_goes_to_dead_letter_and_processing_continues() -> None:
    core = MonitorCore(MonitorSettings())
    assert [o.topic for o in _pair(core, "p1", 2.5, 2.0)] == ["labelled_examples"]
    core.process("predictions", b"m", _prediction("p2", 3.5))
    bad = _label("p2", "tall")
    (dead,) = core.process("ground_truth", b"m", bad)
    assert (dead.topic, dead.value) == ("dead_letter", bad)
    assert dict(dead.headers)["error.reason"] == b"schema"
    assert b"label" in dict(dead.headers)["error.detail"]

    assert [o.topic for o in _pair(core, "p3", 1.0, 2.0)] == ["labelled_examples"]
    stats = core.stats()
    assert stats.invalid == Counter({("ground_truth", "schema"): 1})
    assert stats.joined == 2
    assert stats.versions["m", "1"].labelled == 2
    assert stats.versions["m", "1"].windowed_metric == pytest.approx(0.75)  # MAE of 0.5, 1.0


def test_bad_label_arriving_before_its_prediction_is_the_one_dead_lettered() -> None:
    # Either order is normal. Whichever record completes the pair, the bad record is the
    # label; the prediction was valid and must not be reported as bad input.
    core = MonitorCore(MonitorSettings())
    bad = _label("p1", "tall")
    assert core.process("ground_truth", b"m", bad) == []
    (dead,) = core.process("predictions", b"m", _prediction("p1", 3.5))
    assert dead.topic == "dead_letter"
    assert json.loads(dead.value).get("label") == "tall", dead.value
    assert dict(dead.headers)["source.topic"] == b"ground_truth"
    assert core.stats().invalid == Counter({("ground_truth", "schema"): 1})


def test_bad_first_pair_is_not_scored() -> None:
    core = MonitorCore(MonitorSettings())
    _pair(core, "p1", 3.5, "tall")
    # The version exists from its first valid prediction, but nothing was scored.
    version = core.stats().versions["m", "1"]
    assert (version.task, version.labelled) == ("regression", 0)
    assert math.isnan(version.windowed_metric)


_GOOD_P, _GOOD_Y = _prediction("p1", "a"), _label("p1", "a")


@pytest.mark.parametrize(
    ("prediction", "label"),
    [
        (_GOOD_P.replace(str(T0).encode(), b"NaN"), _GOOD_Y),
        (_GOOD_P.replace(str(T0).encode(), b"1e20"), _GOOD_Y),
        (_GOOD_P, _GOOD_Y.replace(str(T0 + 60_000).encode(), b"NaN")),
        (_GOOD_P, _GOOD_Y.replace(str(T0 + 60_000).encode(), b"1e20")),
        (_GOOD_P.replace(b'"x": 1.0', b'"x": 123456789012345678901234567890'), _GOOD_Y),
    ],
    ids=[
        "prediction-nan-time",
        "prediction-year-3e9",
        "label-nan-time",
        "label-year-3e9",
        "feature-beyond-64-bit",
    ],
)
def test_no_record_makes_the_core_raise(prediction: bytes, label: bytes) -> None:
    # Bad input never stops the service: an exception here is a poison pill that the
    # shell re-reads forever from its last committed offset.
    assert prediction != _GOOD_P or label != _GOOD_Y
    core = MonitorCore(MonitorSettings())
    outputs = core.process("predictions", b"m", prediction)
    outputs += core.process("ground_truth", b"m", label)
    assert [o.topic for o in outputs] in (["dead_letter"], ["labelled_examples"])


def test_record_with_an_impossible_timestamp_does_not_expire_waiting_predictions() -> None:
    # Event time is the newest timestamp seen: one record from year 3e9 would expire
    # every pending prediction of the model and then pin the watermark there for good.
    core = MonitorCore(MonitorSettings())
    core.process("predictions", b"m", _prediction("p0", "a"))
    core.process("predictions", b"m", _prediction("p1", "a").replace(str(T0).encode(), b"1e20"))
    outputs = core.process("ground_truth", b"m", _label("p0", "a"))
    assert [o.topic for o in outputs] == ["labelled_examples"]
    assert core.stats().dropped == Counter()


def test_nan_regression_prediction_does_not_poison_the_mae() -> None:
    core = MonitorCore(MonitorSettings())
    _pair(core, "p1", 2.5, 2.0)
    core.process("predictions", b"m", _prediction("p2", 0.5).replace(b"0.5", b"NaN"))
    core.process("ground_truth", b"m", _label("p2", 2.0))
    _pair(core, "p3", 1.0, 2.0)
    assert not math.isnan(core.stats().versions["m", "1"].windowed_metric)


# ---- models, versions and settings ---------------------------------------------------


def test_unseen_model_is_monitored_with_the_defaults() -> None:
    core = MonitorCore(MonitorSettings())
    core.process("predictions", b"new-model", _prediction("p1", "a", model="new-model"))
    assert core.models() == ["new-model"]


def test_per_model_override_applies_to_that_model_only() -> None:
    # Integer predictions look like classes; this model says they are counts.
    settings = MonitorSettings(models={"counts": {"performance": {"task": "regression"}}})
    core = MonitorCore(settings)
    for model in ("counts", "classes"):
        core.process("predictions", model.encode(), _prediction("p1", 3, model=model))
        core.process("ground_truth", model.encode(), _label("p1", 5, model=model))
    versions = core.stats().versions
    assert versions["counts", "1"].task == "regression"
    assert versions["counts", "1"].windowed_metric == 2.0
    assert versions["classes", "1"].task == "classification"
    assert versions["classes", "1"].windowed_metric == 0.0


def test_each_model_version_is_tracked_on_its_own() -> None:
    core = MonitorCore(MonitorSettings())
    for i, version in enumerate(["1", "1", "2"]):
        core.process("predictions", b"m", _prediction(f"p{i}", "a", version=version))
        core.process("ground_truth", b"m", _label(f"p{i}", "a" if version == "1" else "b"))
    versions = core.stats().versions
    assert (versions["m", "1"].labelled, versions["m", "1"].windowed_metric) == (2, 1.0)
    assert (versions["m", "2"].labelled, versions["m", "2"].windowed_metric) == (1, 0.0)


# ---- stats -----------------------------------------------------------------------------


def test_stats_count_what_happened() -> None:
    settings = MonitorSettings(join={"ttl_seconds": 3600, "max_skew_seconds": 0})
    core = MonitorCore(settings)
    core.process("predictions", b"m", b"oops")
    _pair(core, "p1", "a", "a")
    _pair(core, "p2", "a", "b")
    core.process("predictions", b"m", _prediction("p3", "a"))  # its label never comes
    core.process("predictions", b"m", _prediction("p4", "a"))
    core.process("predictions", b"m", _prediction("p4", "a"))  # at-least-once retry
    core.process("ground_truth", b"m", _label("early", "a"))
    core.process("ground_truth", b"m", _label("p9", "a", at_ms=T0 + 2 * 3_600_000))

    stats = core.stats()
    assert stats.invalid == Counter({("predictions", "invalid_json"): 1})
    assert stats.joined == 2
    assert stats.dropped == Counter(
        {("prediction", "duplicate"): 1, ("prediction", "ttl"): 2, ("label", "ttl"): 1}
    )
    assert stats.pending == {"prediction": 0, "label": 1}
    assert stats.outputs == Counter({"labelled_examples": 2, "dead_letter": 1})
    assert stats.signals == Counter()
    version = stats.versions["m", "1"]
    assert (version.task, version.labelled, version.episode) == ("classification", 2, 0)
    assert version.windowed_metric == 0.5


def test_stats_count_signals_by_detector_and_severity(drop_records: list[Record]) -> None:
    core = MonitorCore(MonitorSettings())
    outputs = _run(core, drop_records)
    stats = core.stats()
    assert sum(stats.signals.values()) == len(_events(outputs, "drift_events"))
    assert stats.signals[("adwin", "drift")] + stats.signals[("page_hinkley", "drift")] >= 1
    assert stats.outputs["retrain_requests"] == 1
    assert stats.versions["demo-model", "1"].episode == 1
    assert stats.versions["demo-model", "1"].windowed_metric == pytest.approx(0.70, abs=0.04)
