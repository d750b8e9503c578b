"""Live updates for the board: a group-less consumer of ``atalaia.incidents`` (every console
instance sees every change, straight from the incident manager, without waiting for the SQL
projection) fanned out to server-sent-event subscribers.

Each subscriber has a bounded queue; one that falls behind is dropped (its stream ends and the
browser reconnects and reloads the list) rather than holding memory for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from mode import Service

from atalaia.console.consumer import assigned_consumer, consume_retrying
from atalaia.incidents.events import IncidentEvent, decode_incident_record
from atalaia.streams.records import DecodeError

log = logging.getLogger(__name__)

ROW_FIELDS = (
    "state",
    "active",
    "severity",
    "title",
    "correlation",
    "labels",
    "location",
    "alarm_count",
    "opened_at",
    "closed_at",
    "acknowledged_by",
    "shelved_until",
    "assignee",
    "version",
    "overlay",
    "needs_ack",
)


def event_row(e: IncidentEvent) -> dict[str, Any]:
    """An incident event (decoded from ``atalaia.incidents``) as a row of ``GET /api/incidents``."""
    row = {k: getattr(e, k) for k in ROW_FIELDS}
    row.update(id=e.incident, updated_at=e.at, last_change=e.change, last_event=e.id)
    return row


class Subscriber:
    def __init__(self, size: int = 1000) -> None:
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(size)
        self.dropped = False

    def put(self, row: dict[str, Any] | None) -> None:
        try:
            self.queue.put_nowait(row)
        except asyncio.QueueFull:
            self.dropped = True


class IncidentFeed(Service):
    def __init__(self, bootstrap: str, topic: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.bootstrap, self.topic = bootstrap, topic
        self.subscribers: set[Subscriber] = set()
        self.connected = False
        self.last_record = 0.0  # monotonic time of the last record read

    async def on_start(self) -> None:
        self.add_future(self._run())

    async def on_stop(self) -> None:
        for s in list(self.subscribers):  # end every open stream so the web server can stop
            s.put(None)

    def subscribe(self) -> Subscriber:
        s = Subscriber()
        self.subscribers.add(s)
        return s

    def unsubscribe(self, s: Subscriber) -> None:
        self.subscribers.discard(s)

    def publish(self, row: dict[str, Any]) -> None:
        for s in list(self.subscribers):
            s.put(row)
            if s.dropped:
                self.subscribers.discard(s)

    async def _run(self) -> None:
        await consume_retrying(self, self._consume, log, "console live feed")

    async def _consume(self) -> None:
        async with assigned_consumer(self.bootstrap, self.topic, fetch_max_wait_ms=50) as (consumer, tps):
            try:
                await consumer.seek_to_end(*tps)
                self.connected = True
                while not self.should_stop:
                    batches = await consumer.getmany(timeout_ms=200)
                    for records in batches.values():
                        for r in records:
                            self.last_record = time.monotonic()
                            with contextlib.suppress(DecodeError):  # the projection keeps it on the DLQ
                                e = decode_incident_record(r.value or b"")
                                if isinstance(e, IncidentEvent):  # not a silence's change
                                    self.publish(event_row(e))
            finally:
                self.connected = False
