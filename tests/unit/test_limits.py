"""The input contract's limits: every record it refuses reaches dead-letter with its
reason, nothing escapes the per-record boundary, and the rest of the stream goes on."""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any

import pytest

from stream_monitor import adversarial
from stream_monitor.adversarial import CASES, label, prediction
from stream_monitor.config import LimitSettings, MonitorSettings, load_settings
from stream_monitor.core import codec
from stream_monitor.core.events import InvalidRecordError, Output, dead_letter
from stream_monitor.core.features import FeatureDriftTracker
from stream_monitor.core.monitor import MonitorCore

NOW_MS = 1_767_225_600_000
NOW = NOW_MS / 1000


def _valid(core: MonitorCore, count: int, start: int = 0) -> list[Output]:
    """``count`` valid predictions of model m, each labelled at once; the outputs."""
    outputs = []
    for i in range(start, start + count):
        p = prediction("m", i, NOW_MS + i, prediction_id=f"ok-{i}")
        y = label("m", i, NOW_MS + i, prediction_id=f"ok-{i}")
        outputs += core.process("predictions", b"m", json.dumps(p).encode(), NOW)
        outputs += core.process("ground_truth", b"m", json.dumps(y).encode(), NOW)
    return outputs


def _reason(output: Output) -> str:
    return dict(output.headers)["error.reason"].decode()


@pytest.mark.parametrize("name", list(CASES))
def test_each_case_reaches_dead_letter_and_the_stream_goes_on(name: str) -> None:
    core = MonitorCore(MonitorSettings())
    _valid(core, 600)  # the model exists, its reference half full
    topic, key, value = CASES[name].record("m", 1, NOW_MS)
    (out,) = core.process(topic, key, value, NOW)
    assert (out.topic, _reason(out)) == ("dead_letter", CASES[name].reason), dict(out.headers)
    size = len(out.key or b"") + len(out.value) + sum(len(k) + len(v) for k, v in out.headers)
    assert size <= LimitSettings().dead_letter_max_bytes - 512
    # The rest of the stream: reference complete, feature tests run, every pair joined.
    after = _valid(core, 1_000, start=600)
    assert [o.topic for o in after if o.topic == "dead_letter"] == []
    assert core.stats().joined == 1_600
    # What the model holds can be stored and restored, and is tested as before.
    restored = MonitorCore(MonitorSettings())
    restored.restore("m", core.snapshot("m"))
    assert _valid(restored, 200, start=1_600) == _valid(core, 200, start=1_600)


def test_nesting_at_the_limit_passes_and_one_deeper_is_refused() -> None:
    core = MonitorCore(MonitorSettings(limits={"max_depth": 4}))
    # The record is depth 1, so an unknown field may nest 3 more.
    ok = adversarial._json(prediction("m", 1, NOW_MS), extra="[[[1]]]")
    deep = adversarial._json(prediction("m", 2, NOW_MS), extra="[[[[1]]]]")
    assert core.process("predictions", b"m", ok, NOW) == []
    (out,) = core.process("predictions", b"m", deep, NOW)
    assert _reason(out) == "limit"
    assert b"more than 4 deep" in dict(out.headers)["error.detail"]
    # Brackets inside strings are text, not nesting.
    text = json.dumps(prediction("m", 3, NOW_MS, extra="[[[[[[[[")).encode()
    assert core.process("predictions", b"m", text, NOW) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("features", {"x": 2**63}),
        ("features", {"x": -(2**63) - 1}),
        ("features", {"x": 1e151}),
        ("scores", {"yes": -1e200}),
        ("prediction", 2**64),
        ("label", 1e300),
    ],
)
def test_numbers_past_64_bits_or_the_magnitude_bound_are_refused(field: str, value: Any) -> None:
    core = MonitorCore(MonitorSettings())
    if field == "label":
        topic, record = "ground_truth", label("m", 1, NOW_MS, label=value)
    else:
        topic, record = "predictions", prediction("m", 1, NOW_MS, **{field: value})
    (out,) = core.process(topic, b"m", json.dumps(record).encode(), NOW)  # type: ignore[arg-type]
    assert _reason(out) == "schema"
    # At the bound itself, accepted.
    fine = prediction("m", 2, NOW_MS, features={"x": 1e150, "y": 2**63 - 1})
    assert core.process("predictions", b"m", json.dumps(fine).encode(), NOW) == []


def test_a_wrong_typed_feature_is_named_and_describing_it_never_fails() -> None:
    core = MonitorCore(MonitorSettings())
    named = prediction("m", 1, NOW_MS, features={"x": 1.0, "colour": ["red"]})
    (out,) = core.process("predictions", b"m", json.dumps(named).encode(), NOW)
    assert b"$.features.colour" in dict(out.headers)["error.detail"]
    for case in ("wrong-type-then-nan", "wrong-type-then-huge"):
        (out,) = core.process(*CASES[case].record("m", 2, NOW_MS), NOW)
        assert out.topic == "dead_letter"


def test_the_timestamp_window_follows_the_clock_given_and_replays_have_none() -> None:
    core = MonitorCore(MonitorSettings(limits={"max_event_time_behind_seconds": 3600}))
    record = json.dumps(prediction("m", 1, NOW_MS + 1_000_000)).encode()  # 1000 s ahead
    (out,) = core.process("predictions", b"m", record, NOW)
    assert _reason(out) == "timestamp"
    assert b"1000 s ahead of the clock" in dict(out.headers)["error.detail"]
    assert core.process("predictions", b"m", record, NOW + 200) == []  # 800 s: inside
    old = json.dumps(prediction("m", 2, NOW_MS - 7_200_000)).encode()
    (out,) = core.process("predictions", b"m", old, NOW)
    assert b"7200 s behind" in dict(out.headers)["error.detail"]
    # A replay of recorded data passes no clock: any instant in years 1 to 9999 is fine.
    year_9999 = CASES["timestamp-year-9999"].record("m", 3, NOW_MS)
    assert core.process(*year_9999) == []


