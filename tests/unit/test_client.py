"""The serving apps' client: events in the monitor's contract, keys on the right partition."""

from __future__ import annotations

import datetime
import json
import math

import numpy as np
import orjson
import pytest
from kafka.partitioner.default import murmur2

from stream_monitor.client import (
    InvalidEventError,
    _epoch_ms,
    label_record,
    partition_for,
    prediction_record,
)
from stream_monitor.config import MonitorSettings
from stream_monitor.core.events import GroundTruth, InvalidRecordError, Prediction, parse_record

# org.apache.kafka.common.utils.UtilsTest.testMurmur2: the Java client's own vectors
# (signed 32-bit ints; kafka-python returns the same bits unsigned).
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def test_kafka_python_hashes_keys_as_the_java_client_does() -> None:
    for key, java in JAVA_MURMUR2.items():
        assert murmur2(key) == java & 0xFFFFFFFF
        # Java: Utils.toPositive(murmur2(key)) % partitions
        for partitions in (1, 3, 12, 100):
            assert partition_for(key.decode(), partitions) == (java & 0x7FFFFFFF) % partitions


def test_a_prediction_record_is_what_the_monitor_accepts() -> None:
    value = prediction_record(
        "churn",
        "7",
        "p-1",
        1_764_064_800_000,
        {"tenure": np.int64(14), "spend": np.float32(2.5), "plan": "pro", "last": None},
        np.bool_(True),
        scores={"true": 0.8, "false": 0.2},
        extra={"tenant": "acme"},
    )
    event = parse_record(Prediction, b"churn", value)
    assert event.features == {"tenure": 14, "spend": 2.5, "plan": "pro", "last": None}
    assert event.prediction is True
    assert event.timestamp == 1_764_064_800.0
    assert orjson.loads(value)["tenant"] == "acme"


@pytest.mark.parametrize(
    ("features", "prediction", "message"),
    [
        ({"x": math.nan}, "a", "feature 'x' is nan"),
        ({"x": np.float64("inf")}, "a", "feature 'x' is inf"),
        ({"x": 1.0}, math.nan, "prediction is nan"),
        ({"x": [1, 2]}, "a", "at `$.features.x`"),
        ({"x": 1.0}, None, "at `$.prediction`"),
        ({"x": {"nested": 1}}, "a", "at `$.features.x`"),
    ],
)
def test_a_prediction_that_breaks_the_contract_raises_at_once(
    features: dict[str, object], prediction: object, message: str
) -> None:
    with pytest.raises(InvalidEventError, match=message.replace("$", r"\$").replace("[", r"\[")):
        prediction_record("m", "1", "p", 0, features, prediction)


def test_empty_identifiers_and_bad_scores_are_refused() -> None:
    with pytest.raises(InvalidEventError, match="model_version"):
        prediction_record("m", "", "p", 0, {}, "a")
    with pytest.raises(InvalidEventError, match="score 'a' is nan"):
        prediction_record("m", "1", "p", 0, {}, "a", scores={"a": math.nan})
    with pytest.raises(InvalidEventError, match="scores"):
        prediction_record("m", "1", "p", 0, {}, "a", scores={"a": "high"})  # type: ignore[dict-item]


def test_a_label_record_is_what_the_monitor_accepts() -> None:
    event = parse_record(GroundTruth, b"m", label_record("m", "p", 1_000, 2.5))
    assert (event.label, event.timestamp) == (2.5, 1.0)
    with pytest.raises(InvalidEventError, match="label is nan"):
        label_record("m", "p", 0, math.nan)
    with pytest.raises(InvalidEventError, match="prediction_id"):
        label_record("m", "", 0, 1)


NOW = 1_764_064_800.0  # the clock, epoch seconds
LIMITS = MonitorSettings().limits


