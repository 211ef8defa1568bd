"""A kill -9 campaign: the monitor, SIGKILLed at random points, restarted each time.

A live stream (one model, a real accuracy drop halfway, one prediction a minute of
event time, each label 3,000 predictions -- two days -- late, a TTL of seven days)
is produced to the local broker while the monitor runs as its own process on a
store directory that outlives it. Each round waits until the running monitor has
committed something new, waits a random time more, and SIGKILLs it (no last
checkpoint, no clean close), then starts it again. After the last kill the stream
is finished and the monitor stopped with SIGTERM. Then it checks and prints:

* every prediction/label pair counted exactly once by the detectors (the snapshots);
* every pair in ``labelled-examples`` at least once (repeats counted);
* exactly one retrain-request id for the drift;
* no label lost that the TTL did not expire (the join's drop counters).

Exits 1 if a check fails.

    python benchmarks/chaos.py                     # 20 kills, starts the local broker
    python benchmarks/chaos.py --kills 3 --events 3000 --bootstrap localhost:9092
"""

from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import yaml
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.errors import CoordinatorLoadInProgressError, CoordinatorNotAvailableError

from stream_monitor.config import MonitorSettings
from stream_monitor.core.events import unbatch
from stream_monitor.core.monitor import MonitorCore
from stream_monitor.devbroker.broker import BrokerSettings, start
from stream_monitor.kafka import state
from stream_monitor.kafka.topics import assign_all, ensure_topics, read_to_end
from stream_monitor.simulate import Scenario, publish

DAY = 86_400.0


@dataclass
class Campaign:
    kills: int
    events: int
    resume_seconds: list[float]
    """From each restart to its first new commit."""
    counted: int
    examples: int
    distinct_examples: int
    retrain_ids: int
    dropped: dict[str, int]
    pending: dict[str, int]
    failures: list[str]


