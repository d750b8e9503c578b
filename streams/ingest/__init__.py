"""Ingest normaliser: FIWARE NGSI-LD / NGSI-v2 / Smart Data Models payloads -> Observations.

Pure functions for the ingest agents (HTTP notify endpoint, MQTT, Kafka): no I/O, no clock.

* :func:`ingest_batch` - a consumed batch of :class:`ReceivedPayload` -> new observations, DLQ records, counts;
* :func:`parse_payload` - one body -> :class:`IngestResult` (observations, rejections, warnings);
* :func:`encode_observation` - the ``atalaia.observations`` record's bytes (``Observation.to_json()``);
* :class:`Deduper` - bounded, snapshot-able redelivery filter;
* :func:`to_dlq_record` / :func:`dlq_record_for` - the ``atalaia.dlq`` record.

See ``streams/ingest/README.md`` for the accepted formats and the bad-input table.
"""

from atalaia.streams.ingest.batch import BatchResult, ReceivedPayload, ingest_batch
from atalaia.streams.ingest.dedup import Deduper, observation_key
from atalaia.streams.ingest.dlq import dlq_record_for, read_dlq_record, to_dlq_record
from atalaia.streams.ingest.observation import encode_observation
from atalaia.streams.ingest.options import IngestOptions
from atalaia.streams.ingest.payload import parse_payload
from atalaia.streams.ingest.result import IngestResult, Rejection

__all__ = [
    "BatchResult",
    "Deduper",
    "IngestOptions",
    "IngestResult",
    "ReceivedPayload",
    "Rejection",
    "dlq_record_for",
    "encode_observation",
    "ingest_batch",
    "observation_key",
    "parse_payload",
    "read_dlq_record",
    "to_dlq_record",
]
