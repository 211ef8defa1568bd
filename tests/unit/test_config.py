"""Settings: defaults, YAML, environment overrides, per-model overrides, and errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stream_monitor.config import (
    ConfigError,
    ModelSettings,
    MonitorSettings,
    PolicySettings,
    load_settings,
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's or CI's own STREAM_MONITOR_* variables must not leak in."""
    for name in list(os.environ):
        if name.upper().startswith("STREAM_MONITOR_"):
            monkeypatch.delenv(name)


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "monitor.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _error(path: Path | str | None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    return str(caught.value)


# ---- sources and precedence -----------------------------------------------------------


def test_defaults_without_a_file() -> None:
    settings = load_settings()
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert settings.topics.retrain_requests == "retrain-requests"
    assert settings.topics.ground_truth == "ground-truth"
    assert settings.join.ttl_seconds == 7 * 86_400  # days: real labels come late
    assert settings.defaults == ModelSettings()
    assert settings.models == {}


def test_empty_file_means_the_defaults(tmp_path: Path) -> None:
    assert load_settings(_yaml(tmp_path, "")) == load_settings()


def test_yaml_file_sets_nested_fields_and_keeps_the_other_defaults(tmp_path: Path) -> None:
    path = _yaml(
        tmp_path,
        """
kafka:
  bootstrap_servers: broker-1:9092,broker-2:9092
  group_id: monitor-eu
topics:
  dead_letter: monitor.dlq
defaults:
  policy:
    cooldown_seconds: 600
""",
    )
    settings = load_settings(path)
    assert settings.kafka.bootstrap_servers == "broker-1:9092,broker-2:9092"
    assert settings.kafka.group_id == "monitor-eu"
    assert settings.kafka.max_poll_records == 2000
    assert settings.topics.dead_letter == "monitor.dlq"
    assert settings.topics.predictions == "predictions"
    assert settings.defaults.policy.cooldown_seconds == 600
    assert settings.defaults.policy.min_labelled == PolicySettings().min_labelled


def test_environment_overrides_the_yaml_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _yaml(tmp_path, "kafka:\n  bootstrap_servers: from-yaml:9092\n  group_id: g\n")
    monkeypatch.setenv("STREAM_MONITOR_KAFKA__BOOTSTRAP_SERVERS", "from-env:9092")
    settings = load_settings(path)
    assert settings.kafka.bootstrap_servers == "from-env:9092"
    assert settings.kafka.group_id == "g"  # the file's sibling setting survives


def test_environment_overrides_a_nested_detector_threshold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _yaml(tmp_path, "defaults:\n  policy:\n    min_labelled: 50\n")
    monkeypatch.setenv("STREAM_MONITOR_DEFAULTS__POLICY__COOLDOWN_SECONDS", "60")
    policy = load_settings(path).defaults.policy
    assert (policy.cooldown_seconds, policy.min_labelled) == (60, 50)


def test_environment_alone_overrides_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_MONITOR_METRICS_PORT", "0")
    monkeypatch.setenv("STREAM_MONITOR_TOPICS__PREDICTIONS", "prod.predictions")
    settings = load_settings()
    assert (settings.metrics_port, settings.topics.predictions) == (0, "prod.predictions")


# ---- per-model overrides ---------------------------------------------------------------


def test_per_model_override_is_deep_merged_over_the_defaults(tmp_path: Path) -> None:
    path = _yaml(
        tmp_path,
        """
defaults:
  policy:
    min_labelled: 500
    cooldown_seconds: 7200
models:
  m1:
    policy:
      cooldown_seconds: 60
    performance:
      task: regression
""",
    )
    model = load_settings(path).for_model("m1")
    assert model.policy.cooldown_seconds == 60
    assert model.policy.min_labelled == 500  # from the file's defaults
    assert model.policy.min_accuracy_drop == PolicySettings().min_accuracy_drop  # built in
    assert model.performance.task == "regression"
    assert model.performance.window_size == 1000


def test_a_model_without_an_override_gets_the_defaults(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "models:\n  m1:\n    policy:\n      cooldown_seconds: 60\n")
    settings = load_settings(path)
    assert settings.for_model("never-configured") == settings.defaults


