"""Settings: pydantic models loaded from YAML, overridden by environment variables.

Precedence, highest first: environment (``STREAM_MONITOR_`` prefix, ``__`` between
nested names, e.g. ``STREAM_MONITOR_KAFKA__BOOTSTRAP_SERVERS``), the YAML file,
the defaults below. Everything is validated at start; :func:`load_settings` turns a
validation failure into one :class:`ConfigError` whose message names each bad field
and what it expects.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

ENV_PREFIX = "STREAM_MONITOR_"
_Defaults = TypeVar("_Defaults", bound=BaseModel)


class ConfigError(Exception):
    """A setting is missing or wrong; the message says which and what is expected."""


class StrictModel(BaseModel):
    # A misspelt key is an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid", frozen=True)


SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
SECRET_FIELDS = frozenset({"sasl_password", "ssl_key_password"})
"""Settings whose values never appear in a message, a log line or a repr."""


class KafkaSettings(StrictModel):
    """Where the brokers are, who the client is, and how it proves it.

    Secrets are :class:`~pydantic.SecretStr` (shown as ``**********``) and come from the
    environment (``STREAM_MONITOR_KAFKA__SASL_PASSWORD``) or from a file
    (``sasl_password_file``, as Kubernetes mounts a secret), read when a client is made.

    >>> kafka = KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
    ...                       sasl_username="app", sasl_password="s3cret")
    >>> "s3cret" in repr(kafka), kafka.client()["sasl_plain_password"]
    (False, 's3cret')
    """

    bootstrap_servers: str = Field("127.0.0.1:9092", min_length=1)
    group_id: str = Field("stream-monitor", min_length=1)
    client_id: str = "stream-monitor"
    max_poll_records: int = Field(2000, gt=0)
    poll_timeout_ms: int = Field(500, gt=0)
    create_topics: bool = Field(
        True, description="Create missing topics at start (partitions below)."
    )
    partitions: int = Field(3, gt=0, description="Partition count for topics created at start.")
    bootstrap_timeout_ms: int = Field(
        30_000,
        gt=0,
        description="How long a client waits for the brokers to answer (they may be "
        "starting) before the service stops with the reason.",
    )
    session_timeout_ms: int = Field(
        45_000,
        ge=1000,
        description="A consumer silent this long leaves the group and its partitions move; "
        "within the broker's group.min/max.session.timeout.ms.",
    )
    heartbeat_interval_ms: int = Field(
        3000, gt=0, description="How often a consumer tells the group it is alive."
    )
    group_instance_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description="Static membership: a stable name per instance (the pod name of a "
        "StatefulSet). A restart under the same name gets its partitions back at once "
        "instead of after session_timeout_ms.",
    )
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = Field(
        None, description="A file holding the SASL password (instead of sasl_password)."
    )
    ssl_cafile: Path | None = Field(
        None, description="PEM CA certificates to trust; None: the system's trust store."
    )
    ssl_check_hostname: bool = Field(
        True, description="The broker's certificate must name the host connected to."
    )
    ssl_certfile: Path | None = Field(
        None, description="PEM client certificate (mutual TLS), may hold the key too."
    )
    ssl_keyfile: Path | None = Field(None, description="PEM private key of ssl_certfile.")
    ssl_key_password: SecretStr | None = None
    ssl_key_password_file: Path | None = None

    @model_validator(mode="after")
    def _security_complete(self) -> KafkaSettings:
        self._check_security()
        try:
            self.ssl_context()  # unreadable certificates: an error at start, not at connect
        except ConfigError as exc:
            raise ValueError(str(exc).removeprefix("kafka.")) from None
        return self

    def _check_security(self) -> None:
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be below session_timeout_ms")
        for name in ("sasl_password", "ssl_key_password"):
            if getattr(self, name) is not None and getattr(self, f"{name}_file") is not None:
                raise ValueError(f"give {name} or {name}_file, not both")
        for name in (
            "sasl_password_file",
            "ssl_key_password_file",
            "ssl_cafile",
            "ssl_certfile",
            "ssl_keyfile",
        ):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: {path} does not exist or is not a file")
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ValueError("ssl_keyfile needs ssl_certfile (the client certificate)")
        if self.uses_sasl and (self.sasl_username is None or not self._has_sasl_password):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_username and "
                "sasl_password (or sasl_password_file)"
            )

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol.endswith("SSL")

    @property
    def _has_sasl_password(self) -> bool:
        return self.sasl_password is not None or self.sasl_password_file is not None

    def secret(self, name: Literal["sasl_password", "ssl_key_password"]) -> str | None:
        """A secret's value, from the setting or from its file (read now, so a rotated
        secret is used by the next client)."""
        value: SecretStr | None = getattr(self, name)
        if value is not None:
            return value.get_secret_value()
        path: Path | None = getattr(self, f"{name}_file")
        if path is None:
            return None
        try:
            # A mounted secret often ends with a newline that is not part of it.
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"kafka.{name}_file: cannot read {path}: {exc.strerror}") from None

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context every client of this service uses (None without TLS): TLS 1.2
        or later, ``ssl_cafile`` (else the system's CAs), host name checking as set, the
        client certificate for mutual TLS."""
        if not self.uses_tls:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = self.ssl_check_hostname
        try:
            if self.ssl_cafile is not None:
                context.load_verify_locations(cafile=str(self.ssl_cafile))
            else:
                context.load_default_certs()
            if self.ssl_certfile is not None:
                context.load_cert_chain(
                    str(self.ssl_certfile),
                    None if self.ssl_keyfile is None else str(self.ssl_keyfile),
                    self.secret("ssl_key_password"),
                )
        except ssl.SSLError as exc:
            raise ConfigError(
                "kafka.ssl_cafile, ssl_certfile or ssl_keyfile: not usable PEM certificates "
                f"or key (or a wrong ssl_key_password): {exc.reason or exc}"
            ) from None
        return context

    def client(self) -> dict[str, Any]:
        """What every Kafka client of a service is given: where, who it is, and how it
        proves it (TLS and SASL settings)."""
        config: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "bootstrap_timeout_ms": self.bootstrap_timeout_ms,
            "security_protocol": self.security_protocol,
        }
        if self.uses_tls:
            config["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            config["sasl_mechanism"] = self.sasl_mechanism
            config["sasl_plain_username"] = self.sasl_username
            config["sasl_plain_password"] = self.secret("sasl_password")
        return config

    def group(self) -> dict[str, Any]:
        """What a consumer in the service's consumer group is given besides
        :meth:`client`: the group, how fast a dead member is noticed, static membership."""
        return {
            "group_id": self.group_id,
            "session_timeout_ms": self.session_timeout_ms,
            "heartbeat_interval_ms": self.heartbeat_interval_ms,
            "group_instance_id": self.group_instance_id,
        }


class TopicSettings(StrictModel):
    predictions: str = "predictions"
    ground_truth: str = "ground-truth"
    drift_events: str = "drift-events"
    retrain_requests: str = "retrain-requests"
    escalations: str = "escalations"
    labelled_examples: str = "labelled-examples"
    dead_letter: str = "dead-letter"
    monitor_state: str = "monitor-state"
    model_events: str = "model-events"


class JoinSettings(StrictModel):
    ttl_seconds: float = Field(
        7 * 86_400.0, gt=0, description="Event time a prediction waits for its label."
    )
    max_skew_seconds: float = Field(
        7 * 86_400.0,
        ge=0,
        description="Expiry follows the slower of the two inputs in event time (a backlog "
        "read with one topic ahead loses no label), but an input idle or behind by more "
        "than this holds it back no further: the store keeps at most ttl + this of traffic.",
    )
    store_dir: str | None = Field(
        None,
        description="Directory of the local store of pending predictions and early labels "
        "(RocksDB). Give each instance its own persistent one; unset: a temporary directory, "
        "and every start rebuilds the pending entries from the input topics.",
    )
    store_cache_mb: int = Field(
        64, ge=8, description="Memory of the store's block cache; its write buffers add half."
    )
    max_disk_bytes: int = Field(
        0,
        ge=0,
        description="Warn (log, metric, escalation event) when the store's files grow past "
        "this; nothing is evicted. 0: no limit.",
    )


class PerformanceSettings(StrictModel):
    task: Literal["auto", "classification", "regression"] = "auto"
    window_size: int = Field(1000, gt=0, description="Events in the windowed accuracy / MAE.")
    adwin_delta: float = Field(0.002, gt=0, lt=1)
    page_hinkley_delta: float = Field(0.05, ge=0)
    page_hinkley_threshold: float = Field(100.0, gt=0)
    page_hinkley_min_instances: int = Field(30, gt=0)
    page_hinkley_alpha: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Forgetting factor; river's 0.9999 made the statistic wander into "
        "false alarms on long stationary streams.",
    )
    reference_size: int = Field(
        500,
        ge=30,
        description="Regression: first errors of a version whose MAE scales the errors the "
        "detectors see, so they behave alike whatever the target's units.",
    )
    error_clip: float = Field(
        4.0,
        gt=0,
        description="Regression: errors are divided by this many reference MAEs and clipped "
        "at 1 before the detectors (ADWIN's bound is written for values in [0, 1]).",
    )


