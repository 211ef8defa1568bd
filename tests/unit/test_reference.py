"""Reference files: a version's feature reference from recorded events, not its first ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream_monitor.config import ConfigError, MonitorSettings
from stream_monitor.core.monitor import MonitorCore
from stream_monitor.reference import load_references
from stream_monitor.simulate import Scenario, stream


def _write_reference(path: Path, events: int = 1000) -> Path:
    scenario = Scenario(events=events, drift_at=None, with_labels=False, seed=1)
    path.write_text("".join(json.dumps(v) + "\n" for _, _, v in stream(scenario)))
    return path


def _settings(path: Path) -> MonitorSettings:
    return MonitorSettings(models={"demo-model": {"reference_file": str(path)}})


def test_reference_file_is_read_by_model(tmp_path: Path) -> None:
    references = load_references(_settings(_write_reference(tmp_path / "ref.jsonl")))
    assert list(references) == ["demo-model"]
    assert len(references["demo-model"]) == 1000


def test_live_events_are_tested_from_the_first_round(tmp_path: Path) -> None:
    settings = _settings(_write_reference(tmp_path / "ref.jsonl"))
    core = MonitorCore(settings, load_references(settings))
    # Live traffic is shifted from its very first event: without the file, these events
    # would become the reference and nothing would ever look wrong.
    live = Scenario(events=400, drift_at=0, shifted_features=("f2",), with_labels=False)
    named = set()
    for topic, key, value in stream(live):
        for output in core.process(topic, key.encode(), json.dumps(value).encode()):
            if output.topic == "drift_events":
                named |= {
                    f["feature"] for f in json.loads(output.value)["data"]["evidence"]["features"]
                }
    assert named == {"f2"}


def test_without_the_file_the_same_events_form_the_reference() -> None:
    core = MonitorCore(MonitorSettings())
    live = Scenario(events=1400, drift_at=0, shifted_features=("f2",), with_labels=False)
    outputs = [
        o for t, k, v in stream(live) for o in core.process(t, k.encode(), json.dumps(v).encode())
    ]
    assert outputs == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"prediction_id": "x"}\n', r"ref.jsonl:1: schema"),
        ("not json\n", r"ref.jsonl:1: invalid_json"),
    ],
)
def test_an_unusable_line_is_named(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "ref.jsonl"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_references(_settings(path))


def test_a_short_or_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="holds 10 prediction events"):
        load_references(_settings(_write_reference(tmp_path / "ref.jsonl", events=10)))
    with pytest.raises(ConfigError, match="is not a file"):
        load_references(_settings(tmp_path / "missing.jsonl"))
