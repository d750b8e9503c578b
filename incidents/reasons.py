"""Why an alarm is suppressed: the texts the incident manager writes (an alarm's ``suppressed``, the
reason of its timeline entry) and, read back, their parts for the console to say in its own words.

The texts are the contract of ``atalaia.incidents`` events and stay as they are (English, times as
events write them); :func:`parts` gives the console each reason's kind and values (``until`` as
an event time), so that the incident page says them in its language with its time format:

>>> text = "; ".join([chattering("2026-12-07T18:13:11.886659Z"), inhibited("river-high", "gauge 7")])
>>> text
'shelved: chattering until 2026-12-07T18:13:11.886659Z; inhibited by river-high gauge 7'
>>> parts(text)
[{'kind': 'chattering', 'until': '2026-12-07T18:13:11.886659Z'}, {'kind': 'inhibited', 'rule': 'river-high', 'key': 'gauge 7'}]
>>> timeline("rain-intense opened — silenced by s-1: works on the bridge; maintenance night: pumps")["lead"]
'rain-intense opened'
>>> parts("the crew is there") is None
True

A silence's or maintenance window's comment is free text: one that holds "; " followed by the start
of another reason ("; inhibited by ...") is read as two reasons (the text field keeps it whole);
one that ends in "no longer suppressed" never turns its suppression into a lifted one:

>>> timeline("river-high gauge 7 firing — silenced by s-1: pump 3 no longer suppressed")["lead"]
'river-high gauge 7 firing'
>>> parts("river-high gauge 7 firing — silenced by s-1: pump 3 no longer suppressed") is None
True
"""

from __future__ import annotations

import re
from typing import Any

CHATTERING = "shelved: chattering until "
INHIBITED = "inhibited by "
MAINTENANCE = "maintenance "
SILENCED = "silenced by "
UNSUPPRESSED = " no longer suppressed"

#: why a shelve ended without an operator (the reason of its ``unshelved`` timeline entry)
SHELVE_EXPIRED = "shelve expired"  # a shelve for a duration reached its end
SHELVE_CLEARED = "unshelved: its alarms returned to normal"  # a one-shot shelve's alarms cleared
ONE_SHOT_EXPIRED = "shelve expired before its alarms returned to normal"  # a one-shot at its bound
#: the actor of the unshelve when a one-shot shelve's alarms cleared (an expiry's is ``timer``)
SHELVE_POLICY = "policy:shelving"
#: those (actor, reason)s as the kinds the console says in its own words (``shelve_end``)
SHELVE_ENDS = {
    ("timer", SHELVE_EXPIRED): "expired",
    (SHELVE_POLICY, SHELVE_CLEARED): "cleared",
    ("timer", ONE_SHOT_EXPIRED): "one-shot-expired",
}

_STARTS = (CHATTERING, INHIBITED, MAINTENANCE, SILENCED)
_NEXT = re.compile("; (?=" + "|".join(re.escape(s) for s in _STARTS) + ")")
_LEAD = re.compile(" — (?=" + "|".join(re.escape(s) for s in _STARTS) + ")")
#: the timeline changes whose reason the manager writes from an alarm's suppression
SUPPRESSION_CHANGES = frozenset(
    {"alarm-suppressed", "alarm-unsuppressed", "alarm-updated", "alarm-added", "opened"}
)


def chattering(until: str) -> str:
    """An alarm shelved by the chattering rule until ``until`` (an event time)."""
    return CHATTERING + until


def inhibited(rule: str, key: str) -> str:
    """An alarm inhibited by the firing alarm ``rule`` ``key``."""
    return f"{INHIBITED}{rule} {key}"


def maintenance(name: str | None, comment: str) -> str:
    """An alarm in the maintenance window ``name`` of incidents.yaml."""
    return f"{MAINTENANCE}{name}: {comment}"


def silenced(silence: str, comment: str) -> str:
    """An alarm matched by the runtime silence ``silence``."""
    return f"{SILENCED}{silence}: {comment}"


def unsuppressed(rule: str, key: str) -> str:
    """The timeline's reason when an alarm is suppressed no more."""
    return f"{rule} {key}{UNSUPPRESSED}"


def shelve_end(change: str | None, actor: str | None, reason: str | None) -> str | None:
    """The kind of an ``unshelved`` entry the manager wrote (a shelve that ended by itself):
    ``expired``, ``cleared`` (a one-shot shelve's alarms returned to normal) or
    ``one-shot-expired``; None for an operator's unshelve (whatever its reason) or another entry.

    >>> shelve_end("unshelved", SHELVE_POLICY, SHELVE_CLEARED)
    'cleared'
    >>> shelve_end("unshelved", "ana", SHELVE_CLEARED) is None
    True
    """
    return SHELVE_ENDS.get((actor or "", reason or "")) if change == "unshelved" else None


def _one(text: str) -> dict[str, Any] | None:
    if text.startswith(CHATTERING):
        until = text[len(CHATTERING) :]
        return {"kind": "chattering", "until": until} if until and " " not in until else None
    if text.startswith(INHIBITED):
        rule, sep, key = text[len(INHIBITED) :].partition(" ")
        return {"kind": "inhibited", "rule": rule, "key": key} if sep and rule else None
    for start, kind, name in ((MAINTENANCE, "maintenance", "name"), (SILENCED, "silenced", "silence")):
        if text.startswith(start):
            head, sep, comment = text[len(start) :].partition(": ")
            return {"kind": kind, name: head, "comment": comment} if sep and head else None
    return None


def parts(text: str | None) -> list[dict[str, Any]] | None:
    """The reasons of a suppression text, each ``{"kind": ..., ...}``: ``chattering`` (``until``),
    ``inhibited`` (``rule``, ``key``), ``maintenance`` (``name``, ``comment``), ``silenced``
    (``silence``, ``comment``), or ``unsuppressed`` (``rule``, ``key``); None for any other text."""
    if not text:
        return None
    if (
        text.endswith(UNSUPPRESSED)
        and not text.startswith(_STARTS)
        and _NEXT.search(text) is None
        and _LEAD.search(text) is None
    ):  # (only "<rule> <key> no longer suppressed": not a suppression whose comment ends so)
        rule, sep, key = text[: -len(UNSUPPRESSED)].partition(" ")
        return [{"kind": "unsuppressed", "rule": rule, "key": key}] if sep and rule and key else None
    out = []
    for piece in _NEXT.split(text):
        one = _one(piece)
        if one is None:
            return None
        out.append(one)
    return out


def timeline(reason: str | None) -> dict[str, Any] | None:
    """A timeline reason's suppression: ``{"lead": text before it or None, "suppression": parts}``
    (the manager writes ``<reason> — <suppression>`` when an incident opens already suppressed);
    None when the reason says none."""
    if not reason:
        return None
    found = parts(reason)
    if found is not None:
        return {"lead": None, "suppression": found}
    m = _LEAD.search(reason)
    if m is not None and (found := parts(reason[m.end() :])) is not None:
        return {"lead": reason[: m.start()], "suppression": found}
    return None
