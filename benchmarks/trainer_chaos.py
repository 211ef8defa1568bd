"""The trainer under SIGKILL: no request trained twice, every request answered once.

A run of retrain requests for one model is put on a fresh ``retrain-requests`` topic,
with the labelled examples they train on (written by a real monitor core). The trainer
runs as its own process (``stream-monitor trainer``) and is killed with SIGKILL
``--kills`` times, each time started again: at a random moment, or (every other kill)
the moment a new version appears in the registry, before its request is journalled.
Then it runs until every request is answered and committed. Afterwards the script checks and prints:

* duplicate versions: registry versions beyond one per request id (target 0);
* unanswered requests: requests without a ``done`` journal entry or without an answer
  on ``model-events`` (target 0);
* answers per request: distinct answer ids per request id (target exactly 1; the same
  answer may be published again after a kill, with the same id);

and exits 1 if a target is missed. The trainer uses static membership, so a restarted
process gets the requests' partition back at once.

    python benchmarks/trainer_chaos.py                      # local broker, 30 requests, 20 kills
    python benchmarks/trainer_chaos.py --bootstrap host:9092 --requests 8 --kills 5
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import yaml
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

from stream_monitor.config import MonitorSettings
from stream_monitor.core.events import batched, iso
from stream_monitor.core.monitor import MonitorCore
from stream_monitor.devbroker.broker import BrokerSettings, start
from stream_monitor.kafka.topics import assign_all, ensure_topics, read_to_end
from stream_monitor.simulate import Scenario, stream
from stream_monitor.trainer.registry import ModelRegistry
from stream_monitor.trainer.settings import TrainerSettings

MODEL = "chaos-model"
ROOT = Path(__file__).resolve().parents[1]


def _examples(count: int) -> tuple[list[Any], float, float]:
    """Labelled examples of ``count`` predictions, as a monitor core publishes them
    (batch records), and the label-time range they cover."""
    core = MonitorCore(MonitorSettings())
    scenario = Scenario(events=count, drift_at=None, model_id=MODEL, label_delay=10, features=4)
    outputs = []
    for topic, key, value in stream(scenario):
        for output in core.process(topic, key.encode(), orjson.dumps(value)):
            if output.topic == "labelled_examples":
                outputs.append(output)
    times = [o.timestamp for o in outputs if o.timestamp is not None]
    return batched(outputs), min(times), max(times)


def _request(i: int, start: float, end: float) -> bytes:
    body = {
        "specversion": "1.0",
        "id": f"chaos-{i}",
        "type": "stream_monitor.retrain.requested",
        "source": "trainer-chaos",
        "subject": MODEL,
        "time": iso(end),
        "data": {
            "model_id": MODEL,
            "model_version": "1",
            "episode": i,
            "training_window": {"start": iso(start), "end": iso(end)},
        },
    }
    return orjson.dumps(body)


def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes, float | None]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=10)
    for key, value, timestamp in records:
        ms = None if timestamp is None else int(timestamp * 1000)
        producer.send(topic, key=key, value=value, timestamp_ms=ms)
    producer.flush()
    producer.close()


def _answers(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = assign_all(consumer, topic, from_beginning=True)
        return [orjson.loads(r.value) for r in read_to_end(consumer, partitions, 30)]
    finally:
        consumer.close()


def _committed(bootstrap: str, group_id: str) -> int:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets(group_id).get(group_id, {})
    except KafkaError:  # no coordinator yet: the group has not committed
        return 0
    finally:
        admin.close()
    return sum(o.offset for o in offsets.values() if o.offset > 0)


def run_chaos(
    bootstrap: str, requests: int, kills: int, seed: int, workdir: Path
) -> dict[str, int]:
    """Run the chaos; return the figures the targets are about."""
    tag = uuid.uuid4().hex[:8]
    names = MonitorSettings().topics.model_dump()
    settings = TrainerSettings(
        kafka={
            "bootstrap_servers": bootstrap,
            "group_id": f"chaos-{tag}",
            "group_instance_id": f"chaos-trainer-{tag}",
            "session_timeout_ms": 10_000,
            "heartbeat_interval_ms": 1000,
            "partitions": 1,
        },
        topics={field: f"chaos-{name}-{tag}" for field, name in names.items()},
        registry_dir=workdir / "registry",
        metrics_port=0,
        log_level="WARNING",
        models={
            MODEL: {
                "estimator": {"name": "logistic_regression"},
                "max_retrains": 1_000_000,
                "min_train_examples": 100,
                "min_holdout_examples": 40,
            }
        },
    )
    ensure_topics(settings.kafka, settings.topics)
    examples, start_time, end_time = _examples(600)
    _produce(
        bootstrap,
        settings.topics.labelled_examples,
        [(e.key or b"", e.value, e.timestamp) for e in examples],
    )
    _produce(
        bootstrap,
        settings.topics.retrain_requests,
        [(MODEL.encode(), _request(i, start_time, end_time), None) for i in range(requests)],
    )
    config = workdir / "trainer.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    log = workdir / "trainer.log"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("STREAM_MONITOR_")},
        "PYTHONPATH": str(ROOT),
    }
    command = [sys.executable, "-m", "stream_monitor.cli", "trainer", "--config", str(config)]

    def launch() -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(command, env=env, stdout=out, stderr=out)

    def done() -> bool:
        return _committed(bootstrap, settings.kafka.group_id) >= requests

    registry = ModelRegistry(settings.registry_dir)
    killed, in_window = _kill_repeatedly(launch, done, registry, kills, random.Random(seed))
    trainer = launch()
    deadline = time.monotonic() + 300
    while not done():
        if trainer.poll() is not None:
            raise SystemExit(f"the trainer exited with {trainer.returncode}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            trainer.kill()
            raise SystemExit(f"not every request answered in 300 s:\n{_tail(log)}")
        time.sleep(0.5)
    trainer.send_signal(signal.SIGTERM)
    trainer.wait(timeout=60)

    versions = registry.versions(MODEL)
    trained_for = [registry.metadata(MODEL, v)["request"]["id"] for v in versions]
    ids = [f"chaos-{i}" for i in range(requests)]
    journalled = [registry.handled_request(MODEL, i) for i in ids]
    answer_ids: dict[str, set[str]] = defaultdict(set)
    published = _answers(bootstrap, settings.topics.model_events)
    for event in published:
        answer_ids[event["data"]["request"]["id"]].add(event["id"])
    return {
        "requests": requests,
        "kills": killed,
        "kills between registering a version and journalling its request": in_window,
        "versions": len(versions),
        "duplicate versions": len(trained_for) - len(set(trained_for)),
        "unanswered requests": sum(
            1 for i, j in zip(ids, journalled, strict=True) if j is None or not j.done
        )
        + sum(1 for i in ids if not answer_ids[i]),
        "requests with more than one answer id": sum(1 for i in ids if len(answer_ids[i]) > 1),
        "answer records published": len(published),
    }


def _kill_repeatedly(
    launch: Callable[[], subprocess.Popen[bytes]],
    done: Callable[[], bool],
    registry: ModelRegistry,
    kills: int,
    rng: random.Random,
) -> tuple[int, int]:
    """SIGKILL the trainer ``kills`` times (fewer if it finished first); the number of
    kills, and of those that left a version without its journal entry."""
    killed = in_window = 0
    for kill in range(kills):
        if done():
            break
        trainer = launch()
        if kill % 2:
            # Aimed: the moment a new version appears, before its request is journalled.
            known = len(registry.versions(MODEL))
            deadline = time.monotonic() + 15
            while len(registry.versions(MODEL)) == known and time.monotonic() < deadline:
                time.sleep(0.001)
        else:
            # Anywhere: start-up (imports, joining the group) takes a few seconds.
            time.sleep(rng.uniform(2.0, 8.0))
        trainer.send_signal(signal.SIGKILL)
        trainer.wait()
        killed += 1
        in_window += _unjournalled(registry) > 0
    return killed, in_window


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _unjournalled(registry: ModelRegistry) -> int:
    """Versions whose request has no journal entry: a kill landed in between."""
    return sum(
        1
        for version in registry.versions(MODEL)
        if registry.handled_request(MODEL, registry.metadata(MODEL, version)["request"]["id"])
        is None
    )


TARGETS = ("duplicate versions", "unanswered requests", "requests with more than one answer id")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", help="existing broker (default: start the local one)")
    parser.add_argument("--port", type=int, default=39092, help="local broker port")
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    bootstrap = args.bootstrap or start(BrokerSettings(port=args.port)).bootstrap_servers
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as workdir:
        figures = run_chaos(bootstrap, args.requests, args.kills, args.seed, Path(workdir))
    print(f"trainer chaos on {bootstrap}, seed {args.seed}, {time.monotonic() - started:.0f} s")
    print("| figure | value | target |")
    print("|---|---|---|")
    for name, value in figures.items():
        print(f"| {name} | {value} | {'0' if name in TARGETS else ''} |")
    return 1 if any(figures[name] for name in TARGETS) else 0


if __name__ == "__main__":
    sys.exit(main())
