"""Event contracts: what the monitor accepts from Kafka and what it emits."""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from stream_monitor.config import MonitorSettings
from stream_monitor.core.events import (
    GroundTruth,
    InvalidRecordError,
    Output,
    Prediction,
    batched,
    deterministic_id,
    envelope,
    epoch_seconds,
    iso,
    parse_record,
    unbatch,
)
from stream_monitor.core.monitor import MonitorCore

PLACEHOLDER = 12345.678
JAN_1_2026 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def _prediction(**changes: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "prediction_id": "p1",
        "model_id": "m1",
        "model_version": "3",
        "timestamp": "2026-01-01T00:00:00+00:00",
        "features": {"age": 42, "income": 1234.5, "country": "NZ", "referrer": None},
        "prediction": "churn",
        "scores": {"churn": 0.7, "stay": 0.3},
    }
    value.update(changes)
    return value


def _label(**changes: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "prediction_id": "p1",
        "model_id": "m1",
        "label": "stay",
        "timestamp": "2026-01-03T00:00:00Z",
    }
    value.update(changes)
    return value


def _parse_prediction(value: dict[str, Any], key: bytes | None = b"m1") -> Prediction:
    return parse_record(Prediction, key, json.dumps(value).encode())


def _refusal(schema: type[Prediction] | type[GroundTruth], value: bytes) -> InvalidRecordError:
    with pytest.raises(InvalidRecordError) as caught:
        parse_record(schema, b"m1", value)
    return caught.value


# ---- timestamps ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "timestamp",
    [
        "2026-01-01T00:00:00+00:00",
        "2026-01-01T00:00:00Z",
        "2026-01-01T01:00:00+01:00",
        "2025-12-31T19:00:00-05:00",
        1_767_225_600_000,
        1_767_225_600_000.0,
    ],
)
def test_timestamp_as_iso_with_offset_or_epoch_ms_is_held_as_epoch_seconds(
    timestamp: str | float,
) -> None:
    assert _parse_prediction(_prediction(timestamp=timestamp)).timestamp == JAN_1_2026


def test_epoch_milliseconds_keep_their_fraction_of_a_second() -> None:
    assert _parse_prediction(_prediction(timestamp=1_767_225_600_250)).timestamp == (
        JAN_1_2026 + 0.25
    )


def test_naive_iso_timestamp_is_refused_because_its_instant_is_unknown() -> None:
    error = _refusal(Prediction, json.dumps(_prediction(timestamp="2026-01-01T00:00:00")).encode())
    assert error.reason == "schema"
    assert "timestamp" in error.detail and "offset" in error.detail


@pytest.mark.parametrize("timestamp", [True, None, "yesterday", "1767225600000", [1]])
def test_timestamp_that_is_neither_iso_nor_epoch_ms_is_refused(timestamp: object) -> None:
    error = _refusal(GroundTruth, json.dumps(_label(timestamp=timestamp)).encode())
    assert error.reason == "schema"
    assert "timestamp" in error.detail


def test_events_refuse_pickling_which_would_convert_their_timestamp_twice() -> None:
    label = parse_record(GroundTruth, b"m1", json.dumps(_label()).encode())
    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps(label)


def test_epoch_milliseconds_may_be_a_float_subclass_and_give_a_plain_float() -> None:
    # As a pydantic EventTime, a timestamp can come from numpy (a DataFrame, say).
    seconds = epoch_seconds(np.float64(1_500.0))
    assert seconds == 1.5 and type(seconds) is float


def test_timestamp_past_year_9999_is_refused() -> None:
    # Accepted, such a timestamp would crash iso() when the pair is joined.
    value = json.dumps(_label()).replace('"2026-01-03T00:00:00Z"', "1e20").encode()
    assert _refusal(GroundTruth, value).reason == "schema"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("field", ["timestamp", "prediction", "features"])
def test_non_finite_number_is_invalid_json(literal: str, field: str) -> None:
    # Python's json module writes and reads NaN, but it is not JSON. Let through, a NaN
    # regression prediction would turn the error stream, the windowed MAE and ADWIN
    # into NaN for good.
    changed = {"features": {"x": PLACEHOLDER}} if field == "features" else {field: PLACEHOLDER}
    text = json.dumps(_prediction(**changed)).replace(str(PLACEHOLDER), literal)
    assert _refusal(Prediction, text.encode()).reason == "invalid_json"


