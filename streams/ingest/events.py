"""The raw-event envelope on ``atalaia.events``: the payload bytes exactly as received, with
Kafka headers saying how to read them (content type, JSON-LD ``Link``, source, receive time)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass

from atalaia.streams.clock import format_time

HEADER_KEYS = (
    "content-type",
    "link",
    "source",
    "received-at",
    "fiware-service",
    "fiware-servicepath",
    "ngsild-tenant",
    "ngsiv2-attrsformat",
)


@dataclass(slots=True)
class RawEvent:
    body: bytes
    source: str
    content_type: str | None = None
    link: str | None = None
    received_at: str | None = None
    extra: dict[str, str] | None = None

    def headers(self) -> list[tuple[str, bytes]]:
        h = [
            ("source", self.source.encode()),
            ("received-at", (self.received_at or format_time_now()).encode()),
        ]
        if self.content_type:
            h.append(("content-type", self.content_type.encode()))
        if self.link:
            h.append(("link", self.link.encode()))
        for k, v in (self.extra or {}).items():
            h.append((k, v.encode()))
        return h

    @classmethod
    def from_record(cls, value: bytes, headers: list[tuple[str, bytes]] | None) -> RawEvent:
        # one pass over the headers (the hot path reads every record's); a repeated header: the
        # last one counts, extra headers keep their first position (what a dict built from them does)
        source = "kafka"
        content_type = link = received_at = None
        extra: dict[str, str] | None = None
        for k, v in headers or ():
            k = k.lower()
            text = v.decode(errors="replace")
            if k == "source":
                source = text
            elif k == "received-at":
                received_at = text
            elif k == "content-type":
                content_type = text
            elif k == "link":
                link = text
            elif extra is None:
                extra = {k: text}
            else:
                extra[k] = text
        return cls(value or b"", source, content_type, link, received_at, extra)

    @classmethod
    def from_http(cls, body: bytes, headers: Mapping[str, str], source: str) -> RawEvent:
        lower = {k.lower(): v for k, v in headers.items()}
        extra = {
            k: lower[k]
            for k in ("fiware-service", "fiware-servicepath", "ngsild-tenant", "ngsiv2-attrsformat")
            if k in lower
        }
        return cls(
            body=body,
            source=source,
            content_type=lower.get("content-type"),
            link=lower.get("link"),
            received_at=format_time_now(),
            extra=extra or None,
        )


def format_time_now() -> str:
    from datetime import UTC, datetime

    return format_time(datetime.fromtimestamp(time.time(), UTC))


def body_key(body: bytes) -> bytes:
    """Partition key for a payload whose entity is not known yet: identical redeliveries share it."""
    return hashlib.blake2b(body, digest_size=8).digest()