def test_a_far_future_record_cannot_expire_the_join_of_a_live_model() -> None:
    core = MonitorCore(MonitorSettings())
    for i in range(100):
        p = prediction("m", i, NOW_MS + i, prediction_id=f"ok-{i}")
        core.process("predictions", b"m", json.dumps(p).encode(), NOW)
    core.process(*CASES["timestamp-year-9999"].record("m", 1, NOW_MS), NOW)
    for i in range(100):
        y = label("m", i, NOW_MS + 100 + i, prediction_id=f"ok-{i}")
        core.process("ground_truth", b"m", json.dumps(y).encode(), NOW)
    assert core.stats().joined == 100
    assert sum(core.stats().dropped.values()) == 0


@pytest.mark.parametrize(
    ("field", "limit"),
    [("prediction_id", "max_id_length"), ("model_version", "max_id_length")],
)
def test_ids_past_their_length_are_refused(field: str, limit: str) -> None:
    core = MonitorCore(MonitorSettings(limits={limit: 8}))
    ok = prediction("m", 1, NOW_MS, **{field: "12345678"})
    long = prediction("m", 2, NOW_MS, **{field: "123456789"})
    assert core.process("predictions", b"m", json.dumps(ok).encode(), NOW) == []
    (out,) = core.process("predictions", b"m", json.dumps(long).encode(), NOW)
    assert _reason(out) == "limit" and b"max_id_length" in dict(out.headers)["error.detail"]


def test_a_long_model_id_is_refused() -> None:
    core = MonitorCore(MonitorSettings(limits={"max_id_length": 8}))
    model = "m" * 9
    record = json.dumps(prediction(model, 1, NOW_MS)).encode()
    (out,) = core.process("predictions", model.encode(), record, NOW)
    assert _reason(out) == "limit"


@pytest.mark.parametrize(
    "fields",
    [
        {"features": {"colour": "r" * 65}},
        {"features": {"f" * 65: 1.0}},
        {"prediction": "y" * 65},
        {"scores": {"s" * 65: 0.5}},
    ],
    ids=["category", "feature-name", "prediction", "score-class"],
)
def test_texts_past_their_length_are_refused(fields: dict[str, Any]) -> None:
    core = MonitorCore(MonitorSettings(limits={"max_text_length": 64}))
    (out,) = core.process(
        "predictions", b"m", json.dumps(prediction("m", 1, NOW_MS, **fields)).encode(), NOW
    )
    assert _reason(out) == "limit" and b"max_text_length" in dict(out.headers)["error.detail"]
    text_label = label("m", 1, NOW_MS, label="y" * 65)
    (out,) = core.process("ground_truth", b"m", json.dumps(text_label).encode(), NOW)
    assert _reason(out) == "limit"


def test_a_dead_letter_too_large_keeps_its_start_size_and_hash() -> None:
    value = b"{" + bytes(random.Random(1).randbytes(1_048_399))
    refused = InvalidRecordError("invalid_json", "not JSON")
    letter = dead_letter("predictions", b"m", value, refused, max_bytes=1_000_000)
    headers = dict(letter.headers)
    size = (
        len(letter.key or b"")
        + len(letter.value)
        + sum(len(k) + len(v) for k, v in headers.items())
    )
    # Room left for the partition and offset headers the shell adds.
    assert value.startswith(letter.value) and size <= 1_000_000 - 256
    assert headers["original.size"] == str(1 + len(value)).encode()
    assert headers["original.sha256"] == hashlib.sha256(value).hexdigest().encode()
    small = dead_letter("predictions", b"m", b"{", refused, max_bytes=1_000_000)
    assert small.value == b"{" and "original.size" not in dict(small.headers)


def test_an_error_no_check_foresaw_reaches_dead_letter(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise ZeroDivisionError("a defect")

    monkeypatch.setattr(FeatureDriftTracker, "update", broken)
    core = MonitorCore(MonitorSettings())
    (out,) = core.process("predictions", b"m", json.dumps(prediction("m", 1, NOW_MS)).encode())
    assert _reason(out) == "unexpected"
    assert dict(out.headers)["error.detail"] == b"ZeroDivisionError: a defect"
    assert core.stats().invalid == {("predictions", "unexpected"): 1}


def test_a_fuzzed_stream_is_all_dead_letters_and_the_state_stays_storable() -> None:
    core = MonitorCore(MonitorSettings())
    _valid(core, 1_200)
    records = list(adversarial.mixed(random.Random(4), 2_000, ["m", "n"], NOW_MS))
    for topic, key, value in records:
        outputs = core.process(topic, key, value, NOW)
        assert [o.topic for o in outputs] == ["dead_letter"], value[:200]
    assert sum(core.stats().invalid.values()) == 2_000
    for model in core.models():
        codec.loads(codec.dumps(core._models[model]))
    assert [o for o in _valid(core, 500, start=1_200) if o.topic == "dead_letter"] == []


def test_limits_are_settings_with_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_MONITOR_LIMITS__MAX_EVENT_TIME_AHEAD_SECONDS", "60")
    monkeypatch.setenv("STREAM_MONITOR_LIMITS__MAX_ID_LENGTH", "32")
    limits = load_settings().limits
    assert (limits.max_event_time_ahead_seconds, limits.max_id_length) == (60.0, 32)
    with pytest.raises(ValueError, match="max_depth"):
        LimitSettings(max_depth=1)
