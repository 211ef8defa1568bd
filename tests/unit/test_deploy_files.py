"""Deployment files: docker-compose.yml, Prometheus config and alerts, Grafana provisioning.

No container runs here. These checks catch what would otherwise show only after
`docker compose up`: a mount of a missing file (Docker would create a directory in
its place), a dependency on a service that does not exist, two services on one host
port, or an alert or panel on a metric the monitor does not export.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream_monitor.core.estimation import Comparison, EstimationStats, WindowEstimate
from stream_monitor.core.features import FeatureStats, Statistic
from stream_monitor.core.monitor import CoreStats, VersionStats
from stream_monitor.metrics import MonitorMetrics

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "configs" / "prometheus"
GRAFANA_DIR = ROOT / "configs" / "grafana"

SCRAPE = {"job", "instance"}  # labels Prometheus adds to every scraped series
_HIST = ("_bucket", "_sum", "_count")

# The monitor's exposition, name -> labels: the contract that alerts and dashboards use.
# test_metric_list_matches_exposition keeps it equal to what stream_monitor/metrics.py serves.
METRICS: dict[str, set[str]] = {
    "stream_monitor_records_consumed_total": {"topic"},
    "stream_monitor_invalid_records_total": {"topic", "reason"},
    "stream_monitor_joined_total": set(),
    "stream_monitor_join_dropped_total": {"kind", "reason"},
    "stream_monitor_join_pending": {"kind"},
    "stream_monitor_drift_signals_total": {"detector", "severity"},
    "stream_monitor_events_produced_total": {"output"},
    "stream_monitor_retrain_requests_total": set(),
    "stream_monitor_model_accuracy_ratio": {"model_id", "model_version"},
    "stream_monitor_model_mae": {"model_id", "model_version"},
    "stream_monitor_model_labelled_events": {"model_id", "model_version"},
    "stream_monitor_features_unmonitored": {"model_id", "model_version"},
    "stream_monitor_feature_drift_score": {"model_id", "model_version", "feature", "test"},
    "stream_monitor_feature_drift_threshold": {"model_id", "model_version", "feature", "test"},
    "stream_monitor_feature_drift_p_value": {"model_id", "model_version", "feature", "test"},
    "stream_monitor_feature_psi": {"model_id", "model_version", "feature"},
    "stream_monitor_feature_drifted": {"model_id", "model_version", "feature"},
    "stream_monitor_feature_missing_ratio": {"model_id", "model_version", "feature"},
    **{
        f"stream_monitor_model_{name}": {"model_id", "model_version"}
        for name in (
            "estimated_accuracy_ratio",
            "estimated_accuracy_lower_ratio",
            "estimated_accuracy_upper_ratio",
            "estimated_precision_ratio",
            "estimated_recall_ratio",
            "estimated_f1_ratio",
            "estimated_roc_auc_ratio",
            "estimated_reference_accuracy_ratio",
            "estimated_drop_confirmed",
            "estimation_error",
            "estimation_mean_absolute_error",
            "estimation_windows_compared",
        )
    },
    "stream_monitor_consumer_lag_records": {"topic"},
    "stream_monitor_checkpoints_total": set(),
    "stream_monitor_state_discarded_total": set(),
    "stream_monitor_commits_refused_total": set(),
    "stream_monitor_undeliverable_outputs_total": set(),
    "stream_monitor_join_store_bytes": set(),
    "stream_monitor_join_store_over_limit": set(),
    "stream_monitor_join_rebuilds_total": set(),
    **{f"stream_monitor_batch_processing_seconds{s}": set() for s in _HIST},
    **{f"stream_monitor_checkpoint_seconds{s}": set() for s in _HIST},
}
METRICS["stream_monitor_batch_processing_seconds_bucket"] = {"le"}
METRICS["stream_monitor_checkpoint_seconds_bucket"] = {"le"}
KNOWN = {**METRICS, "up": set()}


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = _load(ROOT / "docker-compose.yml")
    assert isinstance(data, dict) and data.get("services"), "no services in docker-compose.yml"
    return data


@pytest.fixture(scope="module")
def alert_rules() -> list[dict[str, Any]]:
    groups = _load(PROMETHEUS_DIR / "alerts.yml")["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each short-syntax volume."""
    return [tuple(v.split(":")[:2]) for v in service.get("volumes", [])]


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    return dict(e.split("=", 1) for e in env) if isinstance(env, list) else env


def _command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command", [])
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


# ---- docker-compose.yml ----------------------------------------------------------


