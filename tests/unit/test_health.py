"""The probes' verdicts, their HTTP answers, the metrics server's settings and bind address."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError

from stream_monitor.config import HealthSettings, MetricsServerSettings, MonitorHealthSettings
from stream_monitor.health import Health, assess_liveness, assess_readiness
from stream_monitor.kafka.runner import serve, start_endpoints
from stream_monitor.trainer.settings import TrainerSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _ready_monitor(clock: Clock) -> Health:
    health = Health(MonitorHealthSettings(max_lag_records=100), restores_state=True, clock=clock)
    health.watch_group(lambda: 1.0)
    health.assigned(2)
    health.restored()
    health.lag(0)
    health.loop_turned()
    return health


def test_a_monitor_is_ready_once_restored_and_not_while_restoring() -> None:
    clock = Clock()
    health = _ready_monitor(clock)
    assert health.readiness().ok
    health.restoring()  # a rebalance
    assert health.readiness().reasons == ["state not restored since the last assignment"]
    health.restored()
    assert health.readiness().ok


def test_readiness_fails_on_lag_over_the_bound_or_unmeasured() -> None:
    health = _ready_monitor(Clock())
    health.lag(101)
    assert health.readiness().reasons == ["lag 101 records (max_lag_records 100)"]
    health.lag(None)
    assert health.readiness().reasons == ["lag not measured (the broker may be away)"]


def test_no_lag_bound_means_any_lag_is_ready() -> None:
    settings = MonitorHealthSettings(max_lag_records=None)
    assert assess_readiness(assess_liveness(0.0, 60.0), 1.0, True, 10**9, settings).ok


def test_a_stuck_loop_fails_both_probes() -> None:
    clock = Clock()
    health = _ready_monitor(clock)
    clock.now += 61
    assert not health.liveness().ok
    assert not health.readiness().ok
    health.loop_turned()
    assert health.liveness().ok


def test_an_old_heartbeat_fails_readiness_only() -> None:
    clock = Clock()
    health = _ready_monitor(clock)
    health.watch_group(lambda: 16.0)
    assert health.liveness().ok
    assert health.readiness().reasons == [
        "last group heartbeat 16.0 s ago (max_heartbeat_age_seconds 15.0)"
    ]
    health.watch_group(lambda: float("inf"))
    assert health.readiness().reasons == ["no group heartbeat yet"]


def test_the_trainer_has_no_state_to_restore_nor_lag_to_bound() -> None:
    health = Health(TrainerSettings().health)
    health.watch_group(lambda: 0.5)
    assert health.readiness().ok
    assert "lag_records" not in health.readiness().seen
    assert TrainerSettings().health.max_loop_seconds > TrainerSettings().max_request_seconds


def test_tls_settings_must_be_complete(tmp_path: Path) -> None:
    pem = tmp_path / "x.pem"
    pem.write_text("x")
    with pytest.raises(ValidationError, match="certfile and keyfile go together"):
        MetricsServerSettings(certfile=pem)
    with pytest.raises(ValidationError, match="client_auth_required needs client_cafile"):
        MetricsServerSettings(certfile=pem, keyfile=pem, client_auth_required=True)
    with pytest.raises(ValidationError, match="client_cafile needs certfile"):
        MetricsServerSettings(client_cafile=pem)
    with pytest.raises(ValidationError, match="Path does not point to a file"):
        MetricsServerSettings(certfile=tmp_path / "missing.pem", keyfile=pem)


@pytest.fixture
def endpoints() -> Iterator[tuple[int, Health, CollectorRegistry]]:
    registry = CollectorRegistry()
    Counter("things", "Things.", registry=registry).inc()
    health = Health(HealthSettings(), restores_state=True)
    port = _free_port()
    httpd = start_endpoints(port, registry, health, MetricsServerSettings(bind_address="127.0.0.1"))
    try:
        yield port, health, registry
    finally:
        httpd.shutdown()
        httpd.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_the_port_answers_probes_with_json_and_everything_else_with_metrics(
    endpoints: tuple[int, Health, CollectorRegistry],
) -> None:
    port, health, _ = endpoints
    status, body = _get(f"http://127.0.0.1:{port}/readyz")
    assert status == 503
    assert json.loads(body)["failing"] == [
        "no group heartbeat yet",
        "state not restored since the last assignment",
    ]
    health.watch_group(lambda: 0.1)
    health.restored()
    assert _get(f"http://127.0.0.1:{port}/readyz")[0] == 200
    status, body = _get(f"http://127.0.0.1:{port}/healthz")
    assert status == 200 and json.loads(body)["ok"] is True
    status, body = _get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200 and b"things_total 1.0" in body


def test_bound_to_127_0_0_1_the_port_is_closed_on_other_addresses(
    endpoints: tuple[int, Health, CollectorRegistry],
) -> None:
    port, _, _ = endpoints
    # Linux answers on all of 127.0.0.0/8: 127.0.0.2 is this host, not the bound address.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", port), timeout=2).close()


def test_bound_to_every_interface_the_port_answers_on_them_all() -> None:
    port = _free_port()
    httpd = start_endpoints(
        port, CollectorRegistry(), Health(HealthSettings()), MetricsServerSettings()
    )
    try:
        assert _get(f"http://127.0.0.2:{port}/healthz")[0] == 200
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_compose_stack_waits_for_readiness() -> None:
    import yaml

    compose = yaml.safe_load((Path(__file__).parents[2] / "docker-compose.yml").read_text())
    for service, port in (("monitor", 9108), ("trainer", 9109)):
        check = " ".join(compose["services"][service]["healthcheck"]["test"])
        assert f"http://localhost:{port}/readyz" in check


class _Idle:
    """A service that stops at once (what serve() runs is not under test here)."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.health = Health(HealthSettings())

    def run(self) -> None:
        self.stop.set()


def test_a_port_in_use_stops_the_start_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = MetricsServerSettings(bind_address="127.0.0.1")
        assert serve("svc", _Idle, CollectorRegistry(), port, server) == 2
    message = capsys.readouterr().err
    assert message.startswith(f"svc: cannot serve /metrics on 127.0.0.1:{port}")
    assert message.count("\n") == 1
    assert serve("svc", _Idle, CollectorRegistry(), _free_port(), server) == 0


def test_the_compose_trainer_retrains_the_simulators_model() -> None:
    """The trainer retrains only the models it lists: the stack's must include the one
    the simulator writes, or every retrain request there would be rejected."""
    import yaml

    compose = yaml.safe_load((Path(__file__).parents[2] / "docker-compose.yml").read_text())
    listed = json.loads(
        compose["services"]["trainer"]["environment"]["STREAM_MONITOR_TRAINER_MODELS"]
    )
    from stream_monitor.cli import _parser

    simulated = _parser().parse_args(compose["services"]["simulator"]["command"])
    assert simulated.model_id in listed
