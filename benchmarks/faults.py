"""A fault and fuzz campaign against the monitor service on a real broker.

Two parts, each on topics of its own, with the monitor running as its own process
(``stream-monitor monitor``) as in production:

1. **Rows.** Every case of :data:`stream_monitor.adversarial.CASES` (each way one record
   once stopped the service, and neighbours) on a model of its own, between valid
   predictions and labels of that model.
2. **Fuzz.** A valid stream with one drift (one model, labels ``--label-delay``
   predictions late), with ``--adversarial`` records drawn by
   :func:`stream_monitor.adversarial.mixed` interleaved, published live while the
   monitor is killed with SIGKILL ``--kills`` times at random moments and started again.

Afterwards it checks and prints: service stops (exits nobody asked for), every bad record
in ``dead-letter`` with a reason and its source offset (and no valid one), every pair
counted exactly once by the detectors (from the last snapshots), every labelled example
present at least once, and the ids of the drift's retrain request or escalation equal to
those of a clean in-process run of the valid stream alone (one episode). It exits 1 if
any check fails.

    python benchmarks/faults.py                  # starts the local broker itself
    python benchmarks/faults.py --short          # CI: 6,000 predictions, 1,000 bad, 2 kills
    python benchmarks/faults.py --bootstrap host:9092 --adversarial 10000 --kills 10
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

from stream_monitor import adversarial
from stream_monitor.config import MonitorSettings
from stream_monitor.core.events import unbatch
from stream_monitor.core.monitor import MonitorCore
from stream_monitor.devbroker.broker import BrokerSettings, start, stop
from stream_monitor.kafka import state
from stream_monitor.kafka.topics import assign_all, ensure_topics, read_to_end
from stream_monitor.simulate import Scenario, stream

MODEL = "faults-model"
# The input topics' names in dead-letter headers (source.topic), by settings field.
SOURCE_NAMES = {"predictions": "predictions", "ground_truth": "ground_truth"}
Where = tuple[str, int, int]  # (source topic as the monitor names it, partition, offset)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_settings(bootstrap: str, part: str) -> MonitorSettings:
    """Topics and a group of their own; checkpoints every second; static membership, so
    that a restarted process gets its partitions back at once."""
    tag = f"{part}-{uuid.uuid4().hex[:6]}"
    names = MonitorSettings().topics.model_dump()
    return MonitorSettings(
        kafka={
            "bootstrap_servers": bootstrap,
            "group_id": f"faults-{tag}",
            "partitions": 2,
            "max_poll_records": 500,
            "session_timeout_ms": 10_000,
            "group_instance_id": f"faults-{tag}",
        },
        topics={name: f"{topic}-{tag}" for name, topic in names.items()},
        checkpoint={"every_seconds": 1.0},
        metrics_port=0,
    )


class Inputs:
    """Produces to the two input topics, remembering where each record landed."""

    def __init__(self, settings: MonitorSettings) -> None:
        ensure_topics(settings.kafka, settings.topics)
        self._topics = {
            "predictions": settings.topics.predictions,
            "ground_truth": settings.topics.ground_truth,
        }
        self._producer = KafkaProducer(
            **settings.kafka.client(), linger_ms=20, max_request_size=1_100_000
        )
        self._sent: list[tuple[bool, str, Any]] = []  # (bad, topic, future)
        self.count = 0

    def send(self, topic: str, key: bytes, value: bytes, bad: bool) -> int:
        """Send one record; returns its number for :meth:`where`."""
        future = self._producer.send(self._topics[topic], key=key, value=value)
        self._sent.append((bad, topic, future))
        self.count += 1
        return self.count - 1

    def where(self, number: int) -> Where:
        """Where record ``number`` landed (after :meth:`flush`)."""
        _, topic, future = self._sent[number]
        meta = future.get(timeout=60)
        return SOURCE_NAMES[topic], meta.partition, meta.offset

    def bad_records(self) -> set[Where]:
        """Where every bad record landed (after :meth:`flush`)."""
        return {self.where(n) for n, (bad, _, _) in enumerate(self._sent) if bad}

    def flush(self) -> None:
        self._producer.flush()


@dataclass
class Monitor:
    """The monitor as a child process; restarts counted, stops nobody asked for too."""

    config: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None
    kills: int = 0
    stops: list[str] = field(default_factory=list)
    logged_before: int = 0
    """The log's size when the current process was started: what it logs comes after."""

    def start(self) -> None:
        self.logged_before = self.log.stat().st_size if self.log.exists() else 0
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stream_monitor.cli", "monitor", "--config", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("ab"),
            env=os.environ.copy(),
        )

    def check(self) -> None:
        """Count and restart a process that exited by itself."""
        assert self.process is not None
        code = self.process.poll()
        if code is not None:
            tail = self.log.read_text(errors="replace").splitlines()[-5:]
            self.stops.append(f"exit {code}: {' | '.join(tail)}")
            self.start()

    def kill(self) -> None:
        self.check()
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.kills += 1
        self.start()

    def started(self) -> bool:
        """Whether the current process logged "monitor started" (its SIGTERM handler is
        set before: until then a SIGTERM ends it with -15, not with a clean stop)."""
        with self.log.open("rb") as log:
            log.seek(self.logged_before)
            for line in log:
                try:
                    if json.loads(line).get("message") == "monitor started":
                        return True
                except ValueError:
                    continue
        return False

    def wait_started(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.started():
            self.check()
            if time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace").splitlines()[-5:]
                raise SystemExit(
                    f"the monitor did not log 'monitor started' within {timeout:g} s of its "
                    f"start: {' | '.join(tail)}"
                )
            time.sleep(0.2)

    def stop(self) -> int:
        self.check()
        self.wait_started()  # a process restarted after a kill may still be importing
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=120)


