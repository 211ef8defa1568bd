"""Run the core over a recorded stream: no broker, same decisions.

Input: one JSON object per line, ``{"topic": "predictions" | "ground-truth",
"key": ..., "value": {...}}``, in arrival order (``topic`` is the configured topic
name). Output: one line per emitted event, ``{"topic": ..., "key": ..., "value":
{...}}``; a dead letter's value is the original text and its ``headers`` say why.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from stream_monitor.config import (
    ConfigError,
    MonitorSettings,
    TopicSettings,
    deep_merge,
    describe_errors,
)
from stream_monitor.core.events import Output
from stream_monitor.core.monitor import CoreStats, InputTopic, MonitorCore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BadLine:
    line: int
    reason: str


def replay(
    settings: MonitorSettings,
    lines: Iterable[bytes | str],
    core: MonitorCore | None = None,
    summary: ReplaySummary | None = None,
) -> Iterator[dict[str, Any] | BadLine]:
    """Yield each emitted event as a dict, or a :class:`BadLine` for an unusable line.

    ``core``: one built with reference files, or by default a fresh one without.
    ``summary``: counts what goes in and comes out, complete once the iteration ends."""
    core = core or MonitorCore(settings)
    summary = summary or ReplaySummary()
    topics = settings.topics
    inputs: dict[str, InputTopic] = {
        topics.predictions: "predictions",
        topics.ground_truth: "ground_truth",
    }
    names = topics.model_dump()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)  # bytes are decoded as UTF-8 (or refused)
            topic = inputs[entry["topic"]]
            value = entry["value"]
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError, KeyError) as exc:
            summary.bad_lines += 1
            yield BadLine(number, _why(exc, inputs))
            continue
        key = entry.get("key")
        summary.read(topic, None if key is None else str(key))
        raw = value.encode() if isinstance(value, str) else json.dumps(value).encode()
        for output in core.process(topic, None if key is None else str(key).encode(), raw):
            event = _as_dict(output, names[output.topic])
            summary.emitted(event, topics)
            yield event
    summary.finish(core.stats())


def _why(exc: Exception, inputs: dict[str, InputTopic]) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"not JSON: {exc.msg}"
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text: {exc.reason} at byte {exc.start}"
    if isinstance(exc, KeyError) and exc.args and exc.args[0] not in ("topic", "value"):
        return f"topic {exc.args[0]!r} is not one of {sorted(inputs)}"
    return 'expected {"topic": ..., "key": ..., "value": ...}'


def _as_dict(output: Output, topic: str) -> dict[str, Any]:
    text = output.value.decode(errors="replace")
    try:
        value: Any = json.loads(text)
    except json.JSONDecodeError:
        value = text
    entry: dict[str, Any] = {
        "topic": topic,
        "key": None if output.key is None else output.key.decode(errors="replace"),
        "value": value,
    }
    if output.headers:
        entry["headers"] = {k: v.decode(errors="replace") for k, v in output.headers}
    return entry


@dataclass
class ModelTally:
    """What a replay saw of one model."""

    predictions: int = 0
    labels: int = 0
    joined: int = 0
    signals: Counter[tuple[str, str]] = field(default_factory=Counter)
    """By (kind, severity)."""
    retrain_requests: int = 0
    escalations: int = 0

    @property
    def coverage(self) -> float | None:
        """Share of the predictions read that were joined with their label."""
        return self.joined / self.predictions if self.predictions else None


@dataclass
class ReplaySummary:
    """Counts of a replay for tuning: what went in, what was joined, what came out.

    >>> summary = ReplaySummary()
    >>> summary.read("predictions", "m"); summary.read("ground_truth", "m")
    >>> summary.emitted({"topic": "drift-events", "key": "m", "value": {"data": {
    ...     "model_id": "m", "kind": "performance", "severity": "drift"}}}, TopicSettings())
    >>> summary.models["m"].signals
    Counter({('performance', 'drift'): 1})
    """

    records: int = 0
    bad_lines: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    """Records sent to dead-letter, by reason."""
    models: dict[str, ModelTally] = field(default_factory=dict)

    def _model(self, model_id: str) -> ModelTally:
        return self.models.setdefault(model_id, ModelTally())

    def read(self, topic: InputTopic, key: str | None) -> None:
        self.records += 1
        if key is not None:
            tally = self._model(key)
            if topic == "predictions":
                tally.predictions += 1
            else:
                tally.labels += 1

    def emitted(self, event: dict[str, Any], topics: TopicSettings) -> None:
        topic = event["topic"]
        if topic == topics.dead_letter:
            self.invalid[event.get("headers", {}).get("error.reason", "unknown")] += 1
            return
        value = event["value"]
        data = value.get("data", {}) if isinstance(value, dict) else {}
        model_id = data.get("model_id") or event["key"]
        if model_id is None:
            return
        if topic == topics.drift_events:
            self._model(model_id).signals[data.get("kind", "?"), data.get("severity", "?")] += 1
        elif topic == topics.retrain_requests:
            self._model(model_id).retrain_requests += 1
        elif topic == topics.escalations:
            self._model(model_id).escalations += 1

    def finish(self, stats: CoreStats) -> None:
        """Take the joins from the core's statistics (per model, over its versions)."""
        for (model_id, _version), version in stats.versions.items():
            self._model(model_id).joined += version.labelled

    def text(self) -> str:
        """The summary as lines for a terminal."""
        invalid = sum(self.invalid.values())
        reasons = ", ".join(f"{reason} {n:,}" for reason, n in sorted(self.invalid.items()))
        lines = [
            f"replay: {self.records:,} records read, {invalid:,} invalid"
            + (f" ({reasons})" if reasons else "")
            + (f", {self.bad_lines:,} unusable lines skipped" if self.bad_lines else "")
        ]
        for model_id, m in sorted(self.models.items()):
            coverage = "-" if m.coverage is None else f"{m.coverage:.1%}"
            signals = ", ".join(
                f"{kind} {severity} {n:,}" for (kind, severity), n in sorted(m.signals.items())
            )
            lines += [
                f"model {model_id}: {m.predictions:,} predictions, {m.labels:,} labels, "
                f"{m.joined:,} joined (label coverage {coverage})",
                f"  signals: {signals or 'none'}",
                f"  decisions: {m.retrain_requests:,} retrain requests, "
                f"{m.escalations:,} escalations",
            ]
        return "\n".join(lines)


