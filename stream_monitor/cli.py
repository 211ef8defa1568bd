"""The ``stream-monitor`` command."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from stream_monitor import logs
from stream_monitor.config import ConfigError, MonitorSettings, load_settings
from stream_monitor.core.events import Prediction
from stream_monitor.reference import load_references
from stream_monitor.trainer import cli as trainer_cli

if TYPE_CHECKING:
    from stream_monitor.core.monitor import MonitorCore

log = logging.getLogger(__name__)

EPILOG = """\
settings: YAML file given by --config, overridden by environment variables named
STREAM_MONITOR_<SECTION>__<FIELD>, e.g. STREAM_MONITOR_KAFKA__BOOTSTRAP_SERVERS=host:9092.
See configs/monitor.yaml for every setting with its default.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stream-monitor",
        description="Streaming drift detection for ML models in production (Kafka in, "
        "drift events, retrain requests and Prometheus metrics out).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    monitor = commands.add_parser(
        "monitor",
        help="run the monitor service on Kafka",
        description="Consume predictions and ground truth, publish drift events, retrain "
        "requests, escalations, labelled examples and dead letters, serve /metrics. "
        "SIGTERM or Ctrl-C finishes the batch, checkpoints, commits and exits 0.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    monitor.add_argument("--config", type=Path, help="YAML settings file (default: none)")

    trainer_cli.add_parser(commands)

    replay = commands.add_parser(
        "replay",
        help="run the same core over a JSONL file, no broker",
        description='Each input line is {"topic": "predictions"|"ground-truth", '
        '"key": ..., "value": {...}} in arrival order; each emitted event is printed to '
        'stdout as {"topic": ..., "key": ..., "value": {...}}. Unusable lines are reported '
        "on stderr and make the exit status 1.",
    )
    replay.add_argument("--config", type=Path, help="YAML settings file (default: defaults)")
    replay.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override a setting for this run, over the file and the environment "
        "(repeatable), e.g. --set defaults.policy.min_accuracy_drop=0.05",
    )
    replay.add_argument(
        "--summary",
        action="store_true",
        help="at the end, print on stderr what was read, joined and decided, per model",
    )
    replay.add_argument("input", type=Path, help="JSONL file, or - for standard input")

    demo = commands.add_parser(
        "demo",
        help="the closed loop on a local broker: drift, detection, retraining, recovery",
        description="Starts the local Kafka broker (downloaded from Maven Central on first "
        "use) and runs, in this process, a serving app whose model comes from a fresh "
        "registry, the monitor and the trainer. The stream's concept changes half-way; the "
        "monitor asks for a retrain, the trainer validates a candidate against production "
        "and promotes or rejects it, and the serving app reloads on promotion. Ends with a "
        "summary and a PNG timeline; exit status 0 when the scenario's story happened.",
    )
    demo.add_argument(
        "--scenario",
        choices=["recoverable", "unfixable"],
        default="recoverable",
        help="recoverable: a new concept that retraining learns (default); unfixable: "
        "label noise that retraining cannot beat, which ends in an escalation",
    )
    demo.add_argument("--quick", action="store_true", help="short mode: 6,000 predictions at 600/s")
    demo.add_argument(
        "--events", type=int, help="predictions to serve (default 12,000; --quick 6,000)"
    )
    demo.add_argument(
        "--rate", type=float, help="predictions per second (default 200; --quick 600; 0: no limit)"
    )
    demo.add_argument(
        "--output",
        type=Path,
        help="directory for the run's registry and timeline PNG (default: a temporary one)",
    )
    demo.add_argument("--port", type=int, default=9092, help="local broker port")
    demo.add_argument(
        "--bootstrap", help="use this running broker instead of starting the local one"
    )
    demo.add_argument("--metrics-port", type=int, default=9108, help="/metrics port (0: off)")
    demo.add_argument("--keep-broker", action="store_true", help="leave the broker running")

    simulate = commands.add_parser(
        "simulate",
        help="act as a serving app: write predictions and late labels with an accuracy drop",
        description="Writes a simulated model's predictions and, LABEL_DELAY predictions later, "
        "their labels to the configured topics; accuracy drops half-way. For trying the "
        "stack (docker-compose runs it) and for load.",
    )
    simulate.add_argument("--config", type=Path, help="YAML settings file (topic names)")
    simulate.add_argument("--bootstrap", help="broker address (default: from the settings)")
    simulate.add_argument("--events", type=int, default=100_000, help="predictions to write")
    simulate.add_argument("--rate", type=float, default=200.0, help="predictions per second")
    simulate.add_argument("--model-id", default="demo-model")
    simulate.add_argument("--accuracy-before", type=float, default=0.92)
    simulate.add_argument("--accuracy-after", type=float, default=0.70)

    broker = commands.add_parser(
        "broker",
        help="start, stop or check the local development broker",
        description="Same as scripts/kafka-local; see `stream-monitor broker -h` for options.",
        add_help=False,
    )
    broker.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "trainer":  # has its own settings and environment prefix
        return trainer_cli.run(args)
    if args.command == "broker":
        from stream_monitor.devbroker.broker import main as broker_main

        return broker_main(args.args)
    try:
        settings = load_settings(getattr(args, "config", None))
        if getattr(args, "set", None):
            from stream_monitor.replay import apply_overrides

            settings = apply_overrides(settings, args.set)
        references = load_references(settings)
    except ConfigError as exc:
        print(f"stream-monitor: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    if args.command == "monitor":
        return _monitor(settings, references)
    if args.command == "replay":
        from stream_monitor.core.monitor import MonitorCore

        return _replay(MonitorCore(settings, references), args.input, args.summary)
    if args.command == "simulate":
        return _simulate(settings, args)
    from stream_monitor.demo import run_demo

    return run_demo(
        settings,
        scenario=args.scenario,
        quick=args.quick,
        events=args.events,
        rate=args.rate,
        output=args.output,
        port=args.port,
        metrics_port=args.metrics_port,
        keep_broker=args.keep_broker,
        bootstrap=args.bootstrap,
    ).exit_status


def _monitor(settings: MonitorSettings, references: dict[str, list[Prediction]]) -> int:
    from stream_monitor.kafka.runner import serve
    from stream_monitor.kafka.service import MonitorService
    from stream_monitor.metrics import MonitorMetrics

    metrics = MonitorMetrics()
    return serve(
        "stream-monitor",
        lambda stop: MonitorService(settings, metrics, stop, references),
        metrics.registry,
        settings.metrics_port,
        settings.metrics_server,
    )


def _simulate(settings: MonitorSettings, args: argparse.Namespace) -> int:
    from stream_monitor.kafka.topics import StartupError
    from stream_monitor.simulate import Scenario, publish

    if args.bootstrap:
        kafka = settings.kafka.model_copy(update={"bootstrap_servers": args.bootstrap})
        settings = settings.model_copy(update={"kafka": kafka})
    scenario = Scenario(
        events=args.events,
        drift_at=args.events // 2,
        model_id=args.model_id,
        accuracy_before=args.accuracy_before,
        accuracy_after=args.accuracy_after,
        # Event time follows the wall clock, as a live serving app's would.
        start_ms=int(time.time() * 1000),
        seconds_between=1.0 / args.rate if args.rate else 0.001,
    )
    try:
        written = publish(settings, scenario, args.rate)
    except StartupError as exc:
        print(f"stream-monitor simulate: {exc}", file=sys.stderr)
        return 2
    log.info("simulation written", extra={"records": written})
    return 0


def _replay(core: MonitorCore, path: Path, with_summary: bool = False) -> int:
    from stream_monitor.replay import BadLine, ReplaySummary, replay

    try:
        source = sys.stdin.buffer if str(path) == "-" else path.open("rb")
    except OSError as exc:
        print(f"stream-monitor: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 2
    bad = 0
    summary = ReplaySummary()
    with source:
        for item in replay(core.settings, source, core, summary):
            if isinstance(item, BadLine):
                bad += 1
                print(f"{path}:{item.line}: skipped: {item.reason}", file=sys.stderr)
            else:
                print(json.dumps(item, separators=(",", ":")))
    if with_summary:
        print(summary.text(), file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
