"""The monitor rides out a broker restart: a broker of its own, stopped for five seconds."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from stream_monitor.devbroker.broker import BrokerSettings, start, stop
from stream_monitor.simulate import Scenario, publish
from tests.integration.helpers import (
    all_committed,
    assert_every_pair_counted_once,
    create_topics,
    running_monitor,
    settings_for,
    wait_until,
)

pytestmark = pytest.mark.integration


def test_a_broker_restart_mid_stream_loses_nothing_and_counts_nothing_twice(
    own_broker: BrokerSettings, tmp_path: Path
) -> None:
    bootstrap = f"127.0.0.1:{own_broker.port}"
    settings = settings_for(bootstrap, kafka={"partitions": 1})
    create_topics(settings)
    scenario = Scenario(events=10_000, drift_at=None, label_delay=50)
    producer = threading.Thread(target=publish, args=(settings, scenario, 1_000))
    producer.start()
    with running_monitor(settings) as monitor:
        wait_until(lambda: monitor.service.processed > 2_000, 60, "some progress", monitor)
        stop(own_broker)
        time.sleep(5)
        start(own_broker, data_dir=tmp_path / "data", timeout=120)
        producer.join()
        wait_until(
            lambda: all_committed(settings, 2 * scenario.events),
            120,
            "every record committed after the restart",
            monitor,
        )
    assert_every_pair_counted_once(settings, ["demo-model"], scenario.events)
