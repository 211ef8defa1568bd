"""Restoring a model's state on first sight of its key (no broker: nothing is started)."""

from __future__ import annotations

import json

from kafka.structs import TopicPartition

from stream_monitor.config import MonitorSettings
from stream_monitor.core.monitor import MonitorCore
from stream_monitor.kafka.service import MonitorService
from stream_monitor.metrics import MonitorMetrics

MODEL = "m\ufffd"  # what the key below decodes to, with replacement


def test_a_key_that_is_not_utf8_restores_by_its_decoded_name_without_failing() -> None:
    writer = MonitorCore(MonitorSettings())
    prediction = {
        "prediction_id": "p1",
        "model_id": MODEL,
        "model_version": "1",
        "timestamp": 1_767_225_600_000,
        "features": {"x": 1.0},
        "prediction": "yes",
    }
    writer.process("predictions", MODEL.encode(), json.dumps(prediction).encode())
    service = MonitorService(MonitorSettings(), MonitorMetrics())
    service._snapshots = {MODEL: writer.snapshot(MODEL)}

    service._prepare_model(b"m\xff", TopicPartition("predictions", 0))

    assert service.core.models() == [MODEL]
    assert service.core.stats().pending["prediction"] == 1
