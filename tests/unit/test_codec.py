"""The snapshot format: every state class round-trips and behaves the same afterwards;
data that is not a snapshot is refused and runs nothing."""

from __future__ import annotations

import json
import os
import pickle
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from river import drift

from stream_monitor.config import FeatureDriftSettings, MonitorSettings, PerformanceSettings
from stream_monitor.core import codec
from stream_monitor.core.events import GroundTruth, Prediction, decode
from stream_monitor.core.features import FeatureDriftTracker
from stream_monitor.core.join import LabelJoin, MemoryStore, MemoryStores
from stream_monitor.core.monitor import (
    SNAPSHOT_FORMAT,
    SNAPSHOT_MAGIC,
    IncompatibleSnapshotError,
    InvalidSnapshotError,
    MonitorCore,
)
from stream_monitor.core.performance import PerformanceTracker

T0 = 1_767_225_600_000
Record = tuple[Any, bytes, bytes]


def _stream(events: int, seed: int, task: str = "classification") -> Iterator[Record]:
    """Two models' predictions (numeric, missing and categorical features, scores) with
    labels 40 events late; both drift halfway (inputs and errors)."""
    rng = random.Random(seed)
    waiting: list[tuple[str, str, object]] = []
    for i in range(events):
        drifted = i >= events // 2
        for model in ("a", "b"):
            x = rng.gauss(1.0 if drifted else 0.0, 1.0)
            features = {
                "x": x,
                "n": rng.randint(0, 5),
                "colour": rng.choice(["red", "green"] + (["blue"] if drifted else [])),
                "gap": None if rng.random() < 0.1 else rng.random(),
            }
            if task == "classification":
                prediction: object = "yes" if x > 0 else "no"
                truth: object = prediction if rng.random() < (0.6 if drifted else 0.9) else "?"
                scores: dict[str, float] | None = {"yes": 0.7, "no": 0.3}
            else:
                prediction = x
                truth = x + rng.gauss(0.0, 2.0 if drifted else 0.5)
                scores = None
            value = {
                "prediction_id": f"{model}{i}",
                "model_id": model,
                "model_version": "1",
                "timestamp": T0 + i * 100,
                "features": features,
                "prediction": prediction,
                "scores": scores,
            }
            yield "predictions", model.encode(), json.dumps(value).encode()
            waiting.append((model, f"{model}{i}", truth))
        while len(waiting) > 80:
            model, pid, truth = waiting.pop(0)
            label: dict[str, object] = {"prediction_id": pid, "model_id": model, "label": truth}
            label["timestamp"] = T0 + i * 100
            yield "ground_truth", model.encode(), json.dumps(label).encode()


def _records(events: int, seed: int, task: str = "classification") -> list[Record]:
    return [
        (t, k, v if isinstance(v, bytes) else v.encode()) for t, k, v in _stream(events, seed, task)
    ]


def _run(core: MonitorCore, records: list[Record]) -> list[Any]:
    return [o for topic, key, value in records for o in core.process(topic, key, value)]


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("split", [500, 2_600, 4_500], ids=["reference", "tested", "drifted"])
def test_a_restored_core_behaves_identically_on_the_next_1000_events(task: str, split: int) -> None:
    records = _records(3_000, seed=split, task=task)
    settings = MonitorSettings(defaults={"policy": {"retrain_after_labels": 100}})
    stores = MemoryStores()  # the pending join entries stay on the shared local disk
    original = MonitorCore(settings, stores=stores)
    before = _run(original, records[:split])
    restored = MonitorCore(settings, stores=stores)
    for model in original.models():
        original.checkpoint_join(model)
        restored.restore(model, original.snapshot(model))
    # The next 1000 records of each model, through both.
    after = records[split : split + 2_000]
    assert _run(restored, after) == _run(original, after)
    # Compared as text: NaN (a statistic not yet defined) is unequal to itself.
    assert repr(restored.stats().versions) == repr(original.stats().versions)
    assert repr(restored.stats().features) == repr(original.stats().features)
    assert before  # the split fell where state had built up (labelled examples at least)


def _same_after(
    state: object, update: Callable[[Any, int], object], events: int = 1_000
) -> tuple[list[object], list[object]]:
    copy = codec.loads(codec.dumps(state))
    assert type(copy) is type(state)
    return [update(state, i) for i in range(events)], [update(copy, i) for i in range(events)]


