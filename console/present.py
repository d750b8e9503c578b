"""How the console presents projection rows: triage order, the actions a state allows, the "why"
of each timeline entry, and what the rules say about their alarms (unit, description, runbook).
Pure functions over plain dicts. What the rules say about their alarms (unit, runbook) is
``atalaia.rules.info``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, get_args

from atalaia.incidents import reasons
from atalaia.incidents.events import IncidentState

SEVERITIES = ("informational", "low", "medium", "high", "critical")  # lowest first
STATES = get_args(IncidentState)  # the incident states of atalaia.incidents, in its order
UNACKNOWLEDGED = ("unacknowledged", "returned-unacknowledged")
OVERLAYS = ("shelved", "suppressed", "out-of-service")

# Which states each action needs (the incident manager has the last word; this only hides buttons
# that would certainly be refused). ``None`` = any open state.
ACTION_STATES: dict[str, tuple[str, ...] | None] = {
    "acknowledge": UNACKNOWLEDGED,
    "shelve": ("unacknowledged", "acknowledged", "returned-unacknowledged", "normal"),
    "unshelve": ("shelved",),
    "comment": None,
    "assign": None,
    "close": ("returned-unacknowledged", "normal", "shelved", "suppressed", "out-of-service"),
    "suppress": ("unacknowledged", "acknowledged", "returned-unacknowledged", "normal"),
    "unsuppress": ("suppressed",),
    "out-of-service": ("unacknowledged", "acknowledged", "returned-unacknowledged", "normal"),
    "return-to-service": ("out-of-service",),
    "escalate": ("unacknowledged", "acknowledged", "returned-unacknowledged", "normal"),
}
# "suppressed" because every alarm is (inhibited, silenced, in maintenance), not by an operator
# (``overlay`` null): no overlay to lift, but one may be set, and an annunciation made before the
# suppression may still wait for acknowledgement (``needs_ack``)
ALARMS_SUPPRESSED: dict[str, bool] = {
    "acknowledge": False,  # only with needs_ack
    "shelve": True,
    "unshelve": False,
    "comment": True,
    "assign": True,
    "close": True,
    "suppress": True,
    "unsuppress": False,
    "out-of-service": True,
    "return-to-service": False,
    "escalate": True,
}


def alarms_suppressed(incident: dict[str, Any]) -> bool:
    """``incident`` is "suppressed" because its alarms are, not by an operator (known only for rows
    of events that carry ``needs_ack``; older rows are taken as an operator's suppression)."""
    return (
        incident.get("state") == "suppressed"
        and incident.get("needs_ack") is not None
        and incident.get("overlay") is None
    )


def severity_rank(severity: str | None) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else -1


def triage_key(incident: dict[str, Any]) -> tuple[Any, ...]:
    """Unacknowledged first, then the most severe, then the oldest (waiting longest), then id."""
    return (
        0 if incident.get("state") in UNACKNOWLEDGED else 1,
        -severity_rank(incident.get("severity")),
        str(incident.get("opened_at") or ""),
        str(incident.get("id") or ""),
    )


def triage(incidents: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(incidents, key=triage_key)


def allowed_actions(
    incident: dict[str, Any], role: str | None, permissions: dict[str, tuple[str, ...]]
) -> list[str]:
    """The actions ``role`` may take on ``incident`` in its current state (``role`` None = any)."""
    state = incident.get("state")
    if state == "closed":
        return []
    out = []
    derived = alarms_suppressed(incident)
    for action, states in ACTION_STATES.items():
        if derived:
            if not (ALARMS_SUPPRESSED[action] or (action == "acknowledge" and incident.get("needs_ack"))):
                continue
        elif states is not None and state not in states:
            continue
        if action == "close" and incident.get("active"):
            continue  # close needs no firing alarm
        if role is not None and role not in permissions.get(action, ()):
            continue
        out.append(action)
    return out


def counts(incidents: Iterable[dict[str, Any]]) -> dict[str, dict[str, int]]:
    by_state: dict[str, int] = {}
    by_severity: dict[str, int] = {}
    for i in incidents:
        by_state[i["state"]] = by_state.get(i["state"], 0) + 1
        by_severity[i["severity"]] = by_severity.get(i["severity"], 0) + 1
    return {"state": by_state, "severity": by_severity}


def explain(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The audit trail with a ``why`` for each entry: what the change did and, when the incident
    needs acknowledging again, why (e.g. ``severity rose from medium to high: acknowledgement
    required again``). ``why_parts`` says the same as codes for translation:
    ``severity-rose|severity-fell`` (from, to), ``reack-severity``, ``new-alarm``, ``fired-again``,
    ``overlay-ended`` (from), ``state`` (from, to)."""
    out = []
    prev: dict[str, Any] | None = None
    for h in history:
        e = dict(h)
        changes = list(e.get("changes") or [e.get("change")])
        parts: list[dict[str, Any]] = []
        if prev is not None and e.get("severity") != prev.get("severity"):
            rose = severity_rank(e.get("severity")) > severity_rank(prev.get("severity"))
            parts.append(
                {"code": "severity-rose" if rose else "severity-fell", "from": prev.get("severity"),
                 "to": e.get("severity")}
            )  # fmt: skip
        if prev is not None and prev.get("state") not in UNACKNOWLEDGED and e.get("state") in UNACKNOWLEDGED:
            if parts and parts[0]["code"] == "severity-rose":
                parts.append({"code": "reack-severity"})
            elif "alarm-added" in changes:
                parts.append({"code": "new-alarm"})
            elif prev.get("state") not in OVERLAYS:
                parts.append({"code": "fired-again"})
            else:
                parts.append({"code": "overlay-ended", "from": prev.get("state")})
        if prev is not None and e.get("state") != prev.get("state") and not parts:
            parts.append({"code": "state", "from": prev.get("state"), "to": e.get("state")})
        e["changes"] = changes
        e["why"] = _why_text(parts)
        e["why_parts"] = parts
        # an alarm's suppression the manager wrote as the reason: its parts, for the page's words
        said = (
            reasons.timeline(e.get("reason")) if reasons.SUPPRESSION_CHANGES.intersection(changes) else None
        )
        e["suppression"] = said["suppression"] if said else None
        e["reason_lead"] = said["lead"] if said else None
        # a shelve that ended by itself: its kind, for the page's words (the reason is English)
        e["shelve_end"] = reasons.shelve_end(e.get("change"), e.get("actor"), e.get("reason"))
        out.append(e)
        prev = h
    return out


def alarm_suppression(alarm: dict[str, Any]) -> list[dict[str, Any]] | None:
    """An alarm row's ``suppressed`` text as its parts (``incidents.reasons.parts``): why it is
    suppressed, each reason's kind and values (a chattering shelve's ``until``), or None."""
    return reasons.parts(alarm.get("suppressed"))


def _why_text(parts: list[dict[str, Any]]) -> str:
    words = []
    for p in parts:
        code = p["code"]
        if code in ("severity-rose", "severity-fell"):
            words.append(f"severity {code.split('-')[1]} from {p['from']} to {p['to']}")
        elif code == "reack-severity":
            words[-1] += ": acknowledgement required again"
        elif code == "new-alarm":
            words.append("a new alarm fired: acknowledgement required")
        elif code == "fired-again":
            words.append("an alarm fired again: acknowledgement required again")
        elif code == "overlay-ended":
            words.append(f"{p['from']} ended with an alarm firing: acknowledgement required")
        else:
            words.append(f"{p['from']} → {p['to']}")
    return "; ".join(words)
