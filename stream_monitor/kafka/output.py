"""Producing the core's outputs: topic names from settings, delivery checked at flush."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from kafka import KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import (
    InvalidTimestampError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)

from stream_monitor.config import TopicSettings
from stream_monitor.core.events import Output

# What the broker refuses for good, whatever the retries: the record itself is at fault.
PERMANENT_ERRORS = (InvalidTimestampError, MessageSizeTooLargeError, RecordListTooLargeError)
# A dead letter for an undeliverable output holds at most this much of its input.
DEAD_LETTER_MAX_BYTES = 512 * 1024
# The input records an output came from, with the output (None for the trainer's).
Sources = Sequence[tuple[Output, ConsumerRecord | None]]


class DeliveryError(Exception):
    """The broker did not acknowledge an output; offsets must stay uncommitted."""


class Undeliverable(NamedTuple):
    """An output the broker refused for good (sent alone, to be sure it is at fault),
    and the input record it came from."""

    output: Output
    source: ConsumerRecord | None
    error: BaseException


class OutputProducer:
    """A producer for :class:`Output` records.

    ``send`` returns at once (kafka-python sends in the background); ``flush`` waits for
    every acknowledgement and raises :class:`DeliveryError` if any send failed, so a
    service commits offsets only after a successful flush.
    """

    def __init__(self, topics: TopicSettings, **producer_config: Any) -> None:
        self._names: dict[str, str] = topics.model_dump()
        # Not idempotent: kafka-python's idempotent producer takes a record the broker
        # refuses for good (too large, a timestamp out of bounds) as fatal and fails every
        # send after it, where at least once needs the others delivered and that one
        # sent to dead-letter. Retries may then repeat an output, which at least once
        # allows (the events carry ids).
        self._producer = KafkaProducer(acks="all", enable_idempotence=False, **producer_config)
        self._failures: list[tuple[Sources, BaseException]] = []
        self._examples_end: dict[bytes | None, tuple[int, int]] = {}

    def fetch_metadata(self) -> None:
        """Learn every topic's partitions now, in one round trip: otherwise the first
        record sent to each topic waits about 100 ms for them, in the middle of work."""
        names = sorted(set(self._names.values()))
        # kafka-python asks for one topic at a time; asked together, they share a request.
        with ThreadPoolExecutor(len(names)) as pool:
            list(pool.map(self._producer.partitions_for, names))

    def send(
        self, output: Output, source: ConsumerRecord | None = None, parts: Sources = ()
    ) -> None:
        """Send one output; a dead letter also names the partition and offset it came from.
        ``parts``: the outputs a batch record packs, with their input records (else the
        output itself and ``source``), so that :meth:`flush_outputs` can find the one at
        fault if the broker refuses it."""
        headers = list(output.headers)
        if source is not None and output.topic == "dead_letter":
            headers += [
                ("source.partition", str(source.partition).encode()),
                ("source.offset", str(source.offset).encode()),
            ]
        self.send_raw(
            self._names[output.topic],
            output.key,
            output.value,
            headers,
            None if output.timestamp is None else int(output.timestamp * 1000),
            parts or ((output, source),),
        )

    def dead_letter_undeliverable(self, failed: Undeliverable, source_topic: str) -> None:
        """Send the input an undeliverable output came from to dead-letter: cut to
        :data:`DEAD_LETTER_MAX_BYTES`, with its size, offset and SHA-256 in headers."""
        source = failed.source
        value = b"" if source is None or source.value is None else source.value
        headers = [
            ("error.reason", b"undeliverable"),
            ("error.detail", f"{failed.output.topic}: {failed.error!r}".encode()[:1000]),
            ("source.topic", source_topic.encode()),
            ("original.size", str(len(value)).encode()),
            ("original.sha256", hashlib.sha256(value).hexdigest().encode()),
        ]
        if source is not None:
            headers += [
                ("source.partition", str(source.partition).encode()),
                ("source.offset", str(source.offset).encode()),
            ]
        key = None if source is None or source.key is None else source.key[:1024]
        # No timestamp: the broker's own clock, which it accepts.
        self.send_raw(self._names["dead_letter"], key, value[:DEAD_LETTER_MAX_BYTES], headers)

    def send_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
        parts: Sources = (),
    ) -> None:
        try:
            future = self._producer.send(
                topic, value=value, key=key, headers=headers or [], timestamp_ms=timestamp_ms
            )
        except MessageSizeTooLargeError as exc:  # over max_request_size: refused at once
            self._failures.append((parts, exc))
            return
        future.add_errback(self._failed, parts)
        if topic == self._names["labelled_examples"]:
            future.add_callback(self._example_delivered, key)

    def _failed(self, parts: Sources, error: BaseException) -> None:
        self._failures.append((parts, error))

    def _example_delivered(self, key: bytes | None, delivered: Any) -> None:
        end = delivered.offset + 1
        if end > self._examples_end.get(key, (delivered.partition, -1))[1]:
            self._examples_end[key] = (delivered.partition, end)

    def examples_end(self, key: bytes | None) -> dict[int, int] | None:
        """Where the labelled examples of ``key`` (a model) acknowledged so far by this
        producer end: ``{partition: offset after the last}``; None before the first.
        Flush first to include those sent."""
        known = self._examples_end.get(key)
        return None if known is None else {known[0]: known[1]}

    def flush(self) -> None:
        """Wait for every acknowledgement; :class:`DeliveryError` if any send failed."""
        self._producer.flush()
        if self._failures:
            failures, self._failures = self._failures, []
            raise DeliveryError(f"{len(failures)} outputs not delivered: {failures[0][1]!r}")

    def flush_outputs(self) -> list[Undeliverable]:
        """Wait for every acknowledgement. A failure that may pass (the broker away)
        raises :class:`DeliveryError`; the outputs the broker refused for good are sent
        again one at a time (the broker refuses a whole batch for one bad record), and
        those refused alone are returned, delivered nowhere."""
        self._producer.flush()
        failures, self._failures = self._failures, []
        passing = [error for _, error in failures if not isinstance(error, PERMANENT_ERRORS)]
        if passing:
            raise DeliveryError(f"{len(passing)} outputs not delivered: {passing[0]!r}")
        undeliverable = []
        for output, source in (part for parts, _ in failures for part in parts):
            self.send(output, source)
            self._producer.flush()
            for _, error in self._failures:
                if not isinstance(error, PERMANENT_ERRORS):
                    raise DeliveryError(f"an output not delivered: {error!r}")
                undeliverable.append(Undeliverable(output, source, error))
            self._failures = []
        return undeliverable

    def close(self) -> None:
        self._producer.close()
