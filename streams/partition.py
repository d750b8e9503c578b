"""Where the producer puts a keyed record: Kafka's default partitioner, in one place.

The stages send record batches to chosen partitions (``streams.stage``) and the fused ingest +
rules stage evaluates an observation where it will land (``rules.fused``): both must agree with
what ``AIOKafkaProducer.send`` (and Kafka's Java client) would choose, or one entity's state
would be split between two cores. ``tests/test_streams_topology.py`` pins this function to
aiokafka's ``DefaultPartitioner`` for several partition counts.
"""

from __future__ import annotations

import random

from aiokafka.partitioner import murmur2


def partition_of(key: bytes, partitions: int) -> int:
    """The partition the producer's default partitioner gives ``key`` among ``partitions``
    (murmur2, as Kafka's Java client does)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def pick(key: bytes | None, parts: list[int]) -> int:
    """The default partitioner over the partition ids ``parts`` (sorted): ``key``'s murmur2
    partition, or for a record without a key one chosen at random."""
    if key is None:
        return random.choice(parts)
    return parts[partition_of(key, len(parts))]