def _committed(bootstrap: str, group: str) -> int:
    """Offsets the group has committed, summed (asked again while the broker's group
    coordinator is still starting)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        for _ in range(60):
            try:
                offsets = admin.list_group_offsets(group).get(group, {})
                break
            except (CoordinatorNotAvailableError, CoordinatorLoadInProgressError):
                time.sleep(1.0)
        else:
            raise SystemExit(f"the broker's group coordinator did not answer for {group}")
    finally:
        admin.close()
    return sum(o.offset for o in offsets.values() if o.offset > 0)


def _events(bootstrap: str, topic: str) -> list[dict[str, object]]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = assign_all(consumer, topic, from_beginning=True)
        return [e for r in read_to_end(consumer, partitions, 120) for e in unbatch(r.value)]
    finally:
        consumer.close()


def _start_monitor(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "stream_monitor.cli", "monitor", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
    )


def _kill_rounds(
    bootstrap: str,
    settings: MonitorSettings,
    config: Path,
    kills: int,
    total: int,
    rng: random.Random,
    log: Path,
) -> tuple[list[float], list[str]]:
    """Start, wait for a new commit and a random time more, SIGKILL; ``kills`` times.
    Returns the seconds from each start to its first new commit."""
    resume: list[float] = []
    group = settings.kafka.group_id
    for kill in range(kills):
        monitor = _start_monitor(config, log)
        started = time.monotonic()
        before = _committed(bootstrap, group)
        # A new commit; or, once the whole stream is committed, a kill of an idle run.
        while before < total and _committed(bootstrap, group) <= before:
            if monitor.poll() is not None:
                raise SystemExit(f"the monitor stopped by itself: see {log}")
            if time.monotonic() - started > 300:
                raise SystemExit(f"no progress for 300 s after restart {kill}: see {log}")
            time.sleep(0.2)
        resume.append(time.monotonic() - started)
        time.sleep(rng.uniform(0.0, 3.0))
        monitor.send_signal(signal.SIGKILL)
        monitor.wait(timeout=60)
        print(f"kill {kill + 1}/{kills}: resumed in {resume[-1]:.1f} s", flush=True)
    return resume, []  # the checks come after the last run


def _finish(
    bootstrap: str,
    settings: MonitorSettings,
    config: Path,
    total: int,
    log: Path,
    failures: list[str],
) -> None:
    """A last run until every record is committed, stopped with SIGTERM."""
    assigned = log.read_text().count("partitions assigned") if log.exists() else 0
    monitor = _start_monitor(config, log)
    deadline = time.monotonic() + 600
    # Started (its SIGTERM handler in place), and every record committed.
    while (
        log.read_text().count("partitions assigned") <= assigned
        or _committed(bootstrap, settings.kafka.group_id) < total
    ):
        if monitor.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the last run did not finish the stream: see {log}")
        time.sleep(0.5)
    monitor.send_signal(signal.SIGTERM)
    if monitor.wait(timeout=120) != 0:
        failures.append(f"the last run did not stop cleanly: see {log}")


def run_campaign(bootstrap: str, kills: int, events: int, seed: int, workdir: Path) -> Campaign:
    rng = random.Random(seed)
    tag = uuid.uuid4().hex[:8]
    names = MonitorSettings().topics.model_dump()
    settings = MonitorSettings(
        # Static membership, as in a StatefulSet: a restart takes the killed member's
        # place at once instead of waiting for its session to time out.
        kafka={
            "bootstrap_servers": bootstrap,
            "group_id": f"chaos-{tag}",
            "group_instance_id": "chaos-monitor-0",
            "partitions": 1,
        },
        topics={field: f"chaos-{name}-{tag}" for field, name in names.items()},
        metrics_port=0,
        checkpoint={"every_seconds": 1.0, "every_records": 2_000},
        join={"ttl_seconds": 7 * DAY, "store_dir": str(workdir / "store")},
    )
    config = workdir / "monitor.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    scenario = Scenario(
        events=events,
        drift_at=events // 2,
        accuracy_before=0.92,
        accuracy_after=0.65,
        seconds_between=60.0,
        label_delay=min(3_000, events // 4),
    )
    ensure_topics(settings.kafka, settings.topics)
    # Spread over the campaign (a kill, a restart and its first commit: 5 to 20 s).
    rate = max(events / (kills * 20.0), 20.0)
    producer = threading.Thread(target=publish, args=(settings, scenario, rate), daemon=True)
    producer.start()

    resume, failures = _kill_rounds(
        bootstrap, settings, config, kills, 2 * events, rng, workdir / "monitor.log"
    )
    producer.join()
    _finish(bootstrap, settings, config, 2 * events, workdir / "monitor.log", failures)

    core = MonitorCore(settings)
    stored = state.read_state(settings.kafka.client(), settings.topics.monitor_state)
    for model_id, data in stored.snapshots.items():
        core.restore(model_id, data)
    stats = core.stats()
    counted = stats.versions[scenario.model_id, "1"].labelled
    # The join's counts as its snapshot holds them (its store is not attached here).
    pending = {str(kind): n for kind, n in stats.pending.items()}
    examples = _events(bootstrap, settings.topics.labelled_examples)
    ids = [str(e["data"]["prediction_id"]) for e in examples]  # type: ignore[index]
    requests = _events(bootstrap, settings.topics.retrain_requests)
    retrain_ids = {str(r["id"]) for r in requests}
    expected = {f"p{i}" for i in range(events)}
    if counted != events:
        failures.append(f"{counted} pairs counted by the detectors, expected {events}")
    if set(ids) != expected:
        failures.append(f"{len(expected - set(ids))} pairs missing from labelled-examples")
    if len(retrain_ids) != 1:
        failures.append(f"{len(retrain_ids)} retrain-request ids, expected 1")
    if stats.dropped:
        failures.append(f"join drops: {dict(stats.dropped)}")
    if any(pending.values()):
        failures.append(f"still pending at the end: {pending}")
    return Campaign(
        kills=kills,
        events=events,
        resume_seconds=resume,
        counted=counted,
        examples=len(ids),
        distinct_examples=len(set(ids)),
        retrain_ids=len(retrain_ids),
        dropped={f"{kind}/{reason}": n for (kind, reason), n in stats.dropped.items()},
        pending=pending,
        failures=failures,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", help="existing broker (default: start the local one)")
    parser.add_argument("--port", type=int, default=39192, help="local broker port")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--events", type=int, default=20_000, help="predictions (and labels)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    bootstrap = args.bootstrap or start(BrokerSettings(port=args.port)).bootstrap_servers
    with tempfile.TemporaryDirectory(prefix="chaos-") as workdir:
        result = run_campaign(bootstrap, args.kills, args.events, args.seed, Path(workdir))
    resume = sorted(result.resume_seconds)
    print()
    print("| figure | value |")
    print("|---|---|")
    print(f"| kills (SIGKILL) recovered | {len(resume)} of {result.kills} |")
    median, longest = resume[len(resume) // 2], resume[-1]
    print(f"| restart to first new commit, median / max | {median:.1f} s / {longest:.1f} s |")
    print(f"| pairs counted by the detectors | {result.counted} of {result.events} |")
    print(
        f"| labelled examples (distinct / with repeats) | {result.distinct_examples} / "
        f"{result.examples} |"
    )
    print(f"| retrain-request ids | {result.retrain_ids} |")
    print(f"| join drops (TTL or duplicate) | {sum(result.dropped.values())} |")
    print(f"| still pending at the end | {sum(result.pending.values())} |")
    print()
    if result.failures:
        for failure in result.failures:
            print(f"FAILED: {failure}")
        raise SystemExit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
