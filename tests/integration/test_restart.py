"""SIGTERM mid-stream, start again: nothing skipped, nothing repeated."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from itertools import islice
from pathlib import Path

import pytest
import yaml

from stream_monitor.config import MonitorSettings
from stream_monitor.simulate import Scenario, publish_events, stream
from tests.integration.helpers import create_topics, settings_for, values, wait_until

pytestmark = pytest.mark.integration

# A 17-point drop: within what a retrain can fix (a drop surely beyond
# policy.critical_accuracy_drop pages instead of asking for a retrain).
SCENARIO = Scenario(events=12_000, drift_at=6000, accuracy_before=0.92, accuracy_after=0.75)
PREDICTIONS_PER_S = 1_000
# Records (a prediction and a label each) published before the stream waits for the first
# run's interrupt: 5000 predictions, beyond any ``progress`` below, before the drift.
RECORDS_BEFORE_INTERRUPT = 10_000
INTERRUPT_TIMEOUT_S = 300.0


def _start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "stream_monitor.cli", "monitor", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
    )


def _labelled_ids(settings: MonitorSettings) -> list[str]:
    examples = values(settings.kafka.bootstrap_servers, settings.topics.labelled_examples)
    return [e["data"]["prediction_id"] for e in examples]


def _stop(process: subprocess.Popen[bytes], log: Path) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0, log.read_text()


def _publish_held_until(settings: MonitorSettings, interrupted: threading.Event) -> None:
    """SCENARIO as a live stream, the rest held back after RECORDS_BEFORE_INTERRUPT until
    ``interrupted`` is set: however loaded the machine, records are still to come when the
    first run is interrupted."""
    records = stream(SCENARIO)
    publish_events(settings, islice(records, RECORDS_BEFORE_INTERRUPT), PREDICTIONS_PER_S)
    interrupted.wait(INTERRUPT_TIMEOUT_S)
    publish_events(settings, records, PREDICTIONS_PER_S)


def _interrupted_then_finished(
    bootstrap: str,
    tmp_path: Path,
    progress: int,
    interrupt: Callable[[subprocess.Popen[bytes], Path], None],
) -> tuple[MonitorSettings, Path]:
    """Run the monitor on SCENARIO until ``progress`` examples, ``interrupt`` it, then
    start it again until every prediction is joined; returns its settings and its log."""
    # Small polls; checkpoints every second (settings_for).
    settings = settings_for(bootstrap, kafka={"max_poll_records": 50})
    config = tmp_path / "monitor.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    log = tmp_path / "monitor.log"
    create_topics(settings)
    # A live stream: the first run is interrupted while records still arrive (from a full
    # topic it could finish before the progress check saw it start).
    interrupted = threading.Event()
    producer = threading.Thread(target=_publish_held_until, args=(settings, interrupted))
    first = _start(config, log)
    # The stream starts once the first run reads: a loaded machine may take many seconds
    # to start a Python process.
    wait_until(lambda: "partitions assigned" in log.read_text(), 120, "the first run to start")
    producer.start()
    try:
        wait_until(
            lambda: len(_labelled_ids(settings)) >= progress, 120, "the first run to progress"
        )
        interrupt(first, log)
        assert producer.is_alive(), "the stream ended before the first run was interrupted"
    finally:
        interrupted.set()
        producer.join()

    second = _start(config, log)
    try:
        wait_until(
            lambda: len(set(_labelled_ids(settings))) >= SCENARIO.events,
            120,
            "the second run to finish the stream",
        )
    finally:
        _stop(second, log)
    return settings, log


def _kill_9(process: subprocess.Popen[bytes], _log: Path) -> None:
    process.kill()  # SIGKILL: no last checkpoint, no clean close
    process.wait(timeout=60)


def test_sigterm_then_restart_resumes_from_committed_offsets(
    bootstrap: str, tmp_path: Path
) -> None:
    settings, log = _interrupted_then_finished(bootstrap, tmp_path, 1000, _stop)

    ids = _labelled_ids(settings)
    # Every prediction joined exactly once: nothing skipped, nothing processed twice,
    # and predictions pending at the stop were joined after it (join state restored).
    assert sorted(ids) == sorted(f"p{i}" for i in range(SCENARIO.events))
    # Detector and episode state survived the restart: still one request for one drop.
    assert len(values(bootstrap, settings.topics.retrain_requests)) == 1
    assert "monitor stopped cleanly" in log.read_text()


def test_kill_9_then_restart_replays_from_the_last_checkpoint_and_loses_nothing(
    bootstrap: str, tmp_path: Path
) -> None:
    settings, _ = _interrupted_then_finished(bootstrap, tmp_path, 3000, _kill_9)

    # At least once: what the first run did after its last checkpoint is done again, so
    # some examples repeat, but every prediction is joined, pending ones included.
    assert set(_labelled_ids(settings)) == {f"p{i}" for i in range(SCENARIO.events)}
    # A repeated retrain request keeps its id: the trainer answers it once.
    requests = values(bootstrap, settings.topics.retrain_requests)
    assert len({r["id"] for r in requests}) == 1
