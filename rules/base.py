"""What every compiled rule shares: selection (where, key), templates, the transition record, and the
state-per-key store. Evaluators live in :mod:`atalaia.rules.threshold` and :mod:`atalaia.rules.silence`.

Every method is pure with respect to the outside world: event times come in as arguments (float
seconds since the epoch), transitions go out by appending to ``out``. Per (rule, key) state is a
small slotted object that ``dump``/``load`` turn into JSON-able lists for snapshots.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from atalaia.rules.alarm import AlarmTransition
from atalaia.rules.loader import LoadedRule
from atalaia.rules.matchers import from_map
from atalaia.rules.templates import template
from atalaia.streams.clock import format_time
from atalaia.streams.ingest.observation import entity_key, key_part

_OWN_FIELDS = ("entity", "type", "tenant", "service_path")  # where/key names read off the observation
Scorer = Callable[[str, str, str, datetime, float], float | None]
NEG_INF = float("-inf")
INACTIVE, PENDING, FIRING = 0, 1, 2
STATE_NAMES = ("inactive", "pending", "firing")


def _body(loaded: LoadedRule) -> dict[str, Any]:
    """The rule as JSON, without what never decides evaluation (labels, annotations, description)."""
    body = loaded.rule.model_dump(
        mode="json", by_alias=True, exclude={"labels", "annotations", "description"}
    )
    if not body.get("require_observed_time"):  # fingerprints from before the option stay valid
        body.pop("require_observed_time", None)
    return body


def _digest(body: dict[str, Any]) -> str:
    return hashlib.blake2b(orjson.dumps(body, option=orjson.OPT_SORT_KEYS), digest_size=8).hexdigest()


def fingerprint(loaded: LoadedRule) -> str:
    """What decides evaluation (not labels, annotations, description): equal = state can be kept."""
    return _digest(_body(loaded))


_STATE_CONDITIONS = ("equals", "in", "changed_to")


def shape(body: dict[str, Any]) -> str | None:
    """What a rule's state per key depends on, when only its limits changed (``body``: the rule as
    :func:`fingerprint` reads it): a threshold rule (on the value, a window's aggregate or a
    detector's score) with fixed numeric severities, without its limits (``above``/``below``,
    hysteresis, ``for``) and ``keep_firing_for``. Two versions with the same shape can hand their
    state over (an operator moves a threshold and the open alarms stay open, re-evaluated under the
    new limits). None for every other kind: state rules, per-entity thresholds, compound, absent
    and stuck rules end their alarms when they change."""
    if any(body.get(k) is not None for k in ("all", "any", "absent_for", "stuck_for")):
        return None
    levels = body.get("severities") or []
    if not levels or any(
        isinstance(lv.get("above"), dict)
        or isinstance(lv.get("below"), dict)
        or any(lv.get(k) is not None for k in _STATE_CONDITIONS)
        for lv in levels
    ):
        return None
    rest = {k: v for k, v in body.items() if k not in ("severities", "keep_firing_for")}
    rest["severities"] = [
        [lv["severity"], "above" if lv.get("above") is not None else "below"] for lv in levels
    ]
    return _digest(rest)


class CompiledRule:
    """What every kind shares: selection, key, templates, state per key."""

    kind = "base"
    can_purge = True  # False: ``purgeable`` is always False, ``compact`` skips the rule

    def __init__(self, loaded: LoadedRule, position: int) -> None:
        rule = loaded.rule
        self.loaded = loaded
        self.id = rule.id
        self.group = loaded.group
        self.position = position
        body = _body(loaded)
        self.fingerprint = _digest(body)
        self.shape = shape(body)
        self.type = rule.select.type
        self.attribute = rule.select.attribute
        self.where = from_map(rule.select.where)
        self.key_fields = tuple(rule.key)
        self.key_is_entity = self.key_fields == ("entity",)
        self.require_observed_time = rule.require_observed_time
        # key = entity, no filter: no call needed
        self.simple_key = self.key_is_entity and not self.where and not self.require_observed_time
        self.labels = {k: template(v) for k, v in rule.labels.items()}
        self.annotations = {k: template(v) for k, v in rule.annotations.items()}
        self.states: dict[str, Any] = {}
        self.faults = {}

    # ------------------------------------------------------------------ selection
    def key_of(self, obs: dict[str, Any]) -> str | None:
        """The alarm key of an observation this rule selects, or None when the where filter fails or a key
        label is missing. Keys are per tenant: ``tenant|key`` when the observation has a tenant."""
        labels = obs.get("labels") or {}
        for m in self.where:
            if not m.accepts(obs.get(m.name) if m.name in _OWN_FIELDS else labels.get(m.name)):
                return None
        tenant = obs.get("tenant")
        if self.key_is_entity:
            return entity_key(tenant, obs["entity"])
        parts = [key_part(tenant)] if tenant else []
        for name in self.key_fields:
            got = obs.get(name) if name in _OWN_FIELDS else labels.get(name)
            if got is None:
                return None
            parts.append(key_part(str(got)))  # (escaped: no two label lists make one key)
        return parts[0] if len(parts) == 1 else "|".join(parts)

    # ------------------------------------------------------------------ output
    def transition(
        self,
        at: float,
        at_text: str | None,
        key: str,
        state: str,
        severity: str,
        value: float | None,
        since: float,
        obs: dict[str, Any] | None,
        shown: Any = None,
        values: dict[str, Any] | None = None,
    ) -> AlarmTransition:
        """``shown``: the template's ``value`` when it is not the transition's number (a state's text)."""
        obs = obs or {}
        obs_labels = obs.get("labels") or {}
        tenant = obs.get("tenant")
        entity = obs.get("entity") or (key if self.key_is_entity else None)
        variables = {
            "entity": entity,
            "key": key,
            "value": value if shown is None else shown,
            "severity": severity,
            "labels": obs_labels,
            "rule": self.id,
            "type": obs.get("type", self.type),
            "attributes": obs.get("attributes") or {},
            "state": state,
            "tenant": tenant,
            "values": values or {},
        }
        labels = dict(obs_labels)
        labels.update({k: t.render(variables) for k, t in self.labels.items()})
        return AlarmTransition(
            at=at_text or format_time(datetime.fromtimestamp(at, UTC)),
            rule=self.id,
            key=key,
            state=state,  # type: ignore[arg-type]
            severity=severity,
            value=value,
            group=self.group,
            entity=entity,
            type=obs.get("type", self.type),
            since=format_time(datetime.fromtimestamp(since, UTC)),
            labels=labels,
            annotations={k: t.render(variables) for k, t in self.annotations.items()},
            location=obs.get("location"),
            tenant=tenant,
            service_path=obs.get("service_path"),
        )

    # ------------------------------------------------------------------ data quality: range
    faults: dict[str, list[Any]]  # key -> [since, value, observation context] while a sensor fault fires

    def fault_transition(
        self,
        at: float,
        at_text: str | None,
        key: str,
        state: str,
        value: float | None,
        since: float,
        obs: Any,
    ) -> AlarmTransition:
        """The ``<rule>:sensor-fault`` alarm of a rule with ``range``: its own id, severity ``low`` and
        labels (the observation's + ``kind: sensor-fault``), never the rule's hazard labels."""
        obs = obs or {}
        low, high = self.loaded.rule.range or (None, None)
        entity = obs.get("entity") or (key if self.key_is_entity else None)
        labels = {**(obs.get("labels") or {}), "kind": "sensor-fault", "rule": self.id}
        shown = "no value" if value is None else f"{value:g}"
        return AlarmTransition(
            at=at_text or format_time(datetime.fromtimestamp(at, UTC)),
            rule=f"{self.id}:sensor-fault",
            key=key,
            state=state,  # type: ignore[arg-type]
            severity="low",
            value=value,
            group=self.group,
            entity=entity,
            type=obs.get("type", self.type),
            since=format_time(datetime.fromtimestamp(since, UTC)),
            labels=labels,
            annotations={
                "summary": f"{entity or key}: {self.attribute} = {shown} is outside the physically possible "
                f"range [{low:g}, {high:g}] (sensor fault; not evaluated by '{self.id}')"
                if state == "firing"
                else f"{entity or key}: {self.attribute} = {shown} is possible again (sensor fault over)"
            },
            location=obs.get("location"),
            tenant=obs.get("tenant"),
            service_path=obs.get("service_path"),
        )

    def active(self) -> list[dict[str, Any]]:  # pragma: no cover - overridden
        raise NotImplementedError


def obs_context(obs: dict[str, Any] | None) -> dict[str, Any] | None:
    if not obs:
        return None
    return {
        k: obs[k]
        for k in ("entity", "type", "labels", "location", "tenant", "service_path")
        if obs.get(k) is not None
    }
