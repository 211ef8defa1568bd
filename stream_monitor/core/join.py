"""Joining predictions with their ground truth, which may arrive days later."""

from __future__ import annotations

import heapq
from collections import Counter, OrderedDict
from collections.abc import Iterable
from typing import Any, Literal, NamedTuple, Protocol, TypeVar

from stream_monitor.core.events import GroundTruth, Prediction, decode, to_json

_E = TypeVar("_E", Prediction, GroundTruth)
PendingKind = Literal["prediction", "label"]
DropReason = Literal["ttl", "duplicate"]
KINDS: tuple[PendingKind, PendingKind] = ("prediction", "label")
REBUILD_BATCH = 50_000
"""Records a rebuild joins in memory before it writes them to the store."""


class Joined(NamedTuple):
    prediction: Prediction
    label: GroundTruth
    prediction_raw: bytes
    """The JSON the prediction was parsed from, passed on verbatim."""
    label_raw: bytes


class StoreEntry(NamedTuple):
    kind: PendingKind
    prediction_id: str
    timestamp: float
    """Event time, seconds: the store's expiry index orders entries by it."""
    raw: bytes


class PendingStore(Protocol):
    """Where a join's pending entries live once a checkpoint has written them: keyed by
    (kind, prediction_id), with an index on event time so that expiry walks only what
    expires. One store per model (a view of the process's store)."""

    def get(self, kind: PendingKind, prediction_id: str) -> bytes | None:
        """The JSON of a stored entry, or None."""

    def write(
        self,
        puts: Iterable[StoreEntry],
        deletes: Iterable[tuple[PendingKind, str, float]],
        expire_before: float,
        checkpoint: int,
    ) -> list[tuple[PendingKind, str]]:
        """Apply a checkpoint at once (one batch): add ``puts``, remove ``deletes``
        (kind, prediction_id, timestamp), remove every other entry older than
        ``expire_before``, and record ``checkpoint``. Returns the entries expired."""

    def checkpoint(self) -> int | None:
        """The checkpoint the store last wrote (None: none, or a store started afresh)."""

    def ids(self, kind: PendingKind) -> list[str]:
        """The prediction_ids stored for ``kind``."""

    def clear(self) -> None:
        """Remove every entry and the checkpoint."""


class StoreViews(Protocol):
    """The process's stores, one view per model."""

    def view(self, model_id: str) -> PendingStore: ...


class MemoryStores:
    """:class:`MemoryStore` views: the default for the core alone (``replay``, tests)."""

    def __init__(self) -> None:
        self._views: dict[str, MemoryStore] = {}

    def view(self, model_id: str) -> MemoryStore:
        return self._views.setdefault(model_id, MemoryStore())


