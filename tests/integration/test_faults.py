"""Records that once stopped the service, on the real broker: each reaches dead-letter
with its reason and source offset, and the rest of the stream is processed."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka import KafkaProducer
from kafka.errors import KafkaError

from stream_monitor.adversarial import CASES, label, prediction
from tests.integration.helpers import (
    all_committed,
    create_topics,
    read_all,
    running_monitor,
    settings_for,
    values,
    wait_until,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# The rows of the fault table (issue #16), each with the cases that make it.
ROWS = {
    "json-nested-10000-deep": ["deep-top-level", "deep-unknown-field", "deep-features"],
    "number-beyond-float-range": [
        "int-beyond-float-feature",
        "float-beyond-range-feature",
        "int-beyond-float-score",
    ],
    "wrong-type-then-nan-or-huge": ["wrong-type-then-nan", "wrong-type-then-huge"],
    "timestamp-ahead-of-the-broker": [
        "timestamp-2h-ahead",
        "timestamp-year-9999",
        "timestamp-iso-year-10000",
    ],
    "prediction-id-of-900-kb": ["huge-prediction-id", "huge-prediction-id-label"],
    "invalid-record-of-1-mb": ["invalid-1mb"],
}


@pytest.mark.parametrize("row", list(ROWS))
def test_a_row_of_the_fault_table_reaches_dead_letter_and_the_stream_goes_on(
    bootstrap: str, row: str
) -> None:
    settings = settings_for(bootstrap)
    create_topics(settings)
    topics = {
        "predictions": settings.topics.predictions,
        "ground_truth": settings.topics.ground_truth,
    }
    producer = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=1_100_000)
    now_ms = int(time.time() * 1000)
    ids = [f"ok-{i}" for i in range(20)]

    def send(topic: str, value: bytes) -> tuple[str, int, int]:
        meta = producer.send(topics[topic], key=b"m", value=value).get(timeout=30)
        return topic, meta.partition, meta.offset

    for pid in ids:
        send("predictions", json.dumps(prediction("m", 0, now_ms, prediction_id=pid)).encode())
    bad = {}
    for n, name in enumerate(ROWS[row]):
        topic, _, value = CASES[name].record("m", n, now_ms)
        bad[send(topic, value)] = CASES[name].reason
    for pid in ids:
        send("ground_truth", json.dumps(label("m", 0, now_ms, prediction_id=pid)).encode())
    producer.close()
    total = 2 * len(ids) + len(bad)

    def done() -> bool:
        try:
            return all_committed(settings, total)
        except KafkaError:  # the group's coordinator is not there yet
            return False

    with running_monitor(settings) as monitor:
        wait_until(done, 90, "every record committed", monitor)
        monitor.healthy()

    letters = {}
    for record in read_all(bootstrap, settings.topics.dead_letter):
        headers = {k: v.decode() for k, v in record.headers}
        where = (headers["source.topic"], int(headers["source.partition"]))
        letters[*where, int(headers["source.offset"])] = headers["error.reason"]
        assert len(record.value) + sum(len(k) + len(v) for k, v in record.headers) < 1_000_000
    assert letters == bad
    examples = values(bootstrap, settings.topics.labelled_examples)
    assert sorted(e["data"]["prediction_id"] for e in examples) == sorted(ids)


def test_the_short_fault_campaign_passes_every_check(bootstrap: str) -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/faults.py", "--short", "--bootstrap", bootstrap],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "all checks passed" in done.stdout
    assert "FAILED" not in done.stdout
