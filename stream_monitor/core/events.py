"""Event contracts: what comes in from Kafka and what goes out.

Incoming values are JSON. ``timestamp`` is ISO 8601 with an offset
(``2026-11-25T10:00:00+00:00``) or epoch milliseconds; it is held as epoch seconds.
Outgoing events use a CloudEvents-style envelope whose ``time`` is event time, so a
replay of the same input produces byte-identical output.
"""

from __future__ import annotations

import hashlib
import math
import time
import uuid
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple, TypeVar

import msgspec
import orjson
from pydantic import BeforeValidator, ValidationError

from stream_monitor.config import LimitSettings

SPEC_VERSION = "1.0"
SOURCE = "stream-monitor"
LABELLED_EXAMPLE_TYPE = "stream_monitor.labelled_example"
# Fixed namespace: deterministic ids are uuid5(NAMESPACE, a name that says what the event is).
NAMESPACE = uuid.UUID("6f1c7a52-5d8e-4b8e-9a53-1d0f3c2b7e41")


# Years 1 to 9999, the range ISO 8601 text (and Python's datetime) can express.
_EARLIEST, _LATEST = -62_135_596_800.0, 253_402_300_799.0


def epoch_seconds(value: object) -> float:
    """Epoch seconds from ISO 8601 text with an offset, or from epoch milliseconds (an int
    or float of any subclass but bool, numpy's float64 included).

    >>> epoch_seconds(1_500), epoch_seconds("1970-01-01T00:00:01.5+00:00")
    (1.5, 1.5)
    """
    if type(value) is not float and type(value) is not int:  # JSON numbers skip this
        if isinstance(value, str):
            return _iso_epoch_seconds(value)
        if not is_number(value):
            raise ValueError("timestamp must be ISO 8601 text with an offset or epoch milliseconds")
    try:
        seconds = float(value) / 1000.0  # type: ignore[arg-type]  # a number, checked above
    except OverflowError:  # an integer beyond float range
        raise ValueError(f"timestamp {value!r:.40} ms is beyond float range") from None
    # Also refuses NaN and infinities, which Python's JSON parsers let through.
    if not _EARLIEST <= seconds <= _LATEST:
        raise ValueError(f"timestamp {value!r} ms is not an instant between years 1 and 9999")
    return seconds


def _iso_epoch_seconds(text: str) -> float:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"timestamp {text!r} is not ISO 8601") from None
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no UTC offset (add Z or +00:00)")
    return parsed.timestamp()


EventTime = Annotated[float, BeforeValidator(epoch_seconds)]
"""For pydantic models: epoch seconds, from ISO 8601 with an offset or epoch milliseconds."""


