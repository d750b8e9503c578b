"""The delivery log (and outbox): every notification and every attempt, checked before sending.

Protocol, per notification (``deliveries`` row, one per notification id):

    queued ──► sending ──► delivered
                  │  ▲
                  ▼  │ (backoff, or the target's circuit breaker probe)
               waiting ──► failed ──► (re-sent when the target recovers, until resend_until)
    waiting = "waiting for target": retries continue (``next_at``) within the time budget;
    failed: the budget is used up (``resend_until`` set: still re-sent once the target answers
    again) or a permanent error (``resend_until`` NULL).
    sending found at start-up (crash between send and record) ──► re-sent if the channel is
    idempotent (NGSI-LD upsert, webhook deduplicated on its delivery id), else ``in-doubt``
    and NOT re-sent (SMS, Alertmanager; email only past its SMTP commit point, see commit.py):
    the escalation's own repeats reach the person if the message was in fact lost, while a
    duplicate SMS at 3 a.m. is noise that erodes trust.

``queued`` rows carry the notification itself, so once :meth:`DeliveryLog.enqueue` returns the
Kafka offset may be committed: a restart re-reads unfinished work from here (outbox). Each
attempt is an ``attempts`` row (attempt number, status, error, latency). SQLite in WAL mode with
``synchronous=NORMAL`` survives a killed process (not a power cut: use ``FULL`` or PostgreSQL).
A PostgreSQL log implements the same :class:`DeliveryLog` protocol.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import orjson

from atalaia.notifiers.model import DeliveryResult, Notification

DeliveryStatus = Literal["queued", "sending", "delivered", "waiting", "failed", "in-doubt"]
FINAL = ("delivered", "failed", "in-doubt")


@dataclass(slots=True, frozen=True)
class Delivery:
    notification_id: str
    incident: str
    target: str
    channel: str
    kind: str
    step: int
    repeat: int
    status: str
    attempts: int
    last_error: str | None
    queued_at: float
    updated_at: float
    delivered_at: float | None
    next_at: float | None = None  # waiting (or failed but kept): the next planned try
    resend_until: float | None = None  # failed but kept: re-sent when the target recovers until then


@dataclass(slots=True, frozen=True)
class Unfinished:
    """A row a restarted notifier takes up again."""

    notification: Notification
    status: str
    attempts: int
    queued_at: float
    # an email to several recipients: whom earlier attempts reached or were refused by for good
    # (DeliveryResult.progress), so the next attempt sends only to the others
    progress: dict | None = None


@dataclass(slots=True, frozen=True)
class TargetHealth:
    """The circuit breaker of one target, as last recorded."""

    target: str
    state: str  # closed | open | half-open
    failures: int  # consecutive failed attempts
    next_probe_at: float | None
    since: float
    last_error: str | None
    # the target's HTTP Retry-After: nothing is sent to it before this (kept across a restart)
    hold_until: float | None = None


@dataclass(slots=True, frozen=True)
class Attempt:
    notification_id: str
    incident: str
    target: str
    channel: str
    attempt: int
    status: str
    error: str | None
    detail: str | None
    started_at: float
    latency_ms: float | None


class DeliveryLog(Protocol):
    def known(self, ids: Iterable[str]) -> dict[str, str]: ...
    def enqueue(self, items: list[tuple[Notification, str]], now: float) -> None: ...
    def begin(self, n: Notification, channel: str, attempt: int, now: float) -> None: ...
    def finish(
        self,
        n: Notification,
        attempt: int,
        result: DeliveryResult,
        status: str,
        now: float,
        latency_ms: float,
        next_at: float | None = None,
        resend_until: float | None = None,
    ) -> None: ...
    def settle(
        self,
        notification_id: str,
        status: str,
        now: float,
        error: str | None,
        next_at: float | None = None,
        resend_until: float | None = None,
    ) -> None: ...
    def unfinished(self, now: float | None = None) -> list[Unfinished]: ...
    def mark_in_doubt(self, notification_id: str, now: float) -> None: ...
    def set_target(self, health: TargetHealth) -> None: ...
    def targets(self) -> list[TargetHealth]: ...
    def deliveries(self, incident: str | None = None, limit: int = 1000) -> list[Delivery]: ...
    def attempts(self, incident: str | None = None, limit: int = 1000) -> list[Attempt]: ...
    def sent_since(self, target: str, since: float) -> list[float]: ...
    def in_doubt_since(self, since: float) -> list[tuple[str, float]]: ...
    def close(self) -> None: ...


SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
  notification_id TEXT PRIMARY KEY, incident TEXT NOT NULL, target TEXT NOT NULL, channel TEXT NOT NULL,
  kind TEXT NOT NULL, step INTEGER NOT NULL, repeat INTEGER NOT NULL, status TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, queued_at REAL NOT NULL, updated_at REAL NOT NULL,
  delivered_at REAL, payload BLOB NOT NULL, next_at REAL, resend_until REAL, progress BLOB);
CREATE INDEX IF NOT EXISTS deliveries_incident ON deliveries(incident);
CREATE INDEX IF NOT EXISTS deliveries_open ON deliveries(status) WHERE status NOT IN ('delivered','failed','in-doubt');
CREATE TABLE IF NOT EXISTS attempts (
  id INTEGER PRIMARY KEY AUTOINCREMENT, notification_id TEXT NOT NULL, incident TEXT NOT NULL,
  target TEXT NOT NULL, channel TEXT NOT NULL, attempt INTEGER NOT NULL, status TEXT NOT NULL,
  error TEXT, detail TEXT, started_at REAL NOT NULL, latency_ms REAL);
CREATE INDEX IF NOT EXISTS attempts_incident ON attempts(incident);
CREATE INDEX IF NOT EXISTS attempts_notification ON attempts(notification_id, attempt);
CREATE INDEX IF NOT EXISTS attempts_target ON attempts(target, started_at);
CREATE TABLE IF NOT EXISTS targets (
  target TEXT PRIMARY KEY, state TEXT NOT NULL, failures INTEGER NOT NULL, next_probe_at REAL,
  since REAL NOT NULL, last_error TEXT, hold_until REAL);
"""
MIGRATIONS = """
CREATE INDEX IF NOT EXISTS deliveries_resend ON deliveries(resend_until) WHERE resend_until IS NOT NULL;
UPDATE deliveries SET status='waiting' WHERE status='retrying';
"""


