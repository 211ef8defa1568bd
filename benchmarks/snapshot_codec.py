"""A model's snapshot in the safe format (``core/codec.py``) against MessagePack alone.

Runs the throughput benchmark's stream (one model, 10 numeric features, a drift) through
a :class:`MonitorCore` up to N predictions, so that its detectors and feature tests hold
state, then times in one process, alternating the two, R rounds of:

* snapshot: ``codec.dumps`` of the model's state; the baseline encodes the plain-data
  tree the codec wrote, as it is (MessagePack's own cost, no objects walked);
* restore: ``codec.loads`` of those bytes; the baseline only decodes them into that tree
  (no object made, no allowlist checked);

and prints the median milliseconds of each, the bytes and the ratio: what the codec's
walk over objects and its allowlist cost beyond the format. ``--pending`` sets how many
predictions wait for a label when the snapshot is taken (they are in the join's store,
not in the snapshot).

    python benchmarks/snapshot_codec.py                 # 20,000 predictions, 200 pending
    python benchmarks/snapshot_codec.py --events 50000 --pending 5000 --rounds 50
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import msgspec
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
    ours = codec.dumps(state)
    assert type(codec.loads(ours)) is type(state)
    tree = msgspec.msgpack.decode(ours)

    rows = []
    for name, dumps, loads, data in (
        ("codec (msgpack, allowlist)", codec.dumps, codec.loads, ours),
        (
            "MessagePack alone (baseline)",
            lambda _: msgspec.msgpack.encode(tree),
            msgspec.msgpack.decode,
            ours,
        ),
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
    print(f"codec / MessagePack alone, snapshot + restore: {totals[0] / totals[1]:.2f}x")


if __name__ == "__main__":
    main()
