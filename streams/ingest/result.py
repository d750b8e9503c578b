"""What one payload yields: Observations, rejections (what goes to the DLQ) and warnings."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

from atalaia.streams.ingest.observation import Observation

Scope = Literal["payload", "entity", "attribute"]


@dataclass(frozen=True, slots=True)
class Rejection:
    """Something refused. ``scope`` says how much: the whole payload, one entity or one attribute."""

    reason: str  # a sentence a person can read
    scope: Scope
    code: str  # short machine-readable kind, for metrics: malformed-json, missing-id, number-as-text ...
    entity: str | None = None
    attribute: str | None = None
    detail: str | None = None  # where in the payload (data[2], features[0] ...)

    def __post_init__(self) -> None:
        if self.detail == "":
            object.__setattr__(self, "detail", None)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"reason": self.reason, "scope": self.scope, "code": self.code}
        for k in ("entity", "attribute", "detail"):
            v = getattr(self, k)
            if v is not None:
                d[k] = v
        return d

    def __str__(self) -> str:
        return f"{self.detail}: {self.reason}" if self.detail else self.reason


@dataclass(slots=True)
class IngestResult:
    """The outcome of :func:`atalaia.streams.ingest.parse_payload`.

    ``ok`` False means the whole payload was refused (HTTP 400/413, one DLQ record, nothing else).
    With ``ok`` True, ``rejections`` lists refused entities/attributes (they also belong on the
    DLQ, with the original bytes) while the rest became ``observations``.
    """

    observations: list[Observation] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # data-quality, also on Observation.quality
    ignored: list[str] = field(default_factory=list)  # entities with nothing to observe, deleted attributes
    format: str = "unknown"  # ngsi-ld/notification, ngsi-v2/notification, entity, observation ...
    notification_id: str | None = None
    # the body, kept for ``digest`` (computed on demand: the Kafka stages never read it)
    body: bytes | None = field(default=None, repr=False, compare=False)
    _digest: str | None = field(default=None, repr=False, compare=False)

    @property
    def digest(self) -> str:
        """blake2b of the body: byte-identical redeliveries share it ("" before a body was read)."""
        if self._digest is None:
            self._digest = "" if self.body is None else hashlib.blake2b(self.body, digest_size=12).hexdigest()
        return self._digest

    @property
    def ok(self) -> bool:
        return not any(r.scope == "payload" for r in self.rejections)

    @property
    def needs_dlq(self) -> bool:
        return bool(self.rejections)

    @property
    def http_status(self) -> int:
        """What an HTTP notification endpoint answers: 200, 413 (too large) or 400."""
        for r in self.rejections:
            if r.scope == "payload":
                return 413 if r.code == "oversize" else 400
        return 200

    def problem(self) -> dict[str, Any]:
        """RFC 9457 problem body for a refused payload (or a summary when accepted)."""
        status = self.http_status
        if status == 200:
            return {
                "status": 200,
                "observations": len(self.observations),
                "rejections": [r.to_dict() for r in self.rejections],
                "warnings": self.warnings,
                "ignored": self.ignored[:100],
            }
        first = next(r for r in self.rejections if r.scope == "payload")
        return {
            "type": f"urn:atalaia:ingest:{first.code}",
            "title": "payload refused",
            "status": status,
            "detail": str(first),
            "rejections": [r.to_dict() for r in self.rejections],
        }
