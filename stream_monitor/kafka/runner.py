"""Running a service from the command line: signals, the HTTP endpoints, exit status.

The metrics port serves ``/metrics`` (Prometheus), ``/healthz`` (liveness) and
``/readyz`` (readiness; see :mod:`stream_monitor.health`), on
``metrics_server.bind_address``, over HTTPS when a certificate is configured (and with
client certificates required for mTLS). The server is prometheus-client's own, TLS
included; the two probes are routed in front of its metrics application.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, start_http_server

from stream_monitor.config import MetricsServerSettings
from stream_monitor.health import Health, Verdict
from stream_monitor.kafka.topics import StartupError

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger(__name__)


class Service(Protocol):
    """A blocking ``run`` that returns, after finishing its work in hand, once ``stop`` is
    set; ``health`` is what its loop reports."""

    stop: threading.Event
    health: Health

    def run(self) -> None: ...


def with_probes(metrics: WSGIApplication, health: Health) -> WSGIApplication:
    """``/healthz`` and ``/readyz`` answered from ``health`` (200 or 503, a JSON body
    saying what was seen and what failed); every other path goes to ``metrics``."""
    probes: dict[str, Callable[[], Verdict]] = {
        "/healthz": health.liveness,
        "/readyz": health.readiness,
    }

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        probe = probes.get(environ.get("PATH_INFO", ""))
        if probe is None:
            return metrics(environ, start_response)
        verdict = probe()
        body = json.dumps(
            {"ok": verdict.ok, "failing": verdict.reasons, "seen": verdict.seen}
        ).encode()
        start_response(
            "200 OK" if verdict.ok else "503 Service Unavailable",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]

    return app


def start_endpoints(
    port: int, registry: CollectorRegistry, health: Health, server: MetricsServerSettings
) -> Any:
    """Serve the metrics and the probes on ``port`` in a daemon thread; the WSGI server.

    Raises OSError (a port in use, an address this host does not have, an unreadable
    certificate) or ssl.SSLError (a key that does not match its certificate)."""
    tls: dict[str, Any] = {}
    if server.certfile is not None and server.keyfile is not None:
        tls = {
            "certfile": str(server.certfile),
            "keyfile": str(server.keyfile),
            "client_cafile": None if server.client_cafile is None else str(server.client_cafile),
            "client_auth_required": server.client_auth_required,
        }
    httpd, _ = start_http_server(port, addr=server.bind_address, registry=registry, **tls)
    metrics = httpd.get_app()
    assert metrics is not None  # start_http_server set it
    httpd.set_app(with_probes(metrics, health))
    return httpd


def serve(
    name: str,
    make_service: Callable[[threading.Event], Service],
    registry: CollectorRegistry,
    metrics_port: int,
    server: MetricsServerSettings | None = None,
) -> int:
    """Run a service until SIGTERM or SIGINT: 0 after a clean stop, 2 if it cannot start."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping", extra={"service": name, "signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service = make_service(stop)
    server = server or MetricsServerSettings()
    httpd = None
    if metrics_port:
        try:
            httpd = start_endpoints(metrics_port, registry, service.health, server)
        except OSError as exc:  # ssl.SSLError is one too
            print(
                f"{name}: cannot serve /metrics on {server.bind_address}:{metrics_port} "
                f"(metrics_port, metrics_server): {exc}",
                file=sys.stderr,
            )
            return 2
        log.info(
            "metrics served",
            extra={
                "service": name,
                "address": server.bind_address,
                "port": metrics_port,
                "tls": server.certfile is not None,
                "client_certificates": server.client_auth_required,
            },
        )
    try:
        service.run()
    except StartupError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    finally:
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
    return 0
