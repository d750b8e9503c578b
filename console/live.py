"""Live updates for the board: a group-less consumer of ``atalaia.incidents`` (every console
instance sees every change, straight from the incident manager, without waiting for the SQL
projection) fanned out to server-sent-event subscribers.

A board shows each incident's latest state, so what waits for a subscriber is the latest row of
each incident it has not been sent yet (a newer change replaces an older one in its place): a
storm of a thousand changes to six hundred incidents waits as six hundred rows, and a client that
reads its stream is never dropped for the size of one fetched batch. Only a subscriber with more
than ``PENDING_MAX`` distinct incidents waiting is dropped (its stream ends and the browser
reconnects and reloads the list) rather than holding memory for ever.

A new subscriber is first sent the latest row of every incident that changed in the last
``RECENT_S`` (at most ``RECENT_MAX`` incidents): the list a board loads when its stream opens is
the SQL projection's, which may be seconds behind this feed in a storm, and a change the feed
read before the stream opened would otherwise reach that board only with the incident's next
change (an incident closed in that gap stayed open on the board). The board keeps, per
incident, the newest version it has seen, so the rows sent again cost nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
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
    "shelved_until_clear",
)


def event_row(e: IncidentEvent) -> dict[str, Any]:
    """An incident event (decoded from ``atalaia.incidents``) as a row of ``GET /api/incidents``."""
    row = {k: getattr(e, k) for k in ROW_FIELDS}
    row.update(id=e.incident, updated_at=e.at, last_change=e.change, last_event=e.id)
    return row


#: distinct incidents waiting for one subscriber before it is dropped (holds references to rows)
PENDING_MAX = 20_000
#: the recent changes a new subscriber is sent first: incidents changed in the last RECENT_S
#: seconds, RECENT_MAX at most
RECENT_S = 300.0
RECENT_MAX = 10_000


class Subscriber:
    """What one event stream has still to send: the latest row of each incident, in the order
    the incidents first changed since the stream last took one."""

    def __init__(
        self,
        size: int | None = None,
        sees: Callable[[dict[str, Any]], bool] | None = None,
        rows: Iterable[dict[str, Any]] = (),
    ) -> None:
        self.size = PENDING_MAX if size is None else size
        # a tenant-scoped user's stream holds only the rows they may see: another tenant's storm
        # neither fills it (it was dropped, and the board reloaded, for rows it never sent) nor
        # costs it memory
        self.sees = sees
        self.pending: dict[str, dict[str, Any]] = {
            r["id"]: r for r in rows if sees is None or sees(r)
        }  # one comprehension: a stream that opens in a storm takes RECENT_MAX rows at once
        # server time (epoch s) since which each waiting incident has had a change this stream
        # has not sent: the board tells from it how far behind it is (a storm's queue, a slow
        # page); a newer change of a waiting incident keeps the first one's time
        now = time.time()
        self.since: dict[str, float] = dict.fromkeys(self.pending, now)
        self.taken_since = now  # that time for the row get() returned last
        self.dropped = False
        self.ended = False
        self._ready = asyncio.Event()

    def put(self, row: dict[str, Any] | None) -> None:
        if row is None:  # the feed stops: the stream ends
            self.ended = True
        elif self.sees is not None and not self.sees(row):
            return
        elif row["id"] in self.pending or len(self.pending) < self.size:
            self.pending[row["id"]] = row  # a newer change of a waiting incident takes its place
            self.since.setdefault(row["id"], time.time())
        else:
            self.dropped = True
        self._ready.set()

    async def get(self, timeout: float) -> dict[str, Any] | bool | None:
        """The next row to send (``taken_since``: since when it waited); ``None`` once the feed
        stops; ``False`` after ``timeout`` s with nothing to send."""
        if not self.pending and not self.ended:
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                return False
        if self.pending:
            incident = next(iter(self.pending))
            self.taken_since = self.since.pop(incident, time.time())
            return self.pending.pop(incident)
        return None


class IncidentFeed(Service):
    def __init__(self, bootstrap: str, topic: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.bootstrap, self.topic = bootstrap, topic
        self.subscribers: set[Subscriber] = set()
        # incident id -> (monotonic time, its latest row), the least recently changed first
        self.recent: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self.connected = False
        self.last_record = 0.0  # monotonic time of the last record read

    async def on_start(self) -> None:
        self.add_future(self._run())

    async def on_stop(self) -> None:
        for s in list(self.subscribers):  # end every open stream so the web server can stop
            s.put(None)

    def subscribe(self, sees: Callable[[dict[str, Any]], bool] | None = None) -> Subscriber:
        """A new stream's subscriber, holding the recent changes already (module docstring);
        with ``sees``, only the rows it accepts (a tenant-scoped user's)."""
        self._forget(time.monotonic())
        s = Subscriber(sees=sees, rows=(row for _, row in self.recent.values()))
        self.subscribers.add(s)
        return s

    def _forget(self, now: float) -> None:
        while self.recent and (
            len(self.recent) > RECENT_MAX or now - next(iter(self.recent.values()))[0] > RECENT_S
        ):
            self.recent.popitem(last=False)

    def unsubscribe(self, s: Subscriber) -> None:
        self.subscribers.discard(s)

    def publish(self, row: dict[str, Any]) -> None:
        now = time.monotonic()
        self.recent.pop(row["id"], None)
        self.recent[row["id"]] = (now, row)
        self._forget(now)
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
