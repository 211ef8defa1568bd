"""The short kill -9 campaign: benchmarks/chaos.py with 3 SIGKILLs on the test broker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_three_sigkills_lose_nothing_and_count_every_pair_once(bootstrap: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "benchmarks/chaos.py",
            "--bootstrap",
            bootstrap,
            "--kills",
            "3",
            "--events",
            "3000",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=580,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| kills (SIGKILL) recovered | 3 of 3 |" in done.stdout
    assert "| pairs counted by the detectors | 3000 of 3000 |" in done.stdout
    assert "| retrain-request ids | 1 |" in done.stdout
    assert "all checks passed" in done.stdout
