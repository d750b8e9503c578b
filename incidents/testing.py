"""A small scenario driver over the pure manager, for tests, benchmarks and rule authors' examples.

>>> d = Driver()
>>> d.fire("river-level-high", "porto-01", at=0, parish="Ribeira").state
'unacknowledged'
>>> d.command("acknowledge", at=60).state
'acknowledged'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from atalaia.incidents.config import IncidentConfig
from atalaia.incidents.emit import Output
from atalaia.incidents.events import CommandReply, IncidentEvent
from atalaia.incidents.manager import IncidentManager
from atalaia.incidents.model import ManagerState
from atalaia.streams.clock import format_time

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at_s(seconds: float) -> str:
    """RFC 3339 text for T0 + seconds."""
    return format_time(T0 + timedelta(seconds=seconds))


def transition(
    rule: str,
    key: str,
    state: str,
    at: float,
    severity: str = "high",
    value: float | None = 1.0,
    location: list[float] | None = None,
    **labels: str,
) -> dict[str, Any]:
    """A transition's dict; ``tenant`` and ``service_path`` go on its own fields, as the rules
    engine sets them (the manager takes an alarm's tenant from there only, never from a label)."""
    own = {k: labels.pop(k) for k in ("tenant", "service_path") if k in labels}
    return {
        "at": at_s(at),
        "rule": rule,
        "key": key,
        "state": state,
        "severity": severity,
        "value": value,
        "entity": key,
        "labels": labels,
        "location": location,
        **own,
    }


@dataclass
class Driver:
    config: IncidentConfig = field(default_factory=IncidentConfig)
    manager: IncidentManager = field(init=False)
    state: ManagerState = field(init=False)
    outputs: list[Output] = field(default_factory=list)
    now: float = 0.0

    def __post_init__(self) -> None:
        self.manager = IncidentManager(self.config)
        self.state = self.manager.initial_state()

    def step(self, event: Any, at: float | None = None) -> list[Output]:
        if at is not None:
            self.now = max(self.now, at)
        self.state, out = self.manager.step(self.state, event, at_s(self.now))
        self.outputs.extend(out)
        return out

    def alarm(self, rule: str, key: str, state: str, at: float, **kw: Any) -> IncidentEvent | None:
        out = self.step(transition(rule, key, state, at, **kw), at)
        events = [o for o in out if isinstance(o, IncidentEvent)]
        return events[-1] if events else None

    def fire(self, rule: str, key: str, at: float, **kw: Any) -> IncidentEvent:
        ev = self.alarm(rule, key, "firing", at, **kw)
        assert ev is not None, "a firing transition always changes an incident"
        return ev

    def resolve(self, rule: str, key: str, at: float, **kw: Any) -> IncidentEvent | None:
        return self.alarm(rule, key, "resolved", at, **kw)

    def command(
        self,
        action: str,
        at: float,
        incident: str | None = None,
        role: str = "operator",
        actor: str = "ana",
        reason: str = "",
        **kw: Any,
    ) -> IncidentEvent | CommandReply:
        """Send a command; returns the last incident event it produced, else the (rejecting) reply."""
        iid = incident or self.last_incident()
        out = self.step(
            {
                "incident": iid,
                "action": action,
                "actor": actor,
                "role": role,
                "reason": reason,
                "at": at_s(at),
                **kw,
            },
            at,
        )
        events = [o for o in out if isinstance(o, IncidentEvent)]
        if events:
            return events[-1]
        return next(o for o in out if isinstance(o, CommandReply))

    def tick(self, at: float) -> list[Output]:
        return self.step(None, at)

    def last_incident(self) -> str:
        return next(o.incident for o in reversed(self.outputs) if isinstance(o, IncidentEvent))

    def events(self, incident: str | None = None) -> list[IncidentEvent]:
        return [
            o
            for o in self.outputs
            if isinstance(o, IncidentEvent) and (incident is None or o.incident == incident)
        ]

    def replies(self) -> list[CommandReply]:
        return [o for o in self.outputs if isinstance(o, CommandReply)]

    def current(self, incident: str | None = None) -> IncidentEvent:
        return self.events(incident or self.last_incident())[-1]