def is_number(value: object) -> bool:
    """An int or float, not a bool (which Python counts as an int)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


MAX_MAGNITUDE = 1e150
"""The largest magnitude of a number in a record: detectors square and sum values, and
the results must stay finite to be tested."""
# msgspec is strict: a JSON string is never read as a number, nor a number as text,
# nor true as 1. JSON has no NaN or Infinity, and msgspec refuses them as malformed (and
# numbers beyond float range as out of range). Integers are 64-bit; floats bounded.
Int = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
Float = Annotated[float, msgspec.Meta(ge=-MAX_MAGNITUDE, le=MAX_MAGNITUDE)]
Scalar = bool | Int | Float | str
FeatureValue = Int | Float | str | None
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


# Extra fields are ignored here (serving apps often add request ids, tenants) and kept
# where it matters: labelled examples carry the records byte for byte.
class _Incoming(msgspec.Struct, frozen=True, gc=False):
    if TYPE_CHECKING:
        timestamp: float
    else:
        timestamp: float | str  # the JSON types; a float once constructed
    """Epoch seconds. Given as sent (epoch milliseconds or ISO 8601 text with an offset)
    and converted once, on construction: an instance must not be constructed again from
    its own fields (by pickle or ``msgspec.structs.replace``), and it refuses pickling."""

    # Converted here rather than by a decoding hook for a custom type: a third of the
    # cost of decoding a prediction. A plain float, too: the garbage collector tracks
    # every instance of a float subclass, and a join holding many made each full
    # collection take 50 ms.
    def __post_init__(self) -> None:
        try:
            seconds = epoch_seconds(self.timestamp)
        except ValueError as exc:
            raise msgspec.ValidationError(f"{exc} - at `$.timestamp`") from None
        msgspec.structs.force_setattr(self, "timestamp", seconds)

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError(f"{type(self).__name__} is not picklable: keep the JSON it came from")


class Prediction(_Incoming, frozen=True, gc=False):
    prediction_id: NonEmpty
    model_id: NonEmpty
    model_version: NonEmpty
    features: dict[str, FeatureValue]
    prediction: Scalar
    scores: dict[str, Int | Float] | None = None


class GroundTruth(_Incoming, frozen=True, gc=False):
    prediction_id: NonEmpty
    model_id: NonEmpty
    label: Scalar


_Event = TypeVar("_Event", bound=msgspec.Struct)
# Entries of these mappings are named in error messages (msgspec says only ``[...]``).
_MAPPING_VALUES: dict[str, Any] = {"features": FeatureValue, "scores": Int | Float}
RefusalReason = Literal[
    "invalid_json", "schema", "key_mismatch", "limit", "timestamp", "unexpected"
]
"""Why a record went to dead-letter: not JSON; not the contract's schema; keyed by
another model; past a size limit (nesting, text length); a timestamp outside the window
around the clock; an error no check foresaw (a defect: please report it)."""


class InvalidRecordError(Exception):
    """A record that breaks the contract; ``reason`` is a short code for the metric."""

    def __init__(self, reason: RefusalReason, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# By schema; a dict rather than functools.cache, whose call costs a tenth of a decode.
_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}


def decode(schema: type[_Event], value: bytes | object) -> _Event:
    """A ``Prediction`` or ``GroundTruth`` from JSON text or from already parsed JSON.

    >>> decode(GroundTruth, {"prediction_id": "p", "model_id": "m", "label": 1,
    ...                      "timestamp": 1_500})
    GroundTruth(timestamp=1.5, prediction_id='p', model_id='m', label=1)
    """
    try:
        if isinstance(value, bytes):
            decoder = _decoders.get(schema)
            if decoder is None:
                decoder = _decoders[schema] = msgspec.json.Decoder(schema)
            event: _Event = decoder.decode(value)
            return event
        converted: _Event = msgspec.convert(value, schema)
        return converted
    except msgspec.ValidationError as exc:
        raise InvalidRecordError("schema", _describe(exc, value)) from None
    except msgspec.DecodeError as exc:
        raise InvalidRecordError("invalid_json", str(exc)) from None
    except RecursionError:
        raise InvalidRecordError("limit", "JSON nested deeper than the decoder allows") from None


def to_json(event: _Incoming) -> bytes:
    """The JSON a serving app would have sent for ``event`` (time in epoch milliseconds)."""
    fields = msgspec.structs.asdict(event)
    fields["timestamp"] = event.timestamp * 1000.0
    return orjson.dumps(fields)


def _describe(exc: msgspec.ValidationError, value: object) -> str:
    """msgspec's message, naming the entry of a mapping it calls ``[...]``."""
    message = str(exc)
    for name, kind in _MAPPING_VALUES.items():
        if message.endswith(f"`$.{name}[...]`"):
            try:
                return message.replace("[...]", f".{_first_invalid(value, name, kind)}")
            except (msgspec.MsgspecError, RecursionError, TypeError, KeyError, AttributeError):
                return message  # the entry cannot be named; the message still says why
    return message


def _first_invalid(value: object, name: str, kind: Any) -> str:
    # msgspec reads what orjson would refuse (numbers beyond float range); untyped, it
    # gives such numbers as they are written.
    entries: Any = msgspec.json.decode(value) if isinstance(value, bytes) else value
    for key, entry in entries[name].items():
        try:
            msgspec.convert(entry, kind)
        except msgspec.ValidationError:
            return str(key)
    raise KeyError(name)


def parse_record(
    schema: type[_Event],
    key: bytes | None,
    value: bytes,
    limits: LimitSettings | None = None,
    clock: float | None = None,
) -> _Event:
    """Validate one Kafka value against ``schema`` and its key against ``model_id``; with
    ``limits``, also against them (see :func:`check_limits`)."""
    if limits is not None and value.count(b"[") + value.count(b"{") > limits.max_depth:
        _check_depth(value, limits.max_depth)
    event = decode(schema, value)
    model_id: str = getattr(event, "model_id")  # noqa: B009 - both schemas carry it
    if key != model_id.encode():
        raise InvalidRecordError(
            "key_mismatch",
            f"record key {key!r:.300} is not the model_id {model_id!r:.300}; "
            "predictions and ground truth must be keyed by model_id to be joined",
        )
    if limits is not None:
        check_limits(event, len(value), limits, clock)  # type: ignore[arg-type]
    return event


