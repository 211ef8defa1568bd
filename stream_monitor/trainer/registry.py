"""File-system model registry: versioned artefacts, an atomic production pointer and
the journal of handled retrain requests.

Layout under the registry directory::

    <model_id>/versions/<n>/model.skops     the fitted pipeline
    <model_id>/versions/<n>/metadata.json   metrics, data window, request id, SHA-256, ...
    <model_id>/production.json              {"version": n, "sha256": ..., "promoted_at": ...}
    <model_id>/requests/<request_id>.json   one handled retrain request

Every write is atomic: a version directory is assembled under a temporary name and
renamed into place (it appears complete or not at all, and two writers cannot take
the same number); files are written to a temporary name, fsynced and ``os.replace``d.
So a reader (a serving app reloading production, a second trainer) never sees a
half-written model or pointer, and a crash leaves at worst an ignored ``.tmp-*`` entry.

Why skops and not pickle: unpickling runs arbitrary code named by the file, so anyone
who can write to the registry directory could take over every process that loads a
model. ``skops.io`` stores the object graph as data and, on load, only instantiates
types on a trusted list; here that list is :data:`TRUSTED_TYPES` (what the allow-listed
estimators need beyond skops' own defaults) and anything else is refused. Integrity
is checked separately: the artefact's SHA-256 is recorded at registration and
checked on every load and before every promotion, so a modified or truncated file is
refused with :class:`IntegrityError` instead of being served.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import sklearn
import skops
import skops.io as sio

from stream_monitor.core.events import Output, OutputTopic, iso
from stream_monitor.trainer.dataset import Features, FeatureSchema

ARTEFACT = "model.skops"
METADATA = "metadata.json"
PRODUCTION = "production.json"

TRUSTED_TYPES = frozenset(
    {
        "numpy.dtype",
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    }
)
"""Types skops does not trust by default that the allow-listed estimators contain."""

# Model and request ids become directory and file names: no separators, no "..".
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_TOPICS: frozenset[str] = frozenset(get_args(OutputTopic))


class RegistryError(Exception):
    """The registry cannot do what was asked; the message says what and where."""


class IntegrityError(RegistryError):
    """An artefact does not match its recorded SHA-256 or holds untrusted types."""


@dataclass(frozen=True, slots=True)
class StoredModel:
    """A registered version, loaded and verified."""

    model_id: str
    version: int
    pipeline: Any
    schema: FeatureSchema
    metadata: dict[str, Any]

    def predict(self, rows: Sequence[Features]) -> list[Any]:
        """Predictions (plain Python values) for rows of features (name -> value)."""
        predictions: list[Any] = self.pipeline.predict(self.schema.matrix(rows)).tolist()
        return predictions


@dataclass(frozen=True, slots=True)
class HandledRequest:
    """Journal entry of one retrain request: what was decided and what to publish.

    ``done`` is False between "trained and registered" and "events published", so a
    trainer that crashed in between publishes the recorded events instead of training
    again.
    """

    request_id: str
    model_id: str
    requested_at: float
    """When the request reached the trainer (epoch seconds), counted by the retrain
    budget: a time the request states could be anything."""
    outcome: Literal["promoted", "rejected"]
    code: str
    """Why, as a short code (an ``OutcomeCode`` of the trainer)."""
    version: int | None
    """The candidate registered for this request, if one was trained."""
    events: tuple[Output, ...]
    """What to publish, byte for byte the same after a restart."""
    done: bool

    @property
    def escalated(self) -> bool:
        return any(event.topic == "escalations" for event in self.events)


class ModelRegistry:
    """Models under ``root``, one directory per model id.

    >>> import tempfile
    >>> from sklearn.dummy import DummyClassifier
    >>> from stream_monitor.trainer.dataset import FeatureSchema
    >>> registry = ModelRegistry(Path(tempfile.mkdtemp()))
    >>> schema = FeatureSchema.infer([{"x": 1.0}])
    >>> model = DummyClassifier().fit(schema.matrix([{"x": 1.0}]), ["yes"])
    >>> v = registry.register("churn", model, {"features": schema.to_json()})
    >>> registry.promote("churn", v)
    >>> registry.load_production("churn").predict([{"x": 2.0}])
    ['yes']
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    # ---- versions ------------------------------------------------------------------

    def register(
        self,
        model_id: str,
        pipeline: Any,
        metadata: Mapping[str, Any],
        journal: Callable[[int], HandledRequest] | None = None,
    ) -> int:
        """Store ``pipeline`` as the model's next version and return its number.

        ``metadata`` must hold ``features`` (:meth:`FeatureSchema.to_json`); the
        registry adds ``model_id``, ``version``, ``created_at``, ``sha256``,
        ``artefact`` and the library versions. Refuses a pipeline holding types
        outside :data:`TRUSTED_TYPES`, as it could not be loaded back.

        ``journal`` gives the journal record of the request this version answers,
        knowing its number; it is stored with the version, in the same atomic rename, so
        a crash before :meth:`record_request` loses nothing: :meth:`registered_for`
        finds it instead of a second training.
        """
        if "features" not in metadata:
            raise RegistryError("metadata must name the model's features (FeatureSchema.to_json)")
        data = sio.dumps(pipeline)
        _check_trusted(sio.get_untrusted_types(data=data), f"model {model_id!r}")
        versions = self._model_dir(model_id) / "versions"
        versions.mkdir(parents=True, exist_ok=True)
        staging = versions / f".tmp-{uuid.uuid4().hex}"
        staging.mkdir()
        _write_synced(staging / ARTEFACT, data)
        while True:
            version = max(self.versions(model_id), default=0) + 1
            full = {
                **metadata,
                "model_id": model_id,
                "version": version,
                "created_at": iso(time.time()),
                "artefact": ARTEFACT,
                "sha256": hashlib.sha256(data).hexdigest(),
                "libraries": {
                    "scikit-learn": sklearn.__version__,
                    "skops": skops.__version__,
                    "numpy": np.__version__,
                },
            }
            if journal is not None:
                full["journal"] = _journal_entry(journal(version))
            _write_synced(staging / METADATA, _json_bytes(full))
            try:
                staging.rename(versions / str(version))
            except OSError as exc:
                # Another writer took this number first: take the next one.
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    continue
                raise
            _sync_dir(versions)
            return version

    def versions(self, model_id: str) -> list[int]:
        """Registered version numbers, ascending."""
        versions = self._model_dir(model_id) / "versions"
        if not versions.is_dir():
            return []
        return sorted(int(p.name) for p in versions.iterdir() if p.name.isdigit())

    def metadata(self, model_id: str, version: int) -> dict[str, Any]:
        return _read_json(self._version_dir(model_id, version) / METADATA)

    def load(self, model_id: str, version: int) -> StoredModel:
        """Load a version after checking its SHA-256 and the types it holds."""
        metadata = self.metadata(model_id, version)
        data = self._verified_artefact(model_id, version, metadata)
        untrusted = sio.get_untrusted_types(data=data)
        _check_trusted(untrusted, f"model {model_id!r} version {version}")
        pipeline = sio.loads(data, trusted=untrusted)
        try:
            schema = FeatureSchema.from_json(metadata["features"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RegistryError(
                f"model {model_id!r} version {version} has no usable feature list: {exc!r}"
            ) from None
        return StoredModel(model_id, version, pipeline, schema, metadata)

    # ---- production ----------------------------------------------------------------

    def promote(self, model_id: str, version: int) -> None:
        """Make ``version`` production, atomically; its artefact is verified first."""
        metadata = self.metadata(model_id, version)
        self._verified_artefact(model_id, version, metadata)
        pointer = {
            "model_id": model_id,
            "version": version,
            "sha256": metadata["sha256"],
            "promoted_at": iso(time.time()),
        }
        _atomic_write(self._model_dir(model_id) / PRODUCTION, _json_bytes(pointer))

    def production_version(self, model_id: str) -> int | None:
        pointer = self._model_dir(model_id) / PRODUCTION
        if not pointer.exists():
            return None
        version = _read_json(pointer).get("version")
        if not isinstance(version, int):
            raise RegistryError(f"{pointer} has no integer 'version'")
        return version

    def load_production(self, model_id: str) -> StoredModel | None:
        """The production model, or None if none was ever promoted."""
        version = self.production_version(model_id)
        return None if version is None else self.load(model_id, version)

    # ---- handled requests ----------------------------------------------------------

    def record_request(self, record: HandledRequest) -> None:
        """Write (or overwrite) the journal entry of a request, atomically."""
        path = self._request_path(record.model_id, record.request_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, _json_bytes(_journal_entry(record)))

    def handled_request(self, model_id: str, request_id: str) -> HandledRequest | None:
        path = self._request_path(model_id, request_id)
        return _handled_request(path) if path.exists() else None

    def registered_for(self, model_id: str, request_id: str) -> HandledRequest | None:
        """The journal record stored with a version registered for the request (see
        :meth:`register`), newest versions first; None if none was."""
        check_name("request id", request_id)
        for version in reversed(self.versions(model_id)):
            path = self._version_dir(model_id, version) / METADATA
            entry = _read_json(path).get("journal")
            if isinstance(entry, dict) and entry.get("request_id") == request_id:
                return _parse_handled(entry, path)
        return None

    def has_handled(self, model_id: str, request_id: str) -> bool:
        """True once the request's outcome was recorded and its events published."""
        record = self.handled_request(model_id, request_id)
        return record is not None and record.done

    def request_times(self, model_id: str) -> list[float]:
        """Arrival times of every request recorded for the model (for the retrain budget)."""
        requests = self._model_dir(model_id) / "requests"
        if not requests.is_dir():
            return []
        # Not the temporary files of a write a crash interrupted (pathlib's * matches
        # names starting with a dot).
        entries = (p for p in requests.glob("*.json") if not p.name.startswith(".tmp-"))
        return [_handled_request(p).requested_at for p in entries]

    # ---- paths ---------------------------------------------------------------------

    def _model_dir(self, model_id: str) -> Path:
        return self.root / check_name("model id", model_id)

    def _version_dir(self, model_id: str, version: int) -> Path:
        path = self._model_dir(model_id) / "versions" / str(version)
        if not path.is_dir():
            raise RegistryError(f"model {model_id!r} has no version {version} in {self.root}")
        return path

    def _request_path(self, model_id: str, request_id: str) -> Path:
        name = check_name("request id", request_id)
        return self._model_dir(model_id) / "requests" / f"{name}.json"

    def _verified_artefact(self, model_id: str, version: int, metadata: dict[str, Any]) -> bytes:
        # One read serves both the check and the load: the file cannot change in between.
        path = self._version_dir(model_id, version) / ARTEFACT
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != metadata.get("sha256"):
            raise IntegrityError(
                f"{path} has SHA-256 {digest} but was registered with "
                f"{metadata.get('sha256')}: refusing a modified artefact"
            )
        return data


def check_name(what: str, name: str) -> str:
    """``name`` if it can name a registry entry (a directory or file), else RegistryError."""
    if not _SAFE_NAME.fullmatch(name):
        raise RegistryError(
            f"{what} {name!r} cannot name a registry entry: use up to 200 letters, digits, "
            "'.', '_' or '-', starting with a letter or digit"
        )
    return name


def _check_trusted(types: list[str], what: str) -> None:
    unknown = sorted(set(types) - TRUSTED_TYPES)
    if unknown:
        raise IntegrityError(f"{what} holds types outside the trusted list: {unknown}")


def _journal_event(event: Output) -> dict[str, Any]:
    # The value is kept as the exact text published, so a replay is byte-identical.
    return {
        "topic": event.topic,
        "key": None if event.key is None else event.key.decode(),
        "value": event.value.decode(),
        "timestamp": event.timestamp,
    }


def _output(entry: Mapping[str, Any]) -> Output:
    topic = entry["topic"]
    if topic not in _TOPICS:
        raise TypeError(f"unknown output topic {topic!r}")
    key = entry["key"]
    return Output(
        topic,
        None if key is None else key.encode(),
        entry["value"].encode(),
        timestamp=entry["timestamp"],
    )


def _journal_entry(record: HandledRequest) -> dict[str, Any]:
    return {
        "request_id": record.request_id,
        "model_id": record.model_id,
        "requested_at": record.requested_at,
        "outcome": record.outcome,
        "code": record.code,
        "version": record.version,
        "events": [_journal_event(event) for event in record.events],
        "done": record.done,
    }


def _handled_request(path: Path) -> HandledRequest:
    return _parse_handled(_read_json(path), path)


def _parse_handled(raw: dict[str, Any], path: Path) -> HandledRequest:
    try:
        return HandledRequest(**{**raw, "events": tuple(_output(e) for e in raw["events"])})
    except (AttributeError, KeyError, TypeError) as exc:
        raise RegistryError(f"{path} is not a handled-request record: {exc}") from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        content = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise RegistryError(f"{path} does not exist") from None
    except ValueError as exc:
        raise RegistryError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(content, dict):
        raise RegistryError(f"{path} does not hold a JSON object")
    return content


def _json_bytes(content: Mapping[str, Any]) -> bytes:
    return json.dumps(content, indent=2, sort_keys=True).encode()


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    try:
        _write_synced(tmp, data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _sync_dir(path.parent)


def _sync_dir(path: Path) -> None:
    # The rename itself is durable only once the directory entry is on disk.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
