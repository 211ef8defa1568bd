"""The prediction/label join: either order, bounded memory, event-time TTL."""

from __future__ import annotations

import json
from collections import Counter

from stream_monitor.core import codec
from stream_monitor.core.events import GroundTruth, Prediction, decode, to_json
from stream_monitor.core.join import LabelJoin, MemoryStore

DAY = 86_400.0


def _prediction(pid: str, at: float, prediction: object = "a", version: str = "1") -> Prediction:
    return decode(
        Prediction,
        {
            "prediction_id": pid,
            "model_id": "m",
            "model_version": version,
            "timestamp": int(at * 1000),
            "features": {"x": 1.0},
            "prediction": prediction,
        },
    )


def _label(pid: str, at: float, label: object = "a") -> GroundTruth:
    return decode(
        GroundTruth,
        {"prediction_id": pid, "model_id": "m", "label": label, "timestamp": int(at * 1000)},
    )


# ---- order --------------------------------------------------------------------------


def test_prediction_then_label_joins_on_the_label() -> None:
    join = LabelJoin()
    assert join.add_prediction(_prediction("p1", 0)) is None
    joined = join.add_label(_label("p1", 3 * DAY, label="b"))
    assert joined is not None
    assert (joined.prediction.prediction_id, joined.label.label) == ("p1", "b")
    assert (join.pending("prediction"), join.pending("label")) == (0, 0)


def test_label_then_prediction_joins_on_the_prediction() -> None:
    # Clock skew or a fast labeller: the label is consumed first.
    join = LabelJoin()
    assert join.add_label(_label("p1", 10, label="b")) is None
    assert join.pending("label") == 1
    joined = join.add_prediction(_prediction("p1", 0))
    assert joined is not None
    assert (joined.prediction.prediction_id, joined.label.label) == ("p1", "b")
    assert (join.pending("prediction"), join.pending("label")) == (0, 0)


def test_only_matching_ids_join() -> None:
    join = LabelJoin()
    join.add_prediction(_prediction("p1", 0))
    assert join.add_label(_label("p2", 1)) is None
    assert (join.pending("prediction"), join.pending("label")) == (1, 1)


def test_a_joined_pair_leaves_nothing_to_count() -> None:
    join = LabelJoin()
    join.add_prediction(_prediction("p1", 0))
    join.add_label(_label("p1", 1))
    assert join.take_dropped() == Counter()


# ---- duplicates ---------------------------------------------------------------------


def test_duplicate_pending_prediction_is_counted_and_the_first_one_is_kept() -> None:
    join = LabelJoin()
    join.add_prediction(_prediction("p1", 0, prediction="first"))
    assert join.add_prediction(_prediction("p1", 1, prediction="retry")) is None
    assert join.pending("prediction") == 1
    assert join.take_dropped() == Counter({("prediction", "duplicate"): 1})
    joined = join.add_label(_label("p1", 2))
    assert joined is not None
    assert joined.prediction.prediction == "first"


def test_repeated_early_label_replaces_the_pending_one() -> None:
    join = LabelJoin()
    join.add_label(_label("p1", 0, label="old"))
    join.add_label(_label("p1", 1, label="corrected"))
    assert join.pending("label") == 1
    joined = join.add_prediction(_prediction("p1", 2))
    assert joined is not None
    assert joined.label.label == "corrected"


# ---- time-to-live on event time -------------------------------------------------------


def test_default_ttl_is_days_not_minutes() -> None:
    join = LabelJoin()
    join.add_prediction(_prediction("p1", 0))
    join.add_label(_label("other", 6 * DAY))  # moves event time six days on
    assert join.add_label(_label("p1", 6 * DAY)) is not None


def test_prediction_older_than_ttl_expires_when_event_time_moves_past_it() -> None:
    join = LabelJoin(ttl_seconds=DAY, max_skew_seconds=0)
    join.add_prediction(_prediction("old", 0))
    join.add_prediction(_prediction("new", DAY + 1))
    assert join.pending("prediction") == 1
    assert join.take_dropped() == Counter({("prediction", "ttl"): 1})
    assert join.add_label(_label("old", DAY + 2)) is None  # too late: it waits as a label


