"""The services on a secured broker: SASL_SSL with SCRAM, TLS from a throwaway CA, ACLs
enforced, each service user granted exactly what docs/security.md lists."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAuthorizationFailedError
from prometheus_client import generate_latest

from stream_monitor.config import KafkaSettings, MonitorSettings, TopicSettings
from stream_monitor.core.events import unbatch
from stream_monitor.devbroker.broker import grant_service_acls
from stream_monitor.kafka import acls
from stream_monitor.kafka.topics import StartupError, assign_all, check_access, read_to_end
from stream_monitor.metrics import MonitorMetrics
from stream_monitor.simulate import Scenario, publish
from stream_monitor.trainer.metrics import TrainerMetrics
from stream_monitor.trainer.service import TrainerService
from stream_monitor.trainer.settings import TrainerSettings
from tests.integration.conftest import SecuredBroker
from tests.integration.helpers import running_monitor, running_service, wait_until

pytestmark = pytest.mark.integration

MODEL = "demo-model"
REPO = Path(__file__).resolve().parents[2]


def _tag() -> str:
    return uuid.uuid4().hex[:8]


def _monitor_settings(broker: SecuredBroker, tag: str, **kafka: Any) -> MonitorSettings:
    names = MonitorSettings().topics.model_dump()
    return MonitorSettings(
        kafka=broker.kafka(
            "monitor", group_id=f"monitor-{tag}", partitions=2, create_topics=False, **kafka
        ),
        topics={field: f"{name}-{tag}" for field, name in names.items()},
        metrics_port=0,
        checkpoint={"every_seconds": 1.0},
        defaults={"policy": {"training_window_seconds": 60.0}},
    )


def _create_topics(broker: SecuredBroker, settings: MonitorSettings) -> None:
    """An administrator creates the topics: the services are not allowed to."""
    from stream_monitor.kafka.topics import ensure_topics

    admin = KafkaSettings(**broker.kafka("admin", partitions=2))
    ensure_topics(admin, settings.topics)


def _values(broker: SecuredBroker, topic: str) -> list[dict[str, Any]]:
    consumer = KafkaConsumer(**broker.admin, enable_auto_commit=False)
    try:
        partitions = assign_all(consumer, topic, from_beginning=True)
        records = list(read_to_end(consumer, partitions, timeout=10))
    finally:
        consumer.close()
    return [event for r in records for event in unbatch(r.value)]


def _grant(broker: SecuredBroker, user: str, grants: list[acls.Grant]) -> None:
    acls.grant(broker.admin, f"User:{user}", grants)


def test_monitor_and_trainer_end_to_end_with_exactly_their_acls(
    secured_broker: SecuredBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker, tag = secured_broker, _tag()
    monitor = _monitor_settings(broker, tag)
    trainer = TrainerSettings(
        kafka=broker.kafka("trainer", group_id=f"trainer-{tag}", create_topics=False),
        topics=monitor.topics,
        registry_dir=tmp_path / "registry",
        metrics_port=0,
        models={MODEL: {}},
    )
    serving = monitor.model_copy(
        update={"kafka": KafkaSettings(**broker.kafka("serving", partitions=2))}
    )
    _create_topics(broker, monitor)
    _grant(broker, "monitor", acls.monitor_grants(monitor.topics, monitor.kafka.group_id))
    _grant(broker, "trainer", acls.trainer_grants(trainer.topics, trainer.kafka.group_id))
    _grant(broker, "serving", acls.serving_grants(serving.topics))

    caplog.set_level(logging.DEBUG, logger="stream_monitor")
    scenario = Scenario(events=3000, drift_at=1500, label_delay=20, features=4)
    publish(serving, scenario)  # the simulated serving app, as the user serving
    metrics = MonitorMetrics()
    with (
        running_monitor(monitor, metrics) as running,
        running_service(TrainerService(trainer, TrainerMetrics())) as answering,
    ):
        wait_until(
            lambda: answering.healthy() and len(_values(broker, trainer.topics.model_events)) == 1,
            timeout=240,
            what="the retrain request answered",
            monitor=running,
        )
    (request,) = _values(broker, monitor.topics.retrain_requests)
    (answer,) = _values(broker, trainer.topics.model_events)
    assert answer["data"]["request"]["id"] == request["id"]
    assert answer["type"] in {"stream_monitor.model.promoted", "stream_monitor.model.rejected"}
    examples = _values(broker, monitor.topics.labelled_examples)
    assert len({e["data"]["prediction_id"] for e in examples}) == scenario.events
    # The state topic's compaction check ran (DESCRIBE_CONFIGS granted): no warning.
    assert "state topic configuration not readable" not in caplog.text
    passwords = [broker.credentials.password(user) for user in ("monitor", "trainer", "serving")]
    exposition = generate_latest(metrics.registry).decode()
    for password in passwords:
        assert password not in caplog.text
        assert password not in exposition
        assert password not in repr(monitor) + repr(trainer)


@pytest.mark.parametrize("topic", ["retrain_requests", "model_events", "monitor_state"])
def test_the_serving_apps_acls_cannot_write_the_services_topics(
    secured_broker: SecuredBroker, topic: str
) -> None:
    broker, tag = secured_broker, _tag()
    settings = _monitor_settings(broker, tag)
    _create_topics(broker, settings)
    _grant(broker, "serving", acls.serving_grants(settings.topics))
    serving = KafkaSettings(**broker.kafka("serving"))
    producer = KafkaProducer(**serving.client(), max_block_ms=10_000)
    try:
        # What it may do, it can: the refusal below is the ACL, not the connection.
        producer.send(settings.topics.predictions, b"{}", key=MODEL.encode()).get(timeout=30)
        with pytest.raises(TopicAuthorizationFailedError):
            producer.send(getattr(settings.topics, topic), b"{}", key=MODEL.encode()).get(
                timeout=30
            )
    finally:
        producer.close()


def _start_monitor(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_MONITOR_")}
    return subprocess.run(
        [sys.executable, "-m", "stream_monitor.cli", "monitor"],
        env={**clean, "PYTHONPATH": str(REPO), "STREAM_MONITOR_METRICS_PORT": "0", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong password", "authentication as 'monitor' with SCRAM-SHA-512 failed"),
        ("unknown CA", "is not trusted"),
        ("plaintext client", "the listener speaks TLS, use SSL or SASL_SSL"),
        ("mechanism", "does not accept SASL mechanism SCRAM-SHA-256"),
    ],
)
def test_a_wrong_setting_stops_the_start_with_one_line_naming_it(
    secured_broker: SecuredBroker, tmp_path: Path, case: str, expected: str
) -> None:
    broker = secured_broker
    env = {
        f"STREAM_MONITOR_KAFKA__{name.upper()}": value
        for name, value in broker.credentials.kafka_settings(broker.bootstrap, "monitor").items()
    }
    secret = "not-the-password-" + _tag()
    if case == "wrong password":
        del env["STREAM_MONITOR_KAFKA__SASL_PASSWORD_FILE"]
        env["STREAM_MONITOR_KAFKA__SASL_PASSWORD"] = secret
    elif case == "unknown CA":
        # A CA of its own: the broker's certificate is signed by another one.
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", str(tmp_path / "other.key"), "-out", str(tmp_path / "other.pem"),
             "-days", "1", "-subj", "/CN=another CA"],
            check=True, capture_output=True,
        )  # fmt: skip
        env["STREAM_MONITOR_KAFKA__SSL_CAFILE"] = str(tmp_path / "other.pem")
    elif case == "plaintext client":
        env = {"STREAM_MONITOR_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap}
    else:
        env["STREAM_MONITOR_KAFKA__SASL_MECHANISM"] = "SCRAM-SHA-256"
    finished = _start_monitor(env)
    assert finished.returncode == 2
    lines = finished.stderr.strip().splitlines()
    assert len(lines) == 1, finished.stderr
    assert lines[0].startswith("stream-monitor: ") and expected in lines[0]
    assert "Traceback" not in finished.stderr
    assert secret not in finished.stderr + finished.stdout
    assert broker.credentials.password("monitor") not in finished.stderr


def test_mutual_tls(secured_broker: SecuredBroker) -> None:
    broker, topic = secured_broker, f"mtls-{_tag()}"
    kafka = KafkaSettings(**broker.credentials.mtls_settings(broker.mtls_bootstrap, "admin"))
    check_access(kafka)
    admin = KafkaAdminClient(**kafka.client())  # CN=admin: the super user
    try:
        admin.create_topics([NewTopic(topic, 1, -1)])
    finally:
        admin.close()
    producer = KafkaProducer(**kafka.client())
    try:
        producer.send(topic, b"over mutual TLS").get(timeout=30)
    finally:
        producer.close()
    consumer = KafkaConsumer(**kafka.client(), enable_auto_commit=False)
    try:
        partitions = assign_all(consumer, topic, from_beginning=True)
        assert [r.value for r in read_to_end(consumer, partitions, timeout=10)] == [
            b"over mutual TLS"
        ]
    finally:
        consumer.close()
    without_certificate = kafka.model_copy(update={"ssl_certfile": None, "ssl_keyfile": None})
    with pytest.raises(StartupError, match="may require a client certificate"):
        check_access(without_certificate)


def test_the_dev_broker_grants_each_service_user_its_documented_acls(
    secured_broker: SecuredBroker,
) -> None:
    from kafka.admin import (
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePatternFilter,
        ResourceType,
    )

    grant_service_acls(secured_broker.settings)  # what `kafka-local start --security` does
    admin = KafkaAdminClient(**secured_broker.admin)
    try:
        everything = ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY)
        found, _ = admin.describe_acls(
            ACLFilter("User:serving", "*", ACLOperation.ANY, ACLPermissionType.ANY, everything)
        )
    finally:
        admin.close()
    held = {
        (a.operation.name, a.resource_pattern.resource_name)
        for a in found
        if a.resource_pattern.resource_name in TopicSettings().model_dump().values()
    }
    assert held == {(g.operation, g.name) for g in acls.serving_grants(TopicSettings())}
