"""Fast checks of the dev broker's settings and rendered server.properties."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_monitor.devbroker.broker import (
    BrokerSettings,
    default_cache_dir,
    render_server_properties,
)


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
    ],
)
def test_invalid_settings_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        BrokerSettings(**kwargs)  # type: ignore[arg-type]
