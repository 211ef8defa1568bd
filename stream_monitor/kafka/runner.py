"""Running a service from the command line: signals, /metrics, exit status."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Protocol

from prometheus_client import CollectorRegistry, start_http_server

from stream_monitor.kafka.topics import StartupError

log = logging.getLogger(__name__)


class Service(Protocol):
    """A blocking ``run`` that returns, after finishing its work in hand, once ``stop`` is set."""

    stop: threading.Event

    def run(self) -> None: ...


def serve(
    name: str,
    make_service: Callable[[threading.Event], Service],
    registry: CollectorRegistry,
    metrics_port: int,
) -> int:
    """Run a service until SIGTERM or SIGINT: 0 after a clean stop, 2 if it cannot start."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping", extra={"service": name, "signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if metrics_port:
        start_http_server(metrics_port, registry=registry)
        log.info("metrics served", extra={"service": name, "port": metrics_port})
    try:
        make_service(stop).run()
    except StartupError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    return 0
