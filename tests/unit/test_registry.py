"""The file-system registry: versions, atomic production switch, integrity, journal."""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from stream_monitor.core.events import Output
from stream_monitor.trainer.dataset import FeatureSchema
from stream_monitor.trainer.registry import (
    ARTEFACT,
    HandledRequest,
    IntegrityError,
    ModelRegistry,
    RegistryError,
)

ROWS = [{"x": float(i), "colour": "red" if i % 2 else "blue"} for i in range(20)]
SCHEMA = FeatureSchema.infer(ROWS)


class Unvetted(BaseEstimator):  # type: ignore[misc]
    """A type skops has no reason to trust."""


def _model(seed: int = 0) -> Pipeline:
    labels = np.random.default_rng(seed).choice(["yes", "no"], size=len(ROWS))
    pipeline = Pipeline(
        [("features", SCHEMA.preprocessor(10)), ("estimator", LogisticRegression())]
    )
    return pipeline.fit(SCHEMA.matrix(ROWS), labels)


def _metadata(**extra: Any) -> dict[str, Any]:
    return {"features": SCHEMA.to_json(), "request_id": "r1", **extra}


def _artefact(registry: ModelRegistry, version: int) -> Path:
    return registry.root / "m" / "versions" / str(version) / ARTEFACT


def test_versions_are_numbered_and_described(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    assert registry.versions("m") == [] and registry.load_production("m") is None
    assert [registry.register("m", _model(), _metadata()) for _ in range(3)] == [1, 2, 3]
    assert registry.versions("m") == [1, 2, 3]
    metadata = registry.metadata("m", 2)
    assert metadata["version"] == 2 and metadata["model_id"] == "m"
    assert metadata["request_id"] == "r1"
    assert metadata["sha256"] == hashlib.sha256(_artefact(registry, 2).read_bytes()).hexdigest()
    assert set(metadata["libraries"]) == {"scikit-learn", "skops", "numpy"}
    # Numbering goes past holes and ignores leftovers of a crashed registration.
    (tmp_path / "m" / "versions" / ".tmp-crashed").mkdir()
    (tmp_path / "m" / "versions" / "9").mkdir()
    (tmp_path / "m" / "versions" / "9" / "x").touch()
    assert registry.register("m", _model(), _metadata()) == 10


def test_concurrent_registrations_never_share_a_version(tmp_path: Path) -> None:
    versions: list[int] = []

    def register() -> None:
        registry = ModelRegistry(tmp_path)  # as a second trainer process would
        versions.extend(registry.register("m", _model(), _metadata()) for _ in range(4))

    threads = [threading.Thread(target=register) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(versions) == list(range(1, 13))


def test_production_switch_is_atomic_and_loadable(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    first = registry.register("m", _model(0), _metadata())
    second = registry.register("m", _model(1), _metadata())
    registry.promote("m", first)
    assert registry.production_version("m") == first
    registry.promote("m", second)
    pointer = json.loads((tmp_path / "m" / "production.json").read_text())
    assert pointer["version"] == second
    assert pointer["sha256"] == registry.metadata("m", second)["sha256"]
    # Only the pointer and the directories: no temporary file left behind.
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["production.json", "versions"]
    production = registry.load_production("m")
    assert production is not None and production.version == second
    expected = _model(1).predict(SCHEMA.matrix(ROWS)).tolist()
    assert production.predict(ROWS) == expected
    assert all(isinstance(p, str) for p in production.predict(ROWS))  # plain, JSON-ready


def test_a_tampered_artefact_is_refused(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    good = registry.register("m", _model(0), _metadata())
    registry.promote("m", good)
    bad = registry.register("m", _model(1), _metadata())
    artefact = _artefact(registry, bad)
    artefact.write_bytes(artefact.read_bytes() + b"\0")
    with pytest.raises(IntegrityError, match="SHA-256"):
        registry.load("m", bad)
    with pytest.raises(IntegrityError, match="refusing a modified artefact"):
        registry.promote("m", bad)
    assert registry.production_version("m") == good  # the switch did not happen

    _artefact(registry, good).write_bytes(_artefact(registry, bad).read_bytes())
    with pytest.raises(IntegrityError):
        registry.load_production("m")


def test_untrusted_types_are_refused_even_with_a_matching_hash(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    with pytest.raises(IntegrityError, match="trusted list"):
        registry.register("m", Pipeline([("step", Unvetted())]), _metadata())
    assert registry.versions("m") == []
    # Someone with write access replaces artefact and hash: skops still refuses to build it.
    version = registry.register("m", _model(), _metadata())
    data = sio.dumps(Pipeline([("step", Unvetted())]))
    _artefact(registry, version).write_bytes(data)
    metadata_path = _artefact(registry, version).with_name("metadata.json")
    metadata = json.loads(metadata_path.read_text())
    metadata_path.write_text(json.dumps({**metadata, "sha256": hashlib.sha256(data).hexdigest()}))
    with pytest.raises(IntegrityError, match="Unvetted"):
        registry.load("m", version)


def test_handled_requests_journal(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    answer = Output.event("model_events", "m", {"id": "e", "score": 0.1 + 0.2}, 1.0)
    record = HandledRequest(
        request_id="7c0e6f1e-0000-5000-8000-000000000001",
        model_id="m",
        requested_at=1000.0,
        outcome="rejected",
        code="lost",
        version=None,
        events=(answer, Output.event("escalations", "m", {"id": "x", "é": "ü"}, 1.5)),
        done=False,
    )
    assert not registry.has_handled("m", record.request_id)
    registry.record_request(record)
    # Read back as the exact bytes to publish, whatever JSON does to floats and text.
    assert registry.handled_request("m", record.request_id) == record
    assert record.escalated
    assert not registry.has_handled("m", record.request_id)  # recorded, not yet published
    registry.record_request(replace(record, done=True))
    assert registry.has_handled("m", record.request_id)
    assert not registry.has_handled("other", record.request_id)
    registry.record_request(replace(record, request_id="r2", requested_at=2000.0, events=()))
    second = registry.handled_request("m", "r2")
    assert second is not None and not second.escalated
    assert sorted(registry.request_times("m")) == [1000.0, 2000.0]
    requests = tmp_path / "m" / "requests"
    assert sorted(p.name for p in requests.iterdir()) == [f"{record.request_id}.json", "r2.json"]
    # A write a SIGKILL cut short leaves its temporary file: it is no request.
    (requests / ".tmp-0123abcd-r3.json").write_text('{"request_id": "r3", "requ')
    assert sorted(registry.request_times("m")) == [1000.0, 2000.0]


@pytest.mark.parametrize("model_id", ["../escape", "a/b", "", ".hidden", "x" * 201])
def test_ids_that_are_not_safe_names_are_refused(tmp_path: Path, model_id: str) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    with pytest.raises(RegistryError, match="cannot name a registry entry"):
        registry.register(model_id, _model(), _metadata())
    with pytest.raises(RegistryError):
        registry.has_handled("m", model_id)
    assert not (tmp_path / "registry").exists() or not any((tmp_path / "registry").iterdir())


def test_missing_or_corrupt_entries_are_registry_errors(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    with pytest.raises(RegistryError, match="no version 1"):
        registry.load("m", 1)
    version = registry.register("m", _model(), _metadata())
    _artefact(registry, version).with_name("metadata.json").write_text("{")
    with pytest.raises(RegistryError, match="not valid JSON"):
        registry.metadata("m", version)
