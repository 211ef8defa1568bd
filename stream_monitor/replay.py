"""Run the core over a recorded stream: no broker, same decisions.

Input: one JSON object per line, ``{"topic": "predictions" | "ground-truth",
"key": ..., "value": {...}}``, in arrival order (``topic`` is the configured topic
name). Output: one line per emitted event, ``{"topic": ..., "key": ..., "value":
{...}}``; a dead letter's value is the original text and its ``headers`` say why.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from stream_monitor.config import MonitorSettings
from stream_monitor.core.events import Output
from stream_monitor.core.monitor import InputTopic, MonitorCore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BadLine:
    line: int
    reason: str


def replay(
    settings: MonitorSettings, lines: Iterable[bytes | str], core: MonitorCore | None = None
) -> Iterator[dict[str, Any] | BadLine]:
    """Yield each emitted event as a dict, or a :class:`BadLine` for an unusable line.

    ``core``: one built with reference files, or by default a fresh one without."""
    core = core or MonitorCore(settings)
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
            yield BadLine(number, _why(exc, inputs))
            continue
        key = entry.get("key")
        raw = value.encode() if isinstance(value, str) else json.dumps(value).encode()
        for output in core.process(topic, None if key is None else str(key).encode(), raw):
            yield _as_dict(output, names[output.topic])


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