def _check_depth(value: bytes, max_depth: int) -> None:
    """Refuse JSON nested deeper than ``max_depth`` (only called when the record holds
    more brackets than that: most never get here)."""
    try:
        stack: list[tuple[object, int]] = [(msgspec.json.decode(value), 1)]
    except RecursionError:
        raise InvalidRecordError("limit", "JSON nested deeper than the decoder allows") from None
    except msgspec.DecodeError as exc:
        raise InvalidRecordError("invalid_json", str(exc)) from None
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, dict | list):
            continue
        children = node.values() if isinstance(node, dict) else node
        if depth > max_depth:
            raise InvalidRecordError(
                "limit",
                f"JSON nested more than {max_depth} deep (limits.max_depth)",
            )
        stack.extend((child, depth + 1) for child in children)


def check_limits(
    event: Prediction | GroundTruth, size: int, limits: LimitSettings, clock: float | None
) -> None:
    """Refuse a decoded record past ``limits``: ids and texts too long, a timestamp
    outside the window around ``clock`` (epoch seconds, the shell's clock; None: no
    window, as for a replay of recorded data). ``size`` is the record's length in bytes:
    a text cannot be longer, so shorter records skip the length checks.

    >>> label = decode(GroundTruth, {"prediction_id": "p", "model_id": "m", "label": 1,
    ...                              "timestamp": 7_200_000})
    >>> try:
    ...     check_limits(label, 60, LimitSettings(), clock=0.0)
    ... except InvalidRecordError as refused:
    ...     print(refused.reason, "-", refused.detail.split(" (")[0])
    timestamp - timestamp 1970-01-01T02:00:00.000+00:00 is 7200 s ahead of the clock
    """
    if size > limits.max_id_length:
        ids = [event.prediction_id, event.model_id]
        if isinstance(event, Prediction):
            ids.append(event.model_version)
        if max(map(len, ids)) > limits.max_id_length:
            longest = max(ids, key=len)
            raise InvalidRecordError(
                "limit",
                f"an id of {len(longest):,} characters ({longest[:40]!r}...); at most "
                f"{limits.max_id_length} are accepted (limits.max_id_length)",
            )
    if size > limits.max_text_length:
        _check_texts(event, limits.max_text_length)
    if clock is not None:
        _check_time(event.timestamp, limits, clock)


def _check_texts(event: Prediction | GroundTruth, most: int) -> None:
    if isinstance(event, Prediction):
        texts = [event.prediction, *event.features, *event.features.values()]
        texts += event.scores or ()
    else:
        texts = [event.label]
    for text in texts:
        if isinstance(text, str) and len(text) > most:
            raise InvalidRecordError(
                "limit",
                f"a text value or name of {len(text):,} characters ({text[:40]!r}...); at "
                f"most {most} are accepted (limits.max_text_length)",
            )


def _check_time(timestamp: float, limits: LimitSettings, clock: float) -> None:
    ahead, behind = limits.max_event_time_ahead_seconds, limits.max_event_time_behind_seconds
    if timestamp - clock > ahead:
        raise InvalidRecordError(
            "timestamp",
            f"timestamp {iso(timestamp)} is {timestamp - clock:.0f} s ahead of the clock "
            f"({iso(clock)}); at most {ahead:.0f} s are accepted "
            "(limits.max_event_time_ahead_seconds)",
        )
    if behind is not None and clock - timestamp > behind:
        raise InvalidRecordError(
            "timestamp",
            f"timestamp {iso(timestamp)} is {clock - timestamp:.0f} s behind the clock "
            f"({iso(clock)}); at most {behind:.0f} s are accepted "
            "(limits.max_event_time_behind_seconds)",
        )


