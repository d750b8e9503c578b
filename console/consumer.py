"""The console's Kafka readers (live feed, observation buffer, command replies) share one setup: a
consumer without a group and without commits, assigned every partition of one topic."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from atalaia.streams.broker import partition_ids
from atalaia.streams.kafka_config import client_options


async def consume_retrying(
    service: Any, consume: Callable[[], Awaitable[None]], log: logging.Logger, what: str
) -> None:
    """``consume()`` until ``service`` stops; when it fails (the broker went away), the service is not
    ``connected``, ``log`` says so (``what: error; retrying in 2 s``) and it tries again in 2 s."""
    while not service.should_stop:
        try:
            await consume()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the broker went away: say so and retry
            service.connected = False
            log.warning("%s: %s; retrying in 2 s", what, e)
            await asyncio.sleep(2.0)


@contextlib.asynccontextmanager
async def assigned_consumer(
    bootstrap: str, topic: str, fetch_max_wait_ms: int
) -> AsyncIterator[tuple[AIOKafkaConsumer, list[TopicPartition]]]:
    """A started consumer assigned all partitions of ``topic`` (partition 0 when the metadata names
    none), with those partitions; stopped on the way out."""
    parts = await partition_ids(bootstrap, topic)
    consumer = AIOKafkaConsumer(
        **client_options(bootstrap), enable_auto_commit=False, fetch_max_wait_ms=fetch_max_wait_ms
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in parts or (0,)]
        consumer.assign(tps)
        yield consumer, tps
    finally:
        await consumer.stop()
