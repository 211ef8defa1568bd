"""A backlog caught up through the service, and a join rebuilt from the input topics.

``catch-up``: N predictions (5 features, one a second of event time), then their labels,
each a minute after its prediction, on fresh topics of one partition; the join's TTL is
one hour. Read as a backlog, Kafka hands the monitor the predictions' topic far ahead
of the labels' (hours of event time, more than the TTL). A :class:`MonitorService` reads
it all; prints the labels joined and dropped, the time and the rate. A live run joins
every label.

``rebuild``: N predictions of 10 features without labels are read by a monitor and
checkpointed into its store; a second monitor with an empty store of its own (its
partition moved to it, or its disk was lost) restores the snapshot and rebuilds the
join from the input topics. Prints the rebuild's records read, seconds, and seconds per
million pending.

    python benchmarks/backlog.py catch-up --predictions 1000000
    python benchmarks/backlog.py rebuild --predictions 1000000
    python benchmarks/backlog.py catch-up --bootstrap host:9092
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from throughput import make_settings

from stream_monitor.config import MonitorSettings
from stream_monitor.devbroker.broker import BrokerSettings, start
from stream_monitor.kafka.service import MonitorService
from stream_monitor.kafka.topics import ensure_topics
from stream_monitor.metrics import MonitorMetrics
from stream_monitor.simulate import Scenario, SimTopic, publish_events, stream

Event = tuple[SimTopic, str, dict[str, Any]]


def backlog(predictions: int) -> Iterator[Event]:
    """All the predictions, then all their labels, each a minute after its prediction."""
    scenario = Scenario(
        events=predictions, drift_at=None, label_delay=0, features=5, seconds_between=1.0
    )
    labels = []
    for topic, key, value in stream(scenario):
        if topic == "predictions":
            yield topic, key, value
            at = value["timestamp"] + 60_000
        else:
            labels.append((topic, key, {**value, "timestamp": at}))
    yield from labels


def run_until(service: MonitorService, records: int) -> float:
    """Run the service until it has processed ``records``, then stop it (its last
    checkpoint included); returns the seconds from its first record to the stop."""
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    while service.processed == 0:
        if not thread.is_alive():
            raise SystemExit("the monitor stopped: its error is above")
        time.sleep(0.01)
    started = time.perf_counter()
    while service.processed < records:
        if not thread.is_alive():
            raise SystemExit("the monitor stopped: its error is above")
        time.sleep(0.01)
    service.stop.set()
    thread.join()
    return time.perf_counter() - started


def catch_up(settings: MonitorSettings, predictions: int) -> None:
    settings = settings.model_copy(
        update={"join": settings.join.model_copy(update={"ttl_seconds": 3600.0})}
    )
    ensure_topics(settings.kafka, settings.topics)
    total = publish_events(settings, backlog(predictions))
    print(f"{total:,} records written: {predictions:,} predictions, then their labels")
    service = MonitorService(settings, MonitorMetrics())
    seconds = run_until(service, total)
    stats = service.core.stats()
    dropped = sum(stats.dropped.values())
    print()
    print("| predictions | labels joined | dropped | seconds | events/s |")
    print("|---|---|---|---|---|")
    print(
        f"| {predictions:,} | {stats.joined:,} of {predictions:,} | {dropped:,} | "
        f"{seconds:.0f} | {total / seconds:,.0f} |"
    )


class _RebuildLog(logging.Handler):
    """Keeps the fields of the service's "join rebuilt" log line."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[str, Any] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "join rebuilt from the input topics":
            self.fields = {k: getattr(record, k) for k in ("records", "pending", "seconds")}


def rebuild(settings: MonitorSettings, predictions: int) -> None:
    ensure_topics(settings.kafka, settings.topics)
    scenario = Scenario(events=predictions, drift_at=None, with_labels=False)
    total = publish_events(settings, stream(scenario))
    print(f"{total:,} predictions written (10 features, no labels)")
    run_until(MonitorService(settings, MonitorMetrics()), total)
    print("first monitor: every prediction read, pending, checkpointed")
    # A second monitor with a new temporary store: the partition has moved to it. It
    # restores a model when a record of it comes: one more prediction.
    seen = _RebuildLog()
    logging.getLogger("stream_monitor.kafka.service").addHandler(seen)
    second = MonitorService(settings, MonitorMetrics())
    thread = threading.Thread(target=second.run, daemon=True)
    thread.start()
    one_more = Scenario(events=1, drift_at=None, with_labels=False, id_prefix="one-more-")
    publish_events(settings, stream(one_more))
    while not seen.fields:
        if not thread.is_alive():
            raise SystemExit("the second monitor stopped: its error is above")
        time.sleep(0.01)
    second.stop.set()
    thread.join()
    pending, seconds = seen.fields["pending"], seen.fields["seconds"]
    print()
    print("| pending predictions | records read again | rebuild s | s per million pending |")
    print("|---|---|---|---|")
    print(
        f"| {pending:,} | {seen.fields['records']:,} | {seconds:.1f} | "
        f"{seconds / pending * 1e6:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["catch-up", "rebuild"])
    parser.add_argument("--bootstrap", help="existing broker (default: start the local one)")
    parser.add_argument("--port", type=int, default=39092, help="local broker port")
    parser.add_argument("--predictions", type=int, default=1_000_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    bootstrap = args.bootstrap or start(BrokerSettings(port=args.port)).bootstrap_servers
    settings = make_settings(bootstrap, uuid.uuid4().hex[:8])
    if args.command == "catch-up":
        catch_up(settings, args.predictions)
    else:
        rebuild(settings, args.predictions)


if __name__ == "__main__":
    main()
