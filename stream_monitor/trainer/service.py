"""How a retrain request gets from Kafka to the trainer and its answer back.

One request at a time, at least once::

    poll a request -> parse it (broken: dead-letter) -> handle_request: answered before?
    acknowledge as a duplicate : read labelled-examples for the model and window,
    retrain, register, journal -> publish the answer to model-events (and escalations)
    -> flush -> journal it as done -> commit the request's offset

The commit comes last, so a crash anywhere replays the request; the registry's
journal turns the replay into publishing the recorded answer again (same event ids)
or, once that was done, into an acknowledgement. Nothing here decides anything:
that is :mod:`stream_monitor.trainer.training`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError
from kafka.structs import OffsetAndMetadata, TopicPartition

from stream_monitor.core.events import InvalidRecordError, dead_letter
from stream_monitor.health import Health, heartbeat_age_of
from stream_monitor.kafka.acls import trainer_topics
from stream_monitor.kafka.output import OutputProducer
from stream_monitor.kafka.service import FETCH_BYTES
from stream_monitor.kafka.topics import assign_all, ensure_topics
from stream_monitor.trainer.metrics import TrainerMetrics
from stream_monitor.trainer.registry import ModelRegistry
from stream_monitor.trainer.settings import TrainerSettings
from stream_monitor.trainer.training import (
    IncompleteExamplesError,
    RetrainRequest,
    handle_request,
    parse_request,
    training_window,
)

log = logging.getLogger(__name__)

READ_IDLE_SECONDS = 60.0
"""A window read that gets no record for this long while records remain fails (and the
service with it, to retry after a restart) rather than waiting forever."""


class TrainerService:
    """Answers the requests on ``retrain-requests`` until ``stop`` is set."""

    def __init__(
        self,
        settings: TrainerSettings,
        metrics: TrainerMetrics,
        stop: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.stop = stop or threading.Event()
        self.registry = ModelRegistry(settings.registry_dir)
        self.health = Health(settings.health)
        self._client = settings.kafka.client()
        self._producer: OutputProducer | None = None
        self._consumer: KafkaConsumer | None = None

    # ---- lifecycle -----------------------------------------------------------------

    def run(self) -> None:
        """Check topics, then answer requests until ``stop`` is set. A stop lets the
        request in progress finish, be published and committed."""
        kafka = self.settings.kafka
        # The monitor's checks and layout, for the topics the trainer uses.
        ensure_topics(kafka, self.settings.topics, trainer_topics(self.settings.topics))
        self._producer = OutputProducer(self.settings.topics, **self._client, linger_ms=5)
        self._consumer = KafkaConsumer(
            **self._client,
            **kafka.group(),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=kafka.max_poll_records,
            # Past this without a poll the group gives our partitions to another instance.
            max_poll_interval_ms=int(self.settings.max_request_seconds * 1000),
        )
        self._consumer.subscribe([self.settings.topics.retrain_requests])
        self.health.watch_group(heartbeat_age_of(self._consumer))
        log.info(
            "trainer started",
            extra={
                "topic": self.settings.topics.retrain_requests,
                "registry": str(self.settings.registry_dir),
            },
        )
        try:
            while not self.stop.is_set():
                self.health.loop_turned()
                self.health.assigned(len(self._consumer.assignment()))
                batch = self._consumer.poll(timeout_ms=kafka.poll_timeout_ms)
                for record in (r for records in batch.values() for r in records):
                    if self.stop.is_set():
                        break  # uncommitted: the next start reads it again
                    self._process(record)
            log.info("trainer stopped cleanly")
        finally:
            self._consumer.close(autocommit=False)
            self._producer.close()

    # ---- one request ---------------------------------------------------------------

    def _process(self, record: ConsumerRecord) -> None:
        self.metrics.requests.inc()
        try:
            request = parse_request(record.value)
        except InvalidRecordError as exc:
            self.metrics.invalid.labels(exc.reason).inc()
            log.warning(
                "invalid retrain request",
                extra={
                    "reason": exc.reason,
                    "partition": record.partition,
                    "offset": record.offset,
                },
            )
            assert self._producer is not None
            self._producer.send(
                dead_letter("retrain_requests", record.key, record.value, exc), record
            )
            self._producer.flush()
        else:
            self._answer(request)
        self._commit(record)

    def _answer(self, request: RetrainRequest) -> None:
        model_id = request.data.model_id
        settings = self.settings.for_model(model_id)
        start, end = training_window(request, settings)
        arrived_at, started = time.time(), time.perf_counter()
        # Lazy: nothing is read for a duplicate or a model the trainer does not train.
        examples = read_between(
            self._client,
            self.settings.topics.labelled_examples,
            start,
            end,
            key=model_id.encode(),
            until=request.data.labelled_examples,
            wait_seconds=self.settings.examples_wait_seconds,
        )
        record, outcome = handle_request(
            self.registry,
            request,
            examples,
            settings,
            arrived_at=arrived_at,
            configured=model_id in self.settings.models,
        )
        about = {"request_id": request.id, "model_id": model_id}
        if record.done:
            self.metrics.duplicates.inc()
            log.info("duplicate retrain request acknowledged", extra=about)
            return
        if outcome is not None and outcome.candidate is not None:
            self.metrics.training_seconds.observe(time.perf_counter() - started)
        assert self._producer is not None
        for output in record.events:
            self._producer.send(output)
        self._producer.flush()
        self.registry.record_request(replace(record, done=True))
        self.metrics.answered(record, outcome)
        log.info(
            "retrain request answered",
            extra={
                **about,
                "outcome": record.outcome,
                "code": record.code,
                "version": record.version,
                "escalated": record.escalated,
                "reason": None if outcome is None else outcome.reason,
                "seconds": round(time.perf_counter() - started, 3),
            },
        )

    def _commit(self, record: ConsumerRecord) -> None:
        assert self._consumer is not None
        tp = TopicPartition(record.topic, record.partition)
        try:
            self._consumer.commit({tp: OffsetAndMetadata(record.offset + 1, "", -1)})
        except CommitFailedError as exc:
            # The group moved the partition meanwhile (a request outlasted
            # max_request_seconds): its new owner replays the request, which the
            # journal turns into an acknowledgement.
            log.warning(
                "commit refused after a rebalance",
                extra={"partition": record.partition, "offset": record.offset, "error": str(exc)},
            )


def read_between(
    client: Mapping[str, Any],
    topic: str,
    start: float,
    end: float,
    key: bytes | None = None,
    until: Mapping[int, int] | None = None,
    wait_seconds: float = 60.0,
) -> Iterator[bytes]:
    """Values of the records of ``topic`` stamped between ``start`` and ``end`` (epoch
    seconds), lazily, partition by partition as the broker sends them.

    Each partition is sought (``offsets_for_times``) to its first record stamped at or
    after ``start``. With ``until`` (partition -> end offset, exclusive, as a retrain
    request names them) only those partitions are read, exactly to those offsets,
    after waiting up to ``wait_seconds`` for the broker to make them readable
    (:class:`IncompleteExamplesError` if it does not). Without it, each partition is
    read up to its first record stamped after ``end``, included since a batch record is
    stamped with its newest event and may hold earlier ones, or up to its end offset
    when the read began, whichever comes first: records produced meanwhile are not
    waited for. With ``key``, records of other keys are skipped. Events inside a record
    still need filtering by their own time.
    """
    consumer = KafkaConsumer(
        **client, group_id=None, enable_auto_commit=False, max_partition_fetch_bytes=FETCH_BYTES
    )
    try:
        partitions = assign_all(consumer, topic)
        if until is not None:
            stop_at = _readable_until(consumer, topic, partitions, until, wait_seconds)
            partitions = list(stop_at)
            consumer.assign(partitions)
        else:
            stop_at = consumer.end_offsets(partitions) if partitions else {}
        if not partitions:
            return
        found = consumer.offsets_for_times({tp: int(start * 1000) for tp in partitions})
        todo: set[TopicPartition] = set()
        for tp in partitions:
            first = found.get(tp)
            if first is not None and first.offset < stop_at[tp]:
                consumer.seek(tp, first.offset)
                todo.add(tp)
        consumer.pause(*(set(partitions) - todo))
        # A batch stamped after the window may hold earlier events: only without exact
        # offsets does a timestamp end the read.
        end_ms = end * 1000 if until is None else math.inf
        read, last_record = 0, time.monotonic()
        while todo:
            batch = consumer.poll(timeout_ms=500)
            for tp, records in batch.items():
                if tp not in todo:
                    continue
                finished = False
                for record in records:
                    finished = record.offset >= stop_at[tp]
                    if finished:
                        break
                    read += 1
                    if key is None or record.key == key:
                        yield record.value
                    finished = record.timestamp > end_ms
                    if finished:
                        break
                if finished or consumer.position(tp) >= stop_at[tp]:
                    todo.discard(tp)
                    consumer.pause(tp)
            if batch:
                last_record = time.monotonic()
            elif time.monotonic() - last_record > READ_IDLE_SECONDS:
                raise TimeoutError(
                    f"no record of {topic} for {READ_IDLE_SECONDS:g} s while reading "
                    f"{sorted(str(tp) for tp in todo)}"
                )
        log.info("window read", extra={"topic": topic, "records": read})
    finally:
        consumer.close()


def _readable_until(
    consumer: KafkaConsumer,
    topic: str,
    partitions: list[TopicPartition],
    until: Mapping[int, int],
    wait_seconds: float,
) -> dict[TopicPartition, int]:
    """``until`` as topic partitions, once the broker's end offsets reach it; raises
    :class:`IncompleteExamplesError` naming the shortfall after ``wait_seconds``."""
    existing = {tp.partition: tp for tp in partitions}
    missing = sorted(set(until) - set(existing))
    if missing:
        raise IncompleteExamplesError(f"{topic} has no partition {missing[0]}")
    wanted = {existing[p]: offset for p, offset in until.items()}
    deadline = time.monotonic() + wait_seconds
    while True:
        ends = consumer.end_offsets(list(wanted)) if wanted else {}
        short = {tp: o for tp, o in wanted.items() if ends[tp] < o}
        if not short:
            return wanted
        if time.monotonic() > deadline:
            tp, offset = min(short.items())
            raise IncompleteExamplesError(
                f"{topic} partition {tp.partition} reaches offset {ends[tp]}, not the "
                f"{offset} the request names, after waiting {wait_seconds:g} s"
            )
        time.sleep(0.2)
