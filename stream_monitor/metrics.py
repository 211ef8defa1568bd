"""Prometheus metrics of the monitor.

Two kinds: what the Kafka shell measures itself (records consumed, batch time, lag,
checkpoints) are ordinary client metrics; what the core knows (joins, signals, accuracy)
is read from the latest :class:`~stream_monitor.core.monitor.CoreStats` when Prometheus
scrapes, so the core never imports the client library.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stream_monitor.core.monitor import CoreStats

PREFIX = "stream_monitor"


class CoreStatsCollector(Collector):
    """Exposes the last :class:`CoreStats` the service handed over.

    The service replaces the stats object at most once a second and whenever it is
    idle (one reference assignment), so a scrape never sees a half-updated state.
    """

    def __init__(self) -> None:
        self.stats: CoreStats | None = None

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        if stats is None:
            return
        invalid = CounterMetricFamily(
            f"{PREFIX}_invalid_records",
            "Records that broke the contract and went to dead-letter.",
            labels=["topic", "reason"],
        )
        for (topic, reason), n in stats.invalid.items():
            invalid.add_metric([topic, reason], n)
        yield invalid

        yield CounterMetricFamily(
            f"{PREFIX}_joined", "Predictions joined with their label.", value=stats.joined
        )
        dropped = CounterMetricFamily(
            f"{PREFIX}_join_dropped",
            "Pending predictions or labels that left the join unjoined (ttl) or were duplicates.",
            labels=["kind", "reason"],
        )
        for (kind, reason), n in stats.dropped.items():
            dropped.add_metric([kind, reason], n)
        yield dropped

        pending = GaugeMetricFamily(
            f"{PREFIX}_join_pending", "Events waiting for their partner.", labels=["kind"]
        )
        for kind, n in stats.pending.items():
            pending.add_metric([kind], n)
        yield pending

        signals = CounterMetricFamily(
            f"{PREFIX}_drift_signals",
            "Detector signals by detector and the severity the policy gave them.",
            labels=["detector", "severity"],
        )
        for (detector, severity), n in stats.signals.items():
            signals.add_metric([detector, severity], n)
        yield signals

        produced = CounterMetricFamily(
            f"{PREFIX}_events_produced",
            "Events the core emitted, by output (topic setting name).",
            labels=["output"],
        )
        for output, n in stats.outputs.items():
            produced.add_metric([output], n)
        yield produced
        yield CounterMetricFamily(
            f"{PREFIX}_retrain_requests",
            "Retrain requests published (one per drift episode).",
            value=stats.outputs.get("retrain_requests", 0),
        )

        accuracy = GaugeMetricFamily(
            f"{PREFIX}_model_accuracy_ratio",
            "Windowed accuracy of a classification model version.",
            labels=["model_id", "model_version"],
        )
        mae = GaugeMetricFamily(
            f"{PREFIX}_model_mae",
            "Windowed mean absolute error of a regression model version.",
            labels=["model_id", "model_version"],
        )
        labelled = GaugeMetricFamily(
            f"{PREFIX}_model_labelled_events",
            "Joined events seen for a model version (since its state began).",
            labels=["model_id", "model_version"],
        )
        unmonitored = GaugeMetricFamily(
            f"{PREFIX}_features_unmonitored",
            "Columns beyond the features.max_features cap: counted, not tested.",
            labels=["model_id", "model_version"],
        )
        for (model_id, version), v in stats.versions.items():
            target = accuracy if v.task == "classification" else mae
            target.add_metric([model_id, version], v.windowed_metric)
            labelled.add_metric([model_id, version], v.labelled)
            unmonitored.add_metric([model_id, version], v.unmonitored_features)
        yield accuracy
        yield mae
        yield labelled
        yield unmonitored
        yield from _feature_metrics(stats)
        yield from _estimation_metrics(stats)


def _estimation_metrics(stats: CoreStats) -> Iterator[Metric]:
    """Estimated performance from calibrated scores, per model version that has an
    estimate (see ``core/estimation.py``), and how past estimates met the labels."""
    version = ["model_id", "model_version"]

    def gauge(name: str, doc: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"{PREFIX}_model_{name}", doc, labels=version)

    estimated = {
        "accuracy": gauge(
            "estimated_accuracy_ratio",
            "Accuracy of the last estimation window, estimated from calibrated scores.",
        ),
        "low": gauge(
            "estimated_accuracy_lower_ratio",
            "Lower bound of the interval (estimation.interval_level) of the estimated accuracy.",
        ),
        "high": gauge(
            "estimated_accuracy_upper_ratio",
            "Upper bound of the interval (estimation.interval_level) of the estimated accuracy.",
        ),
        "precision": gauge(
            "estimated_precision_ratio", "Estimated precision of the positive class (binary)."
        ),
        "recall": gauge(
            "estimated_recall_ratio", "Estimated recall of the positive class (binary)."
        ),
        "f1": gauge("estimated_f1_ratio", "Estimated F1 of the positive class (binary)."),
        "roc_auc": gauge("estimated_roc_auc_ratio", "Estimated ROC AUC (binary)."),
    }
    reference = gauge(
        "estimated_reference_accuracy_ratio",
        "Mean calibrated confidence of the calibration pairs: what estimates are tested against.",
    )
    drop = gauge(
        "estimated_drop_confirmed",
        "1 while a confirmed drop of the estimated accuracy lasts (its episode), else 0.",
    )
    error = gauge(
        "estimation_error",
        "Estimated minus realised accuracy of the last window whose labels arrived.",
    )
    mean_error = gauge(
        "estimation_mean_absolute_error",
        "Mean absolute difference between estimated and realised accuracy, over compared windows.",
    )
    compared = gauge(
        "estimation_windows_compared", "Estimation windows compared with their labels."
    )
    for (model_id, name), v in stats.versions.items():
        e = v.estimation
        if e is None or not e.ready:
            continue
        labels = [model_id, name]
        reference.add_metric(labels, e.reference)
        drop.add_metric(labels, 1.0 if e.drifted else 0.0)
        compared.add_metric(labels, e.compared)
        if e.last is not None:
            for field, family in estimated.items():
                value = getattr(e.last, field)
                if value is not None:
                    family.add_metric(labels, value)
        if e.recent:
            error.add_metric(labels, e.recent[-1].error)
            mean_error.add_metric(labels, e.mean_abs_error)
    yield from estimated.values()
    yield from (reference, drop, error, mean_error, compared)


def _feature_metrics(stats: CoreStats) -> Iterator[Metric]:
    """Per monitored column (the prediction is ``__prediction__``, a class score
    ``__score__:<class>``); bounded by ``features.max_features`` per version."""
    column = ["model_id", "model_version", "feature"]
    score = GaugeMetricFamily(
        f"{PREFIX}_feature_drift_score",
        "Test statistic of a column against its reference (KS distance, chi-square, "
        "missing or unseen share, ADWIN mean shift in reference standard deviations).",
        labels=[*column, "test"],
    )
    threshold = GaugeMetricFamily(
        f"{PREFIX}_feature_drift_threshold",
        "Value of the score beyond which the test rejects.",
        labels=[*column, "test"],
    )
    p_value = GaugeMetricFamily(
        f"{PREFIX}_feature_drift_p_value",
        "p-value of the test, where it has one.",
        labels=[*column, "test"],
    )
    psi = GaugeMetricFamily(
        f"{PREFIX}_feature_psi", "Population stability index against the reference.", labels=column
    )
    drifted = GaugeMetricFamily(
        f"{PREFIX}_feature_drifted",
        "1 while the column is in a drift episode of any kind, else 0.",
        labels=column,
    )
    missing = GaugeMetricFamily(
        f"{PREFIX}_feature_missing_ratio",
        "Share of missing values in the recent window.",
        labels=column,
    )
    for key, feature in stats.features.items():
        labels = list(key)
        for test, statistic in feature.tests.items():
            score.add_metric([*labels, test], statistic.score)
            if statistic.threshold is not None:
                threshold.add_metric([*labels, test], statistic.threshold)
            if statistic.p_value is not None:
                p_value.add_metric([*labels, test], statistic.p_value)
        psi.add_metric(labels, feature.psi)
        drifted.add_metric(labels, 1.0 if feature.drifted else 0.0)
        missing.add_metric(labels, feature.missing_rate)
    yield from (score, threshold, p_value, psi, drifted, missing)


class MonitorMetrics:
    """All metrics of one monitor process, on their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.core = CoreStatsCollector()
        self.registry.register(self.core)
        self.consumed = Counter(
            f"{PREFIX}_records_consumed",
            "Records read from Kafka.",
            ["topic"],
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            f"{PREFIX}_batch_processing_seconds",
            "Time to process one polled batch, from poll to outputs handed to the producer.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.lag = Gauge(
            f"{PREFIX}_consumer_lag_records",
            "Records not yet consumed, summed over this instance's partitions.",
            ["topic"],
            registry=self.registry,
        )
        self.checkpoints = Counter(
            f"{PREFIX}_checkpoints",
            "State snapshots written and offsets committed.",
            registry=self.registry,
        )
        self.commits_refused = Counter(
            f"{PREFIX}_commits_refused",
            "Offset commits the consumer group refused because it had moved on (a "
            "rebalance); the records since the last commit are read again.",
            registry=self.registry,
        )
        self.state_discarded = Counter(
            f"{PREFIX}_state_discarded",
            "Model snapshots of an unreadable format, discarded at restore "
            "(checkpoint.discard_incompatible_state).",
            registry=self.registry,
        )
        self.checkpoint_seconds = Histogram(
            f"{PREFIX}_checkpoint_seconds",
            "Time to flush outputs, write snapshots and commit offsets.",
            registry=self.registry,
        )
        self.undeliverable = Counter(
            f"{PREFIX}_undeliverable_outputs",
            "Outputs the broker can never accept (too large, a timestamp it refuses): the "
            "input that produced each went to dead-letter instead.",
            registry=self.registry,
        )
        self.join_store_bytes = Gauge(
            f"{PREFIX}_join_store_bytes",
            "Size on disk of the local store of pending join entries.",
            registry=self.registry,
        )
        self.join_store_over_limit = Gauge(
            f"{PREFIX}_join_store_over_limit",
            "1 while the join store is past join.max_disk_bytes (nothing is evicted).",
            registry=self.registry,
        )
        self.join_rebuilds = Counter(
            f"{PREFIX}_join_rebuilds",
            "Models whose pending join entries were rebuilt from the input topics (the "
            "local store did not hold their snapshot's checkpoint).",
            registry=self.registry,
        )
