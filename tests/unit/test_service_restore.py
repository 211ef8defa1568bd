"""Restoring a model's state on first sight of its key (no broker: nothing is started)."""

from __future__ import annotations

import json

import pytest
from kafka.structs import TopicPartition

from stream_monitor.config import MonitorSettings
from stream_monitor.core.monitor import MonitorCore
from stream_monitor.kafka.service import MonitorService
from stream_monitor.kafka.topics import StartupError
from stream_monitor.metrics import MonitorMetrics

MODEL = "m\ufffd"  # what the key below decodes to, with replacement
_PREDICTION = {
    "prediction_id": "p1",
    "model_id": MODEL,
    "model_version": "1",
    "timestamp": 1_767_225_600_000,
    "features": {"x": 1.0},
    "prediction": "yes",
}


def test_a_key_that_is_not_utf8_restores_by_its_decoded_name_without_failing() -> None:
    service = MonitorService(MonitorSettings(), MonitorMetrics())
    writer = MonitorCore(MonitorSettings(), stores=service._store)  # on the same disk
    writer.process("predictions", MODEL.encode(), json.dumps(_PREDICTION).encode())
    writer.checkpoint_join(MODEL)
    service._snapshots = {MODEL: writer.snapshot(MODEL)}

    service._prepare_model(b"m\xff", TopicPartition("predictions", 0))

    assert service.core.models() == [MODEL]
    assert service.core.stats().pending["prediction"] == 1
    service._store.close()


def test_a_snapshot_taken_past_the_resume_point_skips_until_its_positions() -> None:
    service = MonitorService(MonitorSettings(), MonitorMetrics())
    writer = MonitorCore(MonitorSettings(), stores=service._store)
    writer.process("predictions", b"m", json.dumps({**_PREDICTION, "model_id": "m"}).encode())
    writer.checkpoint_join("m")
    predictions, labels = TopicPartition("predictions", 3), TopicPartition("ground-truth", 3)
    service._snapshots = {"m": writer.snapshot("m")}
    service._positions = {"m": {predictions: 120, labels: 80}}

    service._prepare_model(b"m", predictions)

    assert service._restored_ahead_in(predictions, 100) == {"m": 120}
    # Reading has passed the labels' position: nothing to skip there, and it is forgotten.
    assert service._restored_ahead_in(labels, 80) == {}
    service._next_offsets = {predictions: 105, labels: 90}
    assert service._positions_of("m") == {predictions: 120, labels: 90}
    service._store.close()


def test_an_invalid_snapshot_is_refused_naming_its_model_and_offset() -> None:
    bad = b"stream-monitor/\x03\x92\x03\xa9os.system"  # the current header, then no snapshot
    for discard in (False, True):
        settings = MonitorSettings(checkpoint={"discard_incompatible_state": discard})
        service = MonitorService(settings, MonitorMetrics())
        service._snapshots = {"m": bad}
        service._snapshots_read_at = {"m": "monitor-state partition 0 offset 41"}
        if not discard:
            with pytest.raises(StartupError, match="'m' at monitor-state partition 0 offset 41"):
                service._prepare_model(b"m", TopicPartition("predictions", 0))
            service._store.close()
            continue
        service._prepare_model(b"m", TopicPartition("predictions", 0))  # starts afresh
        assert service.metrics.state_discarded._value.get() == 1
        assert service.core.models() == []
        service._store.close()
