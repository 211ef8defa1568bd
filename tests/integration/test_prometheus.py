"""A real Prometheus server scrapes the real monitor and trainer, with the shipped scrape
configuration and alert rules, and a drift makes the drift alert fire."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream_monitor.config import MetricsServerSettings
from stream_monitor.kafka.runner import start_endpoints
from stream_monitor.kafka.service import MonitorService
from stream_monitor.metrics import MonitorMetrics
from stream_monitor.simulate import Scenario, publish
from stream_monitor.trainer.metrics import TrainerMetrics
from stream_monitor.trainer.service import TrainerService
from stream_monitor.trainer.settings import TrainerSettings
from tests.integration.helpers import (
    create_topics,
    free_port,
    running_service,
    settings_for,
    wait_until,
)
from tests.unit.test_metrics_docs import documented

pytestmark = pytest.mark.integration

SHIPPED = Path(__file__).resolve().parents[2] / "configs" / "prometheus"
LOOPBACK = MetricsServerSettings(bind_address="127.0.0.1")


def scrape_config(monitor_port: int, trainer_port: int, directory: Path) -> Path:
    """The shipped prometheus.yml with loopback targets and 1 s intervals, beside a copy
    of the shipped rule files (which it names relative to itself)."""
    config = yaml.safe_load((SHIPPED / "prometheus.yml").read_text(encoding="utf-8"))
    config["global"] = {**config["global"], "scrape_interval": "1s", "evaluation_interval": "1s"}
    ports = {"monitor:9108": monitor_port, "trainer:9109": trainer_port}
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            static["targets"] = [f"127.0.0.1:{ports[t]}" for t in static["targets"]]
    for rule_file in config["rule_files"]:
        shutil.copy(SHIPPED / rule_file, directory / rule_file)
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, int, int]]:
    """A Prometheus server on loopback (Debian's package, installed by scripts/test);
    its URL and the ports of the two targets it scrapes."""
    monitor_port, trainer_port, port = free_port(), free_port(), free_port()
    config = scrape_config(monitor_port, trainer_port, tmp_path)
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(f"{url}/-/ready"), 60, "Prometheus ready")
        yield url, monitor_port, trainer_port
    finally:
        process.terminate()
        process.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def api(url: str, path: str, **params: str) -> Any:
    query = urllib.parse.urlencode(params)
    with urllib.request.urlopen(f"{url}/api/v1/{path}?{query}", timeout=10) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]


def test_prometheus_scrapes_both_services_and_the_drift_alert_fires(
    bootstrap: str, tmp_path: Path, prometheus: tuple[str, int, int]
) -> None:
    url, monitor_port, trainer_port = prometheus
    settings = settings_for(bootstrap)
    create_topics(settings)
    monitor = MonitorService(settings, MonitorMetrics())
    trainer = TrainerService(
        TrainerSettings(
            kafka={"bootstrap_servers": bootstrap, "group_id": f"{settings.kafka.group_id}-t"},
            topics=settings.topics,
            registry_dir=tmp_path / "registry",
            metrics_port=0,
        ),
        TrainerMetrics(),
    )
    servers = [
        start_endpoints(monitor_port, monitor.metrics.registry, monitor.health, LOOPBACK),
        start_endpoints(trainer_port, trainer.metrics.registry, trainer.health, LOOPBACK),
    ]
    try:
        with running_service(monitor) as running, running_service(trainer):
            # A drop from 92 % to 10 % accuracy: ADWIN's first estimate of it is beyond
            # critical_accuracy_drop (0.25), so the policy calls it critical.
            publish(settings, Scenario(events=6_000, drift_at=3_000, accuracy_after=0.1))

            def targets_up() -> bool:
                active = api(url, "targets")["activeTargets"]
                return len(active) == 2 and all(t["health"] == "up" for t in active)

            wait_until(targets_up, 60, "both targets up", running)
            jobs = {t["labels"]["job"] for t in api(url, "targets")["activeTargets"]}
            assert jobs == {"stream-monitor", "stream-monitor-trainer"}

            def firing() -> bool:
                alerts = api(url, "alerts")["alerts"]
                return any(
                    a["labels"]["alertname"] == "StreamMonitorCriticalDrift"
                    and a["state"] == "firing"
                    for a in alerts
                )

            # The rule's own `for: 1m`, from the shipped file, after the first signal.
            wait_until(firing, 150, "StreamMonitorCriticalDrift firing", running)
            (alert,) = [
                a
                for a in api(url, "alerts")["alerts"]
                if a["labels"]["alertname"] == "StreamMonitorCriticalDrift"
                and a["state"] == "firing"
            ][:1]
            assert alert["labels"]["severity"] == "critical"
            assert alert["labels"]["job"] == "stream-monitor"

            _assert_series_as_documented(url)
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def _assert_series_as_documented(url: str) -> None:
    """Every stream_monitor series Prometheus holds has the documented name and labels
    (plus Prometheus's job and instance), and the key series are there."""
    docs = documented()
    series = api(url, "series", **{"match[]": '{__name__=~"stream_monitor_.+"}'})
    seen: dict[str, set[str]] = {}
    for labels in series:
        name = labels.pop("__name__")
        for suffix in ("_bucket", "_count", "_sum", "_created"):
            if name.endswith(suffix) and name.removesuffix(suffix) in docs:
                name = name.removesuffix(suffix)
        if name.endswith("_created"):  # a counter's creation time: stream_monitor_x_created
            name = name.removesuffix("_created") + "_total"
        assert name in docs, f"{name} is not in docs/metrics.md"
        assert labels.pop("job") in {"stream-monitor", "stream-monitor-trainer"}
        labels.pop("instance")
        labels.pop("le", None)
        assert set(labels) == docs[name][1], f"{name}: {set(labels)} != {docs[name][1]}"
        seen[name] = set(labels)
    for expected in (
        "stream_monitor_records_consumed_total",
        "stream_monitor_joined_total",
        "stream_monitor_drift_signals_total",
        "stream_monitor_model_accuracy_ratio",
        "stream_monitor_feature_drift_score",
        "stream_monitor_consumer_lag_records",
        "stream_monitor_trainer_requests_received_total",
    ):
        assert expected in seen, f"no {expected} series in Prometheus"
