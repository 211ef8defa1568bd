"""Settings of the trainer service: what to train per model and when to promote it.

Same shape and precedence as :mod:`stream_monitor.config` (YAML, then environment,
here with the ``STREAM_MONITOR_TRAINER_`` prefix): shared ``kafka`` and ``topics``
sections, ``defaults`` for every model and partial per-model overrides in ``models``.
``configs/trainer.yaml`` lists every setting with its default.

>>> s = TrainerSettings(models={"churn": {"estimator": {"name": "logistic_regression",
...                                                    "params": {"C": 0.5}}}})
>>> s.for_model("churn").estimator.name, s.for_model("other").estimator.name
('logistic_regression', 'hist_gradient_boosting')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge, RidgeClassifier

from stream_monitor.config import (
    ENV_PREFIX,
    HealthSettings,
    KafkaSettings,
    MetricsServerSettings,
    ServiceSettings,
    StrictModel,
    TopicSettings,
    load_yaml_settings,
)
from stream_monitor.core.performance import Task

TRAINER_ENV_PREFIX = f"{ENV_PREFIX}TRAINER_"

EstimatorName = Literal[
    "logistic_regression",
    "linear_regression",
    "ridge",
    "random_forest",
    "extra_trees",
    "gradient_boosting",
    "hist_gradient_boosting",
]
ESTIMATORS: dict[EstimatorName, dict[Task, type[Any]]] = {
    "logistic_regression": {"classification": LogisticRegression},
    "linear_regression": {"regression": LinearRegression},
    "ridge": {"classification": RidgeClassifier, "regression": Ridge},
    "random_forest": {
        "classification": RandomForestClassifier,
        "regression": RandomForestRegressor,
    },
    "extra_trees": {"classification": ExtraTreesClassifier, "regression": ExtraTreesRegressor},
    "gradient_boosting": {
        "classification": GradientBoostingClassifier,
        "regression": GradientBoostingRegressor,
    },
    "hist_gradient_boosting": {
        "classification": HistGradientBoostingClassifier,
        "regression": HistGradientBoostingRegressor,
    },
}
"""The allow-list: the only estimators a configuration can name, per task. A name
stands for the classifier or the regressor, chosen by the task of the labelled
examples. Only these classes are built, so only their types are ever serialised."""

MetricName = Literal["accuracy", "balanced_accuracy", "f1_macro", "mae", "rmse", "r2"]


class EstimatorSettings(StrictModel):
    name: EstimatorName = "hist_gradient_boosting"
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Constructor parameters; random_state defaults to 0 for reproducibility.",
    )

    @model_validator(mode="after")
    def _known_params(self) -> EstimatorSettings:
        # Names are checked at start; values are checked by scikit-learn at fit time.
        for task, cls in ESTIMATORS[self.name].items():
            unknown = sorted(set(self.params) - set(cls().get_params()))
            if unknown:
                raise ValueError(f"{cls.__name__} ({task}) has no parameter(s) {unknown}")
        return self


class TrainingSettings(StrictModel):
    """Everything that can differ between models."""

    estimator: EstimatorSettings = EstimatorSettings()
    metric: MetricName | None = Field(
        None, description="Holdout metric; default accuracy (classification) or mae (regression)."
    )
    holdout_fraction: float = Field(
        0.2, gt=0, lt=1, description="Most recent share of the examples kept for validation."
    )
    min_train_examples: int = Field(200, gt=0)
    min_holdout_examples: int = Field(50, gt=0)
    max_examples: int = Field(
        200_000, gt=0, description="Only the most recent examples of the window are used."
    )
    promotion_margin: float = Field(
        0.01,
        ge=0,
        description="A candidate must beat production by this much (metric units) to be "
        "promoted; one worse by this much has lost, which escalates.",
    )
    floor: float | None = Field(
        None,
        description="Worst acceptable holdout score (for error metrics: the highest acceptable "
        "error). Production below it with no better candidate escalates. None: no floor.",
    )
    max_retrains: int = Field(
        3, gt=0, description="More requests than this within the budget window escalate."
    )
    retrain_budget_seconds: float = Field(
        86_400.0, gt=0, description="Counted by the requests' arrival at the trainer."
    )
    max_window_seconds: float = Field(
        30 * 86_400.0,
        gt=0,
        description="A request's training window is cut to its most recent this many seconds.",
    )
    categorical_features: frozenset[str] = Field(
        frozenset(), description="Treated as categories even when their values are numbers."
    )
    max_categories: int = Field(
        50, gt=1, description="Per categorical feature; rarer categories are grouped together."
    )
    threads: int = Field(
        1,
        gt=0,
        description="CPU threads a fit may use; more pays off only for large training "
        "sets on cores that the broker and the monitor do not need.",
    )


class TrainerKafkaSettings(KafkaSettings):
    """The monitor's Kafka settings with the trainer's defaults. A subclass, not a
    default instance: a partial ``kafka`` section (a YAML file, or only
    ``..._KAFKA__BOOTSTRAP_SERVERS`` in the environment) must not fall back to the
    monitor's consumer group."""

    group_id: str = Field("stream-monitor-trainer", min_length=1)
    client_id: str = "stream-monitor-trainer"
    max_poll_records: int = Field(
        1, gt=0, description="One request at a time: each may train for minutes."
    )


class TrainerHealthSettings(HealthSettings):
    """The monitor's health settings with the trainer's defaults: a request trains
    without turning the loop, for up to ``max_request_seconds``."""

    max_loop_seconds: float = Field(
        1900.0,
        gt=0,
        description="/healthz fails when the loop has not turned for this long; keep it "
        "above max_request_seconds (a request trains without turning the loop).",
    )


class TrainerSettings(ServiceSettings):
    """Settings of the trainer service."""

    model_config = SettingsConfigDict(
        env_prefix=TRAINER_ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    kafka: TrainerKafkaSettings = TrainerKafkaSettings()
    topics: TopicSettings = TopicSettings()
    models: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="The models this trainer retrains, by model_id, each with its overrides "
        "of `defaults` ({} for none); a request for any other model is rejected.",
    )
    registry_dir: Path = Path("model-registry")
    max_request_seconds: float = Field(
        1800.0,
        gt=0,
        le=2_000_000,  # Kafka holds it in milliseconds, in 32 bits
        description="Longest the requests of one poll (kafka.max_poll_records) may take, "
        "reading, training and publishing, before Kafka gives this trainer's partitions "
        "to another instance.",
    )
    examples_wait_seconds: float = Field(
        60.0,
        gt=0,
        description="How long to wait for the labelled examples a request names to become "
        "readable before rejecting it as incomplete.",
    )
    metrics_port: int = Field(9109, ge=0, le=65535, description="0 disables /metrics.")
    metrics_server: MetricsServerSettings = MetricsServerSettings()
    health: TrainerHealthSettings = TrainerHealthSettings()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    defaults: TrainingSettings = TrainingSettings()

    def for_model(self, model_id: str) -> TrainingSettings:
        """The defaults with this model's overrides applied (any unseen model: the defaults)."""
        return self._overridden(model_id, self.defaults)


def load_trainer_settings(path: str | Path | None = None) -> TrainerSettings:
    """The trainer's settings: :func:`~stream_monitor.config.load_yaml_settings`."""
    return load_yaml_settings(TrainerSettings, path)