class FeatureDriftSettings(StrictModel):
    """Feature and prediction drift of one model (see ``core/features.py``).

    Defaults were measured with ``benchmarks/detection.py`` and the stationary-stream
    unit tests, not guessed: see the README.
    """

    reference_size: int = Field(
        1000, ge=100, description="First events of a version that form its reference."
    )
    window_size: int = Field(
        500, ge=50, description="Recent events compared with the reference (<= reference_size)."
    )
    test_every: int = Field(
        100, gt=0, description="Events between test rounds (<= window_size); signals come then."
    )
    expected_run_time: float = Field(
        100_000.0,
        gt=0,
        description="Tolerated mean events between false alarms on a stationary stream, "
        "all columns of the model together.",
    )
    max_features: int = Field(
        50,
        gt=0,
        description="Cap on monitored columns (and metric labels): the prediction, then input "
        "features by name, then class scores; the rest are counted, not tested.",
    )
    max_categories: int = Field(
        20, gt=0, description="Most frequent reference categories kept apart; the rest pooled."
    )
    psi_bins: int = Field(10, ge=2, description="Reference-quantile bins of a numeric column.")
    psi_epsilon: float = Field(1e-4, gt=0, lt=1, description="Floor of a bin share in PSI.")
    adwin_delta: float | None = Field(
        None, gt=0, lt=1, description="ADWIN's delta; None: the tests' level from the ERT."
    )
    recovery_p_value: float = Field(
        0.05, gt=0, lt=1, description="A drifted column re-arms when its tests' p exceed this."
    )
    breakage_missing_share: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Broken pipeline: an input missing in at least this share of the window "
        "(and in at most half of the reference).",
    )
    breakage_scale_factor: float = Field(
        10.0,
        gt=1,
        description="Broken pipeline: a numeric input whose spread around the reference "
        "median grew or shrank by this factor (a unit change).",
    )
    breakage_unseen_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Broken pipeline: a categorical input with at least this share of values "
        "never seen in the reference (renamed categories).",
    )

    @model_validator(mode="after")
    def _sizes_fit(self) -> FeatureDriftSettings:
        if self.window_size > self.reference_size:
            raise ValueError("window_size must not exceed reference_size")
        if self.test_every > self.window_size:
            raise ValueError("test_every must not exceed window_size")
        if self.expected_run_time < 10 * self.test_every:
            raise ValueError("expected_run_time must be at least 10 * test_every")
        return self


