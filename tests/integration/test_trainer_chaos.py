"""The short version of benchmarks/trainer_chaos.py: the trainer killed with SIGKILL
while it answers a run of requests trains none twice and answers each once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_sigkills_leave_no_duplicate_version_and_no_unanswered_request(bootstrap: str) -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/trainer_chaos.py", "--bootstrap", bootstrap,
         "--requests", "6", "--kills", "4", "--seed", "1"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=500,
        check=False,
    )  # fmt: skip
    figures = {
        row.split("|")[1].strip(): int(row.split("|")[2])
        for row in done.stdout.splitlines()
        if row.startswith("| ") and row.split("|")[2].strip().isdigit()
    }
    assert done.returncode == 0, done.stdout + done.stderr
    assert figures["requests"] == 6 and figures["kills"] >= 1
    assert figures["versions"] == 6  # each request trained once (no budget, enough data)
    assert figures["duplicate versions"] == 0
    assert figures["unanswered requests"] == 0
    assert figures["requests with more than one answer id"] == 0
