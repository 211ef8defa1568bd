"""``replay --summary`` and ``--set`` on a recorded stream: tuning without a broker."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from stream_monitor.cli import main
from stream_monitor.simulate import Scenario, stream

TOPICS = {"predictions": "predictions", "ground_truth": "ground-truth"}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("STREAM_MONITOR_"):
            monkeypatch.delenv(name)


@pytest.fixture
def recorded(tmp_path: Path) -> Path:
    """4,000 predictions and labels of a model whose accuracy drops from 92 % to 70 %
    half-way, 3,000 of a stable one, and one record that breaks the contract."""
    lines = [
        json.dumps({"topic": TOPICS[t], "key": k, "value": v})
        for scenario in (
            Scenario(events=4000, drift_at=2000, accuracy_after=0.7, model_id="churn"),
            Scenario(events=3000, drift_at=None, model_id="fraud", id_prefix="f"),
        )
        for t, k, v in stream(scenario)
    ]
    lines.append(json.dumps({"topic": "predictions", "key": "churn", "value": {"x": 1}}))
    path = tmp_path / "recorded.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _summary(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["replay", "--summary", *argv]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("\n") > 0  # the events are still on stdout
    return captured.err


def test_the_summary_counts_reads_joins_signals_and_decisions_per_model(
    recorded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = _summary(capsys, str(recorded))
    assert text.startswith("replay: 14,001 records read, 1 invalid (schema 1)\n")
    assert (
        "model churn: 4,001 predictions, 4,000 labels, 4,000 joined (label coverage 100.0%)" in text
    )
    assert "model fraud: 3,000 predictions, 3,000 labels, 3,000 joined" in text
    churn = text.split("model churn")[1].split("model fraud")[0]
    assert re.search(r"signals: .*performance drift \d", churn)
    assert "decisions: 1 retrain requests, 0 escalations" in churn
    fraud = text.split("model fraud")[1]
    assert "decisions: 0 retrain requests, 0 escalations" in fraud


def test_set_overrides_a_threshold_for_one_run(
    recorded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A 22-point drop asks for a retrain by default; with the bar at 0.5 it is a warning.
    text = _summary(
        capsys,
        "--set",
        "defaults.policy.min_accuracy_drop=0.5",
        "--set",
        "defaults.policy.critical_accuracy_drop=0.9",
        str(recorded),
    )
    churn = text.split("model churn")[1].split("model fraud")[0]
    assert "decisions: 0 retrain requests, 0 escalations" in churn
    assert "performance warning" in churn


def test_set_overrides_the_environment_and_reports_bad_values(
    recorded: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAM_MONITOR_DEFAULTS__POLICY__MIN_ACCURACY_DROP", "0.24")
    text = _summary(capsys, "--set", "defaults.policy.min_accuracy_drop=0.02", str(recorded))
    assert "decisions: 1 retrain requests" in text.split("model churn")[1]
    assert main(["replay", "--set", "join.ttl_seconds=-1", str(recorded)]) == 2
    assert "join.ttl_seconds: Input should be greater than 0" in capsys.readouterr().err
    assert main(["replay", "--set", "join.ttl_seconds", str(recorded)]) == 2
    assert "expected section.field=value" in capsys.readouterr().err
