"""The incident stages' cores: ``IncidentsCore`` (alarms + commands → incident events and command
replies, the :class:`~atalaia.incidents.manager.IncidentManager` as a stage) and
``ProjectionCore`` (incident events → the console's SQL projection). No I/O on the loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from atalaia.incidents.commands import decode_command
from atalaia.incidents.events import decode_incident_record, rejected_reply
from atalaia.incidents.projection import Projection, unavailable_errors
from atalaia.rules.alarm import decode_alarm
from atalaia.streams.records import decode, dlq_for, topic_name
from atalaia.streams.sink import Sink, SinkCore
from atalaia.streams.stage import Out

if TYPE_CHECKING:
    from atalaia.incidents.commands import Command
    from atalaia.incidents.config import IncidentConfig
    from atalaia.incidents.events import CommandReply, IncidentEvent
    from atalaia.incidents.silences import SilenceCommand
    from atalaia.rules.alarm import AlarmTransition
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
        # decoded once, by topic, into the types the manager takes; a warning command decodes to
        # None (the warnings stage takes it) and is skipped; what does not decode is refused
        inputs: list[AlarmTransition | Command | SilenceCommand]
        inputs, raw, outs = decode(records, decode_alarm, {"commands": decode_command}, self._rejected)
        errors: list[tuple[int, str]] = []
        self.state, produced = self.manager.step_batch(self.state, inputs, now, errors)
        for i, message in errors:
            r = raw[i]
            outs += [dlq_for(r, f"refused by incidents: {message}"), *self._rejected(r, message)]
        return outs + [self._out(o) for o in produced]

    @staticmethod
    def _rejected(r: Any, message: str) -> list[Out]:
        """A command the manager cannot take is answered (rejected), so the console stops waiting."""
        reply = (
            rejected_reply(r.value, f"invalid command: {message}") if topic_name(r) == "commands" else None
        )
        return [Out("replies", reply[1], key=reply[0])] if reply else []

    @staticmethod
    def _out(o: IncidentEvent | CommandReply) -> Out:
        if getattr(o, "kind", "") == "reply":
            return Out("replies", o.to_json(), key=o.command.encode())
        # an incident event is counted by its state; a silence's start or end by "?" (no state)
        return Out("incidents", o.to_json(), key=o.incident.encode(), counted=(getattr(o, "state", "?"),))

    def tick(self, now: float, backlog: bool = False) -> list[Out]:
        from prometheus_client import REGISTRY

        from atalaia.incidents.kpi import export_kpis

        self.state, produced = self.manager.tick(self.state, now)
        # EEMUA 191 alarm-load KPIs on /metrics (alarm rate, time in flood, chattering, stale)
        export_kpis(REGISTRY, self.manager.kpis(self.state, now))
        return [self._out(o) for o in produced]

    def announce(self, now: float) -> list[Out]:
        """After a broker reset: every open incident's current event again (``announce``)."""
        return [self._out(e) for e in self.manager.announce(self.state)]

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
        events, raw, outs = decode(records, decode_incident_record)
        errors: list[tuple[int, str]] = []
        if events:
            await self.projection.run(Projection.apply, events, errors)
        for i, message in errors:
            outs.append(dlq_for(raw[i], f"not an incident event: {message}"))
        return outs


def projection_sink(settings: Settings) -> Sink[Projection]:
    """The configured projection database, opened (and migrated) in its own thread. A database
    that cannot be reached (PostgreSQL stopped, a full or read-only disk) is opened again at the
    next use: the process starts and runs without it, the projection stage waits for it
    (``streams.stage``) and the console answers 503 meanwhile."""
    url, schema = settings.projection_url(), settings.database_schema
    return Sink(
        lambda: Projection.connect(url, schema=schema),
        "projection",
        unavailable=unavailable_errors(),
        close=Projection.close,
        what="the projection database (the console's incident list)",
    )