def describe_briefly(exc: ValidationError) -> str:
    """The first few problems of a validation error, on one line (for a header)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()[:5]
    )


def iso(epoch_seconds: float) -> str:
    """ISO 8601 in UTC with milliseconds, e.g. ``2026-01-01T00:00:00.000+00:00``."""
    return iso_bytes(epoch_seconds).decode()


def iso_bytes(epoch_seconds: float) -> bytes:
    """:func:`iso` as ASCII bytes, for the hot path of labelled examples.

    >>> iso_bytes(1_767_225_600.25)
    b'2026-01-01T00:00:00.250+00:00'
    """
    # As datetime does: round to microseconds, then truncate to milliseconds.
    second = math.floor(epoch_seconds)
    micros = round((epoch_seconds - second) * 1_000_000)
    if micros == 1_000_000:
        second, micros = second + 1, 0
    return _iso_seconds[second] + _MILLISECONDS[micros // 1000]


def _iso_second(second: int) -> bytes:
    # time.strftime is the fastest formatter (3x datetime's) but writes years before
    # 1000 with fewer than four digits.
    utc = time.gmtime(second)
    if utc.tm_year >= 1000:
        return time.strftime("%Y-%m-%dT%H:%M:%S", utc).encode()
    y, mo, d, h, mi, sec = utc[:6]
    return f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{sec:02d}".encode()


_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


class Memo(dict[_K, _V]):
    """Values made by ``make(key)`` on first use, at most ``size`` kept (all dropped
    when full). For hot paths: a hit is one dict lookup, where an ``lru_cache`` call
    costs several times as much.

    >>> squares = Memo(lambda n: n * n, size=2)
    >>> squares[3], squares[4], len(squares), squares[5], len(squares)
    (9, 16, 2, 25, 1)
    """

    def __init__(self, make: Callable[[_K], _V], size: int = 4096) -> None:
        super().__init__()
        self.make = make
        self.size = size

    def __missing__(self, key: _K) -> _V:
        if len(self) >= self.size:
            self.clear()
        value = self[key] = self.make(key)
        return value


# Looked up, not formatted: formatting cost as much as the rest. Events of one stream
# share their seconds.
_MILLISECONDS = [f".{ms:03d}+00:00".encode() for ms in range(1000)]
_iso_seconds = Memo(_iso_second)


def deterministic_id(*parts: object) -> str:
    return str(uuid.uuid5(NAMESPACE, "/".join(str(p) for p in parts)))


def envelope(
    event_type: str, event_id: str, time: float | str, subject: str, data: dict[str, Any]
) -> dict[str, Any]:
    """CloudEvents-style envelope (structured mode, JSON). ``time`` is event time in
    epoch seconds, or already formatted by :func:`iso`."""
    return {
        "specversion": SPEC_VERSION,
        "id": event_id,
        "type": event_type,
        "source": SOURCE,
        "subject": subject,
        "time": time if isinstance(time, str) else iso(time),
        "datacontenttype": "application/json",
        "data": data,
    }


OutputTopic = Literal[
    "drift_events",
    "retrain_requests",
    "escalations",
    "labelled_examples",
    "dead_letter",
    "model_events",
]


class Output(NamedTuple):
    """One record for the shell to produce. ``topic`` names a field of ``TopicSettings``;
    ``timestamp`` (event time, epoch seconds) becomes the Kafka record timestamp."""

    # A named tuple, not a frozen dataclass: one is made per labelled pair, and a frozen
    # dataclass takes twice as long to make.
    topic: OutputTopic
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: float | None = None

    @staticmethod
    def event(topic: OutputTopic, key: str, body: dict[str, Any], timestamp: float) -> Output:
        return Output(topic, key.encode(), orjson.dumps(body), timestamp=timestamp)


MODEL_PROMOTED = "stream_monitor.model.promoted"


@dataclass(frozen=True, slots=True)
class Promotion:
    """A ``model.promoted`` event: ``version`` of ``model_id`` now serves."""

    event_id: str
    model_id: str
    version: str


def parse_promotion(value: bytes) -> Promotion | None:
    """The promotion in a ``model-events`` record, or None for anything else (a
    rejection, or a record that is not a promotion event).

    >>> parse_promotion(b'{"id": "e1", "type": "stream_monitor.model.promoted",'
    ...                 b' "data": {"model_id": "m", "production_version": "2"}}')
    Promotion(event_id='e1', model_id='m', version='2')
    >>> parse_promotion(b'not json') is None
    True
    """
    try:
        event = orjson.loads(value)
        if event.get("type") != MODEL_PROMOTED:
            return None
        data = event["data"]
        return Promotion(str(event["id"]), str(data["model_id"]), str(data["production_version"]))
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
        return None


# Room kept in a dead letter for what the shell adds: source partition and offset headers,
# and the record's own framing.
DEAD_LETTER_RESERVE_BYTES = 512


def dead_letter(
    source_topic: str,
    key: bytes | None,
    value: bytes,
    error: InvalidRecordError,
    max_bytes: int | None = None,
) -> Output:
    """The record exactly as it came, with headers saying why it was refused. One that
    would not fit in ``max_bytes`` (key, value and headers) keeps the start of its key
    and value, with headers ``original.size`` (bytes of key and value) and
    ``original.sha256`` (of the value), so that it can be found in the source topic.

    >>> refused = InvalidRecordError("limit", "too long")
    >>> letter = dead_letter("predictions", b"m", b"x" * 10_000, refused, max_bytes=4096)
    >>> len(letter.value), dict(letter.headers)["original.size"]
    (3395, b'10001')
    """
    headers: tuple[tuple[str, bytes], ...] = (
        ("error.reason", error.reason.encode()),
        ("error.detail", error.detail.encode(errors="backslashreplace")[:1000]),
        ("source.topic", source_topic.encode()),
    )
    if max_bytes is None:
        return Output("dead_letter", key, value, headers)
    size = len(key or b"") + len(value)
    fixed = sum(len(n) + len(v) for n, v in headers) + DEAD_LETTER_RESERVE_BYTES
    if size + fixed <= max_bytes:
        return Output("dead_letter", key, value, headers)
    headers += (
        ("original.size", str(size).encode()),
        ("original.sha256", hashlib.sha256(value).hexdigest().encode()),
    )
    room = max_bytes - fixed - 128  # the two headers above
    key = None if key is None else key[: room // 2]
    return Output("dead_letter", key, value[: room - len(key or b"")], headers)


BATCH_CONTENT_TYPE = b"application/cloudevents-batch+json"
MAX_BATCH_BYTES = 512 * 1024  # well under Kafka's 1 MB default record limit


def batched(outputs: list[Output], max_bytes: int = MAX_BATCH_BYTES) -> list[Output]:
    """Pack events of one topic and key into CloudEvents batch records (JSON arrays).

    One Kafka record per event costs kafka-python more than the monitor's whole
    processing of that event; a batch costs the same as one record. Each batch
    carries the header ``content-type: application/cloudevents-batch+json`` and the
    newest timestamp of its events. :func:`unbatch` reads either form.

    >>> a = Output.event("labelled_examples", "m", {"id": "1"}, timestamp=1.0)
    >>> b = Output.event("labelled_examples", "m", {"id": "2"}, timestamp=2.0)
    >>> [record.value for record in batched([a, b])]
    [b'[{"id":"1"},{"id":"2"}]']
    >>> unbatch(batched([a, b])[0].value) == unbatch(a.value) + unbatch(b.value)
    True
    """
    return [batch_record(chunk) for chunk in batch_chunks(outputs, max_bytes)]


def batch_chunks(outputs: list[Output], max_bytes: int = MAX_BATCH_BYTES) -> list[list[Output]]:
    """The runs of ``outputs`` that :func:`batched` packs into one record each, in order."""
    chunks: list[list[Output]] = []
    chunk: list[Output] = []
    size = 0
    for output in outputs:
        if chunk and (size + len(output.value) > max_bytes or output.key != chunk[0].key):
            chunks.append(chunk)
            chunk, size = [], 0
        chunk.append(output)
        size += len(output.value) + 1
    if chunk:
        chunks.append(chunk)
    return chunks


def batch_record(chunk: list[Output]) -> Output:
    """One CloudEvents batch record of ``chunk`` (events of one topic and key)."""
    first = chunk[0]
    stamps = [o.timestamp for o in chunk if o.timestamp is not None]
    return Output(
        first.topic,
        first.key,
        b"[" + b",".join(o.value for o in chunk) + b"]",
        (("content-type", BATCH_CONTENT_TYPE),),
        max(stamps) if stamps else None,
    )


def unbatch(value: bytes) -> list[dict[str, Any]]:
    """The events in a record: a CloudEvents batch (JSON array) or a single event."""
    decoded = orjson.loads(value)
    return decoded if isinstance(decoded, list) else [decoded]
