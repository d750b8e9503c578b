"""An alarm transition: what rules and detectors emit on ``atalaia.alarms``.

The first six keys are the replay contract of DESIGN.md; the rest is context that incidents
and notifiers use. ``id`` is deterministic (rule, key, state, at, severity), so a replay after a
crash produces the same ids and consumers deduplicate on it. With a tenant, ``key`` is
``tenant|key`` (entity identity is (tenant, id)), so ids differ between tenants too, and
``tenant`` / ``service_path`` say which; both keys are absent without a tenant.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import msgspec
import orjson

from atalaia.streams.records import Location, Text, Time, invalid, record_decoder

State = Literal["pending", "firing", "resolved", "inactive"]
STATES = ("pending", "firing", "resolved", "inactive")
SEVERITIES = ("informational", "low", "medium", "high", "critical")  # Smart Data Models Alert, lowest first


def severity_rank(severity: str | None) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else -1


class AlarmTransition(msgspec.Struct):
    """One transition (a msgspec Struct: built by the rule engine, decoded straight from
    ``atalaia.alarms`` by :func:`decode_alarm`, with the checks its field types carry)."""

    at: Time  # RFC 3339 UTC "...Z", event time of the transition
    rule: Text
    key: Text
    state: State
    severity: Text
    value: float | None = None
    group: str = ""
    entity: str | None = None
    type: str | None = None
    since: Time | None = None  # when this alarm (pending/firing episode) started
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    annotations: dict[str, str] = msgspec.field(default_factory=dict)
    location: Location | None = None  # [lon, lat]
    id: str = ""
    tenant: str | None = None  # the observations' tenant (also the start of ``key``), absent without
    service_path: str | None = None
    values: dict[str, Any] | None = None  # compound rules: each condition's value, by name

    def __post_init__(self) -> None:
        if not self.id:
            self.id = transition_id(self.rule, self.key, self.state, self.at, self.severity)

    def replay_line(self, labels: bool = False) -> dict[str, Any]:
        """The contract's replay line (keys in contract order); ``labels=True`` adds what the
        incident manager reads off a live transition — ``labels``, ``annotations``, ``group``, and
        ``entity``, ``type``, ``location``, ``tenant``, ``service_path`` when set — so the line
        feeds ``incidents replay`` as ``atalaia.alarms`` feeds the incidents stage (without the
        group and tenant, positions matching ``group`` and one incident per tenant were lost)."""
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
            line["group"] = self.group
            for name in ("entity", "type", "location", "tenant", "service_path"):
                if (v := getattr(self, name)) is not None:
                    line[name] = v
        return line

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__struct_fields__}
        for k in ("tenant", "service_path", "values"):  # absent when unset: the simple-rule shape
            if d[k] is None:
                del d[k]
        return d

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AlarmTransition:
        known = cls.__struct_fields__
        return cls(**{k: v for k, v in d.items() if k in known})


def transition_id(rule: str, key: str, state: str, at: str, severity: str) -> str:
    return hashlib.blake2b(f"{rule}|{key}|{state}|{at}|{severity}".encode(), digest_size=12).hexdigest()


# -- the record of atalaia.alarms: encoded by ``AlarmTransition.to_json``, decoded here ----------
_decoder = msgspec.json.Decoder(AlarmTransition)


@record_decoder
def decode_alarm(value: bytes) -> AlarmTransition:
    """A record of ``atalaia.alarms`` as an :class:`AlarmTransition` (checked against the type:
    a known state, non-empty rule/key/severity, times with a zone, numbers, text labels); raises
    ``msgspec.DecodeError`` naming the path otherwise. Unknown keys are ignored."""
    return _decoder.decode(value)


def alarm_from_dict(d: dict[str, Any]) -> AlarmTransition:
    """The same check for a transition given as a dict (``incidents replay``, tests)."""
    try:
        return msgspec.convert(d, AlarmTransition)
    except msgspec.ValidationError as e:
        if str(e).endswith("`$.state`"):  # a replay file's most common slip, said in its words
            raise invalid(
                f"alarm transition state {d.get('state')!r} is not {'|'.join(STATES)}", "state"
            ) from None
        raise
