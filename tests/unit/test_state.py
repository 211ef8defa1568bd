"""How snapshots are stored in the monitor-state topic (no broker needed)."""

from __future__ import annotations

import json
import zlib

import pytest

from stream_monitor.config import MonitorSettings
from stream_monitor.core.monitor import MonitorCore
from stream_monitor.kafka import state
from stream_monitor.kafka.topics import StartupError
from stream_monitor.simulate import Scenario, stream


def _snapshot() -> bytes:
    """A model that saw 3,000 predictions (its join's entries are not in it)."""
    core = MonitorCore(MonitorSettings())
    for topic, key, value in stream(Scenario(events=3_000, drift_at=None)):
        if topic == "predictions":
            core.process(topic, key.encode(), json.dumps(value).encode())
    return core.snapshot("demo-model")


def test_stored_snapshot_is_compressed_and_restores_byte_for_byte() -> None:
    snapshot = _snapshot()
    stored = state.encode(snapshot)
    assert len(stored) < len(snapshot) / 1.5
    assert state.decode(stored) == snapshot


def test_snapshot_stored_with_zlib_by_earlier_versions_is_still_read() -> None:
    snapshot = _snapshot()
    assert state.decode(zlib.compress(snapshot, 1)) == snapshot


def test_a_snapshot_too_large_for_a_state_record_is_refused_naming_the_setting() -> None:
    snapshot = _snapshot()
    assert state.stored("demo-model", snapshot) == state.encode(snapshot)
    with pytest.raises(state.StateTooLargeError, match="demo-model") as refused:
        limit = len(state.encode(snapshot)) + state.RECORD_OVERHEAD_BYTES - 1
        state.stored("demo-model", snapshot, record_limit=limit)
    assert "max.message.bytes" in str(refused.value)
    assert isinstance(refused.value, StartupError)  # printed without a traceback, exit 2
