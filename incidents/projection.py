"""SQL projection of ``atalaia.incidents``: tables ``incidents`` (current state), ``incident_alarms``
and ``incident_audit`` (one row per event: the history). Applying is idempotent and order-tolerant:
an event already applied (by id) is skipped, and a row only moves to a newer version.

SQLite by default (``sqlite:///path.db`` or a path), PostgreSQL in production (``postgresql://...``,
psycopg 3), optionally inside a schema. Numbered migrations live in ``incidents/migrations/NNN_*.sql``;
``incident_schema_version`` records which ran.

    proj = Projection.connect("sqlite:///.atalaia/incidents.db")
    proj.apply(events)                 # IncidentEvent objects or their dicts (e.g. from the topic)
    proj.open_incidents(); proj.history(incident_id); proj.alarms(incident_id)
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec
import orjson

from atalaia.incidents.events import IncidentEvent
from atalaia.incidents.silences import SilenceEvent
from atalaia.streams.clock import format_time

_TOKENS = {"sqlite": {"json": "TEXT", "time": "TEXT"}, "postgresql": {"json": "JSONB", "time": "TIMESTAMPTZ"}}
_JSON_COLUMNS = {"correlation", "labels", "location", "changes", "matchers"}
_TIME_COLUMNS = {
    "opened_at",
    "updated_at",
    "closed_at",
    "shelved_until",
    "first_seen",
    "last_seen",
    "at",
    "starts_at",
    "ends_at",
    "created_at",
}
_BOOL_COLUMNS = {"active", "chattering", "needs_ack", "shelved_until_clear"}

_UPSERT_INCIDENT = """
INSERT INTO incidents (id, version, state, active, severity, title, correlation, labels, location, alarm_count,
                       opened_at, updated_at, closed_at, acknowledged_by, shelved_until, assignee, last_change,
                       last_event, overlay, needs_ack, shelved_until_clear)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    version = excluded.version, state = excluded.state, active = excluded.active, severity = excluded.severity,
    title = excluded.title, correlation = excluded.correlation, labels = excluded.labels,
    location = excluded.location, alarm_count = excluded.alarm_count, updated_at = excluded.updated_at,
    closed_at = excluded.closed_at, acknowledged_by = excluded.acknowledged_by,
    shelved_until = excluded.shelved_until, assignee = excluded.assignee, last_change = excluded.last_change,
    last_event = excluded.last_event, overlay = excluded.overlay, needs_ack = excluded.needs_ack,
    shelved_until_clear = excluded.shelved_until_clear
WHERE incidents.version < excluded.version
"""
_UPSERT_ALARM = """
INSERT INTO incident_alarms (incident, rule, key, version, entity, state, severity, value, count, first_seen,
                             last_seen, suppressed, chattering)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (incident, rule, key) DO UPDATE SET
    version = excluded.version, entity = excluded.entity, state = excluded.state, severity = excluded.severity,
    value = excluded.value, count = excluded.count, first_seen = excluded.first_seen,
    last_seen = excluded.last_seen, suppressed = excluded.suppressed, chattering = excluded.chattering
WHERE incident_alarms.version < excluded.version
"""
_INSERT_AUDIT = """
INSERT INTO incident_audit (event_id, incident, version, at, change, changes, state, active, severity, actor,
                            reason, command)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT DO NOTHING
"""


#: the URLs a projection takes; a path without a scheme is an SQLite file
URL_KINDS = ("sqlite://", "postgresql://", "postgres://")


def url_problem(url: str) -> str | None:
    """Why ``url`` is no projection URL (another database, SQLAlchemy's ``postgresql+psycopg://``),
    or None; such a URL was taken for an SQLite path (a directory ``mysql:`` in the working
    directory)."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", url) and not url.startswith(URL_KINDS):
        return (
            f"{url.split('://', 1)[0]}://...: not a database Atalaia writes; use sqlite:///path/to/atalaia.db "
            "or postgresql://user@host/dbname"
        )
    return None


PG_OPTIONS = {
    # a server that cannot be reached without a word (its host down, a route dropped: no RST)
    # fails the connection in seconds instead of holding the projection's thread for the
    # kernel's ~15 min of retransmissions; the URL's own values win
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,  # ms: data unacknowledged that long
}


def _pg_options(url: str) -> dict[str, Any]:
    """``PG_OPTIONS`` the URL does not set itself (as ``?connect_timeout=...``)."""
    return {k: v for k, v in PG_OPTIONS.items() if not re.search(rf"[?&]{k}=", url)}


