"""Write predictions and labels from a serving app, in the monitor's contract.

:class:`PredictionLogger` turns plain Python values into a prediction event, keys it by
``model_id``, stamps its event time, checks it against the contract the monitor applies
(:mod:`stream_monitor.core.events`) and its input limits (``settings.limits``), hands it
to a kafka-python producer and returns the ``prediction_id``. :class:`LabelReporter`
sends the ground truth for an id when it is known. A call that breaks the contract or
the limits raises :class:`InvalidEventError` at once, in the app, instead of the event
landing in ``dead-letter`` later; sending is Kafka's asynchronous send, so the request
path waits neither for the broker nor for its answer. A send the producer cannot take
within ``max_block_ms`` (its buffer full while the broker is away) is dropped and
counted, not raised: serving goes on.

::

    from stream_monitor.client import LabelReporter, PredictionLogger
    from stream_monitor.config import load_settings

    settings = load_settings("monitor.yaml")          # kafka (security included), topics
    log = PredictionLogger(settings, model_id="churn", model_version="7")
    labels = LabelReporter(settings, model_id="churn", producer=log.producer)

    prediction_id = log.log({"tenure": 14, "plan": "pro"}, "yes", scores={"yes": 0.8, "no": 0.2})
    ...
    labels.report(prediction_id, "no")                 # days later, from anywhere
    log.close()

Keys are the ``model_id`` as UTF-8 bytes, and partitions come from kafka-python's default
partitioner: murmur2 of the key, as in the Java client (:func:`partition_for`), so apps
in any language that key by ``model_id`` with their client's default partitioner put a
model's predictions and labels on the same partition number.
"""

from __future__ import annotations

import logging
import math
import numbers
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.partitioner.default import murmur2

from stream_monitor.config import LimitSettings, MonitorSettings
from stream_monitor.core.events import GroundTruth, InvalidRecordError, Prediction, parse_record
from stream_monitor.kafka.topics import check_access

log = logging.getLogger(__name__)

BLOCK_MS = 200
"""The longest a send may hold the request path: while the producer waits for a topic's
metadata or for room in its buffer. Past it the event is dropped and counted."""
CONNECT_SECONDS = 10.0
"""How long a new logger waits, at construction, for the topics' metadata."""


class InvalidEventError(ValueError):
    """The values given do not make an event the monitor accepts; the message says why."""


@dataclass
class Delivery:
    """What happened to the events handed to the producer (read any time)."""

    sent: int = 0
    """Handed to the producer."""
    acknowledged: int = 0
    """Confirmed by the broker."""
    failed: int = 0
    """Refused by the broker or timed out in the producer (logged)."""
    dropped: int = 0
    """Not taken by the producer within ``max_block_ms`` (logged)."""


def partition_for(model_id: str, partitions: int) -> int:
    """The partition a ``model_id`` key lands on with the default partitioners of
    kafka-python and the Java client: murmur2 of the key's UTF-8 bytes, its sign bit
    cleared, modulo the partition count.

    >>> [partition_for(model, 3) for model in ("churn", "fraud", "demo-model")]
    [2, 1, 1]
    """
    hashed: int = murmur2(model_id.encode())
    return (hashed & 0x7FFFFFFF) % partitions


def _finite(value: Any, where: str) -> None:
    # orjson writes NaN and infinities as null: a silently missing value, or a refused one.
    if (
        isinstance(value, numbers.Real)
        and not isinstance(value, int)
        and not math.isfinite(float(value))
    ):
        raise InvalidEventError(f"{where} is {value}: JSON has no NaN or infinity")


def _epoch_ms(timestamp: datetime | float | None, clock: Callable[[], float]) -> int:
    if timestamp is None:
        return round(clock() * 1000)
    if isinstance(timestamp, datetime):
        if timestamp.tzinfo is None:
            raise InvalidEventError("timestamp needs a time zone (e.g. datetime.now(UTC))")
        return round(timestamp.timestamp() * 1000)
    _finite(timestamp, "timestamp")
    return round(float(timestamp) * 1000)


