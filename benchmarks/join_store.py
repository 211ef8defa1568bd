"""The label join on its local store (RocksDB): memory and checkpoint time against the
number of pending predictions, and labels far beyond the old capacity.

``pending``: N predictions of 10 features wait in one model's join (their labels have
not come; TTL 7 days, 20 predictions a second of event time), written to the store by
a checkpoint every ``--every`` records. When 100,000 and when N are pending, it
measures ``--rounds`` checkpoints, each after a steady round of changes: ``--every``
records, half new predictions and half labels that join stored predictions (the worst
case: no label joins in memory). Prints the checkpoint time's median and p99 at both
points, the process's peak RSS and the store's size on disk.

``late``: the replay of issue 13 through :class:`MonitorCore` on the store: 250,000
predictions (5 features, one a second), each label 150,000 predictions late, with a
checkpoint every 50,000 records; prints labels joined and dropped.

    python benchmarks/join_store.py pending --pending 10000000
    python benchmarks/join_store.py late
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import orjson

from stream_monitor.config import MonitorSettings
from stream_monitor.core.events import GroundTruth, Prediction, decode
from stream_monitor.core.join import LabelJoin
from stream_monitor.core.monitor import MonitorCore
from stream_monitor.kafka.service import set_aside_startup_objects
from stream_monitor.simulate import Scenario, stream
from stream_monitor.store import RocksStore

T0_MS = 1_767_225_600_000
# 20 predictions a second: 10 million span 5.8 days, inside the 7-day TTL.
STEP_MS = 50


def status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


class Stream:
    """Predictions of 10 features as JSON, made fast from a pool of feature values."""

    def __init__(self) -> None:
        rng = random.Random(0)
        self._features = [
            orjson.dumps({f"f{j}": round(rng.gauss(0, 1), 4) for j in range(10)}).decode()
            for _ in range(997)
        ]

    def prediction(self, i: int) -> tuple[Prediction, bytes]:
        raw = (
            f'{{"prediction_id":"p{i}","model_id":"m","model_version":"1",'
            f'"timestamp":{T0_MS + i * STEP_MS},"features":{self._features[i % 997]},'
            f'"prediction":"yes"}}'
        ).encode()
        return decode(Prediction, raw), raw

    @staticmethod
    def label(i: int, at: int) -> tuple[GroundTruth, bytes]:
        raw = (
            f'{{"prediction_id":"p{i}","model_id":"m","label":"yes",'
            f'"timestamp":{T0_MS + at * STEP_MS}}}'
        ).encode()
        return decode(GroundTruth, raw), raw


def checkpoint_times(
    join: LabelJoin, source: Stream, next_id: int, first_unjoined: int, every: int, rounds: int
) -> tuple[list[float], int, int]:
    """``rounds`` checkpoints, each after ``every`` records of steady state."""
    times = []
    for _ in range(rounds):
        for _ in range(every // 2):
            join.add_prediction(*source.prediction(next_id))
            joined = join.add_label(*source.label(first_unjoined, next_id))
            assert joined is not None, "a label did not find its stored prediction"
            next_id += 1
            first_unjoined += 1
        started = time.perf_counter()
        join.checkpoint()
        times.append((time.perf_counter() - started) * 1000)
    return times, next_id, first_unjoined


def pending(args: argparse.Namespace) -> None:
    source = Stream()
    set_aside_startup_objects()  # as the service does after start-up
    with tempfile.TemporaryDirectory(prefix="join-bench-") as directory:
        store = RocksStore(Path(directory), cache_mb=64)
        join = LabelJoin(ttl_seconds=7 * 86_400.0, store=store.view("m"))
        figures = []
        next_id, first_unjoined = 0, 0
        started = time.perf_counter()
        for target in sorted({100_000, args.pending}):
            while join.pending("prediction") < target:
                join.add_prediction(*source.prediction(next_id))
                next_id += 1
                if next_id % args.every == 0:
                    join.checkpoint()
            join.checkpoint()
            filled = time.perf_counter() - started
            times, next_id, first_unjoined = checkpoint_times(
                join, source, next_id, first_unjoined, args.every, args.rounds
            )
            times.sort()
            p99 = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
            figures.append(
                (join.pending("prediction"), statistics.median(times), p99, status_mb("VmHWM"))
            )
            print(
                f"{join.pending('prediction'):,} pending after {filled:,.0f} s: checkpoint median "
                f"{figures[-1][1]:.0f} ms, p99 {p99:.0f} ms, peak RSS {figures[-1][3]:,.0f} MB",
                flush=True,
            )
        disk = store.disk_bytes()
        store.close()
    print()
    print(
        f"| pending predictions (10 features) | checkpoint median ms | checkpoint p99 ms "
        f"({args.rounds} checkpoints of {args.every:,} records) | peak RSS MB |"
    )
    print("|---|---|---|---|")
    for count, median, p99, rss in figures:
        print(f"| {count:,} | {median:.0f} | {p99:.0f} | {rss:,.0f} |")
    print(f"\nstore on disk at the end: {disk / 1e9:.2f} GB")


def late(args: argparse.Namespace) -> None:
    scenario = Scenario(
        events=args.events, drift_at=None, label_delay=args.delay, features=5, seconds_between=1.0
    )
    with tempfile.TemporaryDirectory(prefix="join-bench-") as directory:
        store = RocksStore(Path(directory), cache_mb=64)
        core = MonitorCore(MonitorSettings(), stores=store)
        set_aside_startup_objects()
        started = time.perf_counter()
        for n, (topic, key, value) in enumerate(stream(scenario), start=1):
            core.process(topic, key.encode(), orjson.dumps(value))
            if n % 50_000 == 0:
                core.checkpoint_join(scenario.model_id)
        core.checkpoint_join(scenario.model_id)
        elapsed = time.perf_counter() - started
        stats = core.stats()
        store.close()
    print(
        f"| predictions | label delay | labels joined | dropped | seconds | peak RSS MB |\n"
        f"|---|---|---|---|---|---|\n"
        f"| {args.events:,} | {args.delay:,} | {stats.joined:,} of {args.events:,} | "
        f"{sum(stats.dropped.values())} | {elapsed:.0f} | {status_mb('VmHWM'):,.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    filled = commands.add_parser("pending", help="memory and checkpoint time vs pending")
    filled.add_argument("--pending", type=int, default=10_000_000)
    filled.add_argument("--every", type=int, default=10_000, help="records per checkpoint")
    filled.add_argument("--rounds", type=int, default=100)
    replay = commands.add_parser("late", help="labels far beyond the old capacity")
    replay.add_argument("--events", type=int, default=250_000)
    replay.add_argument("--delay", type=int, default=150_000)
    args = parser.parse_args()
    if args.command == "pending":
        pending(args)
    else:
        late(args)


if __name__ == "__main__":
    main()
