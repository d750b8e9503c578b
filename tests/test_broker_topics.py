"""Topic creation: the designed partition counts with ``ATALAIA_REPLICATION_FACTOR`` replicas,
``min.insync.replicas`` so that ``acks=all`` needs two copies on a 3-replica cluster, and a clear
refusal when the cluster has fewer brokers than replicas asked for."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from atalaia.streams.broker import TopicLayoutError, create_topics
from atalaia.streams.settings import Settings


class Admin:
    """What ``create_topics`` asks of aiokafka's admin client; answers with ``code`` per topic."""

    def __init__(self, code: int = 0) -> None:
        self.code, self.created = code, []

    async def list_topics(self) -> list[str]:
        return ["atalaia.events"]

    async def create_topics(self, topics) -> SimpleNamespace:
        self.created += topics
        return SimpleNamespace(topic_errors=[(t.name, self.code, None) for t in topics])

    async def describe_topics(self, names):
        return [{"topic": n, "error_code": 0, "partitions": [0]} for n in names]


def created(admin: Admin, designed: dict[str, int], configs=None, **kw) -> dict[str, tuple[int, int, dict]]:
    asyncio.run(create_topics(admin, designed, configs, **kw))
    return {t.name: (t.num_partitions, t.replication_factor, t.topic_configs) for t in admin.created}


def test_one_replica_by_default_and_only_missing_topics() -> None:
    got = created(Admin(), {"atalaia.events": 6, "atalaia.alarms": 1})
    assert got == {"atalaia.alarms": (1, 1, {})}


def test_a_cluster_gets_replicas_and_min_insync() -> None:
    topics = {"atalaia.alarms": 1, "atalaia.state.rules": 6}
    got = created(Admin(), topics, {"cleanup.policy": "compact"}, replicas=3)
    assert got["atalaia.alarms"] == (1, 3, {"min.insync.replicas": "2", "cleanup.policy": "compact"})
    assert got["atalaia.state.rules"][1] == 3


def test_too_few_brokers_is_a_clear_refusal() -> None:
    with pytest.raises(TopicLayoutError, match="ATALAIA_REPLICATION_FACTOR"):
        created(Admin(code=38), {"atalaia.alarms": 1}, replicas=3)


def test_the_setting_is_validated_at_start_up(monkeypatch) -> None:
    monkeypatch.setenv("ATALAIA_REPLICATION_FACTOR", "0")
    with pytest.raises(ValidationError, match="replication_factor"):
        Settings()