class PolicySettings(StrictModel):
    """How signals become decisions (see ``core/policy.py`` and docs/decisions.md)."""

    min_labelled: int = Field(
        200, ge=0, description="Joined events per version before a drift can ask for a retrain."
    )
    confidence: float = Field(
        0.95,
        gt=0.5,
        lt=1,
        description="Confidence of the intervals around before, after and the change; "
        "severities are decided on the conservative end of the change's interval.",
    )
    min_observations: int = Field(
        100,
        ge=2,
        description="Labelled events on each side of a change (before and after) below "
        "which no decision is taken: the signal waits for more labels.",
    )
    max_wait_labels: int = Field(
        5000,
        ge=0,
        description="Labels an unclear performance signal waits for before it is settled "
        "as a warning (or a retrain, if its drop is real but its size still unclear).",
    )
    min_accuracy_drop: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Classification: the accuracy drop's lower confidence bound that asks "
        "for a retrain.",
    )
    critical_accuracy_drop: float = Field(
        0.25,
        gt=0,
        le=1,
        description="Classification: the accuracy drop's lower confidence bound beyond "
        "which retraining is not trusted: a human is paged.",
    )
    min_mae_increase: float = Field(
        0.1, ge=0, description="Regression: lower bound of the relative MAE increase (0.1 = +10 %)."
    )
    critical_mae_increase: float = Field(
        1.0, gt=0, description="Regression: lower bound that pages a human (1.0 = doubled)."
    )
    retrain_budget: int = Field(
        2,
        ge=1,
        description="Retrain requests per model version; a further drift of a version that "
        "is still serving after that many (retrains rejected or not helping) escalates.",
    )
    cooldown_seconds: float = Field(3600.0, ge=0, description="Event time between episodes.")
    feature_drift_severity: Literal["warning", "drift"] = Field(
        "warning",
        description="Feature or prediction drift alone: a warning, or a drift that asks "
        "for a retrain. With a real performance drop it is always a drift.",
    )
    retrain_after_labels: int = Field(
        500,
        ge=0,
        description="Labelled events to wait for after a drift before asking for a retrain, "
        "so the training window holds the new behaviour (0: ask at once).",
    )
    training_window_seconds: float = Field(
        7 * 86_400.0, gt=0, description="Labelled data a retrain request asks to train on."
    )

    @model_validator(mode="after")
    def _critical_above_normal(self) -> PolicySettings:
        if self.critical_accuracy_drop <= self.min_accuracy_drop:
            raise ValueError("critical_accuracy_drop must be greater than min_accuracy_drop")
        if self.critical_mae_increase <= self.min_mae_increase:
            raise ValueError("critical_mae_increase must be greater than min_mae_increase")
        return self


