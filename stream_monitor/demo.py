"""``stream-monitor demo``: the closed loop on a local broker, from drift to recovery.

Everything runs in this process except the broker: a serving app
(:mod:`stream_monitor.serving`) serves the registry's production model on a river SEA
stream whose concept changes half-way, and writes predictions and late labels; the
real :class:`MonitorService` detects the drop and asks for a retrain; the real
:class:`TrainerService` retrains on the labelled examples the monitor published,
validates the candidate against production and promotes it or not; the serving app
reloads on promotion. The display follows the events on Kafka; the summary and a PNG
timeline come from the serving app's own accuracy. Each run has its own topics,
consumer groups and registry, so runs never mix.

Two scenarios:

* ``recoverable``: the label function changes (``x1 + x2 > 9.5`` becomes ``> 7``); a
  model retrained on the new labels learns it, wins and is promoted; accuracy recovers.
* ``unfixable``: one label in five flips at random; no model can do better than the
  one in production, so the candidate is rejected and the trainer escalates.

The demo's own settings for its model, and why:

* monitor ``training_window_seconds`` 60 (600 predictions) instead of weeks: the
  policy waits ``retrain_after_labels`` after a detection before it asks, so the
  window then holds the new behaviour, not the old one;
* trainer: logistic regression (SEA's concepts are linear), a 0.05 promotion margin,
  and a 0.9 floor: production below it with no better candidate escalates.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kafka import KafkaConsumer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from stream_monitor.config import MetricsServerSettings, MonitorSettings, deep_merge
from stream_monitor.core.events import epoch_seconds, unbatch
from stream_monitor.devbroker.broker import BrokerSettings, find_running, start, stop
from stream_monitor.kafka.runner import start_endpoints
from stream_monitor.kafka.service import MonitorService
from stream_monitor.kafka.topics import ensure_topics
from stream_monitor.metrics import MonitorMetrics
from stream_monitor.serving import Concept, ServingApp, Stream, train_initial_model
from stream_monitor.trainer.metrics import TrainerMetrics
from stream_monitor.trainer.registry import ModelRegistry
from stream_monitor.trainer.service import TrainerService
from stream_monitor.trainer.settings import TrainerSettings

ScenarioName = Literal["recoverable", "unfixable"]
MODEL_ID = "demo-model"
BEFORE = Concept(variant=3)
SCENARIOS: dict[ScenarioName, tuple[Concept, str]] = {
    "recoverable": (
        Concept(variant=2),
        "the label function changes from x1 + x2 > 9.5 to x1 + x2 > 7 (river SEA variant "
        "3 to 2): a model retrained on new labels can learn it",
    ),
    "unfixable": (
        Concept(variant=3, noise=0.2),
        "one label in five flips at random (river SEA noise 0.2): no model can beat the "
        "one in production, so retraining cannot help",
    ),
}
MONITOR_MODEL_SETTINGS: dict[str, Any] = {"policy": {"training_window_seconds": 60.0}}
TRAINER_MODEL_SETTINGS: dict[str, Any] = {
    "estimator": {"name": "logistic_regression"},
    "promotion_margin": 0.05,
    "floor": 0.9,
}
RECOVERY_TOLERANCE = 0.05
"""Accuracy after the promotion may be this much below the accuracy before the drift..."""
RECOVERY_GAIN = 0.10
"""...and must be at least this much above the accuracy while drifted."""
BLOCKS = 60
"""Points on the accuracy curve."""
SECONDS_BETWEEN = 0.1
"""Event time between predictions: the 60 s training window is 600 predictions."""
QUIET_SECONDS = 2.0
"""Once the stream is done, how long no event may arrive before the demo ends."""


@dataclass(frozen=True)
class Mode:
    """How many predictions a run serves, and how fast."""

    events: int
    rate: float


FULL = Mode(events=12_000, rate=200.0)
QUICK = Mode(events=6_000, rate=600.0)


@dataclass(frozen=True)
class DemoSummary:
    """What happened in one run, from the events on Kafka and the serving app's own
    predictions. Indexes count predictions (labels arrive in the same order)."""

    scenario: ScenarioName
    description: str
    events: int
    drift_at: int
    label_delay: int
    first_signal_at: int | None
    """Labels joined at the first performance signal of any severity."""
    first_signal: str | None
    """Its severity and the policy's reason."""
    detected_at: int | None
    """Labels joined at the first performance signal of severity drift or critical."""
    detector: str | None
    retrain_requests: int
    request_id: str | None
    request_at: int | None
    """Prediction index at the request's event time (the label that sent it arrived then)."""
    waited_labels: int | None
    """Labels the monitor waited for after the detection before sending the request."""
    answer: Literal["promoted", "rejected"] | None
    reason: str | None
    candidate_score: float | None
    champion_score: float | None
    holdout_examples: int | None
    promoted_version: int | None
    switched_at: int | None
    """First prediction the serving app made with the promoted version."""
    escalations: tuple[str, ...]
    accuracy_before: float | None
    accuracy_after_drift: float | None
    """Until the switch to the promoted version, or to the end."""
    accuracy_after_promotion: float | None
    answered_at: int | None
    """Predictions the serving app had made when the answer was read."""
    answer_seconds: float | None
    """Wall time from the retrain request to the trainer's answer."""
    seconds: float
    registry: Path
    timeline: Path | None
    errors: tuple[str, ...] = ()

    @property
    def detection_delay(self) -> int | None:
        """Labels after the drift point that the detection needed."""
        return None if self.detected_at is None else self.detected_at - self.drift_at

    @property
    def recovered(self) -> bool:
        before, drifted, after = (
            self.accuracy_before,
            self.accuracy_after_drift,
            self.accuracy_after_promotion,
        )
        if before is None or drifted is None or after is None:
            return False
        return after >= before - RECOVERY_TOLERANCE and after >= drifted + RECOVERY_GAIN

    @property
    def ok(self) -> bool:
        """The scenario's story happened: detection, then promotion and recovered
        accuracy (recoverable) or rejection and escalation (unfixable)."""
        detected = self.detected_at is not None and self.request_id is not None
        if self.errors or not detected:
            return False
        if self.scenario == "recoverable":
            return self.answer == "promoted" and self.switched_at is not None and self.recovered
        return self.answer == "rejected" and bool(self.escalations) and self.switched_at is None

    @property
    def exit_status(self) -> int:
        return 0 if self.ok else 1


