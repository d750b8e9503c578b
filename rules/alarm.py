"""An alarm transition: what rules and detectors emit on ``atalaia.alarms``.

The first six keys are the replay contract of DESIGN.md; the rest is context that incidents
and notifiers use. ``id`` is deterministic (rule, key, state, at, severity), so a replay after a
crash produces the same ids and consumers deduplicate on it. With a tenant, ``key`` is
``tenant|key`` (entity identity is (tenant, id)), so ids differ between tenants too, and
``tenant`` / ``service_path`` say which; both keys are absent without a tenant.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import orjson

from atalaia.streams.ingest.observation import is_number, is_str_map, is_time

State = Literal["pending", "firing", "resolved", "inactive"]
SEVERITIES = ("informational", "low", "medium", "high", "critical")  # Smart Data Models Alert, lowest first


def severity_rank(severity: str | None) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else -1


@dataclass(slots=True)
class AlarmTransition:
    at: str  # RFC 3339 UTC "...Z", event time of the transition
    rule: str
    key: str
    state: State
    severity: str
    value: float | None = None
    group: str = ""
    entity: str | None = None
    type: str | None = None
    since: str | None = None  # when this alarm (pending/firing episode) started
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    location: list[float] | None = None  # [lon, lat]
    id: str = ""
    tenant: str | None = None  # the observations' tenant (also the start of ``key``), absent without
    service_path: str | None = None
    values: dict[str, Any] | None = None  # compound rules: each condition's value, by name

    def __post_init__(self) -> None:
        if not self.id:
            self.id = transition_id(self.rule, self.key, self.state, self.at, self.severity)

    def replay_line(self, labels: bool = False) -> dict[str, Any]:
        """The contract's replay line (keys in contract order); ``labels=True`` adds ``labels`` and
        ``annotations`` (and ``entity``, ``parts`` when set), so the line feeds ``incidents replay``."""
        line = {
            "at": self.at,
            "rule": self.rule,
            "key": self.key,
            "state": self.state,
            "severity": self.severity,
            "value": self.value,
        }
        if self.values is not None:
            line["values"] = self.values
        if labels:
            line["labels"] = self.labels
            line["annotations"] = self.annotations
            if self.entity is not None:
                line["entity"] = self.entity
        return line

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("tenant", "service_path", "values"):  # absent when unset: the simple-rule shape
            if d[k] is None:
                del d[k]
        return d

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AlarmTransition:
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in known})


def transition_id(rule: str, key: str, state: str, at: str, severity: str) -> str:
    return hashlib.blake2b(f"{rule}|{key}|{state}|{at}|{severity}".encode(), digest_size=12).hexdigest()


def alarm_problem(a: Any) -> str | None:
    """Why a record on atalaia.alarms is not an alarm transition (commands are checked by the
    incident manager's Command model)."""
    if not isinstance(a, dict):
        return "not a JSON object"
    if "action" in a:
        return None
    for name in ("rule", "key", "severity"):
        if not isinstance(a.get(name), str) or not a[name]:
            return f"'{name}' must be a non-empty string"
    if a.get("state") not in ("pending", "firing", "resolved", "inactive"):
        return "'state' must be pending, firing, resolved or inactive"
    if not is_time(a.get("at")) or (a.get("since") is not None and not is_time(a["since"])):
        return "'at' and 'since' must be RFC 3339 times with a zone"
    if a.get("value") is not None and not is_number(a["value"]):
        return "'value' must be a number"
    for name in ("labels", "annotations"):
        if name in a and not is_str_map(a[name]):
            return f"'{name}' must map names to text"
    return None
