"""The least privilege of each service: the Kafka ACLs it needs, and nothing more.

docs/security.md lists the same grants (a test checks it), and the integration tests
grant exactly these on a broker that enforces ACLs. READ and WRITE on a topic imply
DESCRIBE, which listing, describing and reading offsets need; a consumer group needs
READ on the group besides READ on its topics. Creating topics at start
(``kafka.create_topics``) needs CREATE on them: :func:`monitor_grants` adds it when
asked, but a cluster where an administrator creates the topics needs none.

>>> from stream_monitor.config import TopicSettings
>>> for grant in serving_grants(TopicSettings()):
...     print(grant)
WRITE on topic predictions
WRITE on topic ground-truth
READ on topic model-events
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from stream_monitor.config import TopicSettings

Operation = Literal["READ", "WRITE", "DESCRIBE_CONFIGS", "CREATE"]


@dataclass(frozen=True, slots=True)
class Grant:
    """One ALLOW ACL on a literal resource name, for the service's principal."""

    operation: Operation
    resource: Literal["topic", "group"]
    name: str

    def __str__(self) -> str:
        return f"{self.operation} on {self.resource} {self.name}"


def _topics(operation: Operation, names: Iterable[str]) -> list[Grant]:
    return [Grant(operation, "topic", name) for name in names]


def monitor_grants(topics: TopicSettings, group_id: str, create: bool = False) -> list[Grant]:
    """The monitor: consumes the inputs in its group, reads promotions and its state,
    writes its outputs and state, checks the state topic's compaction."""
    writes = [
        topics.drift_events,
        topics.retrain_requests,
        topics.escalations,
        topics.labelled_examples,
        topics.dead_letter,
        topics.monitor_state,
    ]
    grants = [
        *_topics("READ", [topics.predictions, topics.ground_truth]),
        Grant("READ", "group", group_id),
        *_topics("READ", [topics.model_events, topics.monitor_state]),
        *_topics("WRITE", writes),
        Grant("DESCRIBE_CONFIGS", "topic", topics.monitor_state),
    ]
    if create:
        grants += _topics("CREATE", dict.fromkeys(topics.model_dump().values()))
    return grants


def trainer_grants(topics: TopicSettings, group_id: str, create: bool = False) -> list[Grant]:
    """The trainer: consumes requests in its group, reads labelled examples, writes its
    answers, escalations and broken requests."""
    grants = [
        Grant("READ", "topic", topics.retrain_requests),
        Grant("READ", "group", group_id),
        Grant("READ", "topic", topics.labelled_examples),
        *_topics("WRITE", [topics.model_events, topics.escalations, topics.dead_letter]),
    ]
    if create:
        grants += _topics("CREATE", trainer_topics(topics))
    return grants


def serving_grants(topics: TopicSettings) -> list[Grant]:
    """A serving app (and the simulator): writes predictions and labels, follows
    promotions."""
    return [
        *_topics("WRITE", [topics.predictions, topics.ground_truth]),
        Grant("READ", "topic", topics.model_events),
    ]


def trainer_topics(topics: TopicSettings) -> list[str]:
    """The topics the trainer uses (and checks or creates at start)."""
    return [
        topics.retrain_requests,
        topics.labelled_examples,
        topics.model_events,
        topics.escalations,
        topics.dead_letter,
    ]


def grant(
    admin_config: Mapping[str, Any], principal: str, grants: Iterable[Grant], timeout: float = 30
) -> None:
    """Create ``grants`` as ALLOW ACLs for ``principal`` (e.g. ``User:monitor``), with a
    client of ``admin_config`` (kafka-python settings of a user allowed to alter ACLs),
    and wait until the broker applies them (they reach it through its metadata log)."""
    from kafka import KafkaAdminClient
    from kafka.admin import (
        ACL,
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePattern,
        ResourcePatternFilter,
        ResourceType,
    )

    wanted = list(grants)
    acls = [
        ACL(
            principal=principal,
            host="*",
            operation=ACLOperation[g.operation],
            permission_type=ACLPermissionType.ALLOW,
            resource_pattern=ResourcePattern(
                ResourceType[g.resource.upper()], g.name, ACLResourcePatternType.LITERAL
            ),
        )
        for g in wanted
    ]
    everything = ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY)
    of_principal = ACLFilter(principal, "*", ACLOperation.ANY, ACLPermissionType.ALLOW, everything)
    admin = KafkaAdminClient(**admin_config)
    try:
        result = admin.create_acls(acls)
        if result["failed"]:
            raise RuntimeError(f"ACLs for {principal} not created: {result['failed']}")
        deadline = time.monotonic() + timeout
        while True:
            found, _ = admin.describe_acls(of_principal)
            held = {
                (a.operation.name, a.resource_pattern.resource_type.name.lower(),
                 a.resource_pattern.resource_name)
                for a in found
            }  # fmt: skip
            if {(g.operation, g.resource, g.name) for g in wanted} <= held:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"ACLs for {principal} not applied after {timeout:g} s")
            time.sleep(0.1)
    finally:
        admin.close()
