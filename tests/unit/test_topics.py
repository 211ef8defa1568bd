"""Start-up checks that need no broker: one that cannot be reached."""

from __future__ import annotations

import socket

import pytest

from stream_monitor.config import KafkaSettings, TopicSettings
from stream_monitor.kafka.topics import StartupError, ensure_topics


def test_an_unreachable_broker_stops_the_start_naming_the_setting() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # One second instead of thirty to give up.
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}", bootstrap_timeout_ms=1000)
    with pytest.raises(StartupError, match=f"cannot reach Kafka at 127.0.0.1:{port}"):
        ensure_topics(kafka, TopicSettings())