def test_label_older_than_ttl_expires_and_is_counted_as_a_label() -> None:
    join = LabelJoin(ttl_seconds=DAY, max_skew_seconds=0)
    join.add_label(_label("orphan", 0))
    join.add_prediction(_prediction("p2", 2 * DAY))
    assert join.pending("label") == 0
    assert join.take_dropped() == Counter({("label", "ttl"): 1})


def test_entry_exactly_ttl_old_is_still_waiting() -> None:
    join = LabelJoin(ttl_seconds=100)
    join.add_prediction(_prediction("p1", 0))
    join.add_label(_label("other", 100))
    assert join.take_dropped() == Counter()
    assert join.add_label(_label("p1", 100)) is not None


def test_ttl_runs_on_event_time_so_a_fast_replay_expires_the_same() -> None:
    # Wall-clock time is irrelevant: thousands of events per second of replay can span
    # weeks of event time, and nothing expires until the events' own clocks say so.
    join = LabelJoin(ttl_seconds=DAY, max_skew_seconds=0)
    for i in range(48):
        join.add_prediction(_prediction(f"p{i}", i * 3600))
    assert join.pending("prediction") == 24 + 1  # hours 23..47 are within a day of 47
    assert join.take_dropped() == Counter({("prediction", "ttl"): 23})


def test_take_dropped_counts_since_the_last_call() -> None:
    join = LabelJoin(ttl_seconds=10, max_skew_seconds=0)
    join.add_prediction(_prediction("p1", 0))
    join.add_prediction(_prediction("p2", 100))
    assert join.take_dropped() == Counter({("prediction", "ttl"): 1})
    assert join.take_dropped() == Counter()


def test_label_arriving_late_still_joins_its_waiting_prediction() -> None:
    # The label's own timestamp is past the prediction's TTL, but the prediction had not
    # been expired yet: joining is checked before event time moves on.
    join = LabelJoin(ttl_seconds=DAY)
    join.add_prediction(_prediction("p1", 0))
    assert join.add_label(_label("p1", 2 * DAY)) is not None
    assert join.take_dropped() == Counter()


# ---- watermarks: expiry follows the slower input -------------------------------------


def test_each_input_has_its_own_watermark_the_newest_timestamp_seen_on_it() -> None:
    join = LabelJoin()
    join.add_prediction(_prediction("p1", 50))
    join.add_label(_label("p2", 70))
    join.add_prediction(_prediction("p3", 60))
    assert join.watermarks == {"prediction": 60, "label": 70}


def test_an_old_event_does_not_move_the_watermark_back() -> None:
    join = LabelJoin(ttl_seconds=100)
    join.add_prediction(_prediction("recent", 1000))
    join.add_label(_label("straggler", 0))  # a very late label for something else
    assert join.watermarks["prediction"] == 1000
    assert join.pending("prediction") == 1
    assert join.take_dropped() == Counter()


def test_an_old_event_does_not_expire_newer_ones() -> None:
    join = LabelJoin(ttl_seconds=100)
    join.add_prediction(_prediction("p1", 950))
    join.add_prediction(_prediction("p2", 1000))
    join.add_prediction(_prediction("p3", 10))
    assert join.add_label(_label("p1", 1000)) is not None
    assert join.add_label(_label("p2", 1000)) is not None
    assert join.take_dropped() == Counter()


def test_predictions_read_far_ahead_of_their_labels_wait_for_them() -> None:
    # A backlog read with the predictions topic ahead: a live run would have joined
    # every one, and so does the catch-up, whatever the order of the two topics.
    join = LabelJoin(ttl_seconds=DAY, max_skew_seconds=30 * DAY)
    for i in range(20):
        join.add_prediction(_prediction(f"p{i}", i * DAY))
    join.checkpoint()
    joined = [join.add_label(_label(f"p{i}", i * DAY + 3600)) for i in range(20)]
    assert all(joined)
    join.checkpoint()
    assert join.take_dropped() == Counter()