# ---- invalid records: the reason says which kind -----------------------------------


@pytest.mark.parametrize("value", [b"not json", b"", b'{"prediction_id": "p1",', b"\xff\xfe"])
def test_unparseable_bytes_are_invalid_json(value: bytes) -> None:
    assert _refusal(Prediction, value).reason == "invalid_json"


@pytest.mark.parametrize("value", [b"[1, 2]", b"null", b'"p1"', b"42"])
def test_json_that_is_not_an_object_is_a_schema_violation(value: bytes) -> None:
    assert _refusal(GroundTruth, value).reason == "schema"


@pytest.mark.parametrize("field", ["prediction_id", "model_id", "label", "timestamp"])
def test_missing_label_field_is_a_schema_violation_naming_the_field(field: str) -> None:
    value = _label()
    del value[field]
    error = _refusal(GroundTruth, json.dumps(value).encode())
    assert error.reason == "schema"
    assert field in error.detail


@pytest.mark.parametrize(
    "field", ["prediction_id", "model_id", "model_version", "features", "prediction"]
)
def test_missing_prediction_field_is_a_schema_violation_naming_the_field(field: str) -> None:
    value = _prediction()
    del value[field]
    error = _refusal(Prediction, json.dumps(value).encode())
    assert error.reason == "schema"
    assert field in error.detail


def test_record_key_other_than_model_id_is_a_key_mismatch() -> None:
    with pytest.raises(InvalidRecordError) as caught:
        _parse_prediction(_prediction(), key=b"m2")
    assert caught.value.reason == "key_mismatch"
    assert "m1" in caught.value.detail and "m2" in caught.value.detail


def test_record_without_a_key_is_a_key_mismatch() -> None:
    # Unkeyed records land on arbitrary partitions, where their partner never arrives.
    with pytest.raises(InvalidRecordError) as caught:
        parse_record(GroundTruth, None, json.dumps(_label()).encode())
    assert caught.value.reason == "key_mismatch"


def test_invalid_record_error_message_starts_with_its_reason() -> None:
    error = _refusal(Prediction, b"{")
    assert str(error).startswith("invalid_json: ")


# ---- what a valid record may hold ------------------------------------------------------


def test_extra_fields_from_serving_apps_are_allowed_and_kept_in_labelled_examples() -> None:
    core = MonitorCore(MonitorSettings())
    extra = {"request_id": "r-17", "tenant": {"id": 4}}
    assert core.process("predictions", b"m1", json.dumps(_prediction(**extra)).encode()) == []
    (example,) = core.process("ground_truth", b"m1", json.dumps(_label(**extra)).encode())
    (event,) = unbatch(example.value)
    for name in ("prediction", "ground_truth"):
        assert extra.items() <= event["data"][name].items()


def test_features_may_be_numbers_strings_or_null() -> None:
    prediction = _parse_prediction(_prediction())
    assert prediction.features == {"age": 42, "income": 1234.5, "country": "NZ", "referrer": None}


@pytest.mark.parametrize("bad", [[1, 2], {"nested": 1}, True])
def test_feature_value_that_is_not_a_number_string_or_null_is_refused(bad: object) -> None:
    error = _refusal(Prediction, json.dumps(_prediction(features={"age": bad})).encode())
    assert error.reason == "schema"
    assert "features.age" in error.detail


@pytest.mark.parametrize(
    "changes",
    [
        {"prediction_id": 17},  # ids are text; no silent str(17)
        {"model_version": 3},
        {"prediction_id": ""},
        {"prediction": None},
        {"prediction": [0, 1]},
        {"scores": {"churn": "0.7"}},
        {"scores": [0.7, 0.3]},
        {"features": ["age", 42]},
    ],
)
def test_prediction_with_a_loosely_typed_field_is_refused(changes: dict[str, Any]) -> None:
    (field,) = changes
    error = _refusal(Prediction, json.dumps(_prediction(**changes)).encode())
    assert error.reason == "schema"
    assert field in error.detail


@pytest.mark.parametrize("label", [None, [1], {"class": "a"}])
def test_label_that_is_not_a_scalar_is_refused(label: object) -> None:
    assert _refusal(GroundTruth, json.dumps(_label(label=label)).encode()).reason == "schema"


@pytest.mark.parametrize("prediction", ["churn", 3, 2.5, True])
def test_prediction_is_a_class_or_a_number(prediction: object) -> None:
    assert _parse_prediction(_prediction(prediction=prediction)).prediction == prediction


