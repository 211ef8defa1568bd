"""Producing the core's outputs: topic names from settings, delivery checked at flush."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kafka import KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord

from stream_monitor.config import TopicSettings
from stream_monitor.core.events import Output


class DeliveryError(Exception):
    """The broker did not acknowledge an output; offsets must stay uncommitted."""


class OutputProducer:
    """A producer for :class:`Output` records.

    ``send`` returns at once (kafka-python sends in the background); ``flush`` waits for
    every acknowledgement and raises :class:`DeliveryError` if any send failed, so a
    service commits offsets only after a successful flush.
    """

    def __init__(self, topics: TopicSettings, **producer_config: Any) -> None:
        self._names: dict[str, str] = topics.model_dump()
        self._producer = KafkaProducer(acks="all", **producer_config)
        self._failures: list[BaseException] = []
        self._examples_end: dict[bytes | None, tuple[int, int]] = {}

    def fetch_metadata(self) -> None:
        """Learn every topic's partitions now, in one round trip: otherwise the first
        record sent to each topic waits about 100 ms for them, in the middle of work."""
        names = sorted(set(self._names.values()))
        # kafka-python asks for one topic at a time; asked together, they share a request.
        with ThreadPoolExecutor(len(names)) as pool:
            list(pool.map(self._producer.partitions_for, names))

    def send(self, output: Output, source: ConsumerRecord | None = None) -> None:
        """Send one output; a dead letter also names the partition and offset it came from."""
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
        )

    def send_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        future = self._producer.send(
            topic, value=value, key=key, headers=headers or [], timestamp_ms=timestamp_ms
        )
        future.add_errback(self._failures.append)
        if topic == self._names["labelled_examples"]:
            future.add_callback(self._example_delivered, key)

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
        self._producer.flush()
        if self._failures:
            failures, self._failures = self._failures, []
            raise DeliveryError(f"{len(failures)} outputs not delivered: {failures[0]!r}")

    def close(self) -> None:
        self._producer.close()