# ---- errors: one ConfigError naming the field ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "field", "expected"),
    [
        ("kafka:\n  bootstrap_server: b:9092\n", "kafka.bootstrap_server", "Extra inputs"),
        ("kafka:\n  max_poll_records: lots\n", "kafka.max_poll_records", "valid integer"),
        ("kafka:\n  max_poll_records: -5\n", "kafka.max_poll_records", "greater than 0"),
        ("metrics_port: 70000\n", "metrics_port", "less than or equal to 65535"),
        ("log_level: LOUD\n", "log_level", "DEBUG"),
        ("join:\n  ttl_seconds: 0\n", "join.ttl_seconds", "greater than 0"),
        ("topic:\n  predictions: p\n", "topic", "Extra inputs"),
        ("kafka: 5\n", "kafka", "valid dictionary"),
    ],
    ids=[
        "misspelt",
        "wrong-type",
        "negative",
        "out-of-range",
        "choice",
        "zero",
        "section",
        "scalar",
    ],
)
def test_bad_setting_names_its_field_and_what_is_expected(
    tmp_path: Path, text: str, field: str, expected: str
) -> None:
    message = _error(_yaml(tmp_path, text))
    assert f"{field}: " in message
    assert expected in message
    assert "monitor.yaml" in message


def test_every_bad_field_is_named_in_the_one_error(tmp_path: Path) -> None:
    message = _error(_yaml(tmp_path, "kafka:\n  max_poll_records: 0\n  poll_timeout_ms: -1\n"))
    assert "kafka.max_poll_records" in message
    assert "kafka.poll_timeout_ms" in message


@pytest.mark.parametrize(
    ("text", "field", "expected"),
    [
        (
            "models:\n  m1:\n    policy:\n      cooldown_seconds: -1\n",
            "models.m1.policy.cooldown_seconds",
            "greater than or equal to 0",
        ),
        (
            "models:\n  m1:\n    policy:\n      cooldown_secs: 60\n",
            "models.m1.policy.cooldown_secs",
            "Extra inputs",
        ),
        (
            "models:\n  m1:\n    performance:\n      task: clustering\n",
            "models.m1.performance.task",
            "classification",
        ),
    ],
    ids=["negative", "misspelt", "choice"],
)
def test_bad_per_model_override_names_its_full_path(
    tmp_path: Path, text: str, field: str, expected: str
) -> None:
    message = _error(_yaml(tmp_path, text))
    assert f"{field}: " in message
    assert expected in message


def test_bad_environment_value_names_its_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_MONITOR_KAFKA__MAX_POLL_RECORDS", "many")
    message = _error(None)
    assert "kafka.max_poll_records: " in message
    assert "many" in message


def test_critical_accuracy_drop_must_exceed_the_minimum(tmp_path: Path) -> None:
    text = "defaults:\n  policy:\n    min_accuracy_drop: 0.3\n    critical_accuracy_drop: 0.3\n"
    message = _error(_yaml(tmp_path, text))
    assert "defaults.policy" in message
    assert "critical_accuracy_drop must be greater than min_accuracy_drop" in message


def test_critical_mae_increase_must_exceed_the_minimum() -> None:
    with pytest.raises(ValueError, match="critical_mae_increase must be greater"):
        PolicySettings(min_mae_increase=0.5, critical_mae_increase=0.4)


def test_per_model_critical_below_the_default_minimum_is_refused(tmp_path: Path) -> None:
    text = "models:\n  m1:\n    policy:\n      critical_accuracy_drop: 0.01\n"
    message = _error(_yaml(tmp_path, text))
    assert "models.m1.policy" in message
    assert "critical_accuracy_drop must be greater than min_accuracy_drop" in message


def test_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    message = _error(path)
    assert str(path) in message
    assert "does not exist" in message


def test_directory_is_not_a_config_file(tmp_path: Path) -> None:
    assert "not a file" in _error(tmp_path)


@pytest.mark.parametrize("text", ["- kafka\n- topics\n", "just text\n", "42\n"])
def test_yaml_that_is_not_a_mapping_is_refused(tmp_path: Path, text: str) -> None:
    assert "must hold a mapping" in _error(_yaml(tmp_path, text))


def test_invalid_yaml_is_refused_with_its_position(tmp_path: Path) -> None:
    message = _error(_yaml(tmp_path, "kafka:\n  group_id: [unclosed\n"))
    assert "is not valid YAML" in message
    assert "line" in message


def test_settings_are_frozen() -> None:
    settings = MonitorSettings()
    with pytest.raises(ValueError):
        settings.metrics_port = 1  # type: ignore[misc]