def run_demo(
    settings: MonitorSettings,
    scenario: ScenarioName = "recoverable",
    quick: bool = False,
    events: int | None = None,
    rate: float | None = None,
    output: Path | None = None,
    port: int = 9092,
    metrics_port: int = 9108,
    keep_broker: bool = False,
    bootstrap: str | None = None,
    console: Console | None = None,
) -> DemoSummary:
    """Run one scenario end to end and print its summary; ``quick`` is the short mode
    (fewer events, faster). Starts the local broker unless ``bootstrap`` is given.
    Registry and timeline go to a new directory under ``output`` (default: a temporary
    directory)."""
    console = console or Console()
    mode = QUICK if quick else FULL
    events = events or mode.events
    rate = mode.rate if rate is None else rate
    broker = BrokerSettings(port=port)
    # Only a broker this run started is stopped at the end, never one already running.
    ours = bootstrap is None and find_running(broker) is None
    with _quiet_logs():
        if bootstrap is None:
            console.print("[bold]Starting the local Kafka broker[/] (first run downloads it)…")
            bootstrap = start(broker).bootstrap_servers
        try:
            tag = f"demo-{scenario}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
            run_dir = Path(output or tempfile.mkdtemp(prefix="stream-monitor-")) / tag
            demo = _Demo(
                _monitor_settings(settings, bootstrap, tag),
                scenario,
                events,
                rate,
                run_dir,
                metrics_port,
                console,
            )
            summary = demo.run()
        finally:
            if ours and not keep_broker:
                stop(broker)
    _print_summary(console, summary)
    return summary


@contextmanager
def _quiet_logs() -> Iterator[None]:
    """The display tells the story: the services' JSON logs would only interleave with
    it. Their levels are restored afterwards (the demo also runs inside tests).

    kafka-python logs an error with a traceback when a client is closed while its
    network thread is still reading ("Error receiving network data closing socket"),
    which happens as the demo stops its services and broker: harmless, and the
    services' own failures reach the summary anyway. matplotlib announces its font cache
    when it first draws."""
    levels = {
        "stream_monitor": logging.WARNING,
        "kafka": logging.CRITICAL,
        "matplotlib": logging.ERROR,
    }
    previous = {name: logging.getLogger(name).level for name in levels}
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        for name, level in previous.items():
            logging.getLogger(name).setLevel(level)


