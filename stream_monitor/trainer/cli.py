"""The ``stream-monitor trainer`` command.

Importing this module is cheap: scikit-learn and Kafka are imported only when the
command runs, so the rest of the CLI starts fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from stream_monitor import logs

log = logging.getLogger(__name__)

EPILOG = """\
settings: YAML file given by --config, overridden by environment variables named
STREAM_MONITOR_TRAINER_<SECTION>__<FIELD>, e.g.
STREAM_MONITOR_TRAINER_KAFKA__BOOTSTRAP_SERVERS=host:9092.
See configs/trainer.yaml for every setting with its default.
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``trainer`` subcommand to the ``stream-monitor`` parser."""
    parser = subparsers.add_parser(
        "trainer",
        help="run the trainer service on Kafka",
        description="Consume retrain requests, train on labelled examples from Kafka, "
        "validate against production on a holdout, promote or reject in the model "
        "registry, publish model events and escalations, serve /metrics. SIGTERM or "
        "Ctrl-C finishes the current request, commits and exits 0.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, help="YAML settings file (default: none)")


def run(args: argparse.Namespace) -> int:
    """Run the trainer until SIGTERM or SIGINT; 2 for unusable settings or topics."""
    from stream_monitor.config import ConfigError
    from stream_monitor.kafka.runner import serve
    from stream_monitor.trainer.metrics import TrainerMetrics
    from stream_monitor.trainer.service import TrainerService
    from stream_monitor.trainer.settings import load_trainer_settings

    try:
        settings = load_trainer_settings(args.config)
    except ConfigError as exc:
        print(f"stream-monitor trainer: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    metrics = TrainerMetrics()
    return serve(
        "stream-monitor trainer",
        lambda stop: TrainerService(settings, metrics, stop),
        metrics.registry,
        settings.metrics_port,
        settings.metrics_server,
    )
