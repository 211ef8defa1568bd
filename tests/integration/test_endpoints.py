"""The metrics port of the real services: /healthz and /readyz, a bind address, HTTPS and
mTLS with throwaway certificates."""

from __future__ import annotations

import datetime
import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from stream_monitor.config import MetricsServerSettings
from stream_monitor.devbroker.broker import BrokerSettings, start, stop
from stream_monitor.kafka.runner import start_endpoints
from stream_monitor.kafka.service import MonitorService
from stream_monitor.metrics import MonitorMetrics
from stream_monitor.simulate import Scenario, publish
from stream_monitor.trainer.metrics import TrainerMetrics
from stream_monitor.trainer.service import TrainerService
from stream_monitor.trainer.settings import TrainerSettings
from tests.integration.helpers import (
    all_committed,
    create_topics,
    free_port,
    running_service,
    settings_for,
    wait_until,
)

pytestmark = pytest.mark.integration


def probe(url: str, context: ssl.SSLContext | None = None) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of a probe (a 503 is an answer, not an error)."""
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_readiness_follows_the_broker_and_liveness_the_loop(
    own_broker: BrokerSettings, tmp_path: Path
) -> None:
    settings = settings_for(
        f"127.0.0.1:{own_broker.port}",
        kafka={"partitions": 1},
        health={"max_heartbeat_age_seconds": 6.0},
    )
    create_topics(settings)
    port = free_port()
    service = MonitorService(settings, MonitorMetrics())
    httpd = start_endpoints(
        port,
        service.metrics.registry,
        service.health,
        MetricsServerSettings(bind_address="127.0.0.1"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        status, body = probe(f"{base}/readyz")
        assert status == 503 and "no group heartbeat yet" in body["failing"]
        assert probe(f"{base}/healthz")[0] == 200
        with running_service(service) as monitor:
            publish(settings, Scenario(events=500, drift_at=None, label_delay=20))
            wait_until(lambda: probe(f"{base}/readyz")[0] == 200, 60, "ready", monitor)
            status, body = probe(f"{base}/readyz")
            assert body["seen"]["partitions"] == 2  # predictions and ground truth
            assert body["seen"]["state_restored"] is True
            assert body["seen"]["lag_records"] == 0 or body["seen"]["lag_records"] > 0
            wait_until(lambda: all_committed(settings, 1000), 60, "all committed", monitor)
            with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
                assert b"stream_monitor_records_consumed_total" in response.read()

            stop(own_broker)
            wait_until(lambda: probe(f"{base}/readyz")[0] == 503, 30, "not ready", monitor)
            status, body = probe(f"{base}/readyz")
            # Lag can no longer be measured, and the group heartbeats stop.
            assert any("broker" in r or "heartbeat" in r for r in body["failing"]), body
            assert probe(f"{base}/healthz")[0] == 200, "the loop turns while the broker is away"

            start(own_broker, data_dir=tmp_path / "data", timeout=120)
            wait_until(lambda: probe(f"{base}/readyz")[0] == 200, 120, "ready again", monitor)
    finally:
        httpd.shutdown()
        httpd.server_close()


# ---- TLS -------------------------------------------------------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if server:
        import ipaddress

        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def _write(directory: Path, name: str, cert: x509.Certificate, key: Any = None) -> Path:
    path = directory / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        (directory / f"{name}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return path


@pytest.fixture
def certificates(tmp_path: Path) -> Path:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate."""
    ca_key = _key()
    ca = _certificate("test CA", ca_key, None)
    _write(tmp_path, "ca", ca)
    server_key, client_key = _key(), _key()
    _write(
        tmp_path, "server", _certificate("127.0.0.1", server_key, (ca, ca_key), True), server_key
    )
    _write(tmp_path, "client", _certificate("prometheus", client_key, (ca, ca_key)), client_key)
    return tmp_path


def test_the_trainer_serves_metrics_and_probes_over_mutual_tls(
    bootstrap: str, tmp_path: Path, certificates: Path
) -> None:
    monitor = settings_for(bootstrap)
    server = MetricsServerSettings(
        bind_address="127.0.0.1",
        certfile=certificates / "server.pem",
        keyfile=certificates / "server.key",
        client_cafile=certificates / "ca.pem",
        client_auth_required=True,
    )
    settings = TrainerSettings(
        kafka={"bootstrap_servers": bootstrap, "group_id": f"trainer-{monitor.kafka.group_id}"},
        topics=monitor.topics,
        registry_dir=tmp_path / "registry",
        metrics_port=0,
        metrics_server=server,
    )
    service = TrainerService(settings, TrainerMetrics())
    port = free_port()
    httpd = start_endpoints(port, service.metrics.registry, service.health, server)
    url = f"https://127.0.0.1:{port}"
    trusted = ssl.create_default_context(cafile=str(certificates / "ca.pem"))
    with_certificate = ssl.create_default_context(cafile=str(certificates / "ca.pem"))
    with_certificate.load_cert_chain(certificates / "client.pem", certificates / "client.key")
    try:
        with running_service(service) as trainer:
            wait_until(
                lambda: probe(f"{url}/readyz", with_certificate)[0] == 200, 60, "ready", trainer
            )
            with urllib.request.urlopen(
                f"{url}/metrics", timeout=5, context=with_certificate
            ) as response:
                assert b"stream_monitor_trainer_requests_received_total" in response.read()
            assert probe(f"{url}/healthz", with_certificate)[0] == 200
            # Without a client certificate the handshake fails (TLS 1.3 may report it
            # on the first read instead of the handshake).
            with pytest.raises((ssl.SSLError, ConnectionResetError, urllib.error.URLError)):
                probe(f"{url}/metrics", trusted)
            # Without trusting the CA the client refuses the server.
            with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
                probe(f"{url}/metrics", ssl.create_default_context())
            # Plain HTTP gets no answer from a TLS port.
            with pytest.raises((urllib.error.URLError, ConnectionResetError, OSError)):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    finally:
        httpd.shutdown()
        httpd.server_close()