def test_labels_read_ahead_of_their_predictions_wait_for_them_too() -> None:
    join = LabelJoin(ttl_seconds=DAY, max_skew_seconds=30 * DAY)
    for i in range(20):
        join.add_label(_label(f"p{i}", i * DAY + 3600))
    join.checkpoint()
    assert all(join.add_prediction(_prediction(f"p{i}", i * DAY)) for i in range(20))
    assert join.take_dropped() == Counter()


def test_an_idle_input_holds_expiry_back_by_at_most_the_skew() -> None:
    # Labels never come: predictions expire once they are ttl + skew old, so the store
    # does not grow without bound.
    join = LabelJoin(ttl_seconds=DAY, max_skew_seconds=DAY)
    for i in range(100):
        join.add_prediction(_prediction(f"p{i}", i * 3600))  # 99 hours
    join.checkpoint()
    # Cutoff: 99 h - 24 h - 24 h = 51 h: hours 0..50 expired.
    assert join.pending("prediction") == 49
    assert join.take_dropped() == Counter({("prediction", "ttl"): 51})


# ---- no capacity loss -----------------------------------------------------------------


def test_labels_far_beyond_the_old_capacity_all_join() -> None:
    # 150,000 predictions wait (the old cap was 100,000), each label that many late.
    join = LabelJoin(ttl_seconds=7 * DAY)
    late, total = 150_000, 160_000
    joined = 0
    for i in range(total):
        join.add_prediction(_prediction(f"p{i}", i))
        if i >= late:
            joined += join.add_label(_label(f"p{i - late}", i)) is not None
        if i % 50_000 == 0:
            join.checkpoint()
    assert joined == total - late
    assert join.pending("prediction") == late
    assert join.take_dropped() == Counter()


def test_tighter_bounds_apply_at_the_next_checkpoint_counted() -> None:
    join = LabelJoin(ttl_seconds=DAY, max_skew_seconds=0)
    for i in range(4):
        join.add_prediction(_prediction(f"p{i}", i * 100))
        join.add_label(_label(f"early{i}", i * 100))
    join.checkpoint()
    join.bound(ttl_seconds=150, max_skew_seconds=0)  # watermarks 300: older than 150 expire
    join.checkpoint()
    assert (join.pending("prediction"), join.pending("label")) == (2, 2)
    assert join.take_dropped() == Counter({("prediction", "ttl"): 2, ("label", "ttl"): 2})
    assert join.add_label(_label("p2", 340)) is not None  # cutoff 340 - 150 = 190
    assert join.add_label(_label("p0", 340)) is None  # expired by the store's walk


# ---- the overlay and the store ------------------------------------------------------


def test_a_stored_prediction_joins_once_even_before_the_next_checkpoint() -> None:
    join = LabelJoin()
    join.add_prediction(_prediction("p1", 0))
    join.checkpoint()
    assert join.add_label(_label("p1", 1)) is not None
    assert join.add_label(_label("p1", 2)) is None  # a repeated label: no second pair
    join.checkpoint()
    assert (join.pending("prediction"), join.pending("label")) == (0, 1)


def test_a_repeated_stored_prediction_joins_one_label_only() -> None:
    join = LabelJoin()
    join.add_prediction(_prediction("p1", 0))
    join.checkpoint()
    join.add_prediction(_prediction("p1", 1))  # the serving app sent it again
    join.checkpoint()
    assert join.add_label(_label("p1", 2)) is not None
    join.checkpoint()
    assert join.add_label(_label("p1", 3)) is None  # waits as a label: no second pair


def test_a_straggler_past_the_cutoff_expires_at_the_checkpoint_counted() -> None:
    join = LabelJoin(ttl_seconds=DAY, max_skew_seconds=0)
    join.add_prediction(_prediction("young", 2 * DAY))
    join.add_prediction(_prediction("straggler", 0))  # behind a younger one in arrival
    join.add_label(_label("other", 2 * DAY))  # cutoff: 1 day
    join.checkpoint()
    assert join.take_dropped() == Counter({("prediction", "ttl"): 1})
    assert join.pending("prediction") == 1
    assert join.add_label(_label("straggler", 2 * DAY)) is None


