"""The console's Kafka readers (live feed, observation buffer, command replies) share one setup: a
consumer without a group and without commits, assigned every partition of one topic."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, TopicPartition

from atalaia.streams.kafka_config import client_options


@contextlib.asynccontextmanager
async def assigned_consumer(
    bootstrap: str, topic: str, fetch_max_wait_ms: int
) -> AsyncIterator[tuple[AIOKafkaConsumer, list[TopicPartition]]]:
    """A started consumer assigned all partitions of ``topic`` (partition 0 when the metadata names
    none), with those partitions; stopped on the way out."""
    consumer = AIOKafkaConsumer(
        **client_options(bootstrap), enable_auto_commit=False, fetch_max_wait_ms=fetch_max_wait_ms
    )
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or {0}]
        consumer.assign(tps)
        yield consumer, tps
    finally:
        await consumer.stop()
