"""A model's snapshot in the safe format (``core/codec.py``) against the pickle it replaced.

Runs the throughput benchmark's stream (one model, 10 numeric features, a drift) through
a :class:`MonitorCore` up to N predictions, so that its detectors, feature tests and
label join hold state, then times in one process, alternating the two formats, R
rounds of:

* snapshot: ``codec.dumps`` of the model's state (``pickle.dumps`` for the baseline);
* restore: ``codec.loads`` (``pickle.loads``) of those bytes;

and prints the median milliseconds of each, the bytes of each snapshot and the ratio.
The label join's pending events are one blob either way; ``--pending`` sets how many
predictions wait for a label when the snapshot is taken.

    python benchmarks/snapshot_codec.py                 # 20,000 predictions, 200 pending
    python benchmarks/snapshot_codec.py --events 50000 --pending 5000 --rounds 50
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import time
from collections.abc import Callable

import orjson

from stream_monitor.config import MonitorSettings
from stream_monitor.core import codec
from stream_monitor.core.monitor import MonitorCore
from stream_monitor.simulate import Scenario, stream


def _median_ms(run: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="predictions before")
    parser.add_argument("--pending", type=int, default=200, help="labels still due")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()

    scenario = Scenario(events=args.events, drift_at=args.events // 2, label_delay=args.pending)
    core = MonitorCore(MonitorSettings())
    labels = 0
    for topic, key, value in stream(scenario):
        core.process(topic, key.encode(), orjson.dumps(value))
        labels += topic == "ground_truth"
        if labels >= args.events - args.pending:
            break  # stop while labels are still due: the join holds them
    (model_id,) = core.models()
    state = core._models[model_id]
    print(
        f"model state after {core.stats().joined:,} labelled pairs, "
        f"{core.stats().pending['prediction']:,} predictions pending, 10 features"
    )
    ours, theirs = codec.dumps(state), pickle.dumps(state, 5)
    assert type(codec.loads(ours)) is type(state)

    rows = []
    for name, dumps, loads, data in (
        ("codec (msgpack, allowlist)", codec.dumps, codec.loads, ours),
        ("pickle (baseline)", lambda s: pickle.dumps(s, 5), pickle.loads, theirs),
    ):
        rows.append((name, dumps, loads, data, [], []))
    for _ in range(args.rounds):  # alternated, so that both see the same machine
        for _name, dumps, loads, data, snap, back in rows:
            snap.append(_median_ms(lambda d=dumps: d(state), 1))
            back.append(_median_ms(lambda f=loads, b=data: f(b), 1))

    print("| format | snapshot ms | restore ms | total ms | bytes |")
    print("|---|---|---|---|---|")
    totals = []
    for name, _d, _l, data, snap, back in rows:
        s, r = statistics.median(snap), statistics.median(back)
        totals.append(s + r)
        print(f"| {name} | {s:.2f} | {r:.2f} | {s + r:.2f} | {len(data):,} |")
    print(f"codec / pickle, snapshot + restore: {totals[0] / totals[1]:.2f}x")


if __name__ == "__main__":
    main()
