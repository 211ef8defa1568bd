"""Topics: checks at start (create what is missing, refuse what cannot work), and
reading a whole topic without a consumer group."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import AuthorizationError, KafkaTimeoutError, TopicAlreadyExistsError

from stream_monitor.config import KafkaSettings, TopicSettings
from stream_monitor.kafka.connection import BrokerAccessError, check_connection

log = logging.getLogger(__name__)

# Snapshots of a model with many pending predictions exceed Kafka's 1 MB default.
STATE_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class StartupError(Exception):
    """The service cannot start; the message says why and what to do."""


def partition_counts(admin: KafkaAdminClient, names: list[str]) -> dict[str, int]:
    """Partition count of each existing topic among ``names``."""
    existing = set(admin.list_topics())
    wanted = [n for n in names if n in existing]
    if not wanted:
        return {}
    return {t["name"]: len(t["partitions"]) for t in admin.describe_topics(wanted)}


def check_access(kafka: KafkaSettings) -> None:
    """:func:`~stream_monitor.kafka.connection.check_connection` within
    ``kafka.bootstrap_timeout_ms``, as a :class:`StartupError` (the services exit 2 with
    its one line)."""
    try:
        check_connection(kafka, kafka.bootstrap_timeout_ms / 1000)
    except BrokerAccessError as exc:
        raise StartupError(str(exc)) from None


@contextlib.contextmanager
def _admin(kafka: KafkaSettings) -> Iterator[KafkaAdminClient]:
    """An admin client, or a :class:`StartupError` that says which setting to check."""
    check_access(kafka)
    try:
        admin = KafkaAdminClient(**kafka.client())
    except KafkaTimeoutError as exc:  # what kafka-python 3 raises when it cannot bootstrap
        raise StartupError(
            f"cannot use Kafka at {kafka.bootstrap_servers} although it accepts a connection "
            f"with these settings ({exc}): check kafka.bootstrap_servers, the brokers' "
            "advertised listeners, and kafka.security_protocol"
        ) from None
    try:
        yield admin
    finally:
        admin.close()


def ensure_topics(
    kafka: KafkaSettings, topics: TopicSettings, names: list[str] | None = None
) -> dict[str, int]:
    """Check co-partitioning of the inputs and create missing topics if allowed.

    ``predictions`` and ``ground-truth`` must have the same partition count, or a
    label and its prediction (same key) would land on different partitions and
    possibly different instances, and never be joined.
    ``names``: the topics a service uses (default: all of them); a client sees only the
    topics its ACLs let it describe, so a service checks its own.
    Returns the partition count of every topic in ``names``.
    """
    if names is None:
        names = list(topics.model_dump().values())
    with _admin(kafka) as admin:
        counts = partition_counts(admin, names)
        inputs = [topics.predictions, topics.ground_truth]
        present = {t: counts[t] for t in inputs if t in counts}
        if len(set(present.values())) > 1:
            raise StartupError(
                "predictions and ground truth must be co-partitioned (same partition count, "
                f"keyed by model_id), but they have {present}. Recreate one of them or add "
                "partitions so both have the same count, then start again."
            )
        missing = [n for n in names if n not in counts]
        if missing and not kafka.create_topics:
            raise StartupError(
                f"topics {missing} do not exist and kafka.create_topics is false: create them "
                "(predictions and ground truth with the same partition count) or allow creation."
            )
        if missing:
            # Match an existing input topic so co-partitioning holds for the new one.
            partitions = next(iter(present.values()), kafka.partitions)
            new = [_new_topic(n, partitions, compacted=n == topics.monitor_state) for n in missing]
            # Another instance may have created one between our check and now.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(new)
            log.info("created topics", extra={"topics": missing, "partitions": partitions})
            counts.update(partition_counts(admin, missing))
        return counts


def state_record_limit(kafka: KafkaSettings, topic: str) -> int:
    """The most bytes a record of the state topic may hold; refuses a topic that is not
    compacted, whose old snapshots the broker would delete after its retention time."""
    wanted = {"cleanup.policy": None, "max.message.bytes": None}
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, wanted)
    with _admin(kafka) as admin:
        try:
            described = admin.describe_configs([resource], config_filter="all")
            configs = described.get("topic", {}).get(topic, {})
        except AuthorizationError:
            configs = {}
    if not {"cleanup.policy", "max.message.bytes"} <= configs.keys():
        log.warning("state topic configuration not readable: not checked", extra={"topic": topic})
        return STATE_MAX_MESSAGE_BYTES
    policy = configs["cleanup.policy"]["value"]
    if "compact" not in policy.split(","):
        raise StartupError(
            f"the state topic {topic!r} has cleanup.policy={policy}: "
            "the broker would delete the snapshots of models quiet for longer than its "
            "retention, and they would start again from nothing. Make it compacted, e.g. "
            f"kafka-configs.sh --bootstrap-server HOST:PORT --alter --entity-type topics "
            f"--entity-name {topic} --add-config cleanup.policy=compact"
        )
    return min(int(configs["max.message.bytes"]["value"]), STATE_MAX_MESSAGE_BYTES)


def _new_topic(name: str, partitions: int, compacted: bool) -> NewTopic:
    configs = (
        {"cleanup.policy": "compact", "max.message.bytes": str(STATE_MAX_MESSAGE_BYTES)}
        if compacted
        else {}
    )
    return NewTopic(name, num_partitions=partitions, replication_factor=-1, topic_configs=configs)


def assign_all(
    consumer: KafkaConsumer, topic: str, from_beginning: bool = False
) -> list[TopicPartition]:
    """Assign a group-less ``consumer`` every partition of ``topic`` (none if it is missing)."""
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    consumer.assign(partitions)
    if partitions and from_beginning:
        consumer.seek_to_beginning(*partitions)
    return partitions


def read_to_end(
    consumer: KafkaConsumer, partitions: list[TopicPartition], timeout: float | None = None
) -> Iterator[ConsumerRecord]:
    """The records of assigned ``partitions`` from their positions up to their end
    offsets as of this call (records produced meanwhile are not waited for)."""
    end = consumer.end_offsets(partitions) if partitions else {}
    deadline = None if timeout is None else time.monotonic() + timeout
    while any(consumer.position(tp) < end[tp] for tp in partitions):
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"could not read {partitions} to their end in {timeout} s")
        for records in consumer.poll(timeout_ms=500).values():
            yield from records
