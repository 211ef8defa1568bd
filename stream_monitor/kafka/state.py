"""The ``monitor-state`` changelog: one compacted record per model, its latest snapshot."""

from __future__ import annotations

import logging
import zlib
from typing import Any

from kafka import KafkaConsumer

from stream_monitor.kafka.topics import assign_all, read_to_end

log = logging.getLogger(__name__)


def encode(snapshot: bytes) -> bytes:
    # Snapshots are mostly repeated feature names and field names: zlib shrinks them ~5x.
    return zlib.compress(snapshot, 1)


def decode(value: bytes) -> bytes:
    return zlib.decompress(value)


def read_snapshots(consumer_config: dict[str, Any], topic: str) -> dict[str, bytes]:
    """Read the whole state topic up to its current end: the newest snapshot per model.

    A tombstone (null value) removes a model. Uses its own group-less consumer so the
    service's group offsets are untouched.
    """
    consumer = KafkaConsumer(**consumer_config, group_id=None, enable_auto_commit=False)
    try:
        snapshots: dict[str, bytes] = {}
        for record in read_to_end(consumer, assign_all(consumer, topic, from_beginning=True)):
            if record.key is None:
                continue
            model_id = record.key.decode()
            if record.value is None:
                snapshots.pop(model_id, None)
            else:
                snapshots[model_id] = decode(record.value)
        log.info("state read", extra={"topic": topic, "models": len(snapshots)})
        return snapshots
    finally:
        consumer.close()
