"""Record helpers of the stage runner: decode a consumed batch once, and the DLQ output for a
record a stage cannot use. The cores of every package (``rules.stage``, ``incidents.stage`` ...)
use them; each topic's record check lives beside its record type (``streams.observation``,
``rules.alarm``, ``incidents.events``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from atalaia.streams.stage import Out

# A DLQ record keeps the original bytes, base64-encoded; past this size only the first bytes are
# kept (with the full size and SHA-256), so the record fits Kafka's default 1 MB message limit.
DLQ_MAX_BODY = 600 * 1024

Problem = Callable[[Any], str | None]  # why a decoded value is not the topic's record (None: it is)


def dlq(value: bytes | None, source: str, reason: str) -> Out:
    """A DLQ output for a record a stage cannot use (the original bytes, kept within Kafka's
    default message size)."""
    from atalaia.streams.ingest import to_dlq_record

    return Out("dlq", to_dlq_record(value or b"", source, reason, max_body_bytes=DLQ_MAX_BODY))


def decode(records: list[Any], problem: Problem | None = None) -> tuple[list[Any], list[Any], list[Out]]:
    """JSON values of a batch: (values, their records, DLQ outputs for what is not JSON or what
    ``problem(value)`` finds wrong)."""
    values, raw, outs = [], [], []
    for r in records:
        try:
            value = orjson.loads(r.value or b"")
        except orjson.JSONDecodeError as e:
            outs.append(dlq(r.value, r.topic, f"not JSON: {e}"))
            continue
        why = problem(value) if problem else None
        if why:
            outs.append(dlq(r.value, r.topic, why))
            continue
        values.append(value)
        raw.append(r)
    return values, raw, outs
