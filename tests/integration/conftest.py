"""A real Kafka broker for the integration tests.

The broker is Apache Kafka from Maven Central (``scripts/kafka-local``), started once
per test session on free loopback ports and stopped at the end. Set
``STREAM_MONITOR_TEST_BOOTSTRAP`` to use a broker you already run instead (the secured
broker of the security tests is always started: its credentials are made with it).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stream_monitor.devbroker.broker import BrokerSettings, start, stop
from stream_monitor.devbroker.security import DevCredentials
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


@dataclass(frozen=True)
class SecuredBroker:
    """A broker with a SASL_SSL listener (SCRAM users of ``DEV_USERS``, a throwaway CA,
    ACLs enforced) and a listener that requires client certificates."""

    settings: BrokerSettings
    mtls_bootstrap: str

    @property
    def bootstrap(self) -> str:
        return self.settings.bootstrap_servers

    @property
    def credentials(self) -> DevCredentials:
        return self.settings.credentials

    def kafka(self, user: str, **overrides: Any) -> dict[str, Any]:
        """``kafka`` settings of a service connecting as ``user`` over SASL_SSL."""
        return {**self.credentials.kafka_settings(self.bootstrap, user), **overrides}

    @property
    def admin(self) -> dict[str, Any]:
        """kafka-python settings of the super user."""
        return self.settings.admin_client_config()


@pytest.fixture(scope="session")
def secured_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredBroker]:
    port, controller, mtls = free_port(), free_port(), free_port()
    settings = BrokerSettings(
        port=port,
        controller_port=controller,
        mtls_port=mtls,
        security="sasl_ssl",
        security_dir=tmp_path_factory.mktemp("security"),
    )
    start(settings, data_dir=tmp_path_factory.mktemp("kafka-secured"), timeout=120)
    try:
        yield SecuredBroker(settings, f"127.0.0.1:{mtls}")
    finally:
        stop(settings)


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[BrokerSettings]:
    """A broker of the test's own, which the test may stop and start again (data in
    ``tmp_path / "data"``)."""
    settings = BrokerSettings(port=free_port(), controller_port=free_port())
    start(settings, data_dir=tmp_path / "data", timeout=120)
    try:
        yield settings
    finally:
        stop(settings)
        shutil.rmtree(settings.run_dir, ignore_errors=True)
