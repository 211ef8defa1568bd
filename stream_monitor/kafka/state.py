"""The ``monitor-state`` changelog: one compacted record per model, its latest snapshot."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import zstandard
from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from stream_monitor.kafka.topics import (
    STATE_MAX_MESSAGE_BYTES,
    StartupError,
    assign_all,
    read_to_end,
)

log = logging.getLogger(__name__)


# A Zstandard frame starts with these bytes, a zlib stream never does.
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# What a record holds besides the stored snapshot: its key and headers.
RECORD_OVERHEAD_BYTES = 64 * 1024


# Where the inputs stood when a snapshot was taken: [[topic, partition, next offset], ...].
POSITIONS_HEADER = "stream-monitor-positions"


class StateTooLargeError(StartupError):
    """A model's snapshot does not fit in a state record. The service cannot checkpoint
    it, nor get past this point after a restart, until the settings change."""


def model_id_of(key: bytes) -> str:
    """The model a record key names, and the name its snapshot is stored under: the key
    as UTF-8, any undecodable bytes replaced (U+FFFD), so that every key has a name and
    every stored name reads back.

    >>> model_id_of(b"churn"), model_id_of(b"m\\xff")
    ('churn', 'm\\ufffd')
    """
    return key.decode(errors="replace")


def encode(snapshot: bytes) -> bytes:
    """A snapshot as stored: compressed with Zstandard at level 1.

    Snapshots are mostly pending events' JSON and repeated names. On a 10 MB snapshot (a
    join holding 40,000 predictions), level 1 takes 21 ms for 1.9 MB; zlib at its
    fastest level took 57 ms for 2.4 MB, on the service's thread at every checkpoint.
    """
    return zstandard.ZstdCompressor(level=1).compress(snapshot)


def stored(model_id: str, snapshot: bytes, record_limit: int = STATE_MAX_MESSAGE_BYTES) -> bytes:
    """:func:`encode`, refused with :class:`StateTooLargeError` if it does not fit in a
    record of ``record_limit`` bytes (the state topic's ``max.message.bytes``).

    The label join's pending events are in the local store, not in the snapshot: what
    remains is detectors and feature windows, a few hundred kB per model version.
    """
    value = encode(snapshot)
    limit = record_limit - RECORD_OVERHEAD_BYTES
    if len(value) > limit:
        raise StateTooLargeError(
            f"the state of model {model_id!r} is {len(value) / 1e6:.1f} MB compressed, "
            f"over the {limit / 1e6:.1f} MB a record of the state topic may hold "
            f"(max.message.bytes, at most {STATE_MAX_MESSAGE_BYTES / 1e6:.0f} MB here): "
            "raise the state topic's max.message.bytes, or monitor fewer model versions or "
            "features per model (defaults.features)."
        )
    return value


def decode(value: bytes) -> bytes:
    """The snapshot in a stored value: Zstandard, or zlib as earlier versions wrote."""
    if value.startswith(_ZSTD_MAGIC):
        return zstandard.ZstdDecompressor().decompress(value)
    return zlib.decompress(value)


@dataclass
class StoredState:
    """What the state topic holds: the newest snapshot of each model, and the input
    positions it was taken at (none for snapshots written before they were recorded)."""

    snapshots: dict[str, bytes] = field(default_factory=dict)
    positions: dict[str, dict[TopicPartition, int]] = field(default_factory=dict)
    where: dict[str, str] = field(default_factory=dict)
    """Where each snapshot was read (topic, partition, offset), for error messages."""


def positions_header(positions: Mapping[TopicPartition, int]) -> tuple[str, bytes]:
    """A snapshot record's header: the input positions its state has read up to.

    >>> name, value = positions_header({TopicPartition("predictions", 0): 42})
    >>> positions_in({name: value})
    {TopicPartition(topic='predictions', partition=0): 42}
    """
    return POSITIONS_HEADER, orjson.dumps(
        [[tp.topic, tp.partition, o] for tp, o in positions.items()]
    )


def positions_in(headers: Mapping[str, bytes]) -> dict[TopicPartition, int] | None:
    """The positions a snapshot record's headers hold (None if it has none)."""
    value = headers.get(POSITIONS_HEADER)
    if value is None:
        return None
    return {TopicPartition(t, p): o for t, p, o in orjson.loads(value)}


def read_state(consumer_config: dict[str, Any], topic: str) -> StoredState:
    """Read the whole state topic up to its current end: the newest snapshot per model.

    A tombstone (null value) removes a model. Uses its own group-less consumer so the
    service's group offsets are untouched.
    """
    consumer = KafkaConsumer(**consumer_config, group_id=None, enable_auto_commit=False)
    try:
        found = StoredState()
        for record in read_to_end(consumer, assign_all(consumer, topic, from_beginning=True)):
            if record.key is None:
                continue
            model_id = model_id_of(record.key)
            found.positions.pop(model_id, None)
            if record.value is None:
                found.snapshots.pop(model_id, None)
                continue
            found.where[model_id] = f"{topic} partition {record.partition} offset {record.offset}"
            try:
                found.snapshots[model_id] = decode(record.value)
            except (zstandard.ZstdError, zlib.error):
                # Not compressed as snapshots are: restoring it names the record.
                found.snapshots[model_id] = b"not a compressed snapshot"
            positions = positions_in(dict(record.headers or ()))
            if positions is not None:
                found.positions[model_id] = positions
        log.info("state read", extra={"topic": topic, "models": len(found.snapshots)})
        return found
    finally:
        consumer.close()
