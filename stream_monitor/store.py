"""The label join's pending entries on local disk: one RocksDB database per process.

Each model is a view of the database under its own key prefix. Keys (``M`` is the
model id as UTF-8 after its length in two bytes, ``k`` is ``p`` or ``l`` for a
prediction or a label, ``T`` is the event time in milliseconds as an unsigned 8-byte
big-endian number, shifted by 2**63 so that order is time order)::

    e M k prediction_id   -> the event's JSON, as it came
    t M T k prediction_id -> empty: the event-time index that expiry walks in order
    c M                   -> the checkpoint number the entries were written at

A checkpoint is one ``WriteBatch``: the entries added since the last one, the deletes
of those joined, the expiry of those past the TTL and the checkpoint number land
together or not at all. Memory is bounded by the block cache and the write buffers
(``join.store_cache_mb``), not by what is pending.
"""

from __future__ import annotations

import logging
import shutil
import struct
import tempfile
from collections.abc import Iterable
from pathlib import Path

import rocksdict

from stream_monitor.core.join import PendingKind, StoreEntry

log = logging.getLogger(__name__)

_KIND_BYTE: dict[PendingKind, bytes] = {"prediction": b"p", "label": b"l"}
_KIND_OF: dict[int, PendingKind] = {ord("p"): "prediction", ord("l"): "label"}
_TIME_SHIFT = 2**63
_PACK_TIME = struct.Struct(">Q").pack


def _time_key(timestamp: float) -> bytes:
    """Event time as 8 bytes that sort as the time does.

    >>> _time_key(float("-inf")) < _time_key(-1.0) < _time_key(0.0) < _time_key(1.5)
    True
    """
    try:
        return _PACK_TIME(int(timestamp * 1000) + _TIME_SHIFT)
    except (OverflowError, struct.error):  # beyond +-292 million years, or infinite
        return b"\x00" * 8 if timestamp < 0 else b"\xff" * 8


