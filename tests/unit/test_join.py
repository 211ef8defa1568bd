"""The prediction/label join: either order, bounded memory, event-time TTL."""

from __future__ import annotations

import json
import pickle
from collections import Counter

from stream_monitor.core.events import GroundTruth, Prediction, decode, to_json
from stream_monitor.core.join import LabelJoin

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
    join = LabelJoin(ttl_seconds=DAY)
    join.add_prediction(_prediction("old", 0))
    join.add_prediction(_prediction("new", DAY + 1))
    assert join.pending("prediction") == 1
    assert join.take_dropped() == Counter({("prediction", "ttl"): 1})
    assert join.add_label(_label("old", DAY + 2)) is None  # too late: it waits as a label


def test_label_older_than_ttl_expires_and_is_counted_as_a_label() -> None:
    join = LabelJoin(ttl_seconds=DAY)
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
    join = LabelJoin(ttl_seconds=DAY)
    for i in range(48):
        join.add_prediction(_prediction(f"p{i}", i * 3600))
    assert join.pending("prediction") == 24 + 1  # hours 23..47 are within a day of 47
    assert join.take_dropped() == Counter({("prediction", "ttl"): 23})


def test_take_dropped_counts_since_the_last_call() -> None:
    join = LabelJoin(ttl_seconds=10)
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


# ---- watermark ------------------------------------------------------------------------


def test_watermark_is_the_newest_timestamp_seen() -> None:
    join = LabelJoin()
    join.add_prediction(_prediction("p1", 50))
    join.add_label(_label("p2", 70))
    join.add_prediction(_prediction("p3", 60))
    assert join.watermark == 70


def test_an_old_event_does_not_move_the_watermark_back() -> None:
    join = LabelJoin(ttl_seconds=100)
    join.add_prediction(_prediction("recent", 1000))
    join.add_label(_label("straggler", 0))  # a very late label for something else
    assert join.watermark == 1000
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


# ---- capacity -------------------------------------------------------------------------


def test_predictions_beyond_max_pending_evict_the_oldest() -> None:
    join = LabelJoin(max_pending=3)
    for i in range(5):
        join.add_prediction(_prediction(f"p{i}", i))
    assert join.pending("prediction") == 3
    assert join.take_dropped() == Counter({("prediction", "capacity"): 2})
    assert join.add_label(_label("p0", 5)) is None  # evicted
    assert join.add_label(_label("p2", 5)) is not None


def test_labels_have_their_own_capacity() -> None:
    join = LabelJoin(max_pending=2)
    for i in range(2):
        join.add_prediction(_prediction(f"p{i}", i))
    for i in range(3):
        join.add_label(_label(f"early{i}", i))
    assert (join.pending("prediction"), join.pending("label")) == (2, 2)
    assert join.take_dropped() == Counter({("label", "capacity"): 1})


def test_tighter_bounds_apply_at_once_and_looser_ones_keep_what_waits() -> None:
    join = LabelJoin(max_pending=10, ttl_seconds=DAY)
    for i in range(4):
        join.add_prediction(_prediction(f"p{i}", i * 100))
        join.add_label(_label(f"early{i}", i * 100))
    join.bound(max_pending=3, ttl_seconds=150)  # watermark 300: older than 150 expire
    assert (join.pending("prediction"), join.pending("label")) == (2, 2)
    assert join.take_dropped() == Counter(
        {("prediction", "capacity"): 1, ("label", "capacity"): 1}
        | {("prediction", "ttl"): 1, ("label", "ttl"): 1}
    )
    join.bound(max_pending=100, ttl_seconds=DAY)
    assert join.add_label(_label("p2", 400)) is not None
    assert not join.has_dropped


def test_memory_stays_bounded_on_a_stream_whose_labels_never_come() -> None:
    join = LabelJoin(max_pending=100, ttl_seconds=7 * DAY)
    for i in range(10_000):
        join.add_prediction(_prediction(f"p{i}", i))
    assert join.pending("prediction") == 100
    assert sum(join.take_dropped().values()) == 9_900


def test_a_pickled_join_keeps_both_tables_their_order_and_the_raw_events() -> None:
    join = LabelJoin(max_pending=2)
    raw = {
        pid: json.dumps({**json.loads(to_json(_prediction(pid, 0))), "extra": pid}).encode()
        for pid in "abc"
    }
    for pid in "abc":  # "a" is evicted for capacity
        join.add_prediction(decode(Prediction, raw[pid]), raw[pid])
    early = _label("early", 1)
    join.add_label(early)

    restored = pickle.loads(pickle.dumps(join))

    assert (restored.pending("prediction"), restored.pending("label")) == (2, 1)
    assert restored.take_dropped() == Counter({("prediction", "capacity"): 1})
    joined = restored.add_label(_label("b", 2))
    assert joined is not None
    assert (joined.prediction, joined.prediction_raw) == (decode(Prediction, raw["b"]), raw["b"])
    joined = restored.add_prediction(_prediction("early", 0))
    assert joined is not None and (joined.label, joined.label_raw) == (early, to_json(early))
    for pid in "de":  # "e" evicts "c", the oldest left
        restored.add_prediction(_prediction(pid, 2))
    assert restored.take_dropped() == Counter({("prediction", "capacity"): 1})
    assert restored.add_label(_label("c", 3)) is None
