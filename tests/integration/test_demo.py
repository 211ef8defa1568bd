"""The closed-loop demo in its short mode, as CI runs it, against the session's broker.

Everything is real: the serving app, the monitor and the trainer run in this process on
the broker; each run has its own topics and registry under ``tmp_path``. The asserts
read the summary the demo returns, which it builds from the events on Kafka and the
serving app's own predictions.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from stream_monitor.config import MonitorSettings
from stream_monitor.demo import MODEL_ID, DemoSummary, ScenarioName, run_demo
from stream_monitor.trainer.registry import ModelRegistry

pytestmark = pytest.mark.integration

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _run(bootstrap: str, output: Path, scenario: ScenarioName) -> tuple[DemoSummary, str]:
    printed = io.StringIO()
    summary = run_demo(
        MonitorSettings(),
        scenario=scenario,
        quick=True,
        bootstrap=bootstrap,
        output=output,
        metrics_port=0,
        console=Console(file=printed, width=120),
    )
    return summary, printed.getvalue()


def _detected(summary: DemoSummary) -> None:
    assert summary.errors == ()
    assert summary.detected_at is not None and summary.detected_at > summary.drift_at
    assert summary.request_id is not None and summary.retrain_requests == 1
    assert summary.request_at is not None and summary.request_at > summary.detected_at


def _timeline(summary: DemoSummary) -> None:
    assert summary.timeline is not None
    assert summary.timeline.read_bytes().startswith(PNG_SIGNATURE)


def test_a_recoverable_drift_is_detected_retrained_promoted_and_recovers(
    bootstrap: str, tmp_path: Path
) -> None:
    summary, printed = _run(bootstrap, tmp_path, "recoverable")

    _detected(summary)
    assert summary.answer == "promoted" and summary.promoted_version == 2
    assert summary.candidate_score is not None and summary.champion_score is not None
    assert summary.candidate_score > summary.champion_score + 0.05
    assert summary.escalations == ()
    # The serving app switched after the request, and early enough to measure it.
    assert summary.switched_at is not None
    assert summary.request_at is not None and summary.request_at < summary.switched_at
    assert summary.switched_at < summary.events - 500
    assert ModelRegistry(summary.registry).production_version(MODEL_ID) == 2

    before, drifted, after = (
        summary.accuracy_before,
        summary.accuracy_after_drift,
        summary.accuracy_after_promotion,
    )
    assert before is not None and drifted is not None and after is not None
    assert before > 0.95 and drifted < before - 0.1
    assert after >= before - 0.05 and after >= drifted + 0.1
    assert summary.recovered and summary.ok and summary.exit_status == 0
    _timeline(summary)
    assert "as expected" in printed and str(summary.timeline) in printed


def test_an_unfixable_drift_ends_in_a_rejection_and_an_escalation(
    bootstrap: str, tmp_path: Path
) -> None:
    summary, printed = _run(bootstrap, tmp_path, "unfixable")

    _detected(summary)
    assert summary.answer == "rejected" and summary.promoted_version is None
    assert summary.escalations and "floor" in summary.escalations[0]
    assert summary.switched_at is None and summary.accuracy_after_promotion is None
    assert ModelRegistry(summary.registry).production_version(MODEL_ID) == 1
    assert summary.accuracy_after_drift is not None and summary.accuracy_after_drift < 0.9
    assert summary.ok and summary.exit_status == 0
    _timeline(summary)
    assert "as expected" in printed


def test_the_command_prints_the_story_and_nothing_else(tmp_path: Path) -> None:
    """`stream-monitor demo --scenario unfixable` as a new user runs it: its own broker,
    started and stopped by the command, and matplotlib's font cache not built yet. The
    output holds the display and the summary, no library log line or traceback."""
    import os
    import subprocess
    import sys

    from stream_monitor.devbroker.broker import BrokerSettings, find_running, stop
    from tests.integration.helpers import free_port

    port = free_port()
    environment = {
        **os.environ,
        "MPLCONFIGDIR": str(tmp_path / "matplotlib"),  # an empty cache: it gets built
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    command = [sys.executable, "-m", "stream_monitor.cli", "demo", "--scenario", "unfixable"]
    try:
        done = subprocess.run(
            [
                *command,
                "--quick",
                "--port",
                str(port),
                "--metrics-port",
                "0",
                "--output",
                str(tmp_path / "run"),
            ],
            env=environment,
            capture_output=True,
            text=True,
            timeout=400,
            check=False,
        )
    finally:
        if find_running(BrokerSettings(port=port)) is not None:  # only if the run failed
            stop(BrokerSettings(port=port))
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Closed loop: unfixable" in done.stdout
    for noise in ("Traceback", "Error receiving", "font", '"level"'):
        assert noise not in output, f"{noise!r} in the demo's output:\n{output}"