def _checked(
    schema: type[Any],
    model_id: str,
    event: dict[str, Any],
    limits: LimitSettings | None,
    clock: float | None,
) -> bytes:
    """The event as JSON, after the monitor's own check of it (its contract, and with
    ``limits`` its input limits, the event time against ``clock`` in epoch seconds)."""
    try:
        value = orjson.dumps(event, option=orjson.OPT_SERIALIZE_NUMPY)
    except orjson.JSONEncodeError as exc:  # an int beyond 64 bits, a type JSON lacks
        raise InvalidEventError(str(exc)) from None
    try:
        parse_record(schema, model_id.encode(), value, limits, clock)
    except InvalidRecordError as exc:
        raise InvalidEventError(exc.detail) from None
    return value


def prediction_record(
    model_id: str,
    model_version: str,
    prediction_id: str,
    timestamp_ms: int,
    features: Mapping[str, Any],
    prediction: Any,
    scores: Mapping[str, float] | None = None,
    extra: Mapping[str, Any] | None = None,
    limits: LimitSettings | None = None,
    clock: float | None = None,
) -> bytes:
    """The value of a prediction record, checked as the monitor checks it (with
    ``limits``, against the monitor's input limits too: its ``settings.limits``, the
    event time against ``clock``, epoch seconds, when given).

    >>> prediction_record("churn", "7", "p-1", 1764064800000, {"tenure": 14}, "yes")
    b'{"prediction_id":"p-1","model_id":"churn","model_version":"7","timestamp":1764064800000,"features":{"tenure":14},"prediction":"yes"}'
    >>> prediction_record("churn", "7", "p-1", 0, {"tenure": [14]}, "yes")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    stream_monitor.client.InvalidEventError: Expected `int | float | str | null`, got `array` - ...
    """
    for name, value in features.items():
        _finite(value, f"feature {name!r}")
    _finite(prediction, "prediction")
    for name, value in (scores or {}).items():
        _finite(value, f"score {name!r}")
    event: dict[str, Any] = {
        **(extra or {}),
        "prediction_id": prediction_id,
        "model_id": model_id,
        "model_version": model_version,
        "timestamp": timestamp_ms,
        "features": dict(features),
        "prediction": prediction,
    }
    if scores is not None:
        event["scores"] = dict(scores)
    return _checked(Prediction, model_id, event, limits, clock)


def label_record(
    model_id: str,
    prediction_id: str,
    timestamp_ms: int,
    label: Any,
    limits: LimitSettings | None = None,
    clock: float | None = None,
) -> bytes:
    """The value of a ground-truth record, checked as :func:`prediction_record` checks
    a prediction.

    >>> label_record("churn", "p-1", 1764064900000, "no")
    b'{"prediction_id":"p-1","model_id":"churn","label":"no","timestamp":1764064900000}'
    """
    _finite(label, "label")
    event = {
        "prediction_id": prediction_id,
        "model_id": model_id,
        "label": label,
        "timestamp": timestamp_ms,
    }
    return _checked(GroundTruth, model_id, event, limits, clock)


