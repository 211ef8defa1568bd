"""How a record gets from Kafka to the core and back.

The loop, at least once::

    poll a batch -> core.process each record -> produce outputs (sent in the background)
    -> every N records or T seconds: flush outputs, snapshot touched models to
       monitor-state, flush, commit offsets

Labelled examples are packed into CloudEvents batch records, one or a few per model
and poll: producing one Kafka record per example would halve throughput.

Offsets are committed only after the outputs and the snapshots they depend on are
acknowledged by the broker, so a crash at any point replays, never skips. Each snapshot
carries the input positions it was taken at, so a replay does not apply a record to a
model's state twice; outputs may repeat, and events that must not (retrain requests)
carry deterministic ids.
"""

from __future__ import annotations

import gc
import logging
import math
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence

import orjson
from kafka import ConsumerRebalanceListener, KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.errors import CommitFailedError, KafkaError, RebalanceInProgressError
from kafka.structs import OffsetAndMetadata, TopicPartition

from stream_monitor.config import MonitorSettings
from stream_monitor.core.events import (
    GroundTruth,
    Output,
    Prediction,
    batch_chunks,
    batch_record,
    deterministic_id,
    envelope,
)
from stream_monitor.core.monitor import (
    IncompatibleSnapshotError,
    InputTopic,
    InvalidSnapshotError,
    MonitorCore,
    readable_snapshots,
)
from stream_monitor.health import Health, heartbeat_age_of
from stream_monitor.kafka import state
from stream_monitor.kafka.output import OutputProducer, Sources
from stream_monitor.kafka.topics import (
    STATE_MAX_MESSAGE_BYTES,
    StartupError,
    assign_all,
    ensure_topics,
    read_to_end,
    state_record_limit,
)
from stream_monitor.metrics import MonitorMetrics
from stream_monitor.store import RocksStore, StoreLockedError

log = logging.getLogger(__name__)

_DISCARD_ADVICE = (
    "set checkpoint.discard_incompatible_state: true (environment: "
    "STREAM_MONITOR_CHECKPOINT__DISCARD_INCOMPATIBLE_STATE=true) to start those models "
    "afresh, losing their detector state and pending join entries."
)

# Stats for the metrics take milliseconds (feature tests' p-values): not every batch.
STATS_EVERY_SECONDS = 1.0
# Promotions are rare, and each poll of their topic costs a millisecond (a round trip
# to kafka-python's IO thread): looked for at most this often.
MODEL_EVENTS_EVERY_SECONDS = 1.0
# Bigger fetches than kafka-python's 1 MB default: fewer round trips per record.
FETCH_BYTES = 8 * 1024 * 1024
# How long the broker may hold a fetch for a partition with no new records (Kafka's
# default: 500 ms). kafka-python keeps one fetch in flight per broker, and leaves out a
# partition that still has records buffered: when one topic's partition has been read
# to its end and the other's has not, the long fetch for the first blocked the fetch for
# the second, and reading a backlog stalled for up to this long (366 and 475 ms in two
# runs of the throughput benchmark out of three, in runs of 2 s).
FETCH_WAIT_MS = 100


def set_aside_startup_objects() -> None:
    """Move every object alive now out of the garbage collector's sight.

    The 105,000 objects of the imported libraries never become garbage, yet each full
    collection walks them: 65 ms on a 2-core machine, landing in whichever checkpoint
    happens to allocate at the time (docs/performance.md). The collection first, so
    that garbage is not kept for good.
    """
    gc.collect()
    gc.freeze()


