"""Record helpers of the stage runner: decode a consumed batch once into its topic's record type,
and the DLQ output for a record a stage cannot use.

Each topic's record type is defined, encoded and decoded in one module (the table is in
``streams/README.md``): its ``decode_*`` function turns a record's bytes into the type (msgspec,
straight from JSON, in one pass) or raises :data:`DecodeError` with msgspec's message, which names
the path (``Expected `str`, got `int` - at `$.rule```). :func:`decode` keeps what does not decode
on the DLQ with that message as the reason. The annotated types below carry the checks a plain
type cannot (a time with a zone, non-empty text), so every record type writes them the same way.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import msgspec

if TYPE_CHECKING:  # the stage runner (aiokafka) is not imported by the record types' modules
    from atalaia.streams.stage import Out

# A DLQ record keeps the original bytes, base64-encoded; past this size only the first bytes are
# kept (with the full size and SHA-256), so the record fits Kafka's default 1 MB message limit.
DLQ_MAX_BODY = 600 * 1024

DecodeError = msgspec.DecodeError  # the one error a decoder raises (msgspec.ValidationError is one)
Decoder = Callable[[bytes], Any]  # a record's bytes -> its topic's record type, or DecodeError

# RFC 3339 with a zone (``Z`` or an offset), years 1970..9000: the records' time.
TIME_PATTERN = (
    r"^(19[7-9]\d|[2-8]\d{3}|9000)-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
    r"[Tt]([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,9})?([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)$"
)
Time = Annotated[str, msgspec.Meta(pattern=TIME_PATTERN, max_length=40)]
Text = Annotated[str, msgspec.Meta(min_length=1)]  # non-empty text
Location = Annotated[list[float], msgspec.Meta(min_length=2, max_length=2)]  # [lon, lat]


def record_decoder(fn: Decoder) -> Decoder:
    """Mark ``fn`` as a topic's decoder: whatever it cannot decode raises :data:`DecodeError`,
    including JSON nested deeper than the interpreter's recursion limit (msgspec raises
    ``RecursionError`` for that in fields typed ``Any``), so a hostile record lands on the DLQ
    instead of crashing its stage."""

    @functools.wraps(fn)
    def decode_record(value: bytes) -> Any:
        try:
            return fn(value)
        except RecursionError:
            raise msgspec.DecodeError("JSON is nested too deeply") from None

    return decode_record


def invalid(message: str, path: str) -> msgspec.ValidationError:
    """A semantic check's failure, worded like msgspec's own (``... - at `$.path```)."""
    return msgspec.ValidationError(f"{message} - at `$.{path}`" if path else message)


def topic_name(record: Any) -> str:
    """The topic a consumed record came from, without the prefix (``atalaia.alarms`` -> ``alarms``)."""
    return record.topic.rpartition(".")[2]


def received_time(ms: Any) -> datetime | None:
    """A Kafka record timestamp (ms) as the DLQ record's ``received_at``: when the record entered
    Atalaia's topics. An observation's is its event's, the reception (the ingest stages give each
    observation the timestamp of the event it came from, and the rules stage its forwarded ones),
    so a stage's DLQ record of an observation says when the payload was received. None for no
    timestamp (0, -1, absent). Never a clock: the stage cores stay pure."""
    if type(ms) is int and ms > 0:
        return datetime.fromtimestamp(ms / 1000, UTC)
    return None


def dlq(value: bytes | None, source: str, reason: str, received_at: datetime | None = None) -> Out:
    """A DLQ output for a record a stage cannot use (the original bytes, kept within Kafka's
    default message size); ``received_at``: the record's :func:`received_time`."""
    from atalaia.streams.ingest import to_dlq_record
    from atalaia.streams.stage import Out

    return Out(
        "dlq",
        to_dlq_record(value or b"", source, reason, received_at=received_at, max_body_bytes=DLQ_MAX_BODY),
    )


def dlq_for(record: Any, reason: str, source: str | None = None) -> Out:
    """The DLQ output for a consumed record a stage cannot use: its bytes, its topic as the source
    (unless ``source`` is given), its Kafka timestamp as ``received_at``."""
    return dlq(
        record.value,
        record.topic if source is None else source,
        reason,
        received_time(getattr(record, "timestamp", None)),
    )


def decode(
    records: list[Any],
    decoder: Decoder,
    by_topic: dict[str, Decoder] | None = None,
    refused: Callable[[Any, str], list[Out]] | None = None,
) -> tuple[list[Any], list[Any], list[Out]]:
    """The records of a batch decoded by their topic's ``decoder``: (records decoded, the
    consumed records they came from, DLQ outputs for those that do not decode, with msgspec's
    path-bearing message as the reason).

    A stage that consumes several topics names the decoders of the others in ``by_topic`` (topic
    names without the prefix: ``{"commands": decode_command}``); a decoder that returns None
    leaves a record that belongs to another stage (skipped: neither decoded nor refused).
    ``refused(record, reason)`` gives more outputs for a record that does not decode, after its
    DLQ output (an answer to whoever is waiting for it)."""
    values, raw, outs = [], [], []
    for r in records:
        fn = decoder if by_topic is None else by_topic.get(topic_name(r), decoder)
        try:
            value = fn(r.value or b"")
        except DecodeError as e:
            outs.append(dlq_for(r, str(e)))
            if refused is not None:
                outs += refused(r, str(e))
            continue
        if value is None:
            continue
        values.append(value)
        raw.append(r)
    return values, raw, outs
