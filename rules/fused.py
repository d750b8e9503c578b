"""The fused ingest + rules stage: ``atalaia.events`` → observations, evaluated by the rules and
detectors at once → ``atalaia.alarms`` (and, still, ``atalaia.observations`` for every other
consumer). One consume/produce hop and one JSON decode fewer on the alarm path than ingest and
rules as two stages.

Why it is correct: events and observations have the same partition count and are both keyed by
entity, so the stage consumes *both* topics in one consumer group and keeps one core per
partition number (the range assignor gives one member the same partition numbers of both
topics: they are co-partitioned). An observation whose key belongs to this partition (nearly
all: events are keyed by their first entity) is evaluated here, right after it was normalised,
and published with the header ``atalaia-evaluated``; when the stage reads it back from
``atalaia.observations`` it skips it without decoding it. An observation that belongs to another
partition (an NGSI notification carrying several entities, an event keyed otherwise, or a record
another producer wrote straight to ``atalaia.observations``) is published without that header and
evaluated by the core that owns its partition when it reads it there: every entity's rule state
stays in one engine. The stage is the rules stage (its name, state directory and consumer
group), its checkpoint the rule state in the rules stage's format plus both offsets, so a kill -9
resumes consistently (alarms = ``atalaia rules replay``).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import orjson

from atalaia.rules.stage import RuleFiles, RulesCore
from atalaia.streams.ingest.encode import observation_dict
from atalaia.streams.ingest.observation import entity_key
from atalaia.streams.ingest.stage import IngestCore
from atalaia.streams.partition import partition_of
from atalaia.streams.stage import Out

if TYPE_CHECKING:
    from atalaia.detectors.config import DetectorsConfig
    from atalaia.streams.settings import Settings

EVALUATED = "atalaia-evaluated"  # header: the fused stage evaluated this observation already
_MARK = [(EVALUATED, b"1")]


class IngestRulesCore:
    """One partition of the fused stage (see the module docstring)."""

    def __init__(
        self,
        partition: int,
        settings: Settings,
        rule_files: RuleFiles,
        detectors_config: DetectorsConfig,
        state: bytes | None = None,
    ) -> None:
        self.partition, self.partitions = partition, settings.partitions
        self.events_topic = settings.topic("events")
        self.ingest = IngestCore(settings)  # its parser; the deduper is the rules' (see _events)
        # the state is the rules stage's, in the same format: the fused stage and the separate
        # rules stage (ATALAIA_FUSE_INGEST_RULES=0) restore each other's checkpoints
        self.rules = RulesCore(rule_files, detectors_config, settings, state)
        self.local = self.elsewhere = 0  # observations evaluated here / left to their partition
        self.events = 0
        self._parts: dict[bytes, int] = {}  # entity key -> its partition on atalaia.observations

    def process(self, records: list[Any], now: float) -> list[Out]:
        if not records:
            return []
        if records[0].topic == self.events_topic:
            return self._events(records, now)
        # atalaia.observations: what this stage evaluated already is skipped undecoded
        foreign = [r for r in records if not r.headers or (EVALUATED, b"1") not in r.headers]
        return self.rules.process(foreign, now) if foreign else []

    def _events(self, records: list[Any], now: float) -> list[Out]:
        self.events += len(records)
        # one deduper, not two: the rules' key (type + observation id) and ingest's (type, entity,
        # tenant, time, values) identify the same observations, so the rules' deduper drops
        # redeliveries before they are published or evaluated (one hash and one snapshot fewer);
        # the ingest loop drops redelivered notifications with it too
        rules = self.rules
        outs, parsed = self.ingest.observations(records, now, rules.dedup, dedup_observations=False)
        admit, forward = rules.dedup.admit_key, rules.forward_types
        batch, dumps, mine, n, parts = [], orjson.dumps, self.partition, self.partitions, self._parts
        stamps: list[int | None] = []  # the events' record timestamps: a DLQ record's received_at
        forwards = []
        blake = hashlib.blake2b
        for obs, ts in parsed:
            d = observation_dict(obs)
            if not admit(blake(f"{d['type']}|{d['id']}".encode(), digest_size=16).digest(), now=now):
                self.ingest.duplicates += 1
                continue
            value = dumps(d)
            key = entity_key(d.get("tenant"), d["entity"]).encode()
            part = parts.get(key)
            if part is None:  # murmur2 is pure Python in aiokafka: entities repeat, remember it
                if len(parts) >= 100_000:
                    parts.clear()
                part = parts[key] = partition_of(key, n)  # where it lands on atalaia.observations
            if part != mine:
                outs.append(Out("observations", value, key=key, timestamp=ts))
                self.elsewhere += 1
                continue
            # (evaluated here: on the topic for its readers, never needed again after a crash)
            outs.append(Out("observations", value, key=key, headers=_MARK, timestamp=ts, journal=False))
            self.local += 1
            batch.append(d)
            stamps.append(ts)
            if d["type"] in forward or ("types" in d and not forward.isdisjoint(d["types"])):
                forwards.append((d, Out("shared-observations", value, key=key, timestamp=ts)))
        return outs + rules._evaluate(batch, forwards, now, stamps)

    def tick(self, now: float, backlog: bool = False) -> list[Out]:
        return self.rules.tick(now, backlog)

    def announce(self, now: float) -> list[Out]:
        return self.rules.announce(now)

    def snapshot(self) -> bytes:
        return self.rules.snapshot()

    def restore(self, state: bytes) -> None:
        """The rules stage's state, in its format (the two stages read each other's checkpoints)."""
        self.rules.restore(state)
