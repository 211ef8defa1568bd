"""The two embedded stores the label join could keep its pending entries in, measured
the way the join uses them, in one run: RocksDB (``rocksdict``) and LMDB (``lmdb``).

For each, in a fresh directory: N entries (a 10-feature prediction's JSON under its
``prediction_id``, and an event-time index key) written in checkpoint-sized batches;
then N/10 point reads of stored keys and N/10 of absent keys (a label whose
prediction expired); then deletes of a tenth in batches. Prints microseconds per
operation, the process's resident memory after each store, and the files' size.

    python benchmarks/store.py                 # 1,000,000 entries
    python benchmarks/store.py --entries 200000
"""

from __future__ import annotations

import argparse
import gc
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import lmdb
import orjson
import rocksdict

from stream_monitor.store import _options, _time_key

BATCH = 25_000  # a checkpoint's worth of new pending predictions


def rss_mb() -> float:
    """Resident memory of this process, MB (file pages mapped and touched included)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def disk_mb(path: Path) -> float:
    """Space the files take on disk (LMDB's file is sparse: its size is the map size)."""
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file()) / 1e6


def entries(n: int) -> list[tuple[bytes, bytes, bytes]]:
    rng = random.Random(0)
    found = []
    for i in range(n):
        pid = f"p{i}"
        value = orjson.dumps(
            {
                "prediction_id": pid,
                "model_id": "demo-model",
                "model_version": "1",
                "timestamp": 1_767_225_600_000 + i * 1000,
                "features": {f"f{j}": round(rng.gauss(0, 1), 4) for j in range(10)},
                "prediction": "yes",
            }
        )
        found.append((b"ep" + pid.encode(), b"t" + _time_key(i) + pid.encode(), value))
    return found


class Rocks:
    name = "RocksDB (rocksdict, 64 MB cache, LZ4)"

    def __init__(self, path: Path) -> None:
        self.db = rocksdict.Rdict(str(path), _options(64))

    def put_batch(self, batch: list[tuple[bytes, bytes, bytes]]) -> None:
        wb = rocksdict.WriteBatch(raw_mode=True)
        for key, index, value in batch:
            wb.put(key, value)
            wb.put(index, b"")
        self.db.write(wb)

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self.db.get(key)
        return value

    def delete_batch(self, batch: list[tuple[bytes, bytes, bytes]]) -> None:
        wb = rocksdict.WriteBatch(raw_mode=True)
        for key, index, _ in batch:
            wb.delete(key)
            wb.delete(index)
        self.db.write(wb)

    def close(self) -> None:
        self.db.close()


class Lmdb:
    name = "LMDB (lmdb, writemap, no sync)"

    def __init__(self, path: Path) -> None:
        self.env = lmdb.open(
            str(path), map_size=64 * 2**30, writemap=True, sync=False, metasync=False
        )

    def put_batch(self, batch: list[tuple[bytes, bytes, bytes]]) -> None:
        with self.env.begin(write=True) as txn:
            for key, index, value in batch:
                txn.put(key, value)
                txn.put(index, b"")

    def get(self, key: bytes) -> bytes | None:
        with self.env.begin() as txn:
            value: bytes | None = txn.get(key)
            return value

    def delete_batch(self, batch: list[tuple[bytes, bytes, bytes]]) -> None:
        with self.env.begin(write=True) as txn:
            for key, index, _ in batch:
                txn.delete(key)
                txn.delete(index)

    def close(self) -> None:
        self.env.close()


def per_op_us(action: Callable[[], object], ops: int) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) / ops * 1e6


def measure(store_type: type[Rocks] | type[Lmdb], data: list[tuple[bytes, bytes, bytes]]) -> None:
    path = Path(tempfile.mkdtemp(prefix="store-bench-"))
    try:
        gc.collect()
        rss_before = rss_mb()
        store = store_type(path)
        n = len(data)
        batches = [data[i : i + BATCH] for i in range(0, n, BATCH)]
        started = time.perf_counter()
        batch_ms = []
        for batch in batches:
            t = time.perf_counter()
            store.put_batch(batch)
            batch_ms.append((time.perf_counter() - t) * 1000)
        put = (time.perf_counter() - started) / n * 1e6
        rng = random.Random(1)
        hits = [data[rng.randrange(n)][0] for _ in range(n // 10)]
        misses = [b"ep" + f"absent{i}".encode() for i in range(n // 10)]
        get_hit = per_op_us(lambda: [store.get(k) for k in hits], len(hits))
        get_miss = per_op_us(lambda: [store.get(k) for k in misses], len(misses))
        deletes = data[: n // 10]
        delete = per_op_us(
            lambda: [
                store.delete_batch(deletes[i : i + BATCH]) for i in range(0, len(deletes), BATCH)
            ],
            len(deletes),
        )
        rss = rss_mb() - rss_before
        store.close()
        batch_ms.sort()
        print(
            f"| {store_type.name} | {put:.2f} | {batch_ms[len(batch_ms) // 2]:.0f} / "
            f"{batch_ms[-1]:.0f} | {get_hit:.2f} | {get_miss:.2f} | {delete:.2f} | "
            f"{rss:,.0f} | {disk_mb(path):,.0f} |"
        )
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    args = parser.parse_args()
    data = entries(args.entries)
    size = sum(len(v) for _, _, v in data) / len(data)
    print(
        f"{args.entries:,} entries of {size:.0f} bytes (+ an index key each), batches of {BATCH:,}"
    )
    print()
    print(
        "| store | put µs/entry (batched) | batch ms median / max | get µs (present) |"
        " get µs (absent) | delete µs/entry (batched) | RSS growth MB | disk MB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for store_type in (Rocks, Lmdb):
        measure(store_type, data)


if __name__ == "__main__":
    main()