class SQLiteDeliveryLog:
    """The default delivery log: one SQLite file (``:memory:`` for tests)."""

    def __init__(self, path: str | Path = ".atalaia/deliveries.sqlite", synchronous: str = "NORMAL"):
        if str(path) != ":memory:":
            from atalaia.streams.private import private_sqlite

            Path(path).parent.mkdir(parents=True, exist_ok=True)
            private_sqlite(path, "the delivery log (phone numbers, email addresses)")  # 0600
        self.path = str(path)
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(SCHEMA)
        cols = {r[1] for r in self.db.execute("PRAGMA table_info(deliveries)")}
        for col in ("next_at", "resend_until"):  # files written before time-budgeted retries
            if col not in cols:
                self.db.execute(f"ALTER TABLE deliveries ADD COLUMN {col} REAL")
        if "progress" not in cols:  # files written before per-recipient progress was kept
            self.db.execute("ALTER TABLE deliveries ADD COLUMN progress BLOB")
        if "hold_until" not in {r[1] for r in self.db.execute("PRAGMA table_info(targets)")}:
            self.db.execute("ALTER TABLE targets ADD COLUMN hold_until REAL")  # before Retry-After was kept
        self.db.executescript(MIGRATIONS)

    def known(self, ids: Iterable[str]) -> dict[str, str]:
        ids = list(ids)
        out: dict[str, str] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            q = f"SELECT notification_id, status FROM deliveries WHERE notification_id IN ({','.join('?' * len(chunk))})"
            out.update(self.db.execute(q, chunk).fetchall())
        return out

    def enqueue(self, items: list[tuple[Notification, str]], now: float) -> None:
        rows = [
            (n.id, n.incident, n.target, ch, n.kind, n.step, n.repeat, now, now, n.to_json())
            for n, ch in items
        ]
        with self._tx():
            self.db.executemany(
                "INSERT OR IGNORE INTO deliveries (notification_id, incident, target, channel, kind, step, repeat,"
                " status, queued_at, updated_at, payload) VALUES (?,?,?,?,?,?,?,'queued',?,?,?)",
                rows,
            )

    def begin(self, n: Notification, channel: str, attempt: int, now: float) -> None:
        with self._tx():
            # an attempt left 'sending' by a crash, now re-sent (idempotent channel): outcome unknown
            self.db.execute(
                "UPDATE attempts SET status='unknown' WHERE notification_id=? AND status='sending'", (n.id,)
            )
            self.db.execute(
                "UPDATE deliveries SET status='sending', attempts=?, updated_at=? WHERE notification_id=?",
                (attempt, now, n.id),
            )
            self.db.execute(
                "INSERT INTO attempts (notification_id, incident, target, channel, attempt, status, started_at)"
                " VALUES (?,?,?,?,?,'sending',?)",
                (n.id, n.incident, n.target, channel, attempt, now),
            )

    def finish(
        self,
        n: Notification,
        attempt: int,
        result: DeliveryResult,
        status: str,
        now: float,
        latency_ms: float,
        next_at: float | None = None,
        resend_until: float | None = None,
    ) -> None:
        """Record the answer of attempt ``attempt`` and the row's new ``status`` (delivered,
        waiting, failed), and the recipients reached so far (``result.progress``: kept until an
        attempt says more)."""
        progress = orjson.dumps(result.progress) if result.progress else None
        with self._tx():
            self.db.execute(
                "UPDATE attempts SET status=?, error=?, detail=?, latency_ms=? WHERE notification_id=? AND attempt=?"
                " AND status='sending'",
                (
                    "delivered" if result.ok else result.status,
                    result.error,
                    result.detail,
                    latency_ms,
                    n.id,
                    attempt,
                ),
            )
            self.db.execute(
                "UPDATE deliveries SET status=?, last_error=?, updated_at=?, delivered_at=?, next_at=?,"
                " resend_until=?, progress=COALESCE(?, progress) WHERE notification_id=?",
                (
                    status,
                    result.error,
                    now,
                    now if result.ok else None,
                    next_at,
                    resend_until,
                    progress,
                    n.id,
                ),
            )

    def settle(
        self,
        notification_id: str,
        status: str,
        now: float,
        error: str | None,
        next_at: float | None = None,
        resend_until: float | None = None,
    ) -> None:
        """A change of status without an attempt (a budget ran out while the target was down)."""
        with self._tx():
            self.db.execute(
                "UPDATE deliveries SET status=?, last_error=COALESCE(?, last_error), updated_at=?, next_at=?,"
                " resend_until=? WHERE notification_id=?",
                (status, error, now, next_at, resend_until, notification_id),
            )

    def unfinished(self, now: float | None = None) -> list[Unfinished]:
        """Every queued/sending/waiting row, and every failed row still to be re-sent when its
        target recovers (``resend_until`` after ``now``), oldest first."""
        rows = self.db.execute(
            "SELECT payload, status, attempts, queued_at, rowid, progress FROM deliveries"
            " WHERE status IN ('queued','sending','waiting','retrying')"
            " UNION ALL SELECT payload, status, attempts, queued_at, rowid, progress FROM deliveries"
            " WHERE resend_until IS NOT NULL AND resend_until > ? AND status = 'failed'"
            " ORDER BY 4, 5",
            (float("-inf") if now is None else now,),
        ).fetchall()
        return [
            Unfinished(Notification.from_dict(orjson.loads(p)), s, a, q, orjson.loads(g) if g else None)
            for p, s, a, q, _, g in rows
        ]

    def mark_in_doubt(self, notification_id: str, now: float) -> None:
        with self._tx():
            self.db.execute(
                "UPDATE deliveries SET status='in-doubt', updated_at=?, last_error=? WHERE notification_id=?",
                (now, "worker stopped between send and record; not re-sent", notification_id),
            )
            self.db.execute(
                "UPDATE attempts SET status='in-doubt' WHERE notification_id=? AND status='sending'",
                (notification_id,),
            )

    def set_target(self, health: TargetHealth) -> None:
        with self._tx():
            self.db.execute(
                "INSERT OR REPLACE INTO targets (target, state, failures, next_probe_at, since, last_error,"
                " hold_until) VALUES (?,?,?,?,?,?,?)",
                (
                    health.target,
                    health.state,
                    health.failures,
                    health.next_probe_at,
                    health.since,
                    health.last_error,
                    health.hold_until,
                ),
            )

    def targets(self) -> list[TargetHealth]:
        rows = self.db.execute(
            "SELECT target, state, failures, next_probe_at, since, last_error, hold_until FROM targets"
            " ORDER BY target"
        ).fetchall()
        return [TargetHealth(*r) for r in rows]

    def deliveries(self, incident: str | None = None, limit: int = 1000) -> list[Delivery]:
        cols = (
            "notification_id, incident, target, channel, kind, step, repeat, status, attempts, last_error,"
            " queued_at, updated_at, delivered_at, next_at, resend_until"
        )
        if incident is None:
            rows = self.db.execute(
                f"SELECT {cols} FROM deliveries ORDER BY queued_at DESC, rowid DESC LIMIT ?", (limit,)
            ).fetchall()
            rows.reverse()
        else:
            rows = self.db.execute(
                f"SELECT {cols} FROM deliveries WHERE incident=? ORDER BY queued_at, rowid LIMIT ?",
                (incident, limit),
            ).fetchall()
        return [Delivery(*r) for r in rows]

    def payloads(self, ids: Iterable[str]) -> dict[str, Notification]:
        """The notifications themselves (as queued), by id (for ``atalaia notify log``)."""
        out: dict[str, Notification] = {}
        ids = list(ids)
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            q = f"SELECT notification_id, payload FROM deliveries WHERE notification_id IN ({','.join('?' * len(chunk))})"
            for nid, payload in self.db.execute(q, chunk).fetchall():
                try:
                    out[nid] = Notification.from_dict(orjson.loads(payload))
                except (ValueError, TypeError, KeyError):
                    continue
        return out

    def attempts(self, incident: str | None = None, limit: int = 1000) -> list[Attempt]:
        cols = "notification_id, incident, target, channel, attempt, status, error, detail, started_at, latency_ms"
        if incident is None:
            rows = self.db.execute(
                f"SELECT {cols} FROM attempts ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
            rows.reverse()
        else:
            rows = self.db.execute(
                f"SELECT {cols} FROM attempts WHERE incident=? ORDER BY id LIMIT ?", (incident, limit)
            ).fetchall()
        return [Attempt(*r) for r in rows]

    def sent_since(self, target: str, since: float) -> list[float]:
        """When attempts to ``target`` started, from ``since`` on (oldest first): what a restarted
        process's rate limit has already spent."""
        rows = self.db.execute(
            "SELECT started_at FROM attempts WHERE target=? AND started_at>=? ORDER BY started_at LIMIT 10000",
            (target, since),
        ).fetchall()
        return [r[0] for r in rows]

    def in_doubt_since(self, since: float) -> list[tuple[str, float]]:
        """(target, when it was marked in doubt) of each ``in-doubt`` row marked from ``since`` on,
        oldest first: what ``/health`` says a person should check."""
        rows = self.db.execute(
            "SELECT target, updated_at FROM deliveries WHERE status='in-doubt' AND updated_at>=?"
            " ORDER BY updated_at LIMIT 10000",
            (since,),
        ).fetchall()
        return [(t, u) for t, u in rows]

    def close(self) -> None:
        self.db.close()

    def _tx(self) -> _Tx:
        return _Tx(self.db)


class _Tx:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
