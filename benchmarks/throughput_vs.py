"""``benchmarks/throughput.py`` of this tree against another commit's, alternating.

Exports ``--base`` (default ``main``) with ``git archive`` into a temporary directory,
starts one local broker, then runs one round of each tree's own throughput benchmark in
turn, ``--rounds`` times, each tree importing its own code. Each round reports the
monitor's events/s and its ratio to the bare consume-and-parse loop measured just
before it; the ratio is steadier than a rate on a machine whose speed drifts. Prints
both trees' medians and this tree's monitor rate as a multiple of the base's.

    python benchmarks/throughput_vs.py                       # against main, 5 rounds
    python benchmarks/throughput_vs.py --base v0.2.0 --rounds 3 --events 50000
"""

from __future__ import annotations

import argparse
import io
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from stream_monitor.devbroker.broker import BrokerSettings, start

ROOT = Path(__file__).resolve().parents[1]
ROUND = re.compile(r"round 1: bare loop ([\d,]+) ev/s, monitor ([\d,]+) ev/s, ratio ([\d.]+)")


def export(ref: str, into: Path) -> None:
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", ref],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")


def one_round(tree: Path, bootstrap: str, events: int) -> tuple[float, float]:
    """(monitor events/s, monitor / bare loop) of one round of ``tree``'s benchmark."""
    done = subprocess.run(
        [
            sys.executable,
            "benchmarks/throughput.py",
            "--bootstrap",
            bootstrap,
            "--events",
            str(events),
            "--rounds",
            "1",
        ],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        check=True,
    )
    found = ROUND.search(done.stdout)
    if found is None:
        raise SystemExit(f"no round in the output of {tree}:\n{done.stdout}\n{done.stderr}")
    return float(found[2].replace(",", "")), float(found[3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="git commit to compare with")
    parser.add_argument("--bootstrap", help="existing broker (default: start the local one)")
    parser.add_argument("--port", type=int, default=39292, help="local broker port")
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    bootstrap = args.bootstrap or start(BrokerSettings(port=args.port)).bootstrap_servers
    with tempfile.TemporaryDirectory(prefix="throughput-base-") as directory:
        base = Path(directory)
        export(args.base, base)
        rates: dict[str, list[float]] = {"base": [], "this": []}
        ratios: dict[str, list[float]] = {"base": [], "this": []}
        for round_ in range(args.rounds):
            for name, tree in (("base", base), ("this", ROOT)):
                rate, ratio = one_round(tree, bootstrap, args.events)
                rates[name].append(rate)
                ratios[name].append(ratio)
            print(
                f"round {round_ + 1}: {args.base} {rates['base'][-1]:,.0f} ev/s "
                f"(ratio {ratios['base'][-1]:.2f}), this tree {rates['this'][-1]:,.0f} ev/s "
                f"(ratio {ratios['this'][-1]:.2f})",
                flush=True,
            )
    print()
    print(f"| tree | monitor events/s (median of {args.rounds}) | monitor / bare loop (median) |")
    print("|---|---|---|")
    for name, label in (("base", args.base), ("this", "this tree")):
        print(
            f"| {label} | {statistics.median(rates[name]):,.0f} |"
            f" {statistics.median(ratios[name]):.2f} |"
        )
    paired = statistics.median(t / b for t, b in zip(ratios["this"], ratios["base"], strict=True))
    print(f"| this tree / {args.base} (median of the rounds' ratio of ratios) | | {paired:.2f} |")


if __name__ == "__main__":
    main()