class EstimationSettings(StrictModel):
    """Estimated performance from a classifier's own scores (see ``core/estimation.py``)."""

    enabled: bool = Field(
        True, description="Estimate accuracy from calibrated scores (versions that send scores)."
    )
    calibration_size: int = Field(
        2000, ge=100, description="First labelled pairs with scores that fit the calibrator."
    )
    method: Literal["isotonic", "histogram"] = Field(
        "isotonic", description="Calibration map: isotonic regression or histogram binning."
    )
    bins: int = Field(20, ge=2, description="Equal-count score bins of the histogram method.")
    window_size: int = Field(
        1000, ge=100, description="Predictions in an estimate (and in a compared window)."
    )
    interval_level: float = Field(
        0.95, gt=0, lt=1, description="Coverage of the interval around an estimate."
    )
    positive_class: str | None = Field(
        None,
        description="Binary models: the class whose precision and recall are estimated "
        "(None: the last of the two score keys in sorted order, e.g. '1', 'true', 'yes').",
    )
    retrain_on_drop: bool = Field(
        False,
        description="A confirmed estimated drop of at least policy.min_accuracy_drop asks "
        "for a retrain (off: it is a warning until the labels confirm it).",
    )


class ModelSettings(StrictModel):
    """Everything that can differ between models."""

    performance: PerformanceSettings = PerformanceSettings()
    features: FeatureDriftSettings = FeatureDriftSettings()
    policy: PolicySettings = PolicySettings()
    estimation: EstimationSettings = EstimationSettings()
    reference_file: Path | None = Field(
        None,
        description="JSONL of prediction events (the predictions contract) forming every "
        "version's feature reference, instead of the version's first events; events with "
        "a `label` (and scores) also calibrate the estimated performance.",
    )