def _errors(seed: int, count: int) -> list[float]:
    rng = random.Random(seed)
    return [float(rng.random() < (0.1 if i < count // 2 else 0.5)) for i in range(count)]


def test_adwin_round_trips_mid_stream() -> None:
    adwin = drift.ADWIN(delta=0.002)
    for error in _errors(1, 3_000):
        adwin.update(error)
    later = _errors(2, 1_000)

    def step(detector: drift.ADWIN, i: int) -> object:
        detector.update(later[i])
        return (detector.drift_detected, detector.estimation, detector.width)

    ours, theirs = _same_after(adwin, step)
    assert ours == theirs
    assert any(d for d, _, _ in ours)  # the window moved: a cut happened after the copy


@pytest.mark.parametrize("mode", ["up", "down", "both"])
def test_page_hinkley_round_trips_mid_stream_in_each_mode(mode: str) -> None:
    detector = drift.PageHinkley(threshold=20.0, mode=mode)
    for error in _errors(3, 2_000):
        detector.update(error if mode != "down" else 1.0 - error)
    later = _errors(4, 1_000)

    def step(d: drift.PageHinkley, i: int) -> object:
        d.update(later[i] if mode != "down" else 1.0 - later[i])
        return d.drift_detected

    ours, theirs = _same_after(detector, step)
    assert ours == theirs and any(ours)


def test_performance_tracker_round_trips_mid_stream() -> None:
    tracker = PerformanceTracker(PerformanceSettings(), "classification")
    for error in _errors(5, 2_500):
        tracker.update(error)
    later = _errors(6, 1_000)
    ours, theirs = _same_after(tracker, lambda t, i: (t.update(later[i]), t.windowed_metric))
    assert ours == theirs
    assert any(signals for signals, _ in ours)


def test_feature_tracker_round_trips_mid_stream() -> None:
    rng = np.random.default_rng(8)
    tracker = FeatureDriftTracker(FeatureDriftSettings(), "classification")
    values = rng.normal(size=(3_000, 3)).tolist()
    colours = rng.choice(["red", "green", "blue"], size=3_000).tolist()

    def step(t: FeatureDriftTracker, i: int) -> object:
        shift = 1.5 if i >= 1_500 else 0.0
        row, colour = values[i], colours[i] if i < 1_500 else "violet"
        features = {"x": row[0] + shift, "y": row[1], "colour": colour, "gap": None}
        return t.update(features, "yes" if row[2] > 0 else "no", {"yes": 0.6, "no": 0.4})

    for i in range(1_200):
        step(tracker, i)
    ours, theirs = _same_after(tracker, lambda t, i: step(t, 1_200 + i))
    assert ours == theirs and any(ours)
    assert tracker.feature_stats() == codec.loads(codec.dumps(tracker)).feature_stats()  # type: ignore[attr-defined]


def test_label_join_round_trips_small_with_its_entries_in_the_store() -> None:
    store = MemoryStore()  # the local disk, which a snapshot does not carry
    join = LabelJoin(ttl_seconds=30, max_skew_seconds=0, store=store)

    def prediction(i: int) -> Prediction:
        return decode(
            Prediction,
            {
                "prediction_id": f"p{i}",
                "model_id": "m",
                "model_version": "1",
                "timestamp": T0 + i * 100,
                "features": {"x": i},
                "prediction": 1,
            },
        )

    def label(i: int) -> GroundTruth:
        return decode(
            GroundTruth,
            {"prediction_id": f"p{i}", "model_id": "m", "label": 1, "timestamp": T0 + i * 100},
        )

    for i in range(400):
        join.add_prediction(prediction(i))
    join.checkpoint()
    data = codec.dumps(join)
    assert len(data) < 1_000  # watermarks and counts, not the 400 entries
    copy = codec.loads(data)
    assert isinstance(copy, LabelJoin)
    copy.attach(store)
    assert not copy.needs_rebuild

    def step(j: LabelJoin, i: int) -> object:
        joined = j.add_label(label(i)) if i % 2 else j.add_prediction(prediction(400 + i))
        return (joined and joined.prediction_raw, j.pending("prediction"), j.take_dropped())

    assert [step(join, i) for i in range(1_000)] == [step(copy, i) for i in range(1_000)]


# ---- refused -----------------------------------------------------------------------------


class _Touch:
    """Unpickled, this would create a file: the proof that nothing ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


def _core_refuses(data: bytes, error: type[Exception], match: str) -> None:
    core = MonitorCore(MonitorSettings())
    with pytest.raises(error, match=match) as refused:
        core.restore("m", data, where="monitor-state offset 7")
    assert core.models() == []
    assert "'m'" in str(refused.value)


def test_a_pickle_is_refused_unread_whatever_its_header_says(tmp_path: Path) -> None:
    bomb = pickle.dumps(_Touch(tmp_path / "ran"), protocol=5)
    _core_refuses(SNAPSHOT_MAGIC + bytes([2]) + bomb, IncompatibleSnapshotError, "written by 0.2")
    _core_refuses(bomb, IncompatibleSnapshotError, "format 1")
    # Claiming the current format, a pickle is no MessagePack tree of ours.
    _core_refuses(
        SNAPSHOT_MAGIC + bytes([SNAPSHOT_FORMAT]) + bomb, InvalidSnapshotError, "offset 7"
    )
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize(
    "tree",
    [
        [codec.OBJECT, "posix.system", [codec.TUPLE, "touch {ran}"]],
        [codec.OBJECT, "os.system", [codec.TUPLE, "touch {ran}"]],
        [codec.OBJECT, "builtins.eval", [codec.TUPLE, "open('{ran}', 'w')"]],
        [codec.LIST, [codec.OBJECT, "subprocess.Popen", [codec.LIST, "touch", "{ran}"]]],
    ],
    ids=["posix.system", "os.system", "eval", "nested-Popen"],
)
def test_a_payload_naming_a_class_off_the_allowlist_is_refused(
    tree: list[Any], tmp_path: Path
) -> None:
    ran = tmp_path / "ran"
    payload = msgspec.msgpack.encode(json.loads(json.dumps(tree).replace("{ran}", str(ran))))
    with pytest.raises(codec.CodecError, match="not on the snapshot allowlist"):
        codec.loads(payload)
    _core_refuses(
        SNAPSHOT_MAGIC + bytes([SNAPSHOT_FORMAT]) + payload, InvalidSnapshotError, "allowlist"
    )
    assert not ran.exists()


ADWIN_NAME = next(name for name in codec.allowlist() if name.endswith(".ADWIN"))


@pytest.mark.parametrize(
    ("tree", "match"),
    [
        ([codec.NDARRAY, "|O", [1], b"\0" * 8], "not a number"),
        ([codec.NDARRAY, "<f8", [3], b"\0" * 8], "do not match"),
        ([codec.NDARRAY, "<f8", [-1], b""], "non-negative"),
        ([codec.NPSCALAR, "<f8", b"\0"], "wrong size"),
        ([codec.ARRAY, "u", b"\0\0\0\0"], "malformed"),
        ([codec.DICT, "key-without-value"], "no value"),
        ([99, 1], "known tag"),
        ([], "known tag"),
        ({"a": 1}, "map"),
        ([codec.OBJECT, ADWIN_NAME, [codec.DICT, "__class__", 1]], "attribute names"),
        ([codec.OBJECT, ADWIN_NAME, 5], "wrong shape"),
        ([codec.DEQUE, "many", 1], "malformed deque"),
    ],
    ids=lambda value: str(value)[:30],
)
def test_malformed_trees_are_refused(tree: object, match: str) -> None:
    with pytest.raises(codec.CodecError, match=match):
        codec.loads(msgspec.msgpack.encode(tree))


def test_deep_nesting_and_garbage_are_refused() -> None:
    deep: list[Any] = [codec.LIST]
    for _ in range(codec.MAX_DEPTH + 5):
        deep = [codec.LIST, deep]
    with pytest.raises(codec.CodecError, match="deeper"):
        codec.loads(msgspec.msgpack.encode(deep))
    very_deep = b"\x91" * 200_000 + b"\xc0"  # a MessagePack array in an array, 200,000 times
    for data in (very_deep, b"\xc1", b"", b"\x92\x00"):
        with pytest.raises(codec.CodecError):
            codec.loads(data)


def test_a_valid_tree_that_is_no_model_state_is_refused() -> None:
    _core_refuses(
        SNAPSHOT_MAGIC + bytes([SNAPSHOT_FORMAT]) + codec.dumps([1, 2]),
        InvalidSnapshotError,
        "holds a list",
    )


def test_state_off_the_allowlist_cannot_be_stored() -> None:
    class Stranger:
        pass

    for value in (Stranger(), print, {1, 2}, np.array(["text"]), 2**70):
        with pytest.raises(codec.CodecError, match="cannot store"):
            codec.dumps(value)
