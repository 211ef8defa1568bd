"""Fast checks of the dev broker's settings and rendered server.properties."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_monitor.devbroker.broker import (
    BrokerSettings,
    default_cache_dir,
    render_server_properties,
)
from stream_monitor.devbroker.security import DEV_USERS


def _parse(text: str) -> dict[str, str]:
    props: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"not a key=value line: {line!r}"
            assert key not in props, f"duplicate key {key}"
            props[key] = value
    return props


def test_single_node_kraft_properties(tmp_path: Path) -> None:
    settings = BrokerSettings(port=19092, home=tmp_path / "home", java="java")
    props = _parse(render_server_properties(settings, tmp_path / "data"))

    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert props["log.dirs"] == str(tmp_path / "data" / "kafka-logs")
    assert props["num.partitions"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["auto.create.topics.enable"] == "true"
    assert props["log.retention.ms"] == "-1"  # replayed history would be deleted at once
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
        "share.coordinator.state.topic.min.isr",
    ):
        assert props[key] == "1", key
    # The static voter set is used, so the dynamic-quorum key must be absent.
    assert "controller.quorum.bootstrap.servers" not in props


def test_explicit_controller_port_and_relative_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = BrokerSettings(port=29092, controller_port=39093, home=tmp_path, java="java")
    props = _parse(render_server_properties(settings, Path("rel")))

    assert props["controller.quorum.voters"] == "1@127.0.0.1:39093"
    assert props["listeners"].endswith("CONTROLLER://127.0.0.1:39093")
    assert props["log.dirs"] == str(tmp_path / "rel" / "kafka-logs")


def test_defaults_follow_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_MONITOR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    settings = BrokerSettings()

    assert default_cache_dir() == tmp_path / "cache"
    assert settings.home == tmp_path / "cache" / "kafka"
    assert settings.java == str(tmp_path / "jdk" / "bin" / "java")
    assert settings.port == 9092
    assert settings.quorum_port == 9093
    assert settings.kafka_version == "4.1.1"
    assert settings.heap == "512m"
    assert settings.bootstrap_servers == "127.0.0.1:9092"
    assert settings.libs_dir == tmp_path / "cache" / "kafka" / "4.1.1" / "libs"
    assert settings.default_data_dir == tmp_path / "cache" / "kafka" / "data-9092"
    assert settings.broker_out == tmp_path / "cache" / "kafka" / "logs-9092" / "broker.out"


def test_default_cache_without_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAM_MONITOR_CACHE", raising=False)
    assert default_cache_dir() == Path.home() / ".cache" / "stream-monitor"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"port": 0},
        {"port": 70000},
        {"port": 9092, "controller_port": 9092},
        {"port": 65535},  # default controller port would be 65536
        {"heap": "lots"},
        {"port": 9092, "mtls_port": 9094},  # a client-certificate listener needs sasl_ssl
        {"port": 9092, "mtls_port": 9093, "security": "sasl_ssl"},  # the controller's
    ],
)
def test_invalid_settings_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        BrokerSettings(**kwargs)  # type: ignore[arg-type]


def test_secured_broker_properties(tmp_path: Path) -> None:
    settings = BrokerSettings(
        port=19094,
        controller_port=19095,
        mtls_port=19096,
        security="sasl_ssl",
        home=tmp_path,
        java="java",
    )
    credentials = settings.credentials
    assert credentials.directory == tmp_path / "security-19094"
    credentials.ensure(settings.bootstrap_servers)
    props = _parse(render_server_properties(settings, tmp_path / "data"))

    assert props["listeners"] == (
        "SASL_SSL://127.0.0.1:19094,MTLS://127.0.0.1:19096,CONTROLLER://127.0.0.1:19095"
    )
    assert props["advertised.listeners"] == "SASL_SSL://127.0.0.1:19094,MTLS://127.0.0.1:19096"
    assert props["listener.security.protocol.map"] == (
        "CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,MTLS:SSL"
    )
    assert props["inter.broker.listener.name"] == "SASL_SSL"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["listener.name.mtls.ssl.client.auth"] == "required"
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:admin;User:ANONYMOUS"
    assert props["auto.create.topics.enable"] == "false"
    assert props["ssl.keystore.location"] == str(credentials.keystore)
    assert props["ssl.truststore.location"] == str(credentials.ca_file)
    jaas = props["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"]
    assert f'password="{credentials.password("admin")}"' in jaas

    # Users' passwords differ, are private, and the env files name them by file only.
    passwords = {user: credentials.password(user) for user in DEV_USERS}
    assert len(set(passwords.values())) == len(DEV_USERS)
    for user, password in passwords.items():
        assert credentials.password_file(user).stat().st_mode & 0o077 == 0
        env = credentials.env_file(user).read_text()
        assert password not in env
        assert f"STREAM_MONITOR_KAFKA__SASL_USERNAME={user}" in env
    keystore = credentials.keystore.read_text()
    assert keystore.startswith("-----BEGIN PRIVATE KEY-----") and "CERTIFICATE" in keystore
    # Made once: a second call keeps the users' passwords (the broker was formatted with them).
    credentials.ensure(settings.bootstrap_servers)
    assert {user: credentials.password(user) for user in DEV_USERS} == passwords
