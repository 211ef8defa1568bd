"""Start a real local Kafka broker, round-trip one record, stop it."""

from __future__ import annotations

import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from stream_monitor.devbroker.broker import (
    BrokerSettings,
    LocalBroker,
    find_running,
    start,
    status,
    stop,
)

pytestmark = pytest.mark.integration


def _free_ports(count: int) -> list[int]:
    """Ports that are free right now (bound together so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalBroker]:
    port, controller_port = _free_ports(2)
    # Default home: the jars are fetched once into the shared cache and reused.
    settings = BrokerSettings(port=port, controller_port=controller_port)
    local = start(settings, data_dir=tmp_path / "data", timeout=120)
    try:
        yield local
    finally:
        stop(settings)
        shutil.rmtree(settings.run_dir, ignore_errors=True)


def test_broker_round_trip_and_stop(broker: LocalBroker, tmp_path: Path) -> None:
    settings = broker.settings
    bootstrap = broker.bootstrap_servers
    assert bootstrap == f"127.0.0.1:{settings.port}"
    assert (tmp_path / "data" / "kafka-logs" / "meta.properties").exists()
    assert status(settings).startswith("running")

    # A second start finds the running broker instead of launching another one.
    assert start(settings, data_dir=tmp_path / "data").pid == broker.pid

    topic = f"devbroker-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics(
            {topic: {"num_partitions": 1, "replication_factor": 1}}, wait_for_metadata=True
        )
        assert topic in admin.list_topics()
    finally:
        admin.close()

    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        meta = producer.send(topic, key=b"k", value=b"hello drift").get(timeout=30)
        assert meta.offset == 0
    finally:
        producer.close()

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"{topic}-group",
        auto_offset_reset="earliest",
    )
    records: list[Any] = []
    try:
        deadline = time.monotonic() + 30
        while not records and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=1000).values():
                records.extend(batch)
    finally:
        consumer.close()
    assert [(r.key, r.value) for r in records] == [(b"k", b"hello drift")]

    assert stop(settings) is True
    assert not _port_open(settings.port)
    assert not _port_open(settings.quorum_port)
    assert find_running(settings) is None
    assert not settings.pid_file.exists()
    assert status(settings).startswith("not running")
    assert stop(settings) is False
