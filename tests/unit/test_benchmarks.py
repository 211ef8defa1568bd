"""The broker-free benchmark still runs and prints its table (its figures are not checked:
speed is the benchmark's business, not a test's)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _printed(*command: str) -> str:
    """What a benchmark run with these arguments prints."""
    done = subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


def test_core_costs_prints_a_figure_for_every_step() -> None:
    printed = _printed("benchmarks/core_costs.py", "--events", "1500", "--rounds", "1")
    rows = [line for line in printed.splitlines() if line.startswith("| ") and "µs" not in line]
    assert [row.split("|")[1].strip().split(",")[0] for row in rows] == [
        "json.loads (the bare loop's parse)",
        "MonitorCore.process",
        "of which decoding and validation",
        "of which the feature tests",
    ]
    assert all(float(row.split("|")[2]) > 0 for row in rows)


def test_estimation_benchmark_prints_its_table_and_targets() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "benchmarks/estimation.py",
            *("--seeds", "1", "--delays", "5000", "--datasets", "wine"),
            *("--scenarios", "covariate", "--workers", "1", "--no-cost"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    rows = [line for line in done.stdout.splitlines() if line.startswith("| wine |")]
    assert [row.split("|")[2:4] for row in rows] == [[" covariate ", " 5,000 "]]
    targets = [line for line in done.stdout.splitlines() if line.startswith("- ")]
    assert [t.split(":")[0] for t in targets] == [
        "- estimation error on covariate shift (windows after the change)",
        "- estimated_performance events on the stationary parts",
    ]


def test_snapshot_codec_prints_both_formats_and_their_ratio() -> None:
    printed = _printed("benchmarks/snapshot_codec.py", "--events", "3000", "--rounds", "2")
    rows = [line.split("|")[1:-1] for line in printed.splitlines() if "| " in line[:2]]
    assert [row[0].strip() for row in rows[1:]] == [
        "codec (msgpack, allowlist)",
        "MessagePack alone (baseline)",
    ]
    assert all(float(cell) > 0 for row in rows[1:] for cell in row[1:4])
    assert "codec / MessagePack alone, snapshot + restore:" in printed
