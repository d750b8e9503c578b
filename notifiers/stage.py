"""The notifier stages' cores: ``EscalationCore`` (incident events → notifications, the
escalation policies as a stage), ``WarningNoticesCore`` (issued CAP warnings → notifications) and
``DeliveryCore`` (notifications → the notifier's outbox and senders, an async sink). No I/O on the
loop: delivery runs in the notifier's lanes.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from atalaia.incidents.events import decode_incident_record
from atalaia.streams.clock import utc
from atalaia.streams.records import decode, dlq_for
from atalaia.streams.sink import SinkCore, SinkUnavailable
from atalaia.streams.stage import Out

if TYPE_CHECKING:
    from atalaia.notifiers.config import EscalationConfig
    from atalaia.notifiers.model import Notification
    from atalaia.notifiers.service import Notifier
    from atalaia.warnings.catalogue import Catalogue
    from atalaia.warnings.config import WarningsConfig
    from atalaia.warnings.records import WarningCommand


class EscalationCore:
    """``atalaia.incidents`` → ``atalaia.notifications``: the escalation policies (steps, waits,
    repeats, until acknowledged) as a pure state machine; timers fire on the stage's tick.
    Notification ids are deterministic (incident, policy, episode, step, repeat, target).

    A ``propose_warning`` step's notification becomes a warning ``draft`` command on
    ``atalaia.commands`` (prefilled from the incident, command id = the notification id, so a
    replay drafts nothing twice): it waits there for approval and publishes nothing by itself."""

    def __init__(
        self,
        config: EscalationConfig,
        state: bytes | None = None,
        warnings_config: WarningsConfig | None = None,
        catalogue: Catalogue | None = None,  # loaded by the stage's factory, not on the loop
    ) -> None:
        from atalaia.notifiers.engine import EscalationEngine, EscalationState

        self.engine = EscalationEngine(config)
        self.state = EscalationState.restore(state) if state else EscalationState()
        self.warnings_config = warnings_config
        self._catalogue: Catalogue | None = catalogue

    def process(self, records: list[Any], now: float) -> list[Out]:
        events, _, outs = decode(records, decode_incident_record)
        self.state, notes = self.engine.step_batch(self.state, events, utc(now))
        return outs + [self._out(n) for n in notes]

    def _out(self, n: Notification) -> Out:
        if n.kind == "propose":
            return Out("commands", self.draft_command(n).to_json(), key=n.incident.encode())
        return Out("notifications", n.to_json(), key=n.target.encode())

    def draft_command(self, n: Notification) -> WarningCommand:
        """The ``draft`` command (kind warning) a ``propose_warning`` notification asks for."""
        from dataclasses import asdict
        from datetime import timedelta

        from atalaia.warnings.config import WarningsConfig
        from atalaia.warnings.from_incident import draft_from_incident
        from atalaia.warnings.records import WarningCommand

        if self._catalogue is None:
            self._catalogue = (self.warnings_config or WarningsConfig()).catalogue()
        ask = n.warning or {}
        incident = asdict(n.snapshot)
        draft = draft_from_incident(
            incident,
            self._catalogue,
            ask.get("sender", "atalaia@localhost"),
            n.due,
            timedelta(seconds=float(ask.get("valid_for_s", 43200))),
        )
        draft["status"] = ask.get("status", "Actual")
        if "area" not in draft:  # never the whole municipality by default; the warnings stage refuses it
            import logging

            logging.getLogger("atalaia.notifiers").warning(
                "propose_warning (policy %s) for incident %s: none of its parishes is known (no parish "
                "label the configured areas know, no location in one), so the proposed draft has no "
                "area and is refused: draft the warning in the console and choose its area",
                n.policy,
                n.incident,
            )
        return WarningCommand(
            id=n.id,
            action="draft",
            actor=f"escalation:{n.policy}",
            role="system",
            reason=f"propose_warning step {n.step + 1} of policy {n.policy}",
            incident=n.incident,
            draft=draft,
            at=n.due,
        )

    def tick(self, now: float, backlog: bool = False) -> list[Out]:
        from atalaia.notifiers.engine import TICK

        self.state, notes = self.engine.step(self.state, TICK, utc(now))
        return [self._out(n) for n in notes]

    def announce(self, now: float) -> list[Out]:
        """After a broker reset: each running escalation's latest page again (``announce``)."""
        return [self._out(n) for n in self.engine.announce(self.state)]

    def snapshot(self) -> bytes:
        return self.state.snapshot()

    def restore(self, state: bytes) -> None:
        from atalaia.notifiers.engine import EscalationState

        self.state = EscalationState.restore(state)


class WarningNoticesCore:
    """``atalaia.warnings`` → ``atalaia.notifications``: each issued CAP document
    (:class:`~atalaia.warnings.records.CapRecord`) becomes one notification per target of the
    escalation file's ``warnings:`` section (Exercise and Test only to the targets marked for
    exercises); the topic's warning events and replies give none. Stateless: ids are
    deterministic (identifier, version, target), so a replayed record is dropped by the delivery
    log. A record that does not decode, or a document that cannot be read, goes to the DLQ with
    the reason."""

    def __init__(self, config: EscalationConfig) -> None:
        self.config = config

    def process(self, records: list[Any], now: float) -> list[Out]:
        from atalaia.notifiers.warning import warning_notifications
        from atalaia.warnings.records import CapRecord, decode_warning_record

        values, raw, outs = decode(records, decode_warning_record)
        for value, r in zip(values, raw, strict=True):
            if not isinstance(value, CapRecord):
                continue
            try:
                notes = warning_notifications(value, self.config)
            except Exception as e:  # an unreadable document: kept, with the reason
                outs.append(dlq_for(r, f"warning not deliverable: {e}"))
                continue
            outs += [Out("notifications", n.to_json(), key=n.target.encode()) for n in notes]
        return outs

    def tick(self, now: float, backlog: bool = False) -> list[Out]:
        return []

    def snapshot(self) -> bytes:
        return b""

    def restore(self, state: bytes) -> None:
        """Stateless: nothing to take."""


class DeliveryCore(SinkCore):
    """``atalaia.notifications`` → people: the notifier's delivery pipeline (dedup against the
    delivery log, durable outbox, per-target lanes with rate limit and retry). ``aprocess``
    returns once the batch is recorded in the outbox, so the offset is committed only for
    notifications that can no longer be lost; delivery goes on in the lanes."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    async def aprocess(self, records: list[Any], now: float) -> list[Out]:
        from atalaia.notifiers.model import decode_notification

        notes, _, outs = decode(records, decode_notification)
        if notes:
            try:
                await self.notifier.submit(notes)
            except sqlite3.OperationalError as e:  # a full or read-only disk: nothing was recorded
                # (one transaction), nothing sent; the stage holds these and tries again
                raise SinkUnavailable(
                    f"the delivery log cannot be written: {type(e).__name__}: {e}", "the delivery log"
                ) from e
        return outs