class MonitorService:
    """Runs :class:`MonitorCore` on the configured topics until ``stop`` is set."""

    def __init__(
        self,
        settings: MonitorSettings,
        metrics: MonitorMetrics,
        stop: threading.Event | None = None,
        references: Mapping[str, Sequence[Prediction]] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.stop = stop or threading.Event()
        try:
            self._store = RocksStore(settings.join.store_dir, settings.join.store_cache_mb)
        except StoreLockedError as exc:
            raise StartupError(str(exc)) from None
        self._store_over_limit = False
        self.core = MonitorCore(settings, references, self._store)
        self.health = Health(settings.health, restores_state=True)
        topics = settings.topics
        self._input: dict[str, InputTopic] = {
            topics.predictions: "predictions",
            topics.ground_truth: "ground_truth",
        }
        self._client = settings.kafka.client()
        self._state_limit = STATE_MAX_MESSAGE_BYTES  # the topic's own, once started
        self._snapshots: dict[str, bytes] = {}
        self._snapshots_read_at: dict[str, str] = {}  # where each was read, for errors
        self._positions: dict[str, dict[TopicPartition, int]] = {}
        # Restored models whose snapshot was taken past where reading resumes: records
        # before these positions are already in their state (the commit after it failed).
        # Per model, not per partition: a checkpoint's snapshots may have landed in part.
        self._restored_ahead: dict[str, dict[TopicPartition, int]] = {}
        self._reload_state = False
        # By model_id, as state.model_id_of() names a record key.
        self._partition_of: dict[str, TopicPartition] = {}
        self._touched: set[str] = set()
        self._next_offsets: dict[TopicPartition, int] = {}
        self.processed = 0
        """Records of the input topics processed since the start (read by benchmarks)."""
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._stats_published = -math.inf
        self._model_events_read = -math.inf
        self._producer: OutputProducer | None = None
        self._consumer: KafkaConsumer | None = None
        self._model_events: KafkaConsumer | None = None

    # ---- lifecycle -----------------------------------------------------------------

    def run(self) -> None:
        """Check topics, then process until ``stop`` is set; finish with a checkpoint."""
        try:
            self._serve()
        finally:
            self._store.close()

    def _serve(self) -> None:
        ensure_topics(self.settings.kafka, self.settings.topics)
        self._state_limit = state_record_limit(
            self.settings.kafka, self.settings.topics.monitor_state
        )
        self._producer = OutputProducer(
            self.settings.topics,
            **self._client,
            linger_ms=20,
            batch_size=256 * 1024,
            max_request_size=STATE_MAX_MESSAGE_BYTES,
        )
        self._producer.fetch_metadata()
        self._consumer = KafkaConsumer(
            **self._client,
            **self.settings.kafka.group(),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.settings.kafka.max_poll_records,
            max_partition_fetch_bytes=FETCH_BYTES,
            fetch_max_wait_ms=FETCH_WAIT_MS,
            # Range assignment gives the same partition numbers of co-partitioned topics
            # to one instance, so a prediction and its label meet in one process.
            partition_assignment_strategy=[RangePartitionAssignor],
        )
        self._consumer.subscribe(list(self._input), listener=_Rebalance(self))
        self.health.watch_group(heartbeat_age_of(self._consumer))
        # Every instance reads every model event (they are rare) and applies those of the
        # models it owns: the trainer's partitioner need not match the serving apps'.
        self._model_events = KafkaConsumer(**self._client, group_id=None)
        assign_all(self._model_events, self.settings.topics.model_events, from_beginning=True)
        log.info("monitor started", extra={"topics": list(self._input)})
        set_aside_startup_objects()
        try:
            while not self.stop.is_set():
                self.health.loop_turned()
                self._apply_model_events()
                self._process_batch()
                if self._checkpoint_due():
                    self.checkpoint()
            self.checkpoint()
            log.info("monitor stopped cleanly")
        finally:
            self._consumer.close(autocommit=False)
            self._model_events.close()
            self._producer.close()

    def _process_batch(self) -> None:
        assert self._consumer is not None and self._producer is not None
        batch = self._consumer.poll(
            timeout_ms=self.settings.kafka.poll_timeout_ms,
            max_records=self.settings.kafka.max_poll_records,
        )
        if self._reload_state:
            self._rewind_to_checkpoint()
            return  # read from where kafka-python left off, not from the checkpoint
        if not batch:
            self._publish_stats()
            self._report_lag()
            return
        started = time.perf_counter()
        clock = time.time()  # event time is bounded around it (settings.limits)
        examples: dict[bytes | None, list[tuple[Output, ConsumerRecord]]] = defaultdict(list)
        others: list[tuple[Output, ConsumerRecord]] = []
        for tp, records in batch.items():
            topic = self._input[tp.topic]
            for key in {record.key for record in records}:
                self._prepare_model(key, tp)
            ahead = self._restored_ahead_in(tp, records[0].offset)
            for record in records:
                if ahead and record.offset < ahead.get(state.model_id_of(record.key or b""), 0):
                    continue  # already in the model's snapshot
                for output in self.core.process(topic, record.key, record.value, clock):
                    if output.topic == "labelled_examples":
                        examples[output.key].append((output, record))
                    else:
                        others.append((output, record))
            self._next_offsets[tp] = records[-1].offset + 1
            self._since_checkpoint += len(records)
            self.processed += len(records)
            self.metrics.consumed.labels(tp.topic).inc(len(records))
        # Examples first: a retrain request of this poll must not reach the trainer
        # before the examples its training window ends with.
        for per_model in examples.values():
            for example_batch, parts in _batches(per_model):
                self._producer.send(example_batch, parts=parts)
        for output, source in others:
            if output.topic == "retrain_requests":
                self._producer.send(self._with_examples_end(output), source)
            else:
                self._producer.send(output, source)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        if time.monotonic() - self._stats_published >= STATS_EVERY_SECONDS:
            self._publish_stats()
        self._report_lag()

    def _with_examples_end(self, request: Output) -> Output:
        """The retrain request, saying how far its model's labelled examples reach once
        those sent before it are acknowledged, so the trainer reads exactly to there
        (retrain requests are rare: one flush each)."""
        assert self._producer is not None
        self._deliver_outputs()
        reach = self._producer.examples_end(request.key)
        if reach is None:  # none written since this process started: the trainer reads to the end
            return request
        body = orjson.loads(request.value)
        body["data"]["labelled_examples"] = reach
        return request._replace(value=orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS))

    def _rewind_to_checkpoint(self) -> None:
        """After a rebalance: reload the state topic and start every assigned partition
        again from its committed offset, where its models' snapshots were taken.

        Revocation forgot the models and their progress since then, but kafka-python
        keeps the position of a partition that stays assigned: reading on from there
        would leave those records out of the models' state.
        """
        assert self._consumer is not None
        stored = state.read_state(self._client, self.settings.topics.monitor_state)
        self._snapshots_read_at = stored.where
        self._snapshots = self._readable(stored.snapshots)
        self._reload_state = False
        assigned = list(self._consumer.assignment())
        # A position past a partition's end was read from a topic since deleted and
        # created again: skipping up to it would skip new records.
        ends = self._consumer.end_offsets(assigned) if assigned else {}
        self._positions = {
            model_id: {tp: p for tp, p in positions.items() if p <= ends.get(tp, p)}
            for model_id, positions in stored.positions.items()
            if model_id in self._snapshots  # a discarded snapshot's records are not held
        }
        for tp in assigned:
            committed = self._consumer.committed(tp)
            if committed is None:
                self._consumer.seek_to_beginning(tp)  # as auto_offset_reset="earliest"
            else:
                self._consumer.seek(tp, committed)
        self.health.restored()

    def _publish_stats(self) -> None:
        self.metrics.core.stats = self.core.stats()
        self._stats_published = time.monotonic()

    def _readable(self, snapshots: dict[str, bytes]) -> dict[str, bytes]:
        try:
            readable, discarded = readable_snapshots(
                snapshots,
                self.settings.checkpoint.discard_incompatible_state,
                self._snapshots_read_at,
            )
        except IncompatibleSnapshotError as exc:
            raise StartupError(
                f"{exc}. Run the version that wrote them, or {_DISCARD_ADVICE}"
            ) from None
        for model_id, found in discarded.items():
            log.warning("model state discarded", extra={"model_id": model_id, "format": found})
            self.metrics.state_discarded.inc()
        return readable

    def _apply_model_events(self) -> None:
        assert self._model_events is not None
        if time.monotonic() - self._model_events_read < MODEL_EVENTS_EVERY_SECONDS:
            return
        self._model_events_read = time.monotonic()
        for records in self._model_events.poll(timeout_ms=0).values():
            for record in records:
                outcome = self.core.apply_model_event(record.value)
                if outcome:
                    log.info("model event", extra={"outcome": outcome})
                    self._publish_stats()

    def _prepare_model(self, key: bytes | None, tp: TopicPartition) -> None:
        """Remember which partition owns a model; restore its state on first sight."""
        if key is None:
            return
        model_id = state.model_id_of(key)
        self._touched.add(model_id)
        if model_id in self._partition_of:
            return
        self._partition_of[model_id] = tp
        snapshot = self._snapshots.pop(model_id, None)
        if snapshot is not None:
            try:
                self.core.restore(model_id, snapshot, self._snapshots_read_at.get(model_id, ""))
            except (InvalidSnapshotError, IncompatibleSnapshotError) as exc:
                if not self.settings.checkpoint.discard_incompatible_state:
                    raise StartupError(f"{exc}. {_DISCARD_ADVICE}") from None
                log.warning(
                    "model state discarded", extra={"model_id": model_id, "error": str(exc)}
                )
                self.metrics.state_discarded.inc()
                return
            positions = self._positions.pop(model_id, None)
            if positions:
                self._restored_ahead[model_id] = positions
            if self.core.join(model_id).needs_rebuild:
                self._rebuild_join(model_id, tp.partition, positions or {})
            log.info("model state restored", extra={"model_id": model_id})

    def _rebuild_join(
        self, model_id: str, partition: int, positions: Mapping[TopicPartition, int]
    ) -> None:
        """Make the local store hold the model's pending entries as of its snapshot: the
        store was written at another checkpoint (a crash between the two writes), or is
        new here (the partition moved, the disk was lost). The inputs are read again
        from the TTL horizon to the snapshot's positions, through the join alone: no
        detector sees them, no output is produced.

        The horizon goes back ``ttl + max_skew`` before the join's cutoff: every label
        read again then finds the prediction it joined, rather than waiting as an early
        label. Kafka finds it by record timestamp, which is at or after event time when
        the serving apps produce as they predict."""
        assert self._consumer is not None
        started = time.monotonic()
        join = self.core.join(model_id)
        horizon = join.cutoff - join.ttl_seconds - join.max_skew_seconds
        horizon_ms = max(0, int(horizon * 1000)) if math.isfinite(horizon) else 0
        partitions = [TopicPartition(topic, partition) for topic in self._input]
        ends = {tp: positions.get(tp, (self._consumer.committed(tp) or 0)) for tp in partitions}
        reader = KafkaConsumer(
            **self._client,
            group_id=None,
            enable_auto_commit=False,
            max_partition_fetch_bytes=FETCH_BYTES,
            fetch_max_wait_ms=FETCH_WAIT_MS,
        )
        try:
            reader.assign(partitions)
            starts = reader.offsets_for_times(dict.fromkeys(partitions, horizon_ms))
            for tp in partitions:
                found = starts.get(tp)
                reader.seek(tp, min(ends[tp], found.offset if found is not None else ends[tp]))
            read = join.rebuild(self._model_records(reader, partitions, ends, model_id.encode()))
        finally:
            reader.close()
        self.metrics.join_rebuilds.inc()
        log.warning(
            "join rebuilt from the input topics",
            extra={
                "model_id": model_id,
                "records": read,
                "pending": join.pending("prediction"),
                "seconds": round(time.monotonic() - started, 3),
            },
        )

    def _restored_ahead_in(self, tp: TopicPartition, offset: int) -> dict[str, int]:
        """Models whose restored snapshot includes records of ``tp`` from ``offset`` on,
        with the position it was taken at; forgets positions reading has passed."""
        ahead = {}
        for model_id, positions in list(self._restored_ahead.items()):
            position = positions.get(tp)
            if position is not None and position > offset:
                ahead[model_id] = position
            elif position is not None:
                del positions[tp]
                if not positions:
                    del self._restored_ahead[model_id]
        return ahead

    def _positions_of(self, model_id: str) -> dict[TopicPartition, int]:
        """How far the model's state has read each input partition it lives on."""
        partition = self._partition_of[model_id].partition
        positions = {tp: o for tp, o in self._next_offsets.items() if tp.partition == partition}
        for tp, position in self._restored_ahead.get(model_id, {}).items():
            positions[tp] = max(position, positions.get(tp, position))
        return positions

    # ---- checkpoints ---------------------------------------------------------------

    def _model_records(
        self,
        reader: KafkaConsumer,
        partitions: list[TopicPartition],
        ends: Mapping[TopicPartition, int],
        key: bytes,
    ) -> Iterator[tuple[Prediction | GroundTruth, bytes]]:
        """A model's valid input records before ``ends``, parsed, with their JSON."""
        for record in read_to_end(reader, partitions):
            tp = TopicPartition(record.topic, record.partition)
            if record.offset >= ends[tp] or record.key != key or record.value is None:
                continue
            # Refused as the live run refused them (event time bounded around the
            # clock): a record stamped in year 9999 must not expire the rebuild.
            try:
                event = self.core.parse(self._input[record.topic], key, record.value, time.time())
            except Exception:  # as in MonitorCore.process: any error sent it to dead-letter
                continue  # went to dead-letter when it was first read
            yield event, record.value

    def _checkpoint_due(self) -> bool:
        cfg = self.settings.checkpoint
        return self._since_checkpoint >= cfg.every_records or (
            self._since_checkpoint > 0
            and time.monotonic() - self._last_checkpoint >= cfg.every_seconds
        )

    def checkpoint(self) -> None:
        """At least once, in this order: every output delivered (or its input in
        dead-letter), then the join stores written, the snapshots of the models touched
        since the last checkpoint delivered, and only then the offsets committed."""
        assert self._consumer is not None and self._producer is not None
        started = time.perf_counter()
        self._deliver_outputs()
        known = set(self.core.models())
        for model_id in self._touched & known:
            self.core.checkpoint_join(model_id)
            snapshot = self.core.snapshot(model_id)
            self._producer.send_raw(
                self.settings.topics.monitor_state,
                model_id.encode(),
                state.stored(model_id, snapshot, self._state_limit),
                [state.positions_header(self._positions_of(model_id))],
            )
        self._producer.flush()
        self._check_store_size()
        offsets = {
            tp: OffsetAndMetadata(offset, "", -1) for tp, offset in self._next_offsets.items()
        }
        if offsets:
            try:
                self._consumer.commit(offsets)
            except (CommitFailedError, RebalanceInProgressError) as exc:
                # The group has moved on (this member was too slow, or it is rebalancing):
                # the next poll rejoins, and the replay from the last commit skips what
                # the snapshots just written hold.
                log.warning("commit refused", extra={"error": str(exc)})
                self.metrics.commits_refused.inc()
        self._touched.clear()
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self.metrics.checkpoints.inc()
        self._publish_stats()
        self.metrics.checkpoint_seconds.observe(time.perf_counter() - started)
        log.debug("checkpoint", extra={"offsets": len(offsets)})

    def _deliver_outputs(self) -> None:
        """Wait for the outputs sent so far. One the broker refuses for good (too large,
        a timestamp out of its bounds) sends its input to dead-letter instead, counted;
        a failure that may pass stops the service, which resumes from the last commit."""
        assert self._producer is not None
        undeliverable = self._producer.flush_outputs()
        for failed in undeliverable:
            source = failed.source
            topic = self._input.get(source.topic, "predictions") if source else "predictions"
            log.error(
                "output undeliverable, its input sent to dead-letter",
                extra={
                    "output": failed.output.topic,
                    "error": repr(failed.error)[:200],
                    "partition": source.partition if source else None,
                    "offset": source.offset if source else None,
                },
            )
            self.metrics.undeliverable.inc()
            self._producer.dead_letter_undeliverable(failed, topic)
        if undeliverable:
            self._producer.flush()

    def _check_store_size(self) -> None:
        """Past ``join.max_disk_bytes`` the store keeps everything and says so: a
        metric, an error in the log and, once per crossing, an escalation event."""
        size = self._store.disk_bytes()
        self.metrics.join_store_bytes.set(size)
        limit = self.settings.join.max_disk_bytes
        over = bool(limit) and size > limit
        self.metrics.join_store_over_limit.set(int(over))
        if over:
            log.error(
                "join store past its disk limit; nothing is evicted",
                extra={"bytes": size, "limit": limit, "path": str(self._store.path)},
            )
        if over and not self._store_over_limit:
            assert self._producer is not None
            now = time.time()
            data = {
                "reason": "join store past join.max_disk_bytes",
                "bytes": size,
                "limit": limit,
                "path": str(self._store.path),
                "advice": "Give the store more disk and raise join.max_disk_bytes, or lower "
                "join.ttl_seconds: pending predictions are kept, none is evicted.",
            }
            event_id = deterministic_id("join-store-limit", self._store.path, int(now))
            body = envelope("stream_monitor.join.disk_limit", event_id, now, "join-store", data)
            self._producer.send(Output.event("escalations", "join-store", body, timestamp=now))
            self._producer.flush()
        self._store_over_limit = over

    def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Partitions are leaving: forget their models and uncommitted progress.

        kafka-python runs this on its IO thread, where a blocking commit is not allowed,
        so nothing is committed here: the next owner restores the last snapshot and
        replays from the offsets committed with it. The replay repeats some outputs
        (at least once); retrain requests keep their ids, so they are not asked twice.
        """
        for model_id, tp in list(self._partition_of.items()):
            if tp in revoked:
                self.core.forget(model_id)
                del self._partition_of[model_id]
                self._touched.discard(model_id)
                self._restored_ahead.pop(model_id, None)
        for tp in revoked:
            self._next_offsets.pop(tp, None)

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Partitions, new or kept, start again from their checkpoint: reload the state
        topic and rewind before the next record (not here, on the IO thread)."""
        self._reload_state = True
        self.health.assigned(len(assigned))
        self.health.restoring()
        log.info("partitions assigned", extra={"partitions": sorted(str(tp) for tp in assigned)})

    def _report_lag(self) -> None:
        assert self._consumer is not None
        lag: dict[str, int] = dict.fromkeys(self._input, 0)
        try:
            for tp in self._consumer.assignment():
                highwater = self._consumer.highwater(tp)
                if highwater is not None:
                    lag[tp.topic] += max(0, highwater - self._consumer.position(tp))
        except KafkaError as exc:
            # position() may need the broker (to validate a position after a leader
            # change): while it is away, the gauge waits rather than the service failing.
            log.debug("lag not measured", extra={"error": str(exc)})
            self.health.lag(None)
            return
        self.health.lag(sum(lag.values()))
        for topic, n in lag.items():
            self.metrics.lag.labels(topic).set(n)


def _batches(
    examples: list[tuple[Output, ConsumerRecord]],
) -> list[tuple[Output, Sources]]:
    """The batch records of a model's labelled examples, each with the examples it packs
    and their input records."""
    found: list[tuple[Output, Sources]] = []
    start = 0
    for chunk in batch_chunks([output for output, _ in examples]):
        found.append((batch_record(chunk), examples[start : start + len(chunk)]))
        start += len(chunk)
    return found


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # kafka-python is untyped
    def __init__(self, service: MonitorService) -> None:
        self.service = service

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.service.on_revoked(set(revoked))

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.service.on_assigned(set(assigned))
