"""Where the monitor's own time goes, without Kafka, against the bare loop's parse.

Builds the throughput benchmark's stream in memory (N predictions with 10 numeric
features and their labels, in arrival order, as JSON), then in one process, for each
of R rounds, times over all of it:

* ``json.loads`` of every value: the bare loop's only work besides kafka-python's poll;
* ``MonitorCore.process`` of every record: all of the monitor's per-event work;
* ``parse_record`` of every record: decoding and validation, a part of the above;
* ``FeatureDriftTracker.update`` of every prediction: the feature tests, a part too.

Prints microseconds per event (per prediction for the feature tests) for each round and
their medians. With ``benchmarks/throughput.py``'s ``poll`` cost per record (the same in
both loops), these give the ratio the monitor can reach at best.

    python benchmarks/core_costs.py                      # 50,000 predictions, 3 rounds
    python benchmarks/core_costs.py --events 100000 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import orjson

from stream_monitor.config import FeatureDriftSettings, MonitorSettings
from stream_monitor.core.events import GroundTruth, Prediction, parse_record
from stream_monitor.core.features import FeatureDriftTracker
from stream_monitor.core.monitor import MonitorCore
from stream_monitor.kafka.service import set_aside_startup_objects
from stream_monitor.simulate import Scenario, stream


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000, help="predictions (and labels)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    scenario = Scenario(events=args.events, drift_at=args.events // 2)
    records = [(topic, key.encode(), orjson.dumps(value)) for topic, key, value in stream(scenario)]
    schemas = [Prediction if topic == "predictions" else GroundTruth for topic, _, _ in records]
    parsed = [
        parse_record(Prediction, key, value)
        for topic, key, value in records
        if topic == "predictions"
    ]
    set_aside_startup_objects()  # as the service does after start-up

    def bare() -> None:
        for _, _, value in records:
            json.loads(value)

    def core() -> None:
        monitor = MonitorCore(MonitorSettings())
        for topic, key, value in records:
            monitor.process(topic, key, value)

    def decode() -> None:
        for schema, (_, key, value) in zip(schemas, records, strict=True):
            parse_record(schema, key, value)

    def features() -> None:
        tracker = FeatureDriftTracker(FeatureDriftSettings(), "classification")
        for p in parsed:
            tracker.update(p.features, p.prediction, p.scores)

    runs: dict[str, tuple[Callable[[], None], int, list[float]]] = {
        "json.loads (the bare loop's parse), per event": (bare, len(records), []),
        "MonitorCore.process, per event": (core, len(records), []),
        "  of which decoding and validation, per event": (decode, len(records), []),
        "  of which the feature tests, per prediction": (features, len(parsed), []),
    }
    print(f"{len(records)} events ({args.events} predictions + labels, 10 features)")
    for round_ in range(args.rounds):
        figures = []
        for name, (run, count, times) in runs.items():
            started = time.perf_counter()
            run()
            times.append((time.perf_counter() - started) / count * 1e6)
            figures.append(f"{name.split(',')[0].strip()} {times[-1]:.2f}")
        print(f"round {round_ + 1}: " + ", ".join(figures) + " µs")
    print()
    print(f"| step | µs (median of {args.rounds}) |")
    print("|---|---|")
    for name, (_, _, times) in runs.items():
        print(f"| {name} | {statistics.median(times):.2f} |")


if __name__ == "__main__":
    main()
