"""The documented least privilege is the one the code grants (and the tests use)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stream_monitor.config import KafkaSettings, TopicSettings
from stream_monitor.kafka import acls
from stream_monitor.trainer.settings import TrainerSettings

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
TOPICS = TopicSettings()


def _section(title: str) -> list[str]:
    """The grant lines (``- OPERATION on ...``) under a ``### title`` heading."""
    text = DOC.read_text(encoding="utf-8")
    body = text.split(f"### {title}\n", 1)[1].split("\n#", 1)[0]
    return re.findall(r"^- ([A-Z_]+ on (?:topic|group) [\w.-]+)", body, flags=re.MULTILINE)


@pytest.mark.parametrize(
    ("title", "grants"),
    [
        ("Monitor", acls.monitor_grants(TOPICS, KafkaSettings().group_id)),
        ("Trainer", acls.trainer_grants(TOPICS, TrainerSettings().kafka.group_id)),
        ("Serving app (and the simulator)", acls.serving_grants(TOPICS)),
    ],
)
def test_docs_list_exactly_the_grants_of_each_service(title: str, grants: list[acls.Grant]) -> None:
    assert _section(title) == [str(grant) for grant in grants]


def test_creating_topics_adds_create_on_exactly_the_topics_a_service_uses() -> None:
    monitor = acls.monitor_grants(TOPICS, "g", create=True)
    assert {g.name for g in monitor if g.operation == "CREATE"} == set(TOPICS.model_dump().values())
    trainer = acls.trainer_grants(TOPICS, "g", create=True)
    assert [g.name for g in trainer if g.operation == "CREATE"] == acls.trainer_topics(TOPICS)
    # Nothing that only the monitor writes.
    assert not {TOPICS.retrain_requests, TOPICS.monitor_state} & {
        g.name for g in trainer if g.operation == "WRITE"
    }
