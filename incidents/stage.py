"""The incident stages' cores: ``IncidentsCore`` (alarms + commands → incident events and command
replies, the :class:`~atalaia.incidents.manager.IncidentManager` as a stage) and
``ProjectionCore`` (incident events → the console's SQL projection). No I/O on the loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from atalaia.incidents.events import incident_event_problem
from atalaia.incidents.projection import Projection
from atalaia.rules.alarm import alarm_problem
from atalaia.streams.records import decode, dlq
from atalaia.streams.sink import Sink, SinkCore
from atalaia.streams.stage import Out

if TYPE_CHECKING:
    from atalaia.incidents.config import IncidentConfig
    from atalaia.incidents.events import CommandReply, IncidentEvent
    from atalaia.streams.settings import Settings


class IncidentsCore:
    """``atalaia.alarms`` + ``atalaia.commands`` → ``atalaia.incidents`` + ``atalaia.replies``.

    Alarms and commands each have one partition, so one manager sees every alarm in order; a
    malformed input is answered (commands: a rejected reply) and kept on the DLQ, never ignored.
    """

    def __init__(self, config: IncidentConfig, state: bytes | None = None) -> None:
        from atalaia.incidents.manager import IncidentManager

        self.manager = IncidentManager(config)
        self.state = self.manager.restore(state) if state else self.manager.initial_state()

    def process(self, records: list[Any], now: float) -> list[Out]:
        events, raw, outs = decode(records, alarm_problem)
        mine = [i for i, e in enumerate(events) if not (isinstance(e, dict) and e.get("kind") == "warning")]
        if len(mine) < len(events):  # warning commands share the topic: the warnings stage takes them
            events, raw = [events[i] for i in mine], [raw[i] for i in mine]
        errors: list[tuple[int, str]] = []
        self.state, produced = self.manager.step_batch(self.state, events, now, errors)
        for i, message in errors:
            r, ev = raw[i], events[i]
            outs.append(dlq(r.value, r.topic, f"refused by incidents: {message}"))
            if isinstance(ev, dict) and "action" in ev:
                outs.append(
                    Out(
                        "replies",
                        orjson.dumps(
                            {
                                "kind": "reply",
                                "command": str(ev.get("id", "")),
                                "incident": str(ev.get("incident", "")),
                                "action": str(ev.get("action", "")),
                                "actor": str(ev.get("actor", "")),
                                "accepted": False,
                                "reason": f"invalid command: {message}",
                                "at": None,
                            }
                        ),
                        key=str(ev.get("id", "")).encode(),
                    )
                )
        return outs + [self._out(o) for o in produced]

    @staticmethod
    def _out(o: IncidentEvent | CommandReply) -> Out:
        if getattr(o, "kind", "") == "reply":
            return Out("replies", o.to_json(), key=o.command.encode())
        return Out("incidents", o.to_json(), key=o.incident.encode())

    def tick(self, now: float, backlog: bool = False) -> list[Out]:
        from prometheus_client import REGISTRY

        from atalaia.incidents.kpi import export_kpis

        self.state, produced = self.manager.tick(self.state, now)
        # EEMUA 191 alarm-load KPIs on /metrics (alarm rate, time in flood, chattering, stale)
        export_kpis(REGISTRY, self.manager.kpis(self.state, now))
        return [self._out(o) for o in produced]

    def snapshot(self) -> bytes:
        return self.manager.snapshot(self.state)

    def restore(self, state: bytes) -> None:
        self.state = self.manager.restore(state)


class ProjectionCore(SinkCore):
    """``atalaia.incidents`` → the SQL projection (SQLite by default, PostgreSQL in production).
    Applying an event is idempotent (by incident version), so redelivery is harmless; the
    database is the state, the checkpoint only carries the offset. The writes are an async sink:
    they run in the projection's own thread (``streams.sink``), never on the event loop."""

    def __init__(self, projection: Sink[Projection]) -> None:
        self.projection = projection

    async def aprocess(self, records: list[Any], now: float) -> list[Out]:
        events, raw, outs = decode(records, incident_event_problem)
        errors: list[tuple[int, str]] = []
        if events:
            await self.projection.run(Projection.apply, events, errors)
        for i, message in errors:
            outs.append(dlq(raw[i].value, raw[i].topic, f"not an incident event: {message}"))
        return outs


def projection_sink(settings: Settings) -> Sink[Projection]:
    """The configured projection database, opened (and migrated) in its own thread."""
    url, schema = settings.projection_url(), settings.database_schema
    return Sink(lambda: Projection.connect(url, schema=schema), "projection")