def unavailable_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean the projection's database cannot be used now (the server is down
    or restarting, the connection was lost, the disk is full or read-only, the file is locked),
    as opposed to a malformed event: the projection waits and tries again (``streams.sink``)."""
    import psycopg

    return (sqlite3.OperationalError, psycopg.OperationalError, psycopg.InterfaceError)


class Projection:
    def __init__(self, conn: Any, dialect: str, schema: str | None = None) -> None:
        if dialect not in _TOKENS:
            raise ValueError(f"unsupported dialect {dialect!r} (sqlite or postgresql)")
        if schema is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", schema):
            raise ValueError(f"bad schema name {schema!r}")
        self.conn, self.dialect, self.schema = conn, dialect, schema
        if dialect == "postgresql" and schema:
            self._run(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            self._run(f'SET search_path TO "{schema}"')
            self.conn.commit()

    @classmethod
    def connect(cls, url: str | Path, schema: str | None = None, migrate: bool = True) -> Projection:
        text = str(url)
        problem = url_problem(text)
        if problem:
            raise ValueError(problem)
        if text.startswith(("postgresql://", "postgres://")):
            import psycopg

            proj = cls(psycopg.connect(text, **_pg_options(text)), "postgresql", schema)
        else:
            path = text.removeprefix("sqlite:///").removeprefix("sqlite://") or ":memory:"
            if path != ":memory:":
                from atalaia.streams.private import private_sqlite

                Path(path).parent.mkdir(parents=True, exist_ok=True)
                private_sqlite(path, "the incidents and their audit trail (who did what)")  # 0600
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("PRAGMA foreign_keys = ON")
            if path != ":memory:":
                conn.execute("PRAGMA journal_mode = WAL")
            proj = cls(conn, "sqlite")
        if migrate:
            proj.migrate()
        return proj

    def close(self) -> None:
        self.conn.close()

    # ------------------------------------------------------------------ migrations
    def migrations(self) -> list[tuple[int, str, str]]:
        out = []
        for f in sorted(
            resources.files("atalaia.incidents").joinpath("migrations").iterdir(), key=lambda p: p.name
        ):
            m = re.fullmatch(r"(\d+)_(\w+)\.sql", f.name)
            if m:
                out.append((int(m.group(1)), m.group(2), f.read_text()))
        return out

    def schema_version(self) -> int:
        self._ensure_version_table()
        row = self._run("SELECT MAX(version) FROM incident_schema_version").fetchone()
        return int(row[0] or 0)

    def migrate(self) -> int:
        """Apply the migrations not applied yet (each in its own transaction); return the version."""
        self._ensure_version_table()
        for number, name, sql in self.migrations():
            self._begin()
            try:
                if self.dialect == "postgresql":
                    self._run("SELECT pg_advisory_xact_lock(hashtext('atalaia.incidents.migrate'))")
                done = self._run(
                    "SELECT 1 FROM incident_schema_version WHERE version = ?", (number,)
                ).fetchone()
                if not done:
                    for statement in _statements(sql.format(**_TOKENS[self.dialect])):
                        self._run(statement)
                    self._run(
                        "INSERT INTO incident_schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                        (number, name, datetime.now(UTC).isoformat()),
                    )
                self._commit()
            except Exception:
                self._rollback()
                raise
        return self.schema_version()

    def _ensure_version_table(self) -> None:
        self._begin()
        self._run(
            "CREATE TABLE IF NOT EXISTS incident_schema_version "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        self._commit()

    # ------------------------------------------------------------------ applying events
    def apply(
        self,
        events: Iterable[IncidentEvent | SilenceEvent | dict[str, Any]],
        errors: list[tuple[int, str]] | None = None,
    ) -> int:
        """Apply incident events in one transaction; return how many were new.

        A malformed event raises ``ValueError`` before anything is written, unless ``errors`` is
        given: then it is skipped and ``(index, message)`` appended there."""
        good = []
        for i, e in enumerate(events):
            if isinstance(e, IncidentEvent | SilenceEvent):  # typed: checked when it was decoded
                good.append(msgspec.to_builtins(e))
                continue
            problem = _malformed(e)
            if problem is None:
                good.append(e)
            elif errors is None:
                raise ValueError(f"event {i}: {problem}")
            else:
                errors.append((i, problem))
        silences = [e for e in good if e.get("kind") == "silence"]
        good = [e for e in good if e.get("kind", "incident") == "incident"]
        self._begin()
        try:
            applied = self._apply_batch(good)
            if silences:
                self.conn.cursor().executemany(
                    self._sql(_UPSERT_SILENCE), [_silence_row(e) for e in silences]
                )
            self._commit()
        except Exception:
            self._rollback()
            raise
        return applied

    def _apply_batch(self, events: list[dict[str, Any]]) -> int:
        """Coalesced: every new event gets its audit row, each incident one upsert (its newest event),
        each alarm one upsert (from the newest event that lists it). The version guards make the
        result the same as applying the events one by one, in any order."""
        fresh: dict[str, dict[str, Any]] = {}
        for e in events:
            fresh.setdefault(e["id"], e)
        ids = list(fresh)
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ", ".join("?" * len(chunk))
            for (seen,) in self._run(
                f"SELECT event_id FROM incident_audit WHERE event_id IN ({marks})", tuple(chunk)
            ):
                fresh.pop(seen, None)
        if not fresh:
            return 0
        new = sorted(fresh.values(), key=lambda e: (e["incident"], -e["version"]))
        cur = self.conn.cursor()
        cur.executemany(self._sql(_INSERT_AUDIT), [_audit_row(e) for e in new])
        newest: dict[str, dict[str, Any]] = {}
        alarm_rows: dict[tuple[str, str, str], tuple[Any, ...]] = {}
        for e in new:  # newest version first within each incident
            newest.setdefault(e["incident"], e)
            for a in e["alarms"]:
                k = (e["incident"], a["rule"], a["key"])
                if k not in alarm_rows:
                    alarm_rows[k] = _alarm_row(e, a)
        cur.executemany(self._sql(_UPSERT_INCIDENT), [_incident_row(e) for e in newest.values()])
        if alarm_rows:
            cur.executemany(self._sql(_UPSERT_ALARM), list(alarm_rows.values()))
        return len(new)

    # ------------------------------------------------------------------ queries (for the console)
    def open_incidents(self) -> list[dict[str, Any]]:
        """Incidents not closed, most recently changed first."""
        return self._dicts("SELECT * FROM incidents WHERE state <> 'closed' ORDER BY updated_at DESC, id")

    def incidents(self, limit: int = 100, state: str | None = None) -> list[dict[str, Any]]:
        if state:
            return self._dicts(
                "SELECT * FROM incidents WHERE state = ? ORDER BY updated_at DESC, id LIMIT ?", (state, limit)
            )
        return self._dicts("SELECT * FROM incidents ORDER BY updated_at DESC, id LIMIT ?", (limit,))

    def incident(self, incident: str) -> dict[str, Any] | None:
        rows = self._dicts("SELECT * FROM incidents WHERE id = ?", (incident,))
        return rows[0] if rows else None

    def alarms(self, incident: str) -> list[dict[str, Any]]:
        return self._dicts("SELECT * FROM incident_alarms WHERE incident = ? ORDER BY rule, key", (incident,))

    def history(self, incident: str) -> list[dict[str, Any]]:
        """The audit trail: every change with its time, actor and reason, oldest first."""
        return self._dicts("SELECT * FROM incident_audit WHERE incident = ? ORDER BY version", (incident,))

    def silences(self, include_expired: bool = False, limit: int = 500) -> list[dict[str, Any]]:
        """Runtime silences (latest state), newest first; without ``include_expired`` only those whose
        end is still ahead (their status is decided by the caller's clock)."""
        where = "" if include_expired else "WHERE last_change <> 'expired' "
        return self._dicts(f"SELECT * FROM silences {where}ORDER BY created_at DESC, id LIMIT ?", (limit,))

    # ------------------------------------------------------------------ plumbing
    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    def _run(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return self.conn.execute(self._sql(sql), params)

    def _dicts(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        cur = self._run(sql, params)
        names = [c[0] for c in cur.description]
        rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        if self.dialect == "postgresql":
            self.conn.rollback()  # end the read transaction psycopg opened
        return [_normalise(r) for r in rows]

    def _begin(self) -> None:
        if self.dialect == "sqlite":
            self.conn.execute("BEGIN")

    def _commit(self) -> None:
        self.conn.commit() if self.dialect == "postgresql" else self.conn.execute("COMMIT")

    def _rollback(self) -> None:
        """Called while handling an error: its own failure (a lost connection, a transaction
        SQLite already rolled back on a full disk) never hides that error."""
        if self.dialect == "postgresql":
            with contextlib.suppress(Exception):
                self.conn.rollback()
        elif self.conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")


_UPSERT_SILENCE = """
INSERT INTO silences (id, matchers, author, comment, starts_at, ends_at, created_at, source, expired_by,
                      last_change, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    ends_at = excluded.ends_at, expired_by = excluded.expired_by, last_change = excluded.last_change,
    updated_at = excluded.updated_at
WHERE silences.last_change <> 'expired'
"""


def _silence_row(e: dict[str, Any]) -> tuple[Any, ...]:
    return (
        str(e["id"]),
        orjson.dumps(list(e.get("matchers") or [])).decode(),
        str(e.get("author", "")),
        str(e.get("comment", "")),
        str(e["starts_at"]),
        str(e["ends_at"]),
        str(e.get("created_at") or e["at"]),
        str(e.get("source", "api")),
        e.get("expired_by"),
        str(e.get("change", "")),
        str(e["at"]),
    )


_REQUIRED = {
    "id": str,
    "incident": str,
    "version": int,
    "at": str,
    "change": str,
    "state": str,
    "active": bool,
    "severity": str,
    "title": str,
    "correlation": dict,
    "labels": dict,
    "alarms": list,
    "actor": str,
    "reason": str,
    "opened_at": str,
}
_ALARM_REQUIRED = {
    "rule": str,
    "key": str,
    "state": str,
    "severity": str,
    "count": int,
    "first_seen": str,
    "last_seen": str,
}


def _malformed(e: Any) -> str | None:
    """Why ``e`` is not an incident event the tables can take, or None."""
    if not isinstance(e, dict):
        return "not a JSON object"
    if e.get("kind") == "silence":
        ok = all(isinstance(e.get(n), str) for n in ("id", "at", "starts_at", "ends_at", "change"))
        return (
            None
            if ok and isinstance(e.get("matchers"), list)
            else "a silence event needs id, times, matchers"
        )
    if e.get("kind", "incident") != "incident":
        return None  # not an incident event: _apply_one skips it
    for name, kind in _REQUIRED.items():
        if not isinstance(e.get(name), kind):
            return f"{name} missing or not {kind.__name__}"
    if not isinstance(e.get("overlay"), str | None):
        return "overlay not str or null"
    if not isinstance(e.get("needs_ack"), bool | None):
        return "needs_ack not bool or null"
    if not isinstance(e.get("shelved_until_clear"), bool | None):
        return "shelved_until_clear not bool or null"
    for a in e["alarms"]:
        if not isinstance(a, dict):
            return "an alarm is not an object"
        for name, kind in _ALARM_REQUIRED.items():
            if not isinstance(a.get(name), kind):
                return f"alarm {name} missing or not {kind.__name__}"
    return None


def _audit_row(e: dict[str, Any]) -> tuple[Any, ...]:
    return (
        e["id"],
        e["incident"],
        e["version"],
        e["at"],
        e["change"],
        _json(e.get("changes") or [e["change"]]),
        e["state"],
        bool(e["active"]),
        e["severity"],
        e["actor"],
        e["reason"],
        e.get("command"),
    )


def _incident_row(e: dict[str, Any]) -> tuple[Any, ...]:
    return (
        e["incident"],
        e["version"],
        e["state"],
        bool(e["active"]),
        e["severity"],
        e["title"],
        _json(e["correlation"]),
        _json(e["labels"]),
        _json(e["location"]) if e.get("location") else None,
        e.get("alarm_count", len(e["alarms"])),
        e["opened_at"],
        e["at"],
        e.get("closed_at"),
        e.get("acknowledged_by"),
        e.get("shelved_until"),
        e.get("assignee"),
        e["change"],
        e["id"],
        e.get("overlay"),
        None if e.get("needs_ack") is None else bool(e["needs_ack"]),
        True if e.get("shelved_until_clear") else None,
    )


def _alarm_row(e: dict[str, Any], a: dict[str, Any]) -> tuple[Any, ...]:
    return (
        e["incident"],
        a["rule"],
        a["key"],
        e["version"],
        a.get("entity"),
        a["state"],
        a["severity"],
        a.get("value"),
        a["count"],
        a["first_seen"],
        a["last_seen"],
        a.get("suppressed"),
        bool(a.get("chattering", False)),
    )


def _json(v: Any) -> str:
    return orjson.dumps(v).decode()


def _statements(sql: str) -> list[str]:
    body = "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


def _normalise(row: dict[str, Any]) -> dict[str, Any]:
    for k, v in row.items():
        if k in _JSON_COLUMNS and isinstance(v, str):
            row[k] = orjson.loads(v)
        elif k in _BOOL_COLUMNS and v is not None:
            row[k] = bool(v)
        elif k in _TIME_COLUMNS and isinstance(v, datetime):
            row[k] = format_time(v)
    return row