def _monitor_settings(settings: MonitorSettings, bootstrap: str, tag: str) -> MonitorSettings:
    """The run's own topics and group, and the demo's settings for its model."""
    topics = {name: f"{tag}.{topic}" for name, topic in settings.topics.model_dump().items()}
    kafka = {"bootstrap_servers": bootstrap, "group_id": tag}
    models = {
        **settings.models,
        MODEL_ID: deep_merge(settings.models.get(MODEL_ID, {}), MONITOR_MODEL_SETTINGS),
    }
    return settings.model_copy(
        update={
            "topics": settings.topics.model_copy(update=topics),
            "kafka": settings.kafka.model_copy(update=kafka),
            "models": models,
        }
    )


class _Worker(threading.Thread):
    """A daemon thread that keeps what its target raised, for the summary."""

    def __init__(self, name: str, target: Callable[[], object]) -> None:
        super().__init__(name=name, daemon=True)
        self._work = target
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            self._work()
        except Exception as exc:  # reported in the summary, which fails the run
            self.error = exc


@dataclass(frozen=True)
class _Seen:
    """An event the demo read back from Kafka."""

    topic: str
    """The field of ``TopicSettings`` it came from."""
    event: dict[str, Any]
    served: int
    """Predictions the serving app had made when the demo read it."""
    seconds: float
    """Since the start of the run."""