def test_scores_are_optional() -> None:
    value = _prediction()
    del value["scores"]
    assert _parse_prediction(value).scores is None


@pytest.mark.parametrize("literal", ["NaN", "Infinity"])
def test_non_finite_label_is_invalid_json(literal: str) -> None:
    text = json.dumps(_label(label=PLACEHOLDER)).replace(str(PLACEHOLDER), literal)
    assert _refusal(GroundTruth, text.encode()).reason == "invalid_json"


# ---- outgoing events ------------------------------------------------------------------


def test_envelope_carries_the_cloudevents_fields_with_event_time() -> None:
    body = envelope("stream_monitor.x", "id-1", JAN_1_2026 + 0.5, "m1", {"k": 1})
    assert body == {
        "specversion": "1.0",
        "id": "id-1",
        "type": "stream_monitor.x",
        "source": "stream-monitor",
        "subject": "m1",
        "time": "2026-01-01T00:00:00.500+00:00",
        "datacontenttype": "application/json",
        "data": {"k": 1},
    }


def test_iso_time_is_utc_with_milliseconds_and_an_offset() -> None:
    assert iso(0) == "1970-01-01T00:00:00.000+00:00"
    assert iso(-62_135_596_800) == "0001-01-01T00:00:00.000+00:00"  # four-digit years
    assert iso(253_402_300_799.5) == "9999-12-31T23:59:59.500+00:00"
    assert datetime.fromisoformat(iso(JAN_1_2026 + 0.123)).timestamp() == JAN_1_2026 + 0.123


def test_output_event_is_compact_json_keyed_by_model_with_its_event_time() -> None:
    output = Output.event("drift_events", "m1", {"a": [1, 2], "b": "x"}, timestamp=JAN_1_2026)
    assert (output.topic, output.key, output.timestamp, output.headers) == (
        "drift_events",
        b"m1",
        JAN_1_2026,
        (),
    )
    assert json.loads(output.value) == {"a": [1, 2], "b": "x"}
    assert b" " not in output.value


def test_deterministic_id_is_the_same_for_the_same_parts() -> None:
    assert deterministic_id("retrain.requested", "m1", "3", 1) == deterministic_id(
        "retrain.requested", "m1", "3", 1
    )


@pytest.mark.parametrize(
    "other",
    [
        ("retrain.requested", "m1", "3", 2),
        ("retrain.requested", "m1", "4", 1),
        ("escalation", "m1", "3", 1),
    ],
)
def test_deterministic_id_differs_when_any_part_differs(other: tuple[object, ...]) -> None:
    assert deterministic_id("retrain.requested", "m1", "3", 1) != deterministic_id(*other)


def test_deterministic_id_is_stable_across_releases() -> None:
    # The trainer deduplicates retrain requests by id, across restarts and upgrades: a
    # change of namespace or of the name layout would let an old request run twice.
    assert deterministic_id("retrain.requested", "m", "1", 1) == (
        "815c0b83-d896-565a-8380-cbdc79da1c38"
    )


def test_batches_stay_within_their_size_and_keep_order() -> None:
    keys = ["a"] * 30 + ["b"] * 5 + ["a"] * 3
    events = [
        Output.event("labelled_examples", key, {"id": i, "pad": "x" * (i % 7 * 10)}, 100.0 - i)
        for i, key in enumerate(keys)
    ]
    events.insert(10, Output.event("labelled_examples", "a", {"id": -1, "pad": "y" * 500}, 0.0))
    time_of = {unbatch(e.value)[0]["id"]: e.timestamp for e in events}

    records = batched(events, max_bytes=300)

    assert [e for r in records for e in unbatch(r.value)] == [unbatch(e.value)[0] for e in events]
    assert [r.key for r in records].count(b"b") == 1
    position = 0
    for record in records:
        ids = [e["id"] for e in unbatch(record.value)]
        assert {events[position + n].key for n in range(len(ids))} == {record.key}
        assert len(record.value) <= 300 or len(ids) == 1  # an event too big goes alone
        assert record.timestamp == max(time_of[i] for i in ids)
        position += len(ids)
        # Greedy: the next event of the same key would not have fitted.
        if position < len(events) and events[position].key == record.key:
            assert len(record.value) + 1 + len(events[position].value) > 300
