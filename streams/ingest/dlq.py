"""The record put on ``atalaia.dlq`` for whatever ingest refused: the original bytes and why.

```json
{"v": 1, "received_at": "2026-01-28T09:45:03Z", "source": "http", "content_type": "application/json",
 "reasons": ["malformed JSON at line 7 column 1: Expecting ',' delimiter"],
 "rejections": [{"reason": "...", "scope": "payload", "code": "malformed-json"}],
 "size": 1234, "sha256": "...", "body_b64": "eyJpZCI6...", "body_preview": "{\\"id\\": ...",
 "body_truncated": false, "headers": {"fiware-service": "porto"}}
```
``body_b64`` holds the original bytes (all of them unless ``max_body_bytes`` is given, in which
case ``body_truncated`` tells; ``size`` and ``sha256`` always describe the whole body).
``body_preview`` is the first 2 KiB decoded as UTF-8 with replacement characters, for people.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import orjson

from atalaia.streams.clock import format_time
from atalaia.streams.ingest.result import IngestResult, Rejection
from atalaia.streams.records import DLQ_MAX_BODY

PREVIEW_BYTES = 2048
DLQ_VERSION = 1


def to_dlq_record(
    body: bytes,
    source: str,
    reason: str | Iterable[str],
    *,
    content_type: str | None = None,
    received_at: datetime | None = None,
    rejections: Iterable[Rejection] = (),
    headers: Mapping[str, str] | None = None,
    max_body_bytes: int | None = None,
    size: int | None = None,
    sha256: str | None = None,
) -> bytes:
    """Serialise one DLQ record (JSON bytes). ``size``/``sha256`` describe the whole body when
    ``body`` is only its beginning (an oversize HTTP body, streamed and hashed, not kept)."""
    reasons = [reason] if isinstance(reason, str) else list(reason)
    kept = body if max_body_bytes is None else body[:max_body_bytes]
    record: dict[str, Any] = {
        "v": DLQ_VERSION,
        "received_at": format_time(received_at) if received_at is not None else None,
        "source": source,
        "content_type": content_type,
        "reasons": reasons,
        "rejections": [r.to_dict() for r in rejections],
        "size": len(body) if size is None else size,
        "sha256": sha256 or hashlib.sha256(body).hexdigest(),
        "body_b64": base64.b64encode(kept).decode("ascii"),
        "body_preview": body[:PREVIEW_BYTES].decode("utf-8", "replace"),
        "body_truncated": len(kept) < max(len(body), size or 0),
    }
    if headers:
        record["headers"] = {str(k).lower(): str(v) for k, v in headers.items()}
    return orjson.dumps(record)


def oversize_record(
    body: bytes,
    source: str,
    limit: int,
    *,
    size: int | None = None,
    sha256: str | None = None,
    read_all: bool = True,
    **kwargs: Any,
) -> bytes:
    """The DLQ record of a payload over ``limit`` bytes (HTTP and MQTT ingest), code ``oversize``:
    ``body`` is all of it or its beginning (kept up to ``DLQ_MAX_BODY``), ``size``/``sha256``
    describe the whole (default: ``body``'s). ``read_all=False``: reading stopped early, ``size``
    is a lower bound ("more than"). ``kwargs``: the other ``to_dlq_record`` options."""
    size = len(body) if size is None else size
    more = "" if read_all else "more than "
    reason = f"payload of {more}{size} bytes exceeds the limit of {limit} bytes"
    kwargs.setdefault("max_body_bytes", DLQ_MAX_BODY)
    return to_dlq_record(
        body,
        source,
        reason,
        rejections=[Rejection(reason, "payload", "oversize")],
        size=size,
        sha256=sha256,
        **kwargs,
    )


def dlq_record_for(result: IngestResult, body: bytes, source: str, **kwargs: Any) -> bytes | None:
    """The DLQ record for a parse result, or None when nothing was refused."""
    if not result.rejections:
        return None
    return to_dlq_record(
        body, source, [str(r) for r in result.rejections], rejections=result.rejections, **kwargs
    )


def read_dlq_record(raw: bytes, body: bool = True) -> dict[str, Any]:
    """Decode a DLQ record; ``body`` holds the original bytes again (unless ``body=False``: for
    readers that only want why and whence)."""
    record = orjson.loads(raw)
    if body:
        record["body"] = base64.b64decode(record["body_b64"])
    return record


def dlq_labels(raw: bytes) -> tuple[str, str]:
    """The labels a DLQ record is counted with on /metrics: its source (before any ``:``) and the
    first rejection's code, else the first reason's text before its first colon (shortened)."""
    rec = read_dlq_record(raw, body=False)
    codes = [r.get("code") for r in rec.get("rejections") or [] if isinstance(r, dict)]
    kind = codes[0] if codes and codes[0] else (rec.get("reasons") or ["?"])[0].split(":")[0][:60]
    return str(rec.get("source", "?")).split(":")[0], str(kind)
