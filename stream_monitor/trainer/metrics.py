"""Prometheus metrics of the trainer.

Counted by the Kafka shell when a request's answer has been published, from the
journal record (so an answer published again after a crash counts like the first
try) and from the outcome when this process decided it (scores and training time).
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from stream_monitor.trainer.registry import HandledRequest
from stream_monitor.trainer.training import Outcome

PREFIX = "stream_monitor_trainer"


class TrainerMetrics:
    """All metrics of one trainer process, on their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            f"{PREFIX}_requests_received",
            "Records read from retrain-requests, valid or not.",
            registry=self.registry,
        )
        self.invalid = Counter(
            f"{PREFIX}_invalid_requests",
            "Retrain requests that broke the contract and went to dead-letter.",
            ["reason"],
            registry=self.registry,
        )
        self.duplicates = Counter(
            f"{PREFIX}_duplicate_requests",
            "Retrain requests already answered (a replay, a restart, a second monitor "
            "instance): acknowledged without training.",
            registry=self.registry,
        )
        self.training_seconds = Histogram(
            f"{PREFIX}_training_seconds",
            "Time to answer a request that trained a candidate: reading the window, "
            "fitting, scoring and registering. Its _count is the number of trainings.",
            buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600),
            registry=self.registry,
        )
        self.promotions = Counter(
            f"{PREFIX}_promotions",
            "Candidates promoted to production, by reason code.",
            ["reason"],
            registry=self.registry,
        )
        self.rejections = Counter(
            f"{PREFIX}_rejections",
            "Requests answered without a promotion, by reason code.",
            ["reason"],
            registry=self.registry,
        )
        self.escalations = Counter(
            f"{PREFIX}_escalations",
            "Escalations to a human published to the escalations topic, by reason code.",
            ["reason"],
            registry=self.registry,
        )
        self.champion_score = Gauge(
            f"{PREFIX}_champion_holdout_score",
            "Holdout score of the production model at the model's latest retrain "
            "(absent when there was none or it could not be scored).",
            ["model_id", "metric"],
            registry=self.registry,
        )
        self.candidate_score = Gauge(
            f"{PREFIX}_candidate_holdout_score",
            "Holdout score of the candidate trained at the model's latest retrain.",
            ["model_id", "metric"],
            registry=self.registry,
        )

    def answered(self, record: HandledRequest, outcome: Outcome | None) -> None:
        """Count a published answer; ``outcome`` is None when it was replayed from the
        journal (its scores were reported by the process that decided it)."""
        counter = self.promotions if record.outcome == "promoted" else self.rejections
        counter.labels(record.code).inc()
        if record.escalated:
            self.escalations.labels(record.code).inc()
        if outcome is None or outcome.metric is None:
            return
        labels = (outcome.model_id, outcome.metric.name)
        if outcome.candidate is not None:
            self.candidate_score.labels(*labels).set(outcome.candidate.score)
        if outcome.champion_score is None:
            with contextlib.suppress(KeyError):  # not reported yet
                self.champion_score.remove(*labels)
        else:
            self.champion_score.labels(*labels).set(outcome.champion_score)