class CheckpointSettings(StrictModel):
    every_records: int = Field(50_000, gt=0)
    every_seconds: float = Field(5.0, gt=0)
    discard_incompatible_state: bool = Field(
        False,
        description="Start afresh the models whose snapshot another version wrote in a "
        "format this one cannot read (their detectors restart, their pending predictions "
        "and labels are dropped), instead of refusing to start.",
    )


class HealthSettings(StrictModel):
    """When ``/healthz`` (liveness) and ``/readyz`` (readiness) on the metrics port fail."""

    max_loop_seconds: float = Field(
        60.0,
        gt=0,
        description="/healthz fails when the service's loop has not turned for this long "
        "(a hung process: restart it).",
    )
    max_heartbeat_age_seconds: float = Field(
        15.0,
        gt=0,
        description="/readyz fails when the consumer's last group heartbeat is older than "
        "this: not in the group yet, or the broker is away (keep it a few times "
        "kafka.heartbeat_interval_ms).",
    )


class MonitorHealthSettings(HealthSettings):
    """The health settings of the monitor, which also knows its lag."""

    max_lag_records: int | None = Field(
        100_000,
        gt=0,
        description="/readyz fails while more records than this wait on this instance's "
        "partitions (null: lag does not count).",
    )


class MetricsServerSettings(StrictModel):
    """Where ``/metrics``, ``/healthz`` and ``/readyz`` are served, and with what TLS
    (prometheus-client's own TLS server: PEM files)."""

    bind_address: str = Field(
        "0.0.0.0",
        min_length=1,
        description="Interface to listen on: 0.0.0.0 every IPv4 one, 127.0.0.1 this host "
        "only, :: every IPv6 one.",
    )
    certfile: FilePath | None = Field(
        None, description="PEM certificate (chain) of the server; with keyfile, serves HTTPS."
    )
    keyfile: FilePath | None = Field(None, description="PEM private key of certfile.")
    client_cafile: FilePath | None = Field(
        None, description="PEM CA(s) that client certificates are verified against (mTLS)."
    )
    client_auth_required: bool = Field(
        False, description="Refuse clients without a certificate from client_cafile (mTLS)."
    )

    @model_validator(mode="after")
    def _tls_complete(self) -> MetricsServerSettings:
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("certfile and keyfile go together (HTTPS needs both)")
        if self.client_cafile is not None and self.certfile is None:
            raise ValueError(
                "client_cafile needs certfile and keyfile (client certificates need TLS)"
            )
        if self.client_auth_required and self.client_cafile is None:
            raise ValueError("client_auth_required needs client_cafile to verify clients against")
        return self


class LimitSettings(StrictModel):
    """What the input contract refuses beyond its schema: such a record goes to
    ``dead-letter`` with its reason (see ``docs/robustness.md``)."""

    max_event_time_ahead_seconds: float = Field(
        900.0,
        gt=0,
        description="A record whose timestamp is further ahead of the service's clock is "
        "refused: its outputs, stamped with event time, must stay within what the broker "
        "accepts (log.message.timestamp.after.max.ms, 1 h by default), and one record must "
        "not push a model's watermark into the future and expire its join.",
    )
    max_event_time_behind_seconds: float | None = Field(
        None,
        gt=0,
        description="A record whose timestamp is further behind the service's clock is "
        "refused; None accepts any age (backlogs, late labels). Needs a broker that accepts "
        "such record timestamps (log.message.timestamp.before.max.ms).",
    )
    max_id_length: int = Field(
        256, gt=0, description="Characters of prediction_id, model_id and model_version."
    )
    max_text_length: int = Field(
        1024,
        gt=0,
        description="Characters of a text value: a category, a text prediction or label, a "
        "feature name, a class name in scores.",
    )
    max_depth: int = Field(
        16, ge=2, description="Nesting of JSON objects and arrays in a record, unknown fields too."
    )
    dead_letter_max_bytes: int = Field(
        1_000_000,
        ge=4096,
        description="A dead letter (key, value and headers) larger than this keeps only the "
        "start of its value, with its original size and SHA-256 in headers: at most the "
        "dead-letter topic's max.message.bytes and the producer's max_request_size.",
    )


