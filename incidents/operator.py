"""Operator commands: role check, incident state check, then the change — or a rejection with the
reason. Every command gets exactly one reply (a redelivered command id gets none: it was answered)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from atalaia.incidents.commands import Command
from atalaia.incidents.emit import Changes, Output
from atalaia.incidents.events import CommandReply
from atalaia.incidents.model import Incident, ManagerState, fmt, in_range, seconds_us, to_us
from atalaia.rules.durations import format_duration

if TYPE_CHECKING:
    from atalaia.incidents.manager import IncidentManager

PAST = {
    "acknowledge": "acknowledged",
    "shelve": "shelved",
    "unshelve": "unshelved",
    "comment": "commented",
    "assign": "assigned",
    "close": "closed",
    "suppress": "suppressed",
    "unsuppress": "unsuppressed",
    "out-of-service": "out-of-service",
    "return-to-service": "returned-to-service",
    "escalate": "escalated",  # the escalation pages its next step at once (notifiers/engine.py)
}
#: how the refusal of a one-shot shelve of an incident with no firing alarm begins (the console
#: answers it 422: the request cannot be, whatever the timing)
ONE_SHOT_REFUSED = "nothing to wait for"
NEEDS_REASON = ("shelve", "suppress", "out-of-service", "comment", "close")


def apply(mgr: IncidentManager, st: ManagerState, cmd: Command, now: int, out: list[Output]) -> None:
    # every time the command would write is checked before anything changes (ValueError: refused)
    at = in_range(to_us(cmd.at) if cmd.at is not None else now, "at")
    if cmd.duration is not None and not math.isfinite(cmd.duration):
        raise ValueError("duration: must be finite")
    if not mgr.take_command(st, cmd.id):
        return
    inc = st.incidents.get(cmd.incident)
    problem = check(mgr, st, cmd, inc, at)
    if problem is not None:
        st.stats["rejected"] += 1
        out.append(refused(cmd, at, problem))
        return
    assert inc is not None
    changes = Changes()
    reason = cmd.reason or PAST[cmd.action]
    _apply(mgr, st, cmd, inc, at, changes, reason)
    mark = len(out)
    out.append(CommandReply(cmd.id, cmd.incident, cmd.action, cmd.actor, True, reason, fmt(at)))
    mgr.finish(st, changes, out)
    produced = [
        o.version
        for o in out[mark + 1 :]
        if getattr(o, "incident", None) == inc.id and not isinstance(o, CommandReply)
    ]
    out[mark].version = produced[0] if produced else None  # type: ignore[union-attr]


class Refusal(str):
    """Why a command is refused: the text (English, as the reply's ``reason`` always said), with
    a stable ``code`` and the values the text names (``params``), so a console can say it in its
    operator's language (``console/static/i18n.json``, ``pb.<code>``)."""

    code: str
    params: dict[str, str | int]

    def __new__(cls, text: str, code: str, **params: str | int) -> Refusal:
        self = super().__new__(cls, text)
        self.code, self.params = code, params
        return self


def refused(cmd: Command, at: int, problem: str) -> CommandReply:
    """The rejected reply saying ``problem`` (its code and values when it is a :class:`Refusal`)."""
    code, params = (problem.code, problem.params) if isinstance(problem, Refusal) else (None, None)
    return CommandReply(
        cmd.id, cmd.incident, cmd.action, cmd.actor, False, str(problem), fmt(at), code=code, params=params
    )


def check(
    mgr: IncidentManager, st: ManagerState, cmd: Command, inc: Incident | None, at: int
) -> Refusal | None:
    """Why ``cmd`` must be rejected, or None."""
    allowed = mgr.config.permissions.get(cmd.action, ())
    a = cmd.action
    if cmd.role not in allowed:
        return Refusal(
            f"role {cmd.role} may not {a} (allowed: {', '.join(allowed) or 'nobody'})",
            "role-not-allowed",
            role=cmd.role,
            action=a,
            allowed=", ".join(allowed),
        )
    if inc is None:
        if cmd.incident in st.closed:
            return Refusal(f"incident {cmd.incident} is closed", "incident-closed", incident=cmd.incident)
        return Refusal(f"unknown incident {cmd.incident}", "unknown-incident", incident=cmd.incident)
    if a in NEEDS_REASON and not cmd.reason.strip():
        return Refusal(f"{a} needs a reason", "reason-needed", action=a)
    state = inc.state
    if a == "acknowledge" and (inc.overlay is not None or inc.acked):
        # (also while every alarm is suppressed: an annunciation made before the inhibition,
        # silence or maintenance window still waits for acknowledgement)
        return Refusal(f"nothing to acknowledge: incident is {state}", "nothing-to-acknowledge", state=state)
    if a == "acknowledge" and cmd.version is not None and inc.ack_asked > cmd.version:
        # the operator acknowledged what they saw; what came since waits for someone to see it
        return Refusal(
            f"incident changed since version {cmd.version}: version {inc.ack_asked} asks for "
            f"acknowledgement again ({_asked_why(inc)}); look at it again (now version {inc.version})",
            "changed-since-seen",
            seen=cmd.version,
            asked=inc.ack_asked,
            why=_asked_why(inc),
            change=next((e.change for e in reversed(inc.audit) if e.version == inc.ack_asked), ""),
            version=inc.version,
        )
    if a == "escalate" and inc.overlay is not None:
        return Refusal(
            f"incident is {inc.overlay}: nothing is paged while it is", "no-paging-while", state=inc.overlay
        )
    if a in ("shelve", "suppress", "out-of-service") and inc.overlay is not None:
        return Refusal(f"incident is already {inc.overlay}", "already", state=inc.overlay)
    if a == "shelve" and cmd.until == "clear":
        # one-shot: until its alarms return to normal, at most ``duration`` (default shelving.max)
        if cmd.duration is not None and cmd.duration <= 0:
            return Refusal(
                "shelve needs a positive duration (or none: at most shelving.max)", "duration-not-positive"
            )
        if cmd.duration is not None and seconds_us(cmd.duration) > mgr.max_shelve:
            most = format_duration(mgr.config.shelving.max)
            return Refusal(f"shelve for at most {most} (shelving.max)", "shelve-too-long", max=most)
        if not inc.active:
            return Refusal(
                f"{ONE_SHOT_REFUSED}: no alarm of this incident is firing (it is {state}); "
                "shelve it for a duration instead",
                "nothing-firing",
                state=state,
            )
    elif a == "shelve":
        if cmd.duration is None or cmd.duration <= 0:
            return Refusal("shelve needs a positive duration", "duration-not-positive")
        if seconds_us(cmd.duration) > mgr.max_shelve:
            most = format_duration(mgr.config.shelving.max)
            return Refusal(f"shelve for at most {most} (shelving.max)", "shelve-too-long", max=most)
    overlay_needed = {
        "unshelve": "shelved",
        "unsuppress": "suppressed",
        "return-to-service": "out-of-service",
    }
    if a in overlay_needed and inc.overlay != overlay_needed[a]:
        if state == "suppressed" and inc.overlay is None:  # every alarm is: no operator suppressed it
            why = sorted({r.suppressed for r in inc.alarms.values() if r.suppressed})
            why_text = f"({'; '.join(why[:3])}{'; ...' if len(why) > 3 else ''})"
            if a == "unsuppress":
                return Refusal(
                    f"incident is not suppressed: no operator suppressed it, its alarms are {why_text}",
                    "suppressed-by-policy",
                    why=why_text[1:-1],
                )
            return Refusal(
                f"incident is not {overlay_needed[a]} (it is suppressed: its alarms are {why_text})",
                "not-in-state-suppressed",
                needed=overlay_needed[a],
                why=why_text[1:-1],
            )
        return Refusal(
            f"incident is not {overlay_needed[a]} (it is {state})",
            "not-in-state",
            needed=overlay_needed[a],
            state=state,
        )
    if a == "assign" and not (cmd.assignee or cmd.actor):
        return Refusal("assign needs an assignee", "assignee-needed")
    if a == "close" and inc.active:
        return Refusal(
            "incident has firing alarms; it can close once they return to normal", "close-while-firing"
        )
    return None


def _apply(
    mgr: IncidentManager,
    st: ManagerState,
    cmd: Command,
    inc: Incident,
    at: int,
    changes: Changes,
    reason: str,
) -> None:
    a = cmd.action
    changes.touch(inc, PAST[a], at, cmd.actor, reason, cmd.id)
    if a == "acknowledge":
        inc.acked = True
        inc.acknowledged_by = cmd.actor
    elif a == "shelve":
        inc.overlay, inc.overlay_severity = "shelved", inc.severity
        if cmd.until == "clear":  # one-shot: ends when no alarm fires (manager._finish), or at its bound
            inc.shelve_until_clear = True
            bound = mgr.max_shelve if cmd.duration is None else seconds_us(cmd.duration)
            inc.shelved_until = at + bound
        else:
            inc.shelved_until = at + seconds_us(cmd.duration or 0)
        mgr._arm(st, inc.shelved_until)
    elif a in ("suppress", "out-of-service"):
        inc.overlay = "suppressed" if a == "suppress" else "out-of-service"
        inc.overlay_severity = inc.severity
    elif a in ("unshelve", "unsuppress", "return-to-service"):
        mgr.end_overlay(st, inc, at)
    elif a == "assign":
        inc.assignee = cmd.assignee or cmd.actor
    elif a == "close":
        mgr.close(st, inc, at, changes, cmd.actor, reason, cmd.id)
        return
    mgr.arm_close(st, inc, at)


def _asked_why(inc: Incident) -> str:
    """What the audit entry of the version that asked for acknowledgement again says."""
    entry = next((e for e in reversed(inc.audit) if e.version == inc.ack_asked), None)
    return f"{entry.change}: {entry.reason}" if entry is not None else "see its history"
