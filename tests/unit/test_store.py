"""The join's stores: put, get, delete and expire by event time, in memory and on disk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stream_monitor.core.events import GroundTruth, Prediction, decode, to_json
from stream_monitor.core.join import LabelJoin, MemoryStore, PendingStore, StoreEntry
from stream_monitor.store import RocksStore, StoreLockedError


@pytest.fixture(params=["memory", "rocksdb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PendingStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    rocks = RocksStore(tmp_path / "store", cache_mb=8)
    try:
        yield rocks.view("m")
    finally:
        rocks.close()


def _entry(pid: str, at: float, kind: str = "prediction") -> StoreEntry:
    return StoreEntry(kind, pid, at, f'{{"id":"{pid}"}}'.encode())  # type: ignore[arg-type]


def test_put_then_get_by_kind_and_id(store: PendingStore) -> None:
    assert store.checkpoint() is None
    assert store.write([_entry("a", 1.0), _entry("a", 2.0, "label")], [], 0.0, 1) == []
    assert store.get("prediction", "a") == b'{"id":"a"}'
    assert store.get("label", "a") == b'{"id":"a"}'
    assert store.get("prediction", "b") is None
    assert store.checkpoint() == 1
    assert store.ids("label") == ["a"]


def test_expiry_removes_only_entries_older_than_the_cutoff_in_time_order(
    store: PendingStore,
) -> None:
    store.write([_entry(f"p{i}", float(i)) for i in (5, 1, 3, -2, 4)], [], float("-inf"), 1)
    expired = store.write([], [], 3.5, 2)
    assert sorted(expired) == [("prediction", "p-2"), ("prediction", "p1"), ("prediction", "p3")]
    assert sorted(store.ids("prediction")) == ["p4", "p5"]
    assert store.write([], [], 3.5, 3) == []  # nothing walked twice


def test_deleted_entries_are_not_counted_as_expired(store: PendingStore) -> None:
    store.write([_entry("a", 1.0), _entry("b", 2.0)], [], 0.0, 1)
    expired = store.write([], [("prediction", "a", 1.0)], 10.0, 2)
    assert expired == [("prediction", "b")]
    assert store.get("prediction", "a") is None


def test_clear_removes_entries_and_checkpoint(store: PendingStore) -> None:
    store.write([_entry("a", 1.0, "label")], [], 0.0, 7)
    store.clear()
    assert store.checkpoint() is None and store.ids("label") == []
    assert store.write([], [], 10.0, 1) == []


def test_models_have_their_own_entries_in_one_database(tmp_path: Path) -> None:
    rocks = RocksStore(tmp_path / "store", cache_mb=8)
    try:
        a, ab = rocks.view("a"), rocks.view("ab")
        a.write([_entry("x", 1.0)], [], 0.0, 1)
        ab.write([_entry("y", 1.0)], [], 0.0, 5)
        assert (a.ids("prediction"), ab.ids("prediction")) == (["x"], ["y"])
        a.clear()
        assert ab.get("prediction", "y") is not None and ab.checkpoint() == 5
        assert ab.write([], [], 2.0, 6) == [("prediction", "y")]
    finally:
        rocks.close()


def test_entries_survive_a_reopen_and_a_second_opener_is_refused(tmp_path: Path) -> None:
    rocks = RocksStore(tmp_path / "store", cache_mb=8)
    rocks.view("m").write([_entry("a", 1.0)], [], 0.0, 3)
    with pytest.raises(StoreLockedError, match=r"join\.store_dir"):
        RocksStore(tmp_path / "store", cache_mb=8)
    rocks.close()
    again = RocksStore(tmp_path / "store", cache_mb=8)
    try:
        assert again.view("m").checkpoint() == 3
        assert again.view("m").get("prediction", "a") == b'{"id":"a"}'
        assert again.disk_bytes() > 0
    finally:
        again.close()


def test_a_temporary_store_is_removed_at_close() -> None:
    rocks = RocksStore(None, cache_mb=8)
    assert rocks.path.is_dir()
    rocks.close()
    assert not rocks.path.exists()


def test_a_join_on_disk_joins_labels_days_late_and_expires_by_event_time(
    tmp_path: Path,
) -> None:
    rocks = RocksStore(tmp_path / "store", cache_mb=8)
    day = 86_400.0
    try:
        join = LabelJoin(ttl_seconds=3 * day, max_skew_seconds=0, store=rocks.view("m"))
        for i in range(10):
            raw = to_json(_prediction(f"p{i}", i * day))
            join.add_prediction(decode(Prediction, raw), raw)
            join.checkpoint()
        joined = join.add_label(_label("p8", 9 * day))
        assert joined is not None and joined.prediction.prediction_id == "p8"
        join.checkpoint()
        # Cutoff 9 - 3 = day 6: p0..p5 expired, p6, p7, p9 wait.
        assert dict(join.take_dropped()) == {("prediction", "ttl"): 6}
        assert sorted(rocks.view("m").ids("prediction")) == ["p6", "p7", "p9"]
    finally:
        rocks.close()


def _prediction(pid: str, at: float) -> Prediction:
    return decode(
        Prediction,
        {
            "prediction_id": pid,
            "model_id": "m",
            "model_version": "1",
            "timestamp": int(at * 1000),
            "features": {"x": 1.0},
            "prediction": "a",
        },
    )


def _label(pid: str, at: float) -> GroundTruth:
    return decode(
        GroundTruth,
        {"prediction_id": pid, "model_id": "m", "label": "a", "timestamp": int(at * 1000)},
    )