def apply_overrides(settings: MonitorSettings, assignments: Iterable[str]) -> MonitorSettings:
    """``settings`` with ``section.field=value`` assignments applied over everything else
    (values read as YAML: ``0.05``, ``true``, ``null``, ``[a, b]``).

    >>> s = apply_overrides(MonitorSettings(), ["defaults.policy.min_accuracy_drop=0.05",
    ...                                         "models.fraud.policy.cooldown_seconds=60"])
    >>> s.defaults.policy.min_accuracy_drop, s.for_model("fraud").policy.cooldown_seconds
    (0.05, 60.0)
    >>> apply_overrides(MonitorSettings(), ["join.ttl_seconds=-1"])
    Traceback (most recent call last):
    ...
    stream_monitor.config.ConfigError: invalid --set:
      join.ttl_seconds: Input should be greater than 0 (got -1)
    """
    overrides: dict[str, Any] = {}
    for assignment in assignments:
        path, sep, text = assignment.partition("=")
        names = path.strip().split(".")
        if not sep or not all(names):
            raise ConfigError(f"--set {assignment!r}: expected section.field=value")
        target = overrides
        for name in names[:-1]:
            target = target.setdefault(name, {})
        target[names[-1]] = yaml.safe_load(text)
    merged = deep_merge(settings.model_dump(), overrides)
    try:
        # No environment variable has a NUL in its name: the values given alone count,
        # the environment (already in ``settings``) must not take precedence over --set.
        result = MonitorSettings(_env_prefix="\0", **merged)
    except ValidationError as exc:
        raise ConfigError(f"invalid --set:\n{describe_errors(exc)}") from None
    problems = []
    for model_id in result.models:
        try:
            result.for_model(model_id)
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("invalid --set:\n" + "\n".join(problems))
    return result