class ServiceSettings(BaseSettings):
    """What the services' settings share: the YAML file arrives as init arguments and the
    environment overrides it; ``models`` holds partial per-model overrides of ``defaults``."""

    models: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per-model overrides of `defaults`, by model_id; partial is fine.",
    )

    def for_model(self, model_id: str) -> BaseModel:
        """The defaults with this model's overrides applied."""
        raise NotImplementedError

    def _overridden(self, model_id: str, defaults: _Defaults) -> _Defaults:
        override = self.models.get(model_id)
        if not override:
            return defaults
        merged = deep_merge(defaults.model_dump(), override)
        try:
            return type(defaults).model_validate(merged)
        except ValidationError as exc:
            raise ValueError(describe_errors(exc, prefix=f"models.{model_id}")) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init arguments; the environment overrides it.
        return env_settings, init_settings


class MonitorSettings(ServiceSettings):
    """Settings of the monitor service (and of ``replay``)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    join: JoinSettings = JoinSettings()
    checkpoint: CheckpointSettings = CheckpointSettings()
    limits: LimitSettings = LimitSettings()
    metrics_port: int = Field(9108, ge=0, le=65535, description="0 disables /metrics.")
    metrics_server: MetricsServerSettings = MetricsServerSettings()
    health: MonitorHealthSettings = MonitorHealthSettings()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    defaults: ModelSettings = ModelSettings()

    def for_model(self, model_id: str) -> ModelSettings:
        """The defaults with this model's overrides applied (any unseen model: the defaults)."""
        return self._overridden(model_id, self.defaults)


_Settings = TypeVar("_Settings", bound=ServiceSettings)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def describe_errors(exc: ValidationError, prefix: str = "") -> str:
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"])
        path = f"{prefix}.{path}" if prefix and path else prefix or path or "(top level)"
        given = (
            ""
            if err["type"] == "missing"
            else f" (got {_redacted(err['loc'], err.get('input'))!r})"
        )
        lines.append(f"  {path}: {err['msg']}{given}")
    return "\n".join(lines)


def _redacted(loc: tuple[int | str, ...], value: Any) -> Any:
    """``value`` with every secret setting in it masked: an error message is printed."""
    if loc and loc[-1] in SECRET_FIELDS:
        return "**********"
    if isinstance(value, dict):
        return {k: _redacted((*loc, k), v) for k, v in value.items()}
    return value


def load_yaml_settings(cls: type[_Settings], path: str | Path | None = None) -> _Settings:
    """Load and validate ``cls`` from ``path`` (YAML) plus the environment.

    Raises :class:`ConfigError` with one line per problem, per-model overrides included.
    """
    where = "environment and defaults"
    content: dict[str, Any] | None = None
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"config file {file} does not exist or is not a file")
        try:
            content = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {file} is not valid YAML: {exc}") from None
        if content is not None and not isinstance(content, dict):
            raise ConfigError(f"config file {file} must hold a mapping of settings at top level")
        where = str(file)
    try:
        settings = cls(**(content or {}))
    except ValidationError as exc:
        raise ConfigError(f"invalid settings in {where}:\n{describe_errors(exc)}") from None
    problems = []
    for model_id in settings.models:
        try:
            settings.for_model(model_id)
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError(f"invalid settings in {where}:\n" + "\n".join(problems))
    return settings


def load_settings(path: str | Path | None = None) -> MonitorSettings:
    """The monitor's settings: :func:`load_yaml_settings` of :class:`MonitorSettings`."""
    return load_yaml_settings(MonitorSettings, path)