def test_a_stored_early_label_is_replaced_by_a_later_one() -> None:
    join = LabelJoin()
    join.add_label(_label("p1", 0, label="old"))
    join.checkpoint()
    join.add_label(_label("p1", 5, label="corrected"))
    join.checkpoint()
    assert join.pending("label") == 1
    joined = join.add_prediction(_prediction("p1", 1))
    assert joined is not None and joined.label.label == "corrected"


def test_a_stored_entry_past_the_cutoff_is_expired_when_looked_up() -> None:
    join = LabelJoin(ttl_seconds=DAY, max_skew_seconds=0)
    join.add_prediction(_prediction("old", 0))
    join.checkpoint()
    join.add_prediction(_prediction("new", 2 * DAY))
    assert join.add_label(_label("old", 2 * DAY)) is None  # expired, not joined
    join.checkpoint()
    assert join.take_dropped() == Counter({("prediction", "ttl"): 1})
    assert join.pending("prediction") == 1 and join.pending("label") == 1


def test_a_join_snapshot_is_small_plain_data_without_its_entries() -> None:
    join = LabelJoin()
    for i in range(1000):
        join.add_prediction(_prediction(f"p{i}", i))
    join.checkpoint()
    state = join.__getstate__()
    assert state["sequence"] == 1 and state["stored"] == {"prediction": 1000, "label": 0}
    assert len(codec.dumps(state)) < 500


def test_a_snapshot_with_changes_not_checkpointed_names_no_checkpoint() -> None:
    join = LabelJoin()
    join.checkpoint()
    join.add_prediction(_prediction("p1", 0))
    restored = codec.loads(codec.dumps(join))
    restored.attach(MemoryStore())
    assert restored.needs_rebuild


def test_a_restored_join_on_the_store_of_its_checkpoint_resumes() -> None:
    store = MemoryStore()
    join = LabelJoin(store=store)
    raw = json.dumps({**json.loads(to_json(_prediction("b", 0))), "extra": 1}).encode()
    join.add_prediction(decode(Prediction, raw), raw)
    join.add_label(_label("early", 1))
    join.checkpoint()

    restored = codec.loads(codec.dumps(join))
    restored.attach(store)

    assert not restored.needs_rebuild
    assert (restored.pending("prediction"), restored.pending("label")) == (1, 1)
    joined = restored.add_label(_label("b", 2))
    assert joined is not None and joined.prediction_raw == raw
    assert restored.add_prediction(_prediction("early", 0)) is not None


def test_a_store_one_checkpoint_off_is_rebuilt_from_the_input_records() -> None:
    store = MemoryStore()
    join = LabelJoin(ttl_seconds=DAY, max_skew_seconds=0, store=store)
    inputs: list[tuple[Prediction | GroundTruth, bytes]] = []
    for i in range(100):
        prediction = _prediction(f"p{i}", i * 3600)
        inputs.append((prediction, to_json(prediction)))
        join.add_prediction(prediction)
        if i >= 10:
            label = _label(f"p{i - 10}", i * 3600)
            inputs.append((label, to_json(label)))
            join.add_label(label)
    join.checkpoint()
    snapshot = codec.dumps(join)
    join.add_prediction(_prediction("after", 100 * 3600))
    join.checkpoint()  # the store moves on, the snapshot of this checkpoint never lands

    restored = codec.loads(snapshot)
    restored.attach(store)
    assert restored.needs_rebuild
    assert restored.rebuild(inputs) == len(inputs)

    assert not restored.needs_rebuild and not restored.has_dropped
    assert (restored.pending("prediction"), restored.pending("label")) == (10, 0)
    assert all(restored.add_label(_label(f"p{i}", 101 * 3600)) for i in range(90, 100))
    restored.checkpoint()
    assert restored.pending("prediction") == 0
