"""Helpers for integration tests: unique topics, producing, reading, a running monitor."""

from __future__ import annotations

import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import CoordinatorLoadInProgressError

from stream_monitor.config import MonitorSettings
from stream_monitor.core.events import unbatch
from stream_monitor.core.monitor import MonitorCore
from stream_monitor.kafka import state
from stream_monitor.kafka.runner import Service
from stream_monitor.kafka.service import MonitorService
from stream_monitor.kafka.topics import assign_all, ensure_topics, read_to_end
from stream_monitor.metrics import MonitorMetrics
from stream_monitor.simulate import Scenario, SimTopic, publish, publish_events


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def settings_for(bootstrap: str, **overrides: Any) -> MonitorSettings:
    """Settings with topics and group unique to one test, so tests never share data."""
    tag = uuid.uuid4().hex[:8]
    names = MonitorSettings().topics.model_dump()
    base: dict[str, Any] = {
        "kafka": {"bootstrap_servers": bootstrap, "group_id": f"monitor-{tag}", "partitions": 2},
        "topics": {field: f"{name}-{tag}" for field, name in names.items()},
        "metrics_port": 0,
        "checkpoint": {"every_seconds": 1.0},
        # A store of its own that outlives a restart of the monitor (as a volume would).
        "join": {"store_dir": tempfile.mkdtemp(prefix=f"join-store-{tag}-")},
    }
    for key, value in overrides.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return MonitorSettings(**base)


def with_own_store(settings: MonitorSettings) -> MonitorSettings:
    """The same settings with a join store of its own: a second instance, or one on
    another machine (each instance needs its own ``join.store_dir``)."""
    store_dir = tempfile.mkdtemp(prefix="join-store-")
    return settings.model_copy(
        update={"join": settings.join.model_copy(update={"store_dir": store_dir})}
    )


def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes]]) -> int:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=10)
    count = 0
    for key, value in records:
        producer.send(topic, key=key, value=value)
        count += 1
    producer.flush()
    producer.close()
    return count


def create_topics(settings: MonitorSettings) -> None:
    """Create the test's topics as the monitor would (else producing auto-creates them)."""
    ensure_topics(settings.kafka, settings.topics)


def produce_scenario(settings: MonitorSettings, scenario: Scenario) -> int:
    """Write a simulated stream to the two input topics, in arrival order."""
    create_topics(settings)
    return publish(settings, scenario)


def read_all(bootstrap: str, topic: str, timeout: float = 5.0) -> list[Any]:
    """Every record of ``topic`` from the beginning to its current end."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = assign_all(consumer, topic, from_beginning=True)
        return list(read_to_end(consumer, partitions, timeout))
    finally:
        consumer.close()


def values(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every event on ``topic``, with CloudEvents batch records unpacked."""
    return [event for r in read_all(bootstrap, topic) for event in unbatch(r.value)]


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    monitor: RunningService | None = None,
) -> None:
    """Poll ``condition``; fail at once if ``monitor`` died meanwhile."""
    deadline = time.monotonic() + timeout
    while not condition():
        if monitor is not None:
            monitor.healthy()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.25)


def running_monitor(
    settings: MonitorSettings, metrics: MonitorMetrics | None = None
) -> AbstractContextManager[RunningService]:
    """The real monitor service in a background thread; stopped (SIGTERM path) on exit."""
    return running_service(MonitorService(settings, metrics or MonitorMetrics()))


def produce_stream(
    settings: MonitorSettings, events: Iterable[tuple[SimTopic, str, dict[str, Any]]]
) -> int:
    """Write ``(topic, key, value)`` events, shaped as :func:`simulate.stream` yields them,
    to the two input topics in order (``produce_scenario`` for any stream)."""
    create_topics(settings)
    return publish_events(settings, events)


@dataclass
class RunningService:
    service: Service
    errors: list[BaseException] = field(default_factory=list)

    def healthy(self) -> bool:
        """True while the service runs; raises what it raised if it died."""
        if self.errors:
            raise self.errors[0]
        return True


@contextmanager
def running_service(service: Service) -> Iterator[RunningService]:
    """Any service in a background thread; stopped (SIGTERM path) on exit."""
    running = RunningService(service)

    def target() -> None:
        try:
            service.run()
        except BaseException as exc:  # surfaced by healthy() and on exit
            running.errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield running
    finally:
        service.stop.set()
        thread.join(timeout=60)
    running.healthy()
    assert not thread.is_alive(), f"{type(service).__name__} did not stop within 60 s"


def committed(bootstrap: str, group_id: str) -> int:
    """Offsets committed by a consumer group, summed over its partitions (-1 while the
    group's coordinator is still loading, as on a fresh broker: ask again)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets(group_id).get(group_id, {})
    except CoordinatorLoadInProgressError:
        return -1
    finally:
        admin.close()
    return sum(o.offset for o in offsets.values() if o.offset > 0)


def all_committed(settings: MonitorSettings, records: int) -> bool:
    """Whether the monitor's group has committed all ``records`` of its inputs."""
    return committed(settings.kafka.bootstrap_servers, settings.kafka.group_id) == records


def assert_every_pair_counted_once(
    settings: MonitorSettings, models: list[str], per_model: int
) -> None:
    """The snapshots left in the state topic: each model's pairs scored exactly once."""
    core = MonitorCore(settings)
    snapshots = state.read_state(settings.kafka.client(), settings.topics.monitor_state).snapshots
    for model, data in snapshots.items():
        core.restore(model, data)
    stats = core.stats()
    assert sorted(snapshots) == models
    assert {m: stats.versions[m, "1"].labelled for m in models} == dict.fromkeys(models, per_model)
    assert stats.pending == {"prediction": 0, "label": 0} and not stats.dropped