def _options(cache_mb: int) -> rocksdict.Options:
    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(True)
    table = rocksdict.BlockBasedOptions()
    table.set_block_cache(rocksdict.Cache(cache_mb * 1024 * 1024))
    table.set_cache_index_and_filter_blocks(True)
    table.set_bloom_filter(10, False)  # a label whose prediction expired: no disk read
    options.set_block_based_table_factory(table)
    # The write buffers are the other memory RocksDB holds: a quarter of the cache each.
    options.set_write_buffer_size(max(cache_mb // 4, 4) * 1024 * 1024)
    options.set_max_write_buffer_number(2)
    options.set_compression_type(rocksdict.DBCompressionType.lz4())
    return options


class StoreLockedError(Exception):
    """The store's directory cannot be opened: in use by another instance, or unusable."""


class RocksStore:
    """The process's RocksDB database of pending entries, in ``path`` (a new temporary
    directory, removed at close, when None)."""

    def __init__(self, path: str | Path | None, cache_mb: int = 64) -> None:
        self._temporary = path is None
        self.path = Path(tempfile.mkdtemp(prefix="stream-monitor-join-") if path is None else path)
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            self._db = rocksdict.Rdict(str(self.path), _options(cache_mb))
        except Exception as exc:  # rocksdict raises a bare Exception (a lock held, say)
            raise StoreLockedError(
                f"cannot open the join store in {self.path}: {exc}. Each instance needs a "
                "join.store_dir of its own (environment: STREAM_MONITOR_JOIN__STORE_DIR)."
            ) from None
        log.debug("join store opened", extra={"path": str(self.path)})

    def view(self, model_id: str) -> RocksView:
        return RocksView(self._db, model_id)

    def disk_bytes(self) -> int:
        """Bytes of the database's files (SST and write-ahead log) on disk."""
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())

    def close(self) -> None:
        self._db.close()
        if self._temporary:
            shutil.rmtree(self.path, ignore_errors=True)


class RocksView:
    """One model's entries: a :class:`~stream_monitor.core.join.PendingStore`."""

    def __init__(self, db: rocksdict.Rdict, model_id: str) -> None:
        encoded = model_id.encode()
        prefix = len(encoded).to_bytes(2, "big") + encoded
        self._db = db
        self._entry = b"e" + prefix
        self._time = b"t" + prefix
        self._checkpoint = b"c" + prefix
        # Below this every entry has expired: a walk starts here, not at the deleted
        # index keys before it (RocksDB would step over each one's tombstone).
        self._walked = float("-inf")

    def get(self, kind: PendingKind, prediction_id: str) -> bytes | None:
        value: bytes | None = self._db.get(self._entry + _KIND_BYTE[kind] + prediction_id.encode())
        return value

    def write(
        self,
        puts: Iterable[StoreEntry],
        deletes: Iterable[tuple[PendingKind, str, float]],
        expire_before: float,
        checkpoint: int,
    ) -> list[tuple[PendingKind, str]]:
        batch = rocksdict.WriteBatch(raw_mode=True)
        entry, time, kinds = self._entry, self._time, _KIND_BYTE
        delete, put = batch.delete, batch.put
        deleted: set[bytes] = set()
        for kind, prediction_id, timestamp in deletes:
            tail = kinds[kind] + prediction_id.encode()
            index = time + _time_key(timestamp) + tail
            delete(entry + tail)
            delete(index)
            deleted.add(index)
        walked = self._walked
        for kind, prediction_id, timestamp, raw in puts:
            tail = kinds[kind] + prediction_id.encode()
            put(entry + tail, raw)
            put(time + _time_key(timestamp) + tail, b"")
            walked = min(walked, timestamp)
        self._walked = walked
        expired = self._expired(expire_before, deleted, batch) if expire_before > walked else []
        batch.put(self._checkpoint, str(checkpoint).encode())
        self._db.write(batch)
        return expired

    def _expired(
        self, before: float, deleted: set[bytes], batch: rocksdict.WriteBatch
    ) -> list[tuple[PendingKind, str]]:
        """Add to ``batch`` the deletes of entries older than ``before``: a walk of the
        index from its start to the first younger entry."""
        expired: list[tuple[PendingKind, str]] = []
        end = self._time + _time_key(before)
        start = len(self._time) + 8
        bounds = rocksdict.ReadOptions()
        bounds.set_iterate_upper_bound(end)
        cursor = self._db.iter(bounds)
        cursor.seek(self._time + _time_key(self._walked))
        while cursor.valid():
            index: bytes = cursor.key()
            cursor.next()
            if index in deleted:
                continue  # joined since the last checkpoint: not an expiry
            tail = index[start:]
            batch.delete(index)
            batch.delete(self._entry + tail)
            expired.append((_KIND_OF[tail[0]], tail[1:].decode()))
        self._walked = before
        return expired

    def checkpoint(self) -> int | None:
        value = self._db.get(self._checkpoint)
        return None if value is None else int(value)

    def ids(self, kind: PendingKind) -> list[str]:
        prefix = self._entry + _KIND_BYTE[kind]
        found = []
        cursor = self._db.iter()
        cursor.seek(prefix)
        while cursor.valid():
            key: bytes = cursor.key()
            if not key.startswith(prefix):
                break
            found.append(key[len(prefix) :].decode())
            cursor.next()
        return found

    def clear(self) -> None:
        batch = rocksdict.WriteBatch(raw_mode=True)
        for prefix in (self._entry, self._time):
            batch.delete_range(prefix, _after(prefix))
        batch.delete(self._checkpoint)
        self._db.write(batch)
        self._walked = float("-inf")


def _after(prefix: bytes) -> bytes:
    """The first key after every key that starts with ``prefix``.

    >>> _after(b"ab"), _after(b"a\\xff")
    (b'ac', b'b')
    """
    stripped = prefix.rstrip(b"\xff")
    return stripped[:-1] + bytes([stripped[-1] + 1])