@dataclass
class _Demo:
    settings: MonitorSettings
    scenario: ScenarioName
    events: int
    rate: float
    run_dir: Path
    metrics_port: int
    console: Console
    seen: list[_Seen] = field(default_factory=list)

    @property
    def registry_dir(self) -> Path:
        return self.run_dir / "registry"

    def run(self) -> DemoSummary:
        started = time.monotonic()
        after, description = SCENARIOS[self.scenario]
        stream = Stream(
            BEFORE,
            after,
            events=self.events,
            drift_at=self.events // 2,
            # Event time ends about now: every timestamp is one the broker accepts.
            start_ms=int((time.time() - self.events * SECONDS_BETWEEN) * 1000),
            seconds_between=SECONDS_BETWEEN,
            model_id=MODEL_ID,
        )
        settings = self.settings
        ensure_topics(settings.kafka, settings.topics)
        trainer_settings = TrainerSettings(
            kafka={  # the same brokers and credentials, the trainer's own group
                **settings.kafka.model_dump(exclude={"client_id", "max_poll_records"}),
                "group_id": f"{settings.kafka.group_id}-trainer",
                "group_instance_id": None,
            },
            topics=settings.topics,
            registry_dir=self.registry_dir,
            metrics_port=0,
            log_level="WARNING",
            models={MODEL_ID: TRAINER_MODEL_SETTINGS},
        )
        registry = ModelRegistry(trainer_settings.registry_dir)
        initial = train_initial_model(registry, stream, trainer_settings.for_model(MODEL_ID))
        self.console.print(
            f"[bold]Scenario {self.scenario}[/]: {self.events:,} predictions at "
            f"{self.rate:g}/s, labels {stream.label_delay} predictions late; at prediction "
            f"{stream.drift_at:,} {description}.\n"
            f"Production: version {initial.version}, "
            f"{initial.metadata['estimator']['name']} trained on pre-drift data "
            f"(holdout accuracy {initial.metadata['candidate']['score']:.3f}). "
            f"Registry: {registry.root}"
        )
        metrics = MonitorMetrics()
        monitor = MonitorService(settings, metrics)
        endpoints = None
        if self.metrics_port:
            endpoints = start_endpoints(
                self.metrics_port,
                metrics.registry,
                monitor.health,
                MetricsServerSettings(bind_address="127.0.0.1"),
            )
            self.console.print(
                f"Monitor metrics: http://127.0.0.1:{self.metrics_port}/metrics "
                "(and /healthz, /readyz)"
            )
        trainer = TrainerService(trainer_settings, TrainerMetrics())
        app = ServingApp(settings, registry, stream)
        workers = [
            _Worker("monitor", monitor.run),
            _Worker("trainer", trainer.run),
            _Worker("serving", lambda: app.run(self.rate)),
        ]
        for worker in workers:
            worker.start()
        try:
            self._watch(app, metrics, workers, started)
        finally:
            app.stop.set()
            monitor.stop.set()
            trainer.stop.set()
            for worker in workers:
                worker.join(timeout=30)
            if endpoints is not None:
                endpoints.shutdown()
                endpoints.server_close()
        errors = tuple(f"{w.name}: {w.error!r}" for w in workers if w.error is not None)
        summary = self._summary(stream, description, app, errors, started)
        if summary.timeline is not None:
            _draw_timeline(summary, app, summary.timeline)
        return summary

    # ---- watching ------------------------------------------------------------------

    def _watch(
        self,
        app: ServingApp,
        metrics: MonitorMetrics,
        workers: list[_Worker],
        started: float,
    ) -> None:
        """Show what comes out of the loop until every label is joined and every retrain
        request answered, a service fails, or the deadline passes."""
        topics = self.settings.topics
        names = {
            getattr(topics, name): name
            for name in ("drift_events", "retrain_requests", "model_events", "escalations")
        }
        watcher = KafkaConsumer(
            *names,
            **self.settings.kafka.client(),
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        serving = workers[-1]
        deadline = started + 120 + (self.events / self.rate if self.rate else 0)
        block = max(1, self.events // BLOCKS)
        version = app.model.version
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        try:
            with Progress(
                *columns, TextColumn("{task.fields[note]}"), console=self.console
            ) as progress:
                task = progress.add_task("served", total=self.events, note="")
                last_event = time.monotonic()
                while time.monotonic() < deadline:
                    for records in watcher.poll(timeout_ms=200).values():
                        last_event = time.monotonic()
                        for record in records:
                            for event in unbatch(record.value):
                                self._note(names[record.topic], event, app, started, progress)
                    if app.model.version != version:
                        version = app.model.version
                        progress.console.print(
                            f"[bold green]serving app[/]   reloaded production: version "
                            f"{version} from prediction {app.switched_at[version]:,}"
                        )
                    stats = metrics.core.stats
                    joined = stats.joined if stats else 0
                    recent = app.accuracy(max(0, app.served - block), app.served)
                    note = f"v{version}" + ("" if recent is None else f" · accuracy {recent:.1%}")
                    progress.update(task, completed=app.served, note=f"{note} · labels {joined:,}")
                    if any(w.error for w in workers):
                        break
                    done = not serving.is_alive() and joined >= self.events and self._answered()
                    # A request sent with the last labels, or an escalation sent with its
                    # answer, may still be on its way: only a quiet topic means the end.
                    if done and time.monotonic() - last_event >= QUIET_SECONDS:
                        break
        finally:
            watcher.close()

    def _answered(self) -> bool:
        requests = {s.event["id"] for s in self.seen if s.topic == "retrain_requests"}
        answers = {_request_id(s.event) for s in self.seen if s.topic == "model_events"}
        return requests <= answers

    def _note(
        self,
        topic: str,
        event: dict[str, Any],
        app: ServingApp,
        started: float,
        progress: Progress,
    ) -> None:
        self.seen.append(_Seen(topic, event, app.served, time.monotonic() - started))
        data = event["data"]
        if topic == "drift_events":
            line = f"[yellow]drift signal[/]  {data['severity']:<8} {_describe_signal(data)}"
        elif topic == "retrain_requests":
            line = f"[bold red]retrain request[/] {event['id']}: {_request(data)}"
        elif topic == "model_events":
            kind = event["type"].rsplit(".", 1)[-1]
            colour = "green" if kind == "promoted" else "red"
            line = f"[bold {colour}]model.{kind}[/]  {data['reason']}"
        else:
            line = f"[bold red]escalation[/]    {data['reason']}"
        progress.console.print(line)

    # ---- the summary ---------------------------------------------------------------

    def _summary(
        self,
        stream: Stream,
        description: str,
        app: ServingApp,
        errors: tuple[str, ...],
        started: float,
    ) -> DemoSummary:
        by_topic: dict[str, list[_Seen]] = {}
        for seen in self.seen:
            by_topic.setdefault(seen.topic, []).append(seen)
        performance = [
            s.event["data"]
            for s in by_topic.get("drift_events", [])
            if s.event["data"]["kind"] == "performance"
        ]
        first = performance[0] if performance else None
        detection = next((d for d in performance if d["severity"] in ("drift", "critical")), None)
        requests = by_topic.get("retrain_requests", [])
        request = requests[0] if requests else None
        answer = None
        if request is not None:
            answer = next(
                (
                    s
                    for s in by_topic.get("model_events", [])
                    if _request_id(s.event) == request.event["id"]
                ),
                None,
            )
        answer_data = answer.event["data"] if answer else {}
        promoted = answer_data.get("decision") == "promoted"
        promoted_version = int(answer_data["production_version"]) if promoted else None
        switched_at = app.switched_at.get(promoted_version) if promoted_version else None
        drift_at = stream.drift_at
        return DemoSummary(
            scenario=self.scenario,
            description=description,
            events=self.events,
            drift_at=drift_at,
            label_delay=stream.label_delay,
            first_signal_at=first["evidence"]["observations"] if first else None,
            first_signal=f"{first['severity']}: {first['reason']}" if first else None,
            detected_at=detection["evidence"]["observations"] if detection else None,
            detector=detection["evidence"]["detector"] if detection else None,
            retrain_requests=len(requests),
            request_id=request.event["id"] if request else None,
            request_at=stream.index_at(epoch_seconds(request.event["time"])) if request else None,
            waited_labels=request.event["data"].get("retrain_after_labels", 0) if request else None,
            answer=answer_data.get("decision"),
            reason=answer_data.get("reason"),
            candidate_score=(answer_data.get("candidate") or {}).get("score"),
            champion_score=(answer_data.get("champion") or {}).get("score"),
            holdout_examples=answer_data.get("data", {}).get("holdout", {}).get("examples"),
            promoted_version=promoted_version,
            switched_at=switched_at,
            escalations=tuple(s.event["data"]["reason"] for s in by_topic.get("escalations", [])),
            accuracy_before=app.accuracy(0, drift_at),
            accuracy_after_drift=app.accuracy(drift_at, switched_at),
            accuracy_after_promotion=None if switched_at is None else app.accuracy(switched_at),
            answered_at=answer.served if answer else None,
            answer_seconds=answer.seconds - request.seconds if answer and request else None,
            seconds=time.monotonic() - started,
            registry=self.registry_dir,
            timeline=self.run_dir / "timeline.png" if app.served else None,
            errors=errors,
        )


def _request_id(answer: dict[str, Any]) -> str | None:
    request = answer.get("data", {}).get("request") or {}
    return request.get("id")


def _request(data: dict[str, Any]) -> str:
    """When a retrain request was sent and what it asks for."""
    window = data["training_window"]
    start, end = (epoch_seconds(window[edge]) for edge in ("start", "end"))
    waited = data.get("retrain_after_labels", 0)
    return (
        f"{waited:,} labels after the detection at label {data['evidence']['observations']:,}, "
        f"for the labels of the last {end - start:g} s of event time"
    )


def _describe_signal(data: dict[str, Any]) -> str:
    evidence = data["evidence"]
    if data["kind"] != "performance":
        return f"{data['kind']} drift at prediction {evidence['observations']:,} ({data['reason']})"
    return (
        f"{evidence['detector']:<12} at label {evidence['observations']:,}: "
        f"{evidence['metric']} {evidence['before']:.3f} → {evidence['after']:.3f} "
        f"({data['reason']})"
    )


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _print_summary(console: Console, s: DemoSummary) -> None:
    table = Table(title=f"Closed loop: {s.scenario}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("drift injected", f"at prediction {s.drift_at:,}: {s.description}")
    if s.first_signal_at is not None and s.first_signal_at != s.detected_at:
        table.add_row("first signal", f"label {s.first_signal_at:,}, {s.first_signal}")
    table.add_row(
        "drift detected",
        "no"
        if s.detected_at is None
        else f"label {s.detected_at:,}, {s.detection_delay:,} labels after the drift "
        f"({s.detector})",
    )
    table.add_row(
        "retrain request",
        "none"
        if s.request_id is None
        else f"{s.request_id}\nsent at prediction {s.request_at:,}: {s.waited_labels:,} labels "
        f"after the detection, labels arriving {s.label_delay} predictions late "
        f"({s.retrain_requests} in total)",
    )
    if s.answer is None:
        answer = "none"
    else:
        took = "" if s.answer_seconds is None else f", {s.answer_seconds:.1f} s after the request"
        answer = f"{s.answer}{took}, on a holdout of {s.holdout_examples} labels:\n{s.reason}"
    table.add_row("trainer's answer", answer)
    if s.promoted_version is not None:
        table.add_row(
            "serving app",
            f"serves version {s.promoted_version} from prediction {s.switched_at:,}"
            if s.switched_at is not None
            else f"never served version {s.promoted_version}",
        )
    table.add_row("escalations", "\n".join(s.escalations) or "none")
    table.add_row("accuracy before the drift", _percent(s.accuracy_before))
    table.add_row("accuracy after the drift", _percent(s.accuracy_after_drift))
    table.add_row(
        "accuracy after promotion",
        "no promotion"
        if s.accuracy_after_promotion is None
        else _percent(s.accuracy_after_promotion),
    )
    table.add_row("run time", f"{s.seconds:.1f} s")
    for error in s.errors:
        table.add_row("[red]error[/]", error)
    expected = (
        "detection, promotion and recovered accuracy"
        if s.scenario == "recoverable"
        else "detection, rejection and an escalation to a human"
    )
    verdict = "[green]as expected[/]" if s.ok else "[red]NOT as expected[/]"
    table.add_row("outcome", f"{verdict}: {expected}")
    console.print(table)
    if s.timeline is not None:
        console.print(f"Timeline: {s.timeline}")


def _blocks(app: ServingApp, size: int) -> list[tuple[float, float, int]]:
    """``(centre, accuracy, version)`` of each block of ``size`` predictions; the version
    is the one that made most of the block's predictions."""
    blocks = []
    for first in range(0, app.served, size):
        correct, versions = app.correct[first : first + size], app.versions[first : first + size]
        majority = max(set(versions), key=versions.count)
        blocks.append((first + len(correct) / 2, sum(correct) / len(correct), majority))
    return blocks


def _draw_timeline(summary: DemoSummary, app: ServingApp, path: Path) -> None:
    """Accuracy per block of predictions, coloured by the version that made them, with
    the drift point, detection, retrain request and answer marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(1, summary.events // BLOCKS)
    blocks = _blocks(app, size)
    fig, ax = plt.subplots(figsize=(11, 5), dpi=110)
    ax.plot([b[0] for b in blocks], [b[1] for b in blocks], color="0.65", linewidth=1, zorder=1)
    colours = ["tab:blue", "tab:green", "tab:olive", "tab:cyan"]
    for i, version in enumerate(sorted({b[2] for b in blocks})):
        mine = [b for b in blocks if b[2] == version]
        ax.scatter(
            [b[0] for b in mine],
            [b[1] for b in mine],
            s=20,
            color=colours[i % len(colours)],
            label=f"served by version {version}",
            zorder=2,
        )
    markers: list[tuple[int | None, str, str, str]] = [
        (summary.drift_at, "drift injected at", "tab:red", "--"),
        (summary.detected_at, "drift detected at label", "tab:orange", "-"),
        (summary.request_at, "retrain requested at", "tab:purple", ":"),
    ]
    if summary.answer == "promoted":
        serving = f"version {summary.promoted_version} promoted, serving from"
        markers.append((summary.switched_at, serving, "tab:green", "-"))
    elif summary.answer == "rejected":
        rejected = "candidate rejected" + (", escalated" if summary.escalations else "")
        markers.append((summary.answered_at, f"{rejected} at", "black", "-."))
    for x, label, colour, style in markers:
        if x is not None:
            ax.axvline(x, color=colour, linestyle=style, linewidth=1.6, label=f"{label} #{x:,}")
    ax.set_xlim(0, summary.events)
    ax.set_ylim(min(0.65, *(b[1] for b in blocks)) - 0.05, 1.02)
    ax.set_xlabel("prediction (event index)")
    ax.set_ylabel(f"accuracy per block of {size} predictions")
    phases = [
        ("before the drift", summary.accuracy_before),
        ("after it", summary.accuracy_after_drift),
        ("after the promotion", summary.accuracy_after_promotion),
    ]
    accuracy = ", ".join(f"{name} {value:.1%}" for name, value in phases if value is not None)
    ax.set_title(f"stream-monitor closed loop, {summary.scenario}: accuracy {accuracy}", loc="left")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=9, framealpha=0.9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
