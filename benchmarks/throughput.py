"""Throughput through a real broker: the monitor against a bare consume-and-parse loop.

Produces N predictions and N labels (10 numeric features each) to fresh topics, then
in the same run, alternately:

* baseline: a kafka-python consumer that reads both topics and ``json.loads`` each value;
* monitor: the real :class:`MonitorService` (join, detectors, policy, labelled examples
  produced back to Kafka, checkpoints, commits).

Prints events/s of each run, the medians, and the median of the rounds' ratios
monitor / baseline.

    python benchmarks/throughput.py                    # starts the local broker itself
    python benchmarks/throughput.py --bootstrap host:9092 --events 100000 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import threading
import time
import uuid
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from stream_monitor.config import MonitorSettings
from stream_monitor.devbroker.broker import BrokerSettings, start
from stream_monitor.kafka.service import FETCH_BYTES, FETCH_WAIT_MS, MonitorService
from stream_monitor.kafka.topics import ensure_topics
from stream_monitor.metrics import MonitorMetrics
from stream_monitor.simulate import Scenario, publish


def make_settings(bootstrap: str, tag: str) -> MonitorSettings:
    names = MonitorSettings().topics.model_dump()
    return MonitorSettings(
        kafka={"bootstrap_servers": bootstrap, "group_id": f"bench-{tag}", "partitions": 1},
        topics={field: f"bench-{name}-{tag}" for field, name in names.items()},
        metrics_port=0,
    )


def produce(settings: MonitorSettings, predictions: int) -> int:
    ensure_topics(settings.kafka, settings.topics)
    return publish(settings, Scenario(events=predictions, drift_at=predictions // 2))


def bare_loop(settings: MonitorSettings, total: int) -> float:
    """Events/s of a consumer that only reads and parses."""
    consumer = KafkaConsumer(
        **settings.kafka.client(),
        enable_auto_commit=False,
        max_poll_records=settings.kafka.max_poll_records,
        # The monitor's consumer settings.
        max_partition_fetch_bytes=FETCH_BYTES,
        fetch_max_wait_ms=FETCH_WAIT_MS,
    )
    topics = [settings.topics.predictions, settings.topics.ground_truth]
    partitions = [
        TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()
    ]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    seen = 0
    parsed: Any = None
    started, first = 0.0, 0
    # As for the monitor: timed from the end of the first poll's records to the last.
    while seen < total:
        for records in consumer.poll(timeout_ms=1000).values():
            for record in records:
                parsed = json.loads(record.value)
            seen += len(records)
        if not first and seen:
            started, first = time.perf_counter(), seen
    assert parsed is not None
    elapsed = time.perf_counter() - started
    consumer.close()
    return (total - first) / elapsed


def monitor(settings: MonitorSettings, total: int, tag: str) -> float:
    """Events/s of the real monitor service, first record to last."""
    # A new group and a new state topic: a snapshot of the round before records that it
    # has read every record, and a monitor restored from it would skip them all.
    settings = settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(update={"group_id": f"bench-{tag}"}),
            "topics": settings.topics.model_copy(update={"monitor_state": f"bench-state-{tag}"}),
        }
    )
    metrics = MonitorMetrics()
    service = MonitorService(settings, metrics)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()

    # Not the Prometheus registry: a collection computes every gauge, and one every
    # 5 ms would slow the monitor down; Prometheus scrapes every 15 s or so.
    def wait_for(records: int) -> None:
        while service.processed < records:
            if not thread.is_alive():
                raise SystemExit("the monitor stopped early: its error is above")
            time.sleep(0.005)

    wait_for(1)
    started, first = time.perf_counter(), service.processed
    wait_for(total)
    elapsed = time.perf_counter() - started
    service.stop.set()
    thread.join()
    return (total - first) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", help="existing broker (default: start the local one)")
    parser.add_argument("--port", type=int, default=39092, help="local broker port")
    parser.add_argument("--events", type=int, default=50_000, help="predictions (and labels)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of each")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    bootstrap = args.bootstrap or start(BrokerSettings(port=args.port)).bootstrap_servers
    tag = uuid.uuid4().hex[:8]
    settings = make_settings(bootstrap, tag)
    total = produce(settings, args.events)
    print(f"{total} events ({args.events} predictions + labels, 10 features) on {bootstrap}")

    bare, full = [], []
    for round_ in range(args.rounds):
        bare.append(bare_loop(settings, total))
        full.append(monitor(settings, total, f"{tag}-{round_}"))
        print(
            f"round {round_ + 1}: bare loop {bare[-1]:,.0f} ev/s, monitor {full[-1]:,.0f} ev/s,"
            f" ratio {full[-1] / bare[-1]:.2f}"
        )
    # Each round pairs two runs a second apart: the ratio of a pair is steadier than
    # either rate on a machine whose speed drifts by tens of percent.
    ratio = statistics.median(m / b for m, b in zip(full, bare, strict=True))
    print()
    print(f"| run | events/s (median of {args.rounds}) |")
    print("|---|---|")
    print(f"| bare kafka-python consume + json.loads | {statistics.median(bare):,.0f} |")
    print(
        "| stream-monitor (join, detectors, outputs, checkpoints) |"
        f" {statistics.median(full):,.0f} |"
    )
    print(f"| ratio monitor / bare (median of the rounds' ratios) | {ratio:.2f} |")


if __name__ == "__main__":
    main()
