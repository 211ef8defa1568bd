"""Restart after SIGKILL to partitions assigned, with and without static membership.

A monitor process (``stream-monitor monitor``) joins its group and gets its
partitions; it is killed with SIGKILL and a new one started at once with the same
settings. The figure is the time from the kill to the new process's "partitions
assigned" log line (and, apart, from its launch: Python's start-up is part of either).
Without static membership the dead member keeps its partitions until
``kafka.session_timeout_ms`` runs out; with ``kafka.group_instance_id`` the new process
takes its place as soon as it rejoins.

    python benchmarks/restart.py                     # local broker, 3 rounds of each
    python benchmarks/restart.py --bootstrap host:9092 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import math
import os
import selectors
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

from stream_monitor.config import MonitorSettings
from stream_monitor.devbroker.broker import BrokerSettings, start
from stream_monitor.kafka.topics import ensure_topics

ROOT = Path(__file__).resolve().parents[1]
SESSION_TIMEOUT_MS = 45_000  # Kafka's default


def _environment(bootstrap: str, tag: str, static: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_MONITOR_")}
    names = MonitorSettings().topics.model_dump()
    env.update(
        {f"STREAM_MONITOR_TOPICS__{f.upper()}": f"restart-{n}-{tag}" for f, n in names.items()}
    )
    env.update(
        PYTHONPATH=str(ROOT),
        STREAM_MONITOR_KAFKA__BOOTSTRAP_SERVERS=bootstrap,
        STREAM_MONITOR_KAFKA__GROUP_ID=f"restart-{tag}",
        STREAM_MONITOR_KAFKA__SESSION_TIMEOUT_MS=str(SESSION_TIMEOUT_MS),
        STREAM_MONITOR_METRICS_PORT="0",
        STREAM_MONITOR_LOG_LEVEL="INFO",
    )
    if static:
        env["STREAM_MONITOR_KAFKA__GROUP_INSTANCE_ID"] = f"monitor-{tag}-0"
    return env


def _launch(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "stream_monitor.cli", "monitor"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_assigned(process: subprocess.Popen[bytes], timeout: float) -> tuple[float, float]:
    """The monotonic times of the process's "monitor started" log line (its consumer has
    subscribed: the imports and start-up checks are behind it) and of its first
    "partitions assigned" line."""
    assert process.stderr is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stderr, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    started = math.nan
    while time.monotonic() < deadline:
        if not selector.select(timeout=1.0):
            continue
        line = process.stderr.readline()
        if not line:
            raise SystemExit(f"the monitor exited with {process.wait()} before its partitions")
        try:
            message = json.loads(line).get("message")
        except ValueError:
            continue
        if message == "monitor started":
            started = time.monotonic()
        if message == "partitions assigned":
            return started, time.monotonic()
    raise SystemExit(f"no partitions assigned within {timeout:g} s")


def measure(bootstrap: str, static: bool) -> tuple[float, float, float]:
    """Seconds from a first launch to its partitions (nobody to wait for); from the
    SIGKILL of that process to the partitions of the one started in its place; and of
    those, the seconds the group took (from its subscription to its partitions)."""
    tag = uuid.uuid4().hex[:8]
    env = _environment(bootstrap, tag, static)
    settings = MonitorSettings(
        kafka={"bootstrap_servers": bootstrap, "partitions": 3},
        topics={k.removeprefix("STREAM_MONITOR_TOPICS__").lower(): v
                for k, v in env.items() if k.startswith("STREAM_MONITOR_TOPICS__")},
    )  # fmt: skip
    ensure_topics(settings.kafka, settings.topics)
    launched = time.monotonic()
    first = _launch(env)
    try:
        first_start = _wait_assigned(first, 120)[1] - launched
        time.sleep(2.0)  # a member that has been in the group a while, heartbeating
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    killed = time.monotonic()
    second = _launch(env)
    try:
        subscribed, assigned = _wait_assigned(second, 120)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=60)
    return first_start, assigned - killed, assigned - subscribed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", help="existing broker (default: start the local one)")
    parser.add_argument("--port", type=int, default=39092, help="local broker port")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    bootstrap = args.bootstrap or start(BrokerSettings(port=args.port)).bootstrap_servers
    results: dict[str, list[float]] = defaultdict(list)
    for round_ in range(args.rounds):
        for kind in ("static", "dynamic"):
            first_start, seconds, joining = measure(bootstrap, static=kind == "static")
            results["first start"].append(first_start)
            results[kind].append(seconds)
            results[f"{kind} join"].append(joining)
            print(
                f"round {round_ + 1}, {kind} membership: restart {seconds:.1f} s, of which "
                f"joining the group {joining:.1f} s (first start {first_start:.1f} s)",
                flush=True,
            )
    print()
    print(f"to partitions assigned, session_timeout_ms={SESSION_TIMEOUT_MS}:")
    print("| start | median s | min s | max s |")
    print("|---|---|---|---|")
    labels = {
        "first start": "first start of the group's only member (the floor: start-up, join)",
        "static": "SIGKILL, then restart, static membership (kafka.group_instance_id)",
        "static join": "of which subscription to partitions assigned, static",
        "dynamic": "SIGKILL, then restart, dynamic membership (the default)",
        "dynamic join": "of which subscription to partitions assigned, dynamic",
    }
    for kind, seconds in results.items():
        print(
            f"| {labels[kind]} | {statistics.median(seconds):.1f} | {min(seconds):.1f} |"
            f" {max(seconds):.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