def test_compose_services_are_buildable_and_dependencies_exist(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, f"{name}: neither image nor build"
        if "build" in svc:
            context = svc["build"] if isinstance(svc["build"], str) else svc["build"]["context"]
            assert (ROOT / context / "Dockerfile").is_file(), f"{name}: no Dockerfile"
        deps = svc.get("depends_on", {})
        for dep in deps:
            assert dep in services, f"{name} depends on unknown service {dep}"
            if isinstance(deps, dict) and deps[dep]["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health: none"


def test_compose_mounts_exist(compose: dict[str, Any]) -> None:
    named = set(compose.get("volumes") or {})
    for name, svc in compose["services"].items():
        for source, _target in _mounts(svc):
            if source.startswith("./"):
                # A missing source would be created as an empty directory by Docker.
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repo"
            else:
                assert source in named, f"{name} uses undeclared volume {source}"


def test_compose_config_files_given_to_commands_are_mounted(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        cmd = _command(svc)
        for i, arg in enumerate(cmd[:-1]):
            if arg == "--config":
                targets = {target for _source, target in _mounts(svc)}
                assert cmd[i + 1] in targets, f"{name}: {cmd[i + 1]} is not mounted"


def test_compose_host_ports_are_unique(compose: dict[str, Any]) -> None:
    # "127.0.0.1:9092:9092" or "9092:9092": the host port is the second-to-last part.
    host_ports = [
        str(p).split(":")[-2] for svc in compose["services"].values() for p in svc.get("ports", [])
    ]
    assert [p for p, n in Counter(host_ports).items() if n > 1] == []


def test_compose_clients_use_an_advertised_kafka_listener(compose: dict[str, Any]) -> None:
    services = compose["services"]
    advertised = _env(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    internal = {entry.split("://")[1] for entry in advertised.split(",")}
    used = []
    for svc in services.values():
        used += [v for k, v in _env(svc).items() if k.endswith("BOOTSTRAP_SERVERS")]
        cmd = _command(svc)
        used += [cmd[i + 1] for i, arg in enumerate(cmd[:-1]) if arg == "--bootstrap"]
    assert used, "no service is told where Kafka is"
    for address in used:
        assert address in internal and address.startswith("kafka:"), address


# ---- Prometheus --------------------------------------------------------------------

_GROUPING = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)"
_KEYWORDS = {"and", "or", "unless", "offset", "bool", "inf", "nan"}


def _selectors(expr: str) -> tuple[list[tuple[str, set[str]]], set[str]]:
    """The (metric, matched label names) of each selector in a PromQL expression,
    and the label names used in by/on/... clauses."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values cannot look like names
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges, including [$__rate_interval]
    grouping = {g.strip() for m in re.findall(_GROUPING, expr) for g in m.split(",") if g.strip()}
    expr = re.sub(_GROUPING, "", expr)
    found = []
    for m in re.finditer(r"(?<![\w.$])([a-zA-Z_:][\w:]*)\s*(\{[^}]*\})?(\s*\()?", expr):
        name, matchers, call = m.groups()
        if (call and not matchers) or name in _KEYWORDS:
            continue  # a function or an aggregation, or a keyword
        found.append((name, set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers or ""))))
    return found, grouping


def _check_expr(expr: str, where: str) -> None:
    selectors, grouping = _selectors(expr)
    assert selectors, f"{where}: no metric found in {expr!r}"
    labels = set(SCRAPE)
    for name, matched in selectors:
        assert name in KNOWN, f"{where}: {name} is not a metric the monitor exports"
        assert matched <= KNOWN[name] | SCRAPE, f"{where}: {name} has no label {matched}"
        labels |= KNOWN[name]
    assert grouping <= labels, f"{where}: grouping by unknown labels {grouping - labels}"


def test_selector_parser() -> None:
    found, grouping = _selectors(
        'sum by (job) (increase(stream_monitor_drift_signals_total{severity="x{y}"}[5m])) > 0 '
        "or histogram_quantile(0.95, rate(a_bucket[$__rate_interval])) unless b offset 10m"
    )
    assert found == [
        ("stream_monitor_drift_signals_total", {"severity"}),
        ("a_bucket", set()),
        ("b", set()),
    ]
    assert grouping == {"job"}


_ESTIMATION = EstimationStats(
    ready=True,
    calibration_pairs=2000,
    reference=0.9,
    last=WindowEstimate(1, 1000, 1000, 0.85, 0.83, 0.87, 0.0, 1.0, 0.8, 0.7, 0.75, 0.9),
    drifted=True,
    compared=1,
    mean_abs_error=0.01,
    recent=(Comparison(1, 1000, 0.88, 0.86, 0.9, 0.87, 1000, 0.0, 1.0),),
)


def test_metric_list_matches_exposition() -> None:
    metrics = MonitorMetrics()
    metrics.core.stats = CoreStats(
        invalid=Counter({("predictions", "schema"): 1}),
        joined=1,
        dropped=Counter({("prediction", "ttl"): 1}),
        pending={"prediction": 1, "label": 0},
        signals=Counter({("adwin", "drift"): 1}),
        outputs=Counter({"retrain_requests": 1}),
        versions={
            ("clf", "1"): VersionStats("classification", 0.9, 10, 0, 0, _ESTIMATION),
            ("reg", "1"): VersionStats("regression", 1.5, 10, 0, 2),
        },
        features={
            ("clf", "1", "x"): FeatureStats(
                kind="numeric",
                drifted=("numeric",),
                tests={"ks": Statistic(0.3, 0.1, 1e-9), "adwin": Statistic(1.2, None, None)},
                psi=0.4,
                missing_rate=0.0,
                reference_missing_rate=0.0,
            )
        },
    )
    metrics.consumed.labels("predictions").inc()
    metrics.lag.labels("predictions").set(0)
    metrics.batch_seconds.observe(0.1)
    metrics.checkpoints.inc()
    metrics.checkpoint_seconds.observe(0.1)
    exposed: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            if not sample.name.endswith("_created"):  # client-library timestamps
                exposed.setdefault(sample.name, set()).update(sample.labels)
    assert exposed == METRICS


def test_prometheus_scrapes_compose_services(compose: dict[str, Any]) -> None:
    config = _load(PROMETHEUS_DIR / "prometheus.yml")
    services = compose["services"]
    jobs = {}
    for job in config["scrape_configs"]:
        targets = [t for sc in job["static_configs"] for t in sc["targets"]]
        jobs[job["job_name"]] = targets
        assert job.get("scrape_interval", config["global"]["scrape_interval"]) == "5s"
    assert jobs == {"stream-monitor": ["monitor:9108"], "stream-monitor-trainer": ["trainer:9109"]}
    for host, port in (t.split(":") for targets in jobs.values() for t in targets):
        assert host in services, f"scrape target {host} is not a compose service"
        assert any(str(p).endswith(f":{port}") for p in services[host].get("ports", []))
    mounted = {source for source, _target in _mounts(services["prometheus"])}
    for rule_file in config["rule_files"]:  # relative to prometheus.yml
        assert (PROMETHEUS_DIR / rule_file).is_file(), rule_file
        assert f"./configs/prometheus/{rule_file}" in mounted, f"{rule_file} is not mounted"


def test_alert_rules_are_complete_and_use_known_metrics(
    alert_rules: list[dict[str, Any]],
) -> None:
    names = [rule["alert"] for rule in alert_rules]
    assert len(names) == len(set(names)), "duplicate alert names"
    for rule in alert_rules:
        name = rule["alert"]
        assert rule.get("expr") and rule.get("for"), f"{name}: expr and for are required"
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        _check_expr(rule["expr"], name)


# Behaviour of the alerts, with promtool's rule unit tests (one sample a minute, "x" =
# repeat, "_" = no sample). Annotations are stripped, so wording can change freely.
def _series(metric: str, **labels: str) -> str:
    labels = {"job": "stream-monitor", "instance": "monitor:9108", **labels}
    return metric + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


_ACCURACY = _series("stream_monitor_model_accuracy_ratio", model_id="m", model_version="1")
_LABELLED = _series("stream_monitor_model_labelled_events", model_id="m", model_version="1")
_ESTIMATED = _series(
    "stream_monitor_model_estimated_accuracy_ratio", model_id="m", model_version="1"
)
_DROP_CONFIRMED = _series(
    "stream_monitor_model_estimated_drop_confirmed", model_id="m", model_version="1"
)
_CRITICAL = _series("stream_monitor_drift_signals_total", detector="adwin", severity="critical")
_DRIFT = _series("stream_monitor_drift_signals_total", detector="adwin", severity="drift")
_INVALID = _series("stream_monitor_invalid_records_total", topic="predictions", reason="schema")
_LAG = _series("stream_monitor_consumer_lag_records", topic="predictions")
_CONSUMED = _series("stream_monitor_records_consumed_total", topic="predictions")
_JOB = {"job": "stream-monitor"}
_INSTANCE = {**_JOB, "instance": "monitor:9108"}
# (alert, input series, evaluated at, labels of the expected alert or None for no alert)
ALERT_CASES: list[tuple[str, dict[str, str], str, dict[str, str] | None]] = [
    (
        "StreamMonitorModelAccuracyLow",
        {_ACCURACY: "0.7x40", _LABELLED: "1000+50x40"},
        "30m",
        {**_INSTANCE, "model_id": "m", "model_version": "1", "severity": "warning"},
    ),
    # A version that no longer receives labels keeps its last accuracy: no alert.
    ("StreamMonitorModelAccuracyLow", {_ACCURACY: "0.7x40", _LABELLED: "5000x40"}, "30m", None),
    (
        "StreamMonitorEstimatedAccuracyDrop",
        {_ESTIMATED: "0.8x30", _DROP_CONFIRMED: "0x10 1x20"},
        "15m",
        {**_INSTANCE, "model_id": "m", "model_version": "1", "severity": "warning"},
    ),
    # Estimated accuracy low but no confirmed drop (as it was on the reference): no alert.
    (
        "StreamMonitorEstimatedAccuracyDrop",
        {_ESTIMATED: "0.6x30", _DROP_CONFIRMED: "0x30"},
        "15m",
        None,
    ),
    # The first critical signal of the process: the series appears at 1.
    (
        "StreamMonitorCriticalDrift",
        {_CRITICAL: "_x20 1x20"},
        "25m",
        {**_INSTANCE, "detector": "adwin", "severity": "critical"},
    ),
    ("StreamMonitorCriticalDrift", {_DRIFT: "_x20 1x20"}, "25m", None),
    (
        "StreamMonitorRetrainsRepeated",
        {_series("stream_monitor_retrain_requests_total"): "0+1x4 4x30"},
        "15m",
        {**_JOB, "severity": "warning"},
    ),
    (
        "StreamMonitorDeadLetters",
        {_INVALID: "_x5 1+1x30"},
        "20m",
        {**_JOB, "topic": "predictions", "reason": "schema", "severity": "warning"},
    ),
    # One stray bad record is not an incident.
    ("StreamMonitorDeadLetters", {_INVALID: "_x5 1x30"}, "20m", None),
    (
        "StreamMonitorConsumerLagHigh",
        {_LAG: "10000+1000x40"},
        "25m",
        {**_JOB, "topic": "predictions", "severity": "warning"},
    ),
    # Nothing ever consumed (no counter series yet) while records wait.
    (
        "StreamMonitorNotConsuming",
        {_LAG: "500x20"},
        "10m",
        {**_JOB, "topic": "predictions", "severity": "critical"},
    ),
    ("StreamMonitorNotConsuming", {_LAG: "500x20", _CONSUMED: "0+100x20"}, "10m", None),
    ("StreamMonitorDown", {_series("up"): "0x10"}, "5m", {**_INSTANCE, "severity": "critical"}),
]


def test_alerts_fire_as_intended_promtool(tmp_path: Path) -> None:
    # scripts/test installs promtool (Debian's prometheus package); no silent skip.
    assert shutil.which("promtool"), "promtool is missing: run scripts/test, which installs it"
    groups = _load(PROMETHEUS_DIR / "alerts.yml")["groups"]
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations")
    rules = tmp_path / "alerts.yml"
    rules.write_text(yaml.safe_dump({"groups": groups}), encoding="utf-8")
    tests = [
        {
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in series.items()],
            "alert_rule_test": [
                {
                    "eval_time": at,
                    "alertname": alert,
                    "exp_alerts": [{"exp_labels": labels}] if labels else [],
                }
            ],
        }
        for alert, series, at, labels in ALERT_CASES
    ]
    spec = tmp_path / "tests.yml"
    spec.write_text(yaml.safe_dump({"rule_files": [str(rules)], "tests": tests}), "utf-8")
    for args in (
        ["check", "rules", str(PROMETHEUS_DIR / "alerts.yml")],
        ["test", "rules", str(spec)],
    ):
        run = subprocess.run(["promtool", *args], capture_output=True, text=True, check=False)
        assert run.returncode == 0, run.stdout + run.stderr


# ---- Grafana -----------------------------------------------------------------------


def test_grafana_provisioning_and_dashboard(compose: dict[str, Any]) -> None:
    mounts = dict(_mounts(compose["services"]["grafana"]))
    provisioning = GRAFANA_DIR / "provisioning"
    assert mounts["./configs/grafana/provisioning"] == "/etc/grafana/provisioning"
    (datasource,) = _load(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert datasource["url"] == "http://prometheus:9090"
    (provider,) = _load(provisioning / "dashboards" / "dashboards.yml")["providers"]
    assert mounts["./configs/grafana/dashboards"] == provider["options"]["path"]

    dashboard = json.loads((GRAFANA_DIR / "dashboards" / "stream-monitor.json").read_text())
    assert dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            _check_expr(target["expr"], f"panel {panel['title']!r}")
