"""Trainer settings: per-model overrides, the estimator allow-list, the environment."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stream_monitor.config import ConfigError
from stream_monitor.trainer.settings import TrainerSettings, load_trainer_settings

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_defaults_and_per_model_overrides() -> None:
    settings = TrainerSettings(
        models={"churn": {"estimator": {"name": "random_forest", "params": {"n_estimators": 50}}}}
    )
    churn = settings.for_model("churn")
    assert (churn.estimator.name, churn.estimator.params) == ("random_forest", {"n_estimators": 50})
    assert churn.holdout_fraction == settings.defaults.holdout_fraction
    assert settings.for_model("anything") == settings.defaults
    assert settings.kafka.group_id == "stream-monitor-trainer"
    assert settings.topics.retrain_requests == "retrain-requests"


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ({"m": {"estimator": {"name": "svm"}}}, "models.m.estimator.name"),
        ({"m": {"estimator": {"name": "ridge", "params": {"n_trees": 3}}}}, "n_trees"),
        ({"m": {"holdout_fraction": 1.5}}, "models.m.holdout_fraction"),
        ({"m": {"promotion_marign": 0.1}}, "promotion_marign"),
    ],
)
def test_bad_overrides_name_the_field(
    models: dict[str, object], message: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=message):
        TrainerSettings(models=models).for_model("m")
    config = tmp_path / "trainer.yaml"
    config.write_text(yaml.safe_dump({"models": models}))
    with pytest.raises(ConfigError, match=message):
        load_trainer_settings(config)


def test_environment_overrides_with_its_own_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_MONITOR_TRAINER_REGISTRY_DIR", "/var/lib/models")
    monkeypatch.setenv("STREAM_MONITOR_TRAINER_KAFKA__BOOTSTRAP_SERVERS", "kafka:9092")
    monkeypatch.setenv("STREAM_MONITOR_TRAINER_DEFAULTS__PROMOTION_MARGIN", "0.05")
    settings = TrainerSettings(registry_dir=Path("ignored"))  # as if from the YAML file
    assert settings.registry_dir == Path("/var/lib/models")
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    assert settings.defaults.promotion_margin == 0.05
    # The rest of a partial kafka section keeps the trainer's defaults, not the monitor's.
    assert (settings.kafka.group_id, settings.kafka.max_poll_records) == (
        "stream-monitor-trainer",
        1,
    )
    partial = TrainerSettings(kafka={"bootstrap_servers": "kafka:9092"})  # from YAML
    assert partial.kafka.group_id == "stream-monitor-trainer"


def test_trainer_yaml_is_exactly_the_defaults() -> None:
    assert load_trainer_settings(CONFIGS / "trainer.yaml") == TrainerSettings()


def test_loader_names_every_bad_field(tmp_path: Path) -> None:
    config = tmp_path / "trainer.yaml"
    config.write_text("metrics_port: -1\ndefaults: {holdout_fraction: 2}\nregistry: x\n")
    with pytest.raises(ConfigError) as error:
        load_trainer_settings(config)
    message = str(error.value)
    assert str(config) in message
    for field in ("metrics_port", "defaults.holdout_fraction", "registry"):
        assert f"  {field}:" in message
    with pytest.raises(ConfigError, match="does not exist"):
        load_trainer_settings(tmp_path / "missing.yaml")
    config.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_trainer_settings(config)