class MemoryStore:
    """A :class:`PendingStore` in memory: for ``replay``, tests and the core alone.

    >>> store = MemoryStore()
    >>> store.write([StoreEntry("prediction", "a", 5.0, b"{}")], [], 0.0, 1)
    []
    >>> store.get("prediction", "a"), store.checkpoint()
    (b'{}', 1)
    >>> store.write([], [], 10.0, 2)
    [('prediction', 'a')]
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[PendingKind, str], tuple[float, bytes]] = {}
        self._by_time: list[tuple[float, PendingKind, str]] = []
        self._checkpoint: int | None = None

    def get(self, kind: PendingKind, prediction_id: str) -> bytes | None:
        entry = self._entries.get((kind, prediction_id))
        return None if entry is None else entry[1]

    def write(
        self,
        puts: Iterable[StoreEntry],
        deletes: Iterable[tuple[PendingKind, str, float]],
        expire_before: float,
        checkpoint: int,
    ) -> list[tuple[PendingKind, str]]:
        for kind, prediction_id, _ in deletes:
            self._entries.pop((kind, prediction_id), None)
        for entry in puts:
            self._entries[entry.kind, entry.prediction_id] = (entry.timestamp, entry.raw)
            heapq.heappush(self._by_time, (entry.timestamp, entry.kind, entry.prediction_id))
        expired: list[tuple[PendingKind, str]] = []
        while self._by_time and self._by_time[0][0] < expire_before:
            timestamp, kind, prediction_id = heapq.heappop(self._by_time)
            stored = self._entries.get((kind, prediction_id))
            if stored is not None and stored[0] == timestamp:  # else joined or replaced
                del self._entries[kind, prediction_id]
                expired.append((kind, prediction_id))
        self._checkpoint = checkpoint
        return expired

    def checkpoint(self) -> int | None:
        return self._checkpoint

    def ids(self, kind: PendingKind) -> list[str]:
        return [prediction_id for k, prediction_id in self._entries if k == kind]

    def clear(self) -> None:
        self.__init__()  # type: ignore[misc]  # the same empty state as a new store


class LabelJoin:
    """Join predictions and labels by ``prediction_id``, whichever comes first.

    An event waits until its partner arrives: first in memory (the *overlay*, what came
    since the last checkpoint), then, from the checkpoint on, in a :class:`PendingStore`
    on disk. Most labels of a live stream join inside the overlay; a label days late
    finds its prediction in the store. Nothing is evicted for capacity: entries leave
    by joining or by the TTL only.

    Time is event time. Each input has a watermark, the newest ``timestamp`` seen on
    it; entries older than ``cutoff = expiry_watermark - ttl_seconds`` expire, where

    .. math:: \\mathrm{expiry\\_watermark} = \\max(\\min(w_p, w_l),\\ \\max(w_p, w_l) - s)

    with :math:`w_p, w_l` the watermarks of predictions and labels and :math:`s` =
    ``max_skew_seconds``. Expiry follows the *slower* input, so reading a backlog with
    one topic ahead of the other does not expire what the other has yet to deliver;
    and an input idle (or far behind) holds expiry back by at most :math:`s`, so the
    store stays bounded by about ``ttl + s`` of traffic.

    A second prediction with a ``prediction_id`` pending in memory is a duplicate (an
    at-least-once producer retried) and is ignored; one whose first copy is already on
    disk replaces it there. Every drop is counted by kind and reason until the owner
    collects the counts with :meth:`take_dropped`.

    >>> from stream_monitor.core.events import GroundTruth, Prediction, decode
    >>> join = LabelJoin(ttl_seconds=60, max_skew_seconds=86_400)
    >>> def prediction(pid, ms=0):
    ...     return decode(Prediction, {"prediction_id": pid, "model_id": "m", "model_version": "1",
    ...                                "timestamp": ms, "features": {}, "prediction": 1})
    >>> def label(pid, ms):
    ...     return decode(GroundTruth, {"prediction_id": pid, "model_id": "m", "label": 1,
    ...                                 "timestamp": ms})
    >>> join.add_prediction(prediction("a")) is None
    True
    >>> join.add_label(label("a", 5_000)).label.timestamp
    5.0
    >>> join.add_prediction(prediction("c")) is None
    True
    >>> join.checkpoint()  # "c" goes to the store
    1
    >>> join.add_label(label("d", 3_650_000)) is None  # labels now at 3650 s, predictions at 0
    True
    >>> join.pending("prediction")  # expiry follows the slower input: "c" still waits
    1
    >>> join.add_prediction(prediction("e", 3_650_000)) is None  # "c" (t=0) < 3650 - 60 s
    True
    >>> join.add_label(label("c", 3_650_000)) is None  # expired: it waits as a label
    True
    >>> join.checkpoint()
    2
    >>> dict(join.take_dropped())
    {('prediction', 'ttl'): 1}
    """

    def __init__(
        self,
        ttl_seconds: float = 7 * 86_400.0,
        max_skew_seconds: float = 7 * 86_400.0,
        store: PendingStore | None = None,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_skew_seconds = max_skew_seconds
        self.watermarks: dict[PendingKind, float] = dict.fromkeys(KINDS, float("-inf"))
        self.cutoff = float("-inf")
        self.sequence = 0
        """The checkpoint the store holds this join's entries at."""
        self._stored: dict[PendingKind, int] = dict.fromkeys(KINDS, 0)
        self._dropped: Counter[tuple[PendingKind, DropReason]] = Counter()
        self.needs_rebuild = False
        """True after a restore whose store does not hold the snapshot's checkpoint."""
        self._attach(store or MemoryStore())

    def _attach(self, store: PendingStore) -> None:
        self._store = store
        # What came since the last checkpoint, in arrival order.
        self._predictions: OrderedDict[str, tuple[Prediction, bytes]] = OrderedDict()
        self._labels: OrderedDict[str, tuple[GroundTruth, bytes]] = OrderedDict()
        # Stored entries joined since the last checkpoint: deleted from the store at the
        # next one, and meanwhile not to be joined twice.
        self._joined_stored: list[tuple[PendingKind, str, float]] = []
        self._gone: set[str] = set()
        # Early labels are few: their ids in memory spare every prediction a disk read.
        self._stored_label_ids: set[str] = set(store.ids("label")) if self._stored else set()
        # A lower bound on the overlay's front timestamps: below it no expiry check.
        self._next_expiry = float("inf")

    # ---- records -------------------------------------------------------------------

    def add_prediction(self, prediction: Prediction, raw: bytes | None = None) -> Joined | None:
        """Add a prediction; ``raw`` is its JSON (serialised from it if not given)."""
        raw = raw if raw is not None else to_json(prediction)
        pid = prediction.prediction_id
        self._advance("prediction", prediction.timestamp)
        pending = self._labels.pop(pid, None)
        if pending is None and pid in self._stored_label_ids:
            pending = self._take_stored(GroundTruth, "label", pid)
        if pending is not None:
            return Joined(prediction, pending[0], raw, pending[1])
        if pid in self._predictions:
            self._dropped["prediction", "duplicate"] += 1
            return None
        self._admit(self._predictions, pid, (prediction, raw))
        return None

    def add_label(self, label: GroundTruth, raw: bytes | None = None) -> Joined | None:
        """Add a label; ``raw`` is its JSON (serialised from it if not given)."""
        raw = raw if raw is not None else to_json(label)
        pid = label.prediction_id
        self._advance("label", label.timestamp)
        pending = self._predictions.pop(pid, None)
        if pending is None and self._stored["prediction"]:
            pending = self._take_stored(Prediction, "prediction", pid)
        if pending is not None:
            return Joined(pending[0], label, pending[1], raw)
        # A repeated early label replaces the pending one: the latest label wins.
        if self._labels.pop(pid, None) is None and pid in self._stored_label_ids:
            self._take_stored(GroundTruth, "label", pid)
        self._admit(self._labels, pid, (label, raw))
        return None

    def _take_stored(
        self, schema: type[_E], kind: PendingKind, pid: str
    ) -> tuple[_E, bytes] | None:
        """A stored entry, marked joined (deleted at the next checkpoint); None if there
        is none, or it is past the cutoff (then it expires here, counted)."""
        if pid in self._gone:
            return None
        raw = self._store.get(kind, pid)
        if raw is None:
            return None
        event = decode(schema, raw)
        self._gone.add(pid)
        self._stored[kind] -= 1
        self._stored_label_ids.discard(pid)
        self._joined_stored.append((kind, pid, event.timestamp))
        if event.timestamp < self.cutoff:  # expired, not yet walked by a checkpoint
            self._dropped[kind, "ttl"] += 1
            return None
        return event, raw

    # ---- checkpoints ---------------------------------------------------------------

    def checkpoint(self) -> int:
        """Write what changed since the last checkpoint to the store, in one batch, and
        expire what the TTL has passed there; returns the new checkpoint number. Its cost
        grows with the changes since the last checkpoint, not with what is pending."""
        self._expire_stragglers()
        puts = [
            StoreEntry("prediction", p, e.timestamp, raw)
            for p, (e, raw) in self._predictions.items()
        ]
        puts += [StoreEntry("label", p, e.timestamp, raw) for p, (e, raw) in self._labels.items()]
        self.sequence += 1
        expired = self._store.write(puts, self._joined_stored, self.cutoff, self.sequence)
        self._stored["prediction"] += len(self._predictions)
        self._stored["label"] += len(self._labels)
        self._stored_label_ids.update(self._labels)
        for kind, pid in expired:
            self._stored[kind] -= 1
            self._dropped[kind, "ttl"] += 1
            if kind == "label":
                self._stored_label_ids.discard(pid)
        self._predictions.clear()
        self._labels.clear()
        self._joined_stored.clear()
        self._gone.clear()
        self._next_expiry = float("inf")
        return self.sequence

    def _expire_stragglers(self) -> None:
        """Expire, counted, what waits in the overlay behind a younger entry past the
        cutoff: the store's walk has passed its time and would never reach it."""
        cutoff = self.cutoff
        tables: tuple[tuple[PendingKind, OrderedDict[str, Any]], ...] = (
            ("prediction", self._predictions),
            ("label", self._labels),
        )
        for kind, table in tables:
            for pid in [p for p, (e, _) in table.items() if e.timestamp < cutoff]:
                del table[pid]
                self._dropped[kind, "ttl"] += 1

    @property
    def changed(self) -> bool:
        """Whether anything happened since the last checkpoint."""
        return bool(self._predictions or self._labels or self._joined_stored)

    def attach(self, store: PendingStore) -> None:
        """Use ``store`` after a restore. If it does not hold this join's checkpoint (a
        crash between writing it and the snapshot, a lost disk, a partition that moved
        here), :attr:`needs_rebuild` says so: see :meth:`rebuild`."""
        self.needs_rebuild = store.checkpoint() != self.sequence
        self._attach(store)

    def rebuild(self, events: Iterable[tuple[Prediction | GroundTruth, bytes]]) -> int:
        """Make the store hold what this join held at its checkpoint, from the input
        records since the TTL horizon up to the checkpoint's positions, joined again
        but counted nowhere (the live run counted them); returns how many were read."""
        store, keep = self._store, (self.watermarks, self.cutoff, self.sequence)
        store.clear()
        fresh = LabelJoin(self.ttl_seconds, self.max_skew_seconds, store)
        # Written as it goes, so that memory stays bounded, under checkpoint numbers no
        # snapshot has: a crash part way leaves a store that is rebuilt again.
        fresh.sequence = -(2**62)
        n = 0
        for n, (record, raw) in enumerate(events, start=1):
            if isinstance(record, Prediction):
                fresh.add_prediction(record, raw)
            else:
                fresh.add_label(record, raw)
            if n % REBUILD_BATCH == 0:
                fresh.checkpoint()
        fresh.sequence = keep[2] - 1
        fresh.checkpoint()
        self._stored = fresh._stored
        self._attach(store)
        self.watermarks, self.cutoff, self.sequence = keep
        self.needs_rebuild = False
        return n

    # ---- state ---------------------------------------------------------------------

    def __getstate__(self) -> dict[str, object]:
        # Small plain data: the entries are in the store. A join snapshotted with
        # entries not yet checkpointed names no checkpoint, so a restore rebuilds it.
        return {
            "ttl_seconds": self.ttl_seconds,
            "max_skew_seconds": self.max_skew_seconds,
            "watermarks": dict(self.watermarks),
            "cutoff": self.cutoff,
            "sequence": -1 if self.changed else self.sequence,
            "stored": dict(self._stored),
            "dropped": [[kind, reason, n] for (kind, reason), n in self._dropped.items()],
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.ttl_seconds = state["ttl_seconds"]
        self.max_skew_seconds = state["max_skew_seconds"]
        self.watermarks = state["watermarks"]
        self.cutoff = state["cutoff"]
        self.sequence = state["sequence"]
        self._stored = state["stored"]
        self._dropped = Counter({(kind, reason): n for kind, reason, n in state["dropped"]})
        self.needs_rebuild = True
        self._attach(MemoryStore())  # until the owner attaches the real one

    def bound(self, ttl_seconds: float, max_skew_seconds: float) -> None:
        """Apply other bounds, as a restart with other settings does to a restored join:
        the store expires entries past them at the next checkpoint, counted."""
        self.ttl_seconds, self.max_skew_seconds = ttl_seconds, max_skew_seconds
        self.cutoff = float("-inf")  # a looser bound keeps what is still stored
        self._move_cutoff()

    def pending(self, kind: PendingKind) -> int:
        in_memory = len(self._predictions if kind == "prediction" else self._labels)
        return in_memory + self._stored[kind]

    @property
    def has_dropped(self) -> bool:
        return bool(self._dropped)

    def take_dropped(self) -> Counter[tuple[PendingKind, DropReason]]:
        """Drops counted since the last call, by (kind, reason)."""
        dropped, self._dropped = self._dropped, Counter()
        return dropped

    # ---- event time ----------------------------------------------------------------

    def _admit(self, table: OrderedDict[str, Any], key: str, entry: tuple[Any, bytes]) -> None:
        table[key] = entry
        self._next_expiry = min(self._next_expiry, entry[0].timestamp)

    def _advance(self, kind: PendingKind, timestamp: float) -> None:
        if timestamp <= self.watermarks[kind]:
            return
        self.watermarks[kind] = timestamp
        self._move_cutoff()

    def _move_cutoff(self) -> None:
        # On every record whose time moves on: two comparisons, no sort.
        predictions, labels = self.watermarks["prediction"], self.watermarks["label"]
        slow, fast = (predictions, labels) if predictions < labels else (labels, predictions)
        fast -= self.max_skew_seconds
        cutoff = (slow if slow > fast else fast) - self.ttl_seconds
        if cutoff <= self.cutoff:
            return
        self.cutoff = cutoff
        if cutoff > self._next_expiry:  # else nothing at the overlay's front is old enough
            self._expire(self._predictions, "prediction", cutoff)
            self._expire(self._labels, "label", cutoff)
            fronts = (next(iter(t.values())) for t in (self._predictions, self._labels) if t)
            self._next_expiry = min((e[0].timestamp for e in fronts), default=float("inf"))

    def _expire(self, table: OrderedDict[str, Any], kind: PendingKind, cutoff: float) -> None:
        # Tables are in arrival order, close to event-time order: stop at the first
        # entry still inside the window (a late straggler behind it waits a little).
        while table and next(iter(table.values()))[0].timestamp < cutoff:
            table.popitem(last=False)
            self._dropped[kind, "ttl"] += 1