def _deep(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("prediction_id", "timestamp_ms", "features", "extra", "message"),
    [
        ("p" * 900_000, NOW * 1000, {"x": 1}, None, "limits.max_id_length"),
        ("p", NOW * 1000, {"x": "t" * 5000}, None, "limits.max_text_length"),
        ("p", NOW * 1000, {"x": 1}, {"trace": _deep(20)}, "limits.max_depth"),
        ("p", (NOW + 7200) * 1000, {"x": 1}, None, "limits.max_event_time_ahead_seconds"),
        ("p", NOW * 1000, {"x": 1e200}, None, "at `$.features.x`"),
    ],
)
def test_a_prediction_past_the_monitors_limits_raises_at_once(
    prediction_id: str,
    timestamp_ms: float,
    features: dict[str, object],
    extra: dict[str, object] | None,
    message: str,
) -> None:
    record = (
        "m", "1", prediction_id, int(timestamp_ms), features, "a", None, extra, LIMITS, NOW
    )  # fmt: skip
    with pytest.raises(InvalidEventError, match=message.replace("$", r"\$")):
        prediction_record(*record)
    # The monitor dead-letters the same record for the same reason.
    with pytest.raises(InvalidRecordError, match=message.replace("$", r"\$")):
        parse_record(Prediction, b"m", json.dumps(_fields(*record[:8])).encode(), LIMITS, NOW)


def _fields(
    model_id: str,
    model_version: str,
    prediction_id: str,
    timestamp_ms: int,
    features: dict[str, object],
    prediction: str,
    _scores: None,
    extra: dict[str, object] | None,
) -> dict[str, object]:
    return {
        **(extra or {}),
        "prediction_id": prediction_id,
        "model_id": model_id,
        "model_version": model_version,
        "timestamp": timestamp_ms,
        "features": features,
        "prediction": prediction,
    }


def test_an_integer_beyond_64_bits_is_an_invalid_event_not_a_crash() -> None:
    with pytest.raises(InvalidEventError, match="64-bit"):
        prediction_record("m", "1", "p", int(NOW * 1000), {"x": 2**70}, "a")


def test_the_limits_are_the_settings_given() -> None:
    tight = MonitorSettings(limits={"max_id_length": 8, "max_event_time_ahead_seconds": 60}).limits
    args = ("m", "1", "p-123456789", int(NOW * 1000), {"x": 1}, "a")
    prediction_record(*args, limits=LIMITS, clock=NOW)
    with pytest.raises(InvalidEventError, match=r"limits\.max_id_length"):
        prediction_record(*args, limits=tight, clock=NOW)
    label_record("m", "p", int((NOW + 120) * 1000), "a", LIMITS, NOW)
    with pytest.raises(InvalidEventError, match=r"limits\.max_event_time_ahead_seconds"):
        label_record("m", "p", int((NOW + 120) * 1000), "a", tight, NOW)
    with pytest.raises(InvalidEventError, match=r"limits\.max_id_length"):
        label_record("m", "q" * 900_000, int(NOW * 1000), "a", LIMITS, NOW)


def test_event_time_is_now_or_given_with_a_time_zone() -> None:
    assert _epoch_ms(None, lambda: 12.3456) == 12_346
    assert _epoch_ms(1.5, lambda: 0.0) == 1_500
    aware = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    assert _epoch_ms(aware, lambda: 0.0) == 1_767_225_600_000
    with pytest.raises(InvalidEventError, match="time zone"):
        _epoch_ms(datetime.datetime(2026, 1, 1), lambda: 0.0)


def test_the_readme_example_uses_the_client_as_it_is() -> None:
    import ast
    import inspect
    import re
    from pathlib import Path

    from stream_monitor import client

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    (example,) = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "client" in b]
    tree = ast.parse(example)
    calls = {
        node.func.attr: {k.arg for k in node.keywords}
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }
    assert calls["log"] <= set(inspect.signature(client.PredictionLogger.log).parameters)
    assert calls["report"] <= set(inspect.signature(client.LabelReporter.report).parameters)
