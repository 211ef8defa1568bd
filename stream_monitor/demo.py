"""``stream-monitor demo``: a local broker, a model whose accuracy drops, the monitor catching it.

Everything runs in this process except the broker: a simulated serving app writes
predictions and (200 events later) their labels, the real :class:`MonitorService`
consumes them, and the display follows the drift events and retrain requests the
monitor publishes back to Kafka. Each run uses its own topics, so runs never mix.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer
from prometheus_client import start_http_server
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from stream_monitor.config import MonitorSettings
from stream_monitor.core.events import unbatch
from stream_monitor.devbroker.broker import BrokerSettings, start, stop
from stream_monitor.kafka.service import MonitorService
from stream_monitor.metrics import MonitorMetrics
from stream_monitor.simulate import Scenario, publish

log = logging.getLogger(__name__)


@dataclass
class Seen:
    """What the demo saw come out of the monitor."""

    signals: list[dict[str, Any]] = field(default_factory=list)
    retrain_requests: list[dict[str, Any]] = field(default_factory=list)


def run_demo(
    settings: MonitorSettings,
    events: int = 20_000,
    port: int = 9092,
    metrics_port: int = 9108,
    keep_broker: bool = False,
    bootstrap: str | None = None,
    rate: float = 2000.0,
    console: Console | None = None,
) -> int:
    """Run the demo; 0 when the drift was caught and one retrain request published."""
    console = console or Console()
    # The display tells the story; the service's JSON logs would only interleave with it.
    logging.getLogger("stream_monitor").setLevel(logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.ERROR)
    broker_settings = BrokerSettings(port=port)
    if bootstrap is None:
        console.print("[bold]Starting the local Kafka broker[/] (first run downloads it)…")
        bootstrap = start(broker_settings).bootstrap_servers
    try:
        return _run(settings, bootstrap, events, metrics_port, rate, console)
    finally:
        if not keep_broker and bootstrap == broker_settings.bootstrap_servers:
            stop(broker_settings)


def _demo_settings(settings: MonitorSettings, bootstrap: str) -> MonitorSettings:
    tag = f"demo-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    topics = {name: f"{tag}.{topic}" for name, topic in settings.topics.model_dump().items()}
    kafka = {"bootstrap_servers": bootstrap, "group_id": tag}
    return settings.model_copy(
        update={
            "topics": settings.topics.model_copy(update=topics),
            "kafka": settings.kafka.model_copy(update=kafka),
        }
    )


def _run(
    base: MonitorSettings,
    bootstrap: str,
    events: int,
    metrics_port: int,
    rate: float,
    console: Console,
) -> int:
    settings = _demo_settings(base, bootstrap)
    scenario = Scenario(events=events, drift_at=events // 2)
    metrics = MonitorMetrics()
    if metrics_port:
        start_http_server(metrics_port, addr="127.0.0.1", registry=metrics.registry)
        console.print(f"Metrics: http://127.0.0.1:{metrics_port}/metrics")
    service = MonitorService(settings, metrics)
    monitor = threading.Thread(target=service.run, name="monitor", daemon=True)
    monitor.start()
    producer = threading.Thread(
        target=publish, args=(settings, scenario, rate), name="serving", daemon=True
    )
    console.print(
        f"Simulating {events:,} predictions; accuracy drops from "
        f"{scenario.accuracy_before:.0%} to {scenario.accuracy_after:.0%} at prediction "
        f"{scenario.drift_at:,}. Topics: {settings.topics.predictions} …"
    )
    producer.start()
    seen = Seen()
    watcher = KafkaConsumer(
        settings.topics.drift_events,
        settings.topics.retrain_requests,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    deadline = time.monotonic() + 120 + events / max(rate, 1.0)
    with Progress(*columns, TextColumn("{task.fields[note]}"), console=console) as progress:
        joined = progress.add_task("labels joined", total=events, note="")
        while time.monotonic() < deadline:
            stats = metrics.core.stats
            done = stats.joined if stats else 0
            accuracy = _accuracy(metrics)
            progress.update(joined, completed=done, note=f"windowed accuracy {accuracy}")
            for records in watcher.poll(timeout_ms=200).values():
                for record in records:
                    _note(record.topic, record.value, settings, seen, progress)
            if done >= events and not producer.is_alive():
                break
    watcher.close()
    service.stop.set()
    monitor.join(timeout=30)
    _summary(console, scenario, seen)
    return 0 if len(seen.retrain_requests) == 1 else 1


def _accuracy(metrics: MonitorMetrics) -> str:
    stats = metrics.core.stats
    if not stats or not stats.versions:
        return "-"
    return ", ".join(f"{v.windowed_metric:.1%}" for v in stats.versions.values())


def _note(
    topic: str, value: bytes, settings: MonitorSettings, seen: Seen, progress: Progress
) -> None:
    for event in unbatch(value):
        data = event["data"]
        evidence = data["evidence"]
        line = (
            f"{data['severity']:>8} {evidence['detector']:<13} at label "
            f"{evidence['observations']:>6,}: {evidence['metric']} "
            f"{evidence['before']:.3f} -> {evidence['after']:.3f} ({data['reason']})"
        )
        if topic == settings.topics.retrain_requests:
            seen.retrain_requests.append(event)
            progress.console.print(f"[bold green]retrain request[/] {event['id']}  {line}")
        else:
            seen.signals.append(event)
            progress.console.print(f"[yellow]drift event[/]     {line}")


def _summary(console: Console, scenario: Scenario, seen: Seen) -> None:
    table = Table(title="What happened", show_header=False)
    table.add_row("accuracy drop injected at prediction", f"{scenario.drift_at:,}")
    first = min(
        (
            s["data"]["evidence"]["observations"]
            for s in seen.signals
            if s["data"]["severity"] in ("drift", "critical")
        ),
        default=None,
    )
    table.add_row(
        "first drift signal at label",
        "none" if first is None else f"{first:,} ({first - (scenario.drift_at or 0):+,} labels)",
    )
    table.add_row("drift events published", str(len(seen.signals)))
    table.add_row("retrain requests published", str(len(seen.retrain_requests)))
    for request in seen.retrain_requests:
        evidence = request["data"]["evidence"]
        table.add_row(
            "retrain request",
            f"id {request['id']}\n{evidence['detector']}: {evidence['metric']} "
            f"{evidence['before']:.3f} -> {evidence['after']:.3f}",
        )
    console.print(table)
