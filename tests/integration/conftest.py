"""A real Kafka broker for the integration tests.

The broker is Apache Kafka from Maven Central (``scripts/kafka-local``), started once
per test session on free loopback ports and stopped at the end. Set
``STREAM_MONITOR_TEST_BOOTSTRAP`` to use a broker you already run instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from stream_monitor.devbroker.broker import BrokerSettings, start, stop
from tests.integration.helpers import free_port


@pytest.fixture(scope="session")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("STREAM_MONITOR_TEST_BOOTSTRAP")
    if external:
        yield external
        return
    port, controller = free_port(), free_port()
    settings = BrokerSettings(port=port, controller_port=controller)
    broker = start(settings, data_dir=tmp_path_factory.mktemp("kafka"), timeout=120)
    try:
        yield broker.bootstrap_servers
    finally:
        stop(settings)
