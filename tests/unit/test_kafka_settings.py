"""Kafka security and group settings: what every client gets, and secrets kept secret."""

from __future__ import annotations

import logging
import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from stream_monitor.config import ConfigError, KafkaSettings, MonitorSettings, load_settings
from stream_monitor.devbroker.security import DevCredentials
from stream_monitor.logs import JsonFormatter
from stream_monitor.trainer.settings import TrainerSettings

SECRET = "correct-horse-battery-staple"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("STREAM_MONITOR_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> DevCredentials:
    """A throwaway CA and client certificates, as the secured dev broker makes them."""
    made = DevCredentials(tmp_path_factory.mktemp("security"))
    made.ensure("127.0.0.1:9093")
    return made


def _sasl(**extra: object) -> dict[str, object]:
    return {"security_protocol": "SASL_SSL", "sasl_username": "monitor", **extra}


def test_plaintext_by_default_and_every_client_gets_the_same_settings() -> None:
    client = KafkaSettings().client()
    assert client["security_protocol"] == "PLAINTEXT"
    assert "ssl_context" not in client and "sasl_plain_password" not in client


def test_the_password_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_MONITOR_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("STREAM_MONITOR_KAFKA__SASL_USERNAME", "monitor")
    monkeypatch.setenv("STREAM_MONITOR_KAFKA__SASL_PASSWORD", SECRET)
    client = load_settings().kafka.client()
    assert (client["sasl_mechanism"], client["sasl_plain_username"]) == ("SCRAM-SHA-512", "monitor")
    assert client["sasl_plain_password"] == SECRET
    monkeypatch.setenv("STREAM_MONITOR_TRAINER_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("STREAM_MONITOR_TRAINER_KAFKA__SASL_USERNAME", "trainer")
    monkeypatch.setenv("STREAM_MONITOR_TRAINER_KAFKA__SASL_PASSWORD", SECRET)
    assert TrainerSettings().kafka.client()["sasl_plain_password"] == SECRET


def test_the_password_comes_from_a_file_read_when_a_client_is_made(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(SECRET + "\n")  # as a mounted secret often ends
    kafka = KafkaSettings(security_protocol="SASL_PLAINTEXT", **_sasl_file(secret))
    assert kafka.client()["sasl_plain_password"] == SECRET
    secret.write_text("rotated")
    assert kafka.client()["sasl_plain_password"] == "rotated"


def _sasl_file(path: Path) -> dict[str, object]:
    return {"sasl_username": "monitor", "sasl_password_file": path}


def test_secrets_never_appear_in_repr_dumps_logs_or_errors(tmp_path: Path) -> None:
    settings = MonitorSettings(
        kafka={"security_protocol": "SASL_PLAINTEXT", "sasl_username": "m", "sasl_password": SECRET}
    )
    assert SECRET not in repr(settings) + str(settings) + settings.model_dump_json()
    record = logging.LogRecord("x", logging.INFO, "f", 1, "settings", None, None)
    record.kafka = settings.kafka
    record.client = settings.kafka.sasl_password
    assert SECRET not in JsonFormatter().format(record)

    # A validation error names the problem; the input it quotes is masked.
    config = tmp_path / "monitor.yaml"
    config.write_text(
        "kafka:\n  security_protocol: SASL_SSL\n  sasl_username: m\n"
        f"  sasl_password: {SECRET}\n  sasl_password_file: {config}\n"
    )
    with pytest.raises(ConfigError) as error:
        load_settings(config)
    assert "give sasl_password or sasl_password_file, not both" in str(error.value)
    assert SECRET not in str(error.value)
    config.write_text(f"kafka:\n  sasl_password: [{SECRET}]\n")
    with pytest.raises(ConfigError) as error:
        load_settings(config)
    assert "kafka.sasl_password" in str(error.value) and SECRET not in str(error.value)


@pytest.mark.parametrize("command", [["monitor", "--help"], ["trainer", "--help"], ["--help"]])
def test_help_does_not_show_secrets_from_the_environment(command: list[str]) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "STREAM_MONITOR_KAFKA__SASL_PASSWORD": SECRET,
        "STREAM_MONITOR_TRAINER_KAFKA__SASL_PASSWORD": SECRET,
    }
    shown = subprocess.run(
        [sys.executable, "-m", "stream_monitor.cli", *command],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert SECRET not in shown.stdout + shown.stderr


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"security_protocol": "SASL_SSL"}, "needs sasl_username and sasl_password"),
        (_sasl(), "needs sasl_username and sasl_password"),
        ({"sasl_password_file": "/nonexistent/password"}, "does not exist"),
        ({"ssl_cafile": "/nonexistent/ca.pem"}, "ssl_cafile: /nonexistent/ca.pem does not exist"),
        ({"ssl_keyfile": __file__}, "ssl_keyfile needs ssl_certfile"),
        ({"session_timeout_ms": 3000}, "heartbeat_interval_ms must be below session_timeout_ms"),
        ({"group_instance_id": "pod/0"}, "group_instance_id"),
        ({"security_protocol": "TLS"}, "security_protocol"),
        ({"sasl_mechanism": "GSSAPI"}, "sasl_mechanism"),
    ],
)
def test_incomplete_or_wrong_security_settings_are_named(
    settings: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        KafkaSettings(**settings)  # type: ignore[arg-type]


def test_tls_checks_certificates_and_host_names_by_default(credentials: DevCredentials) -> None:
    kafka = KafkaSettings(security_protocol="SSL", ssl_cafile=credentials.ca_file)
    context = kafka.client()["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("commonName", "stream-monitor development CA"),),)
    ]
    relaxed = KafkaSettings(security_protocol="SSL", ssl_check_hostname=False)
    assert not relaxed.client()["ssl_context"].check_hostname


def test_client_certificates_for_mutual_tls(credentials: DevCredentials) -> None:
    kafka = KafkaSettings(**credentials.mtls_settings("127.0.0.1:9093", "monitor"))
    assert isinstance(kafka.client()["ssl_context"], ssl.SSLContext)


def test_a_file_that_is_no_certificate_is_refused_at_load(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate")
    with pytest.raises(ValueError, match="ssl_cafile, ssl_certfile or ssl_keyfile"):
        KafkaSettings(security_protocol="SSL", ssl_cafile=bogus)


def test_consumer_group_settings_for_fast_restarts() -> None:
    kafka = KafkaSettings(
        group_id="g", session_timeout_ms=10_000, heartbeat_interval_ms=1000, group_instance_id="p-0"
    )
    assert kafka.group() == {
        "group_id": "g",
        "session_timeout_ms": 10_000,
        "heartbeat_interval_ms": 1000,
        "group_instance_id": "p-0",
    }
    assert KafkaSettings().group()["group_instance_id"] is None