def write_config(settings: MonitorSettings, directory: Path) -> Path:
    config = directory / f"{settings.kafka.group_id}.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    return config


def committed(settings: MonitorSettings) -> int:
    """Offsets the monitor's group committed, summed (0 before its coordinator exists)."""
    admin = KafkaAdminClient(**settings.kafka.client())
    try:
        offsets = admin.list_group_offsets(settings.kafka.group_id).get(settings.kafka.group_id)
    except KafkaError:
        return 0
    finally:
        admin.close()
    return sum(o.offset for o in (offsets or {}).values() if o.offset > 0)


def wait_for_all(settings: MonitorSettings, monitor: Monitor, total: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        monitor.check()
        if committed(settings) >= total:
            return True
        time.sleep(0.5)
    return False


def records_of(settings: MonitorSettings, topic: str) -> list[Any]:
    consumer = KafkaConsumer(**settings.kafka.client(), enable_auto_commit=False)
    try:
        return list(read_to_end(consumer, assign_all(consumer, topic, from_beginning=True), 10))
    finally:
        consumer.close()


def dead_letters(settings: MonitorSettings) -> dict[Where, str]:
    """The reason of every dead letter, by where its record came from."""
    found = {}
    for record in records_of(settings, settings.topics.dead_letter):
        headers = {k: v.decode() for k, v in record.headers}
        where = (
            headers["source.topic"],
            int(headers["source.partition"]),
            int(headers["source.offset"]),
        )
        found[where] = headers["error.reason"]
    return found


def labelled_ids(settings: MonitorSettings) -> Counter[str]:
    return Counter(
        event["data"]["prediction_id"]
        for record in records_of(settings, settings.topics.labelled_examples)
        for event in unbatch(record.value)
    )


def event_ids(settings: MonitorSettings, topic: str) -> set[str]:
    return {e["id"] for r in records_of(settings, topic) for e in unbatch(r.value)}


def labelled_by_detectors(settings: MonitorSettings) -> dict[str, int]:
    """By model, the pairs its detectors counted, from the last snapshots."""
    core = MonitorCore(settings)
    stored = state.read_state(settings.kafka.client(), settings.topics.monitor_state)
    for model_id, data in stored.snapshots.items():
        core.restore(model_id, data)
    return {m: v.labelled for (m, _), v in core.stats().versions.items()}


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


def run_checks(monitor: Monitor, done: bool, records: int, code: int) -> list[Check]:
    """What every part checks of the run itself: no stop, all read, a clean exit."""
    return [
        Check("service stops", not monitor.stops, f"{len(monitor.stops)} {monitor.stops[:2]}"),
        Check("all input committed", done, f"{records:,} records"),
        Check("clean stop (SIGTERM)", code == 0, f"exit {code}"),
    ]


def report(title: str, checks: list[Check]) -> bool:
    print(f"\n{title}")
    print("| check | result | detail |")
    print("|---|---|---|")
    for check in checks:
        print(f"| {check.name} | {'ok' if check.passed else 'FAILED'} | {check.detail} |")
    return all(c.passed for c in checks)


# ---- part 1: one model per case ----------------------------------------------------------


def rows(bootstrap: str, directory: Path, valid: int = 30) -> bool:
    settings = make_settings(bootstrap, "rows")
    inputs = Inputs(settings)
    now_ms = int(time.time() * 1000)
    # By case: its record's number, and the valid prediction ids of its model.
    expected: dict[str, tuple[int, set[str]]] = {}
    for n, (name, case) in enumerate(adversarial.CASES.items()):
        model = f"row-{name}"
        ids = {f"{name}-{i}" for i in range(valid)}
        _valid_pairs(inputs, model, sorted(ids), now_ms, labels=False)
        expected[name] = (inputs.send(*case.record(model, n, now_ms), bad=True), ids)
        _valid_pairs(inputs, model, sorted(ids), now_ms, predictions=False)
    inputs.flush()
    bad = inputs.bad_records()
    monitor = Monitor(write_config(settings, directory), directory / "rows.log")
    monitor.start()
    done = wait_for_all(settings, monitor, inputs.count, timeout=300)
    code = monitor.stop()
    letters, examples = dead_letters(settings), labelled_ids(settings)
    by_case = []
    for name, (number, ids) in expected.items():
        where, wanted = inputs.where(number), adversarial.CASES[name].reason
        joined = sum(1 for i in ids if examples[i])
        by_case.append(
            Check(
                f"row {name}",
                letters.get(where) == wanted and joined == len(ids),
                f"dead letter at {where[0]} {where[1]}:{where[2]} `{letters.get(where)}` "
                f"(expected `{wanted}`); {joined}/{len(ids)} pairs joined",
            )
        )
    checks = [
        *run_checks(monitor, done, inputs.count, code),
        Check(
            "bad records in dead-letter",
            bad <= letters.keys() and len(letters) == len(bad),
            f"{len(bad & letters.keys())}/{len(bad)}, with their source offsets; "
            f"{len(letters.keys() - bad)} valid records there",
        ),
        *by_case,
    ]
    return report("Part 1: every row of the fault table, each on a model of its own", checks)


def _valid_pairs(
    inputs: Inputs,
    model: str,
    ids: Iterable[str],
    now_ms: int,
    predictions: bool = True,
    labels: bool = True,
) -> None:
    for pid in ids:
        if predictions:
            value = adversarial.prediction(model, 0, now_ms, prediction_id=pid)
            inputs.send("predictions", model.encode(), json.dumps(value).encode(), bad=False)
        if labels:
            value = adversarial.label(model, 0, now_ms, prediction_id=pid)
            inputs.send("ground_truth", model.encode(), json.dumps(value).encode(), bad=False)


# ---- part 2: a valid stream with fuzz, and kills ------------------------------------------


def fuzz(bootstrap: str, directory: Path, args: argparse.Namespace) -> bool:
    settings = make_settings(bootstrap, "fuzz")
    scenario = Scenario(
        events=args.events,
        drift_at=args.events // 2,
        label_delay=args.label_delay,
        features=5,
        model_id=MODEL,
    )
    valid = [(t, k.encode(), json.dumps(v).encode()) for t, k, v in stream(scenario)]
    rng = random.Random(args.seed)
    bad = list(adversarial.mixed(rng, args.adversarial, [MODEL], int(time.time() * 1000)))
    # Bad records at random places among the valid ones, in the valid ones' order.
    slots = sorted(rng.randrange(len(valid) + 1) for _ in bad)
    inputs = Inputs(settings)
    monitor = Monitor(write_config(settings, directory), directory / "fuzz.log")
    monitor.start()

    def publish() -> None:
        b = 0
        started = time.monotonic()
        for i, record in enumerate(valid):
            while b < len(bad) and slots[b] == i:
                inputs.send(*bad[b], bad=True)
                b += 1
            inputs.send(*record, bad=False)
            if i % 200 == 0:  # paced, so that kills fall while records arrive
                time.sleep(max(0.0, i / args.rate - (time.monotonic() - started)))
        for record in bad[b:]:
            inputs.send(*record, bad=True)
        inputs.flush()

    producer = threading.Thread(target=publish)
    started = time.monotonic()
    producer.start()
    busy_kills = 0
    for _ in range(args.kills):
        # Each kill hits a process at work: one that has committed since the last kill
        # (a kill during start-up tests less), at a random moment after that.
        before = committed(settings)
        wait_for_all(settings, monitor, before + 1, timeout=120)
        time.sleep(rng.uniform(0.0, 2.0))
        busy_kills += committed(settings) < inputs.count or producer.is_alive()
        monitor.kill()
    producer.join()
    done = wait_for_all(settings, monitor, inputs.count, timeout=600)
    code = monitor.stop()
    elapsed = time.monotonic() - started

    bad_where = inputs.bad_records()
    letters = dead_letters(settings)
    examples = labelled_ids(settings)
    valid_ids = {json.loads(v)["prediction_id"] for t, _, v in valid if t == "predictions"}
    counted = labelled_by_detectors(settings)
    clean = MonitorCore(MonitorSettings())
    clean_outputs = [o for t, k, v in valid for o in clean.process(t, k, v)]
    # The episode's action: a retrain request, or an escalation for a drop beyond it.
    episode_topics = ("retrain_requests", "escalations")
    clean_ids = {json.loads(o.value)["id"] for o in clean_outputs if o.topic in episode_topics}
    service_ids = event_ids(settings, settings.topics.retrain_requests) | event_ids(
        settings, settings.topics.escalations
    )
    reasons = Counter(letters[w] for w in bad_where if w in letters)
    repeats = sum(examples.values()) - len(examples)
    print(
        f"\n{len(valid):,} valid records and {len(bad):,} adversarial ones in {elapsed:.0f} s, "
        f"{monitor.kills} SIGKILLs ({busy_kills} with records still to process)"
    )
    checks = [
        *run_checks(monitor, done, inputs.count, code),
        Check(
            "bad records in dead-letter",
            bad_where <= letters.keys(),
            f"{len(bad_where & letters.keys()):,}/{len(bad_where):,} with reasons and source "
            f"offsets ({', '.join(f'{r}: {n}' for r, n in reasons.most_common())})",
        ),
        Check(
            "no valid record in dead-letter",
            letters.keys() <= bad_where,
            f"{len(letters.keys() - bad_where)}",
        ),
        Check(
            "pairs counted exactly once",
            counted == {MODEL: len(valid_ids)},
            f"{counted} of {len(valid_ids):,}",
        ),
        Check(
            "labelled examples at least once, none missing",
            examples.keys() == valid_ids,
            f"{len(examples.keys() & valid_ids):,}/{len(valid_ids):,} ({repeats:,} repeats)",
        ),
        Check(
            "retrain / escalation ids as in a clean run",
            service_ids == clean_ids and len(clean_ids) == 1,
            f"{sorted(service_ids)} / clean {sorted(clean_ids)}",
        ),
    ]
    return report("Part 2: adversarial records in a valid stream with one drift, and kills", checks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", help="a running broker (default: start the local one)")
    parser.add_argument("--port", type=int, default=0, help="local broker port (0: a free one)")
    parser.add_argument("--short", action="store_true", help="CI: fewer records and kills")
    parser.add_argument("--events", type=int, default=20_000, help="valid predictions")
    parser.add_argument("--adversarial", type=int, default=10_000)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--label-delay", type=int, default=300, help="in predictions")
    parser.add_argument("--rate", type=float, default=500.0, help="valid records/s")
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args()
    if args.short:
        args.events, args.adversarial, args.kills = 6_000, 1_000, 2
    with tempfile.TemporaryDirectory(prefix="faults-") as directory:
        broker = None
        bootstrap = args.bootstrap
        if bootstrap is None:
            broker = BrokerSettings(port=args.port or free_port(), controller_port=free_port())
            bootstrap = start(broker, data_dir=Path(directory)).bootstrap_servers
        try:
            ok = rows(bootstrap, Path(directory))
            ok = fuzz(bootstrap, Path(directory), args) and ok
        finally:
            if broker is not None:
                stop(broker)
    print("\nall checks passed" if ok else "\nSOME CHECKS FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