class _Sender:
    """What both writers share: a producer, the topic, the contract check, the counts."""

    def __init__(
        self,
        settings: MonitorSettings | None,
        topic: str,
        producer: KafkaProducer | None,
        max_block_ms: int,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings or MonitorSettings()
        self.topic = topic
        self.delivery = Delivery()
        self._clock = clock
        self._lock = threading.Lock()
        self._owns_producer = producer is None
        if producer is None:
            check_access(self.settings.kafka)  # a wrong address or password: one clear line
            producer = KafkaProducer(
                **self.settings.kafka.client(), linger_ms=20, max_block_ms=max_block_ms
            )
        elif producer.config.get("key_serializer") or producer.config.get("value_serializer"):
            raise ValueError("the producer must send bytes as given: no key or value serializer")
        self._await_metadata(producer)
        self.producer = producer

    def _await_metadata(self, producer: KafkaProducer) -> None:
        """Fetch the topic's partitions now, so that the first send does not wait."""
        deadline = time.monotonic() + CONNECT_SECONDS
        while True:
            try:
                producer.partitions_for(self.topic)
                return
            except KafkaTimeoutError:
                if time.monotonic() > deadline:
                    log.warning(
                        "no metadata for the topic yet; sends wait up to max_block_ms each",
                        extra={"topic": self.topic},
                    )
                    return

    def _send(self, key: str, value: bytes) -> None:
        try:
            future = self.producer.send(self.topic, key=key.encode(), value=value)
        except KafkaTimeoutError:
            self._count("dropped")
            log.warning("event dropped: the producer is full", extra={"topic": self.topic})
            return
        self._count("sent")
        future.add_callback(lambda _metadata: self._count("acknowledged"))
        future.add_errback(self._failed)

    def _count(self, what: str) -> None:
        with self._lock:  # the producer's callbacks run on its own thread
            setattr(self.delivery, what, getattr(self.delivery, what) + 1)

    def _failed(self, exc: KafkaError) -> None:
        self._count("failed")
        log.warning("event not delivered", extra={"topic": self.topic, "error": str(exc)})

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every event handed over so far is acknowledged or failed."""
        self.producer.flush(timeout=timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush, and close the producer if this object made it."""
        self.flush(timeout)
        if self._owns_producer:
            self.producer.close(timeout=timeout)

    def __enter__(self) -> _Sender:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class PredictionLogger(_Sender):
    """Writes a model's predictions to the ``predictions`` topic.

    ``settings``: the monitor's settings (``kafka``, security included, and ``topics``;
    default: the defaults and the ``STREAM_MONITOR_`` environment). ``producer``: the
    app's own kafka-python producer, without serializers; default: one of its own, made
    from ``settings.kafka.client()``.
    """

    def __init__(
        self,
        settings: MonitorSettings | None = None,
        *,
        model_id: str,
        model_version: str,
        producer: KafkaProducer | None = None,
        max_block_ms: int = BLOCK_MS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        settings = settings or MonitorSettings()
        super().__init__(settings, settings.topics.predictions, producer, max_block_ms, clock)
        self.model_id = model_id
        self.model_version = model_version

    def log(
        self,
        features: Mapping[str, Any],
        prediction: Any,
        *,
        scores: Mapping[str, float] | None = None,
        prediction_id: str | None = None,
        model_version: str | None = None,
        timestamp: datetime | float | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        """Send one prediction; its ``prediction_id`` (a new UUID unless given).

        ``features``: name -> number, string or None; ``prediction``: a class (string,
        int, bool) or a number; ``scores``: class -> probability; ``timestamp``: event
        time as an aware datetime or epoch seconds (default: now); ``extra``: more fields,
        passed on to the labelled examples. Raises :class:`InvalidEventError` if the
        event would break the contract.
        """
        prediction_id = prediction_id or str(uuid.uuid4())
        value = prediction_record(
            self.model_id,
            model_version or self.model_version,
            prediction_id,
            _epoch_ms(timestamp, self._clock),
            features,
            prediction,
            scores,
            extra,
            self.settings.limits,
            self._clock(),
        )
        self._send(self.model_id, value)
        return prediction_id


class LabelReporter(_Sender):
    """Writes the ground truth of a model's predictions to the ``ground-truth`` topic.

    Same ``settings`` and ``producer`` as :class:`PredictionLogger` (one producer can
    serve both)."""

    def __init__(
        self,
        settings: MonitorSettings | None = None,
        *,
        model_id: str,
        producer: KafkaProducer | None = None,
        max_block_ms: int = BLOCK_MS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        settings = settings or MonitorSettings()
        super().__init__(settings, settings.topics.ground_truth, producer, max_block_ms, clock)
        self.model_id = model_id

    def report(
        self, prediction_id: str, label: Any, *, timestamp: datetime | float | None = None
    ) -> None:
        """Send the label of ``prediction_id`` (event time: ``timestamp``, default now).
        Raises :class:`InvalidEventError` if the event would break the contract."""
        value = label_record(
            self.model_id,
            prediction_id,
            _epoch_ms(timestamp, self._clock),
            label,
            self.settings.limits,
            self._clock(),
        )
        self._send(self.model_id, value)
