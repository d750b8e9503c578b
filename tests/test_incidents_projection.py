"""The SQL projection (SQLite and PostgreSQL) matches the incident events, idempotently and in any
order; migrations are numbered and recorded."""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterator

import pytest

from atalaia.incidents.config import IncidentConfig
from atalaia.incidents.events import IncidentEvent
from atalaia.incidents.projection import Projection
from atalaia.incidents.scenarios import STORM_CONFIG, porto_storm
from atalaia.incidents.testing import Driver

PG_URL = os.environ.get("ATALAIA_TEST_POSTGRES", "postgresql://127.0.0.1:5432/test")


def _pg_available() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_URL, connect_timeout=3) as c:
            c.execute("SELECT 1")
        return None
    except Exception as e:  # any failure to reach the server means: skip, saying why
        return f"PostgreSQL not reachable at {PG_URL}: {e}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def projection(request: pytest.FixtureRequest, tmp_path) -> Iterator[Projection]:
    if request.param == "sqlite":
        proj = Projection.connect(f"sqlite:///{tmp_path / 'incidents.db'}")
        yield proj
        proj.close()
        return
    why = _pg_available()
    if why:
        pytest.skip(why)
    schema = f"atalaia_test_{uuid.uuid4().hex[:12]}"
    proj = Projection.connect(PG_URL, schema=schema)
    try:
        yield proj
    finally:
        proj.conn.rollback()
        proj.conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        proj.conn.commit()
        proj.close()


@pytest.fixture(scope="module")
def storm_events() -> list[IncidentEvent]:
    d = Driver(IncidentConfig.model_validate(STORM_CONFIG))
    for i, tr in enumerate(porto_storm()):
        d.step(tr, i * 20)
    first = sorted(d.state.incidents)[0]
    d.command("comment", at=4000, incident=first, reason="fire brigade on site")
    for iid in sorted(d.state.incidents):
        if d.current(iid).state == "returned-unacknowledged":
            d.command("acknowledge", at=4000, incident=iid)
    d.tick(4000 + 301)
    d.fire("river-level-high", "porto-99", at=4400, parish="Bonfim", severity="critical")
    d.command("shelve", at=4410, reason="crew dispatched", duration="1h")
    return d.events()


def check_matches(proj: Projection, events: list[IncidentEvent]) -> None:
    latest: dict[str, IncidentEvent] = {}
    for e in events:
        latest[e.incident] = e
    rows = {r["id"]: r for r in proj.incidents(limit=1000)}
    assert set(rows) == set(latest)
    for iid, e in latest.items():
        r = rows[iid]
        assert (r["version"], r["state"], r["active"], r["severity"], r["title"], r["alarm_count"]) == (
            e.version,
            e.state,
            e.active,
            e.severity,
            e.title,
            e.alarm_count,
        )
        assert (r["correlation"], r["labels"], r["location"]) == (e.correlation, e.labels, e.location)
        assert (
            r["opened_at"],
            r["updated_at"],
            r["closed_at"],
            r["shelved_until"],
            r["acknowledged_by"],
        ) == (e.opened_at, e.at, e.closed_at, e.shelved_until, e.acknowledged_by)
        alarms = {(a["rule"], a["key"]): a for a in proj.alarms(iid)}
        assert len(alarms) == e.alarm_count
        for a in e.alarms:
            row = alarms[(a.rule, a.key)]
            assert (
                row["state"],
                row["severity"],
                row["value"],
                row["count"],
                row["first_seen"],
                row["last_seen"],
                row["suppressed"],
                row["chattering"],
            ) == (
                a.state,
                a.severity,
                a.value,
                a.count,
                a.first_seen,
                a.last_seen,
                a.suppressed,
                a.chattering,
            )
        history = proj.history(iid)
        mine = [x for x in events if x.incident == iid]
        assert [
            (
                h["event_id"],
                h["version"],
                h["change"],
                h["changes"],
                h["state"],
                h["actor"],
                h["reason"],
                h["at"],
            )
            for h in history
        ] == [(x.id, x.version, x.change, x.changes, x.state, x.actor, x.reason, x.at) for x in mine]


def test_projection_matches_the_storm_events(
    projection: Projection, storm_events: list[IncidentEvent]
) -> None:
    assert projection.apply(storm_events) == len(storm_events)
    check_matches(projection, storm_events)
    open_ = projection.open_incidents()
    assert [r["state"] for r in open_] == ["shelved"] and open_[0]["shelved_until"] is not None
    assert any(
        h["change"] == "commented" and h["reason"] == "fire brigade on site"
        for r in projection.incidents(limit=100)
        for h in projection.history(r["id"])
    )


def test_applying_again_or_in_any_order_gives_the_same_tables(
    projection: Projection, storm_events: list[IncidentEvent]
) -> None:
    shuffled = list(storm_events)
    random.Random(3).shuffle(shuffled)
    half = len(shuffled) // 2
    assert projection.apply(e.to_dict() for e in shuffled[:half]) == half  # dicts, as read from the topic
    assert projection.apply(shuffled) == len(shuffled) - half
    assert projection.apply(storm_events) == 0
    check_matches(projection, storm_events)


def test_migrations_are_numbered_recorded_and_rerunnable(projection: Projection) -> None:
    numbers = [n for n, _, _ in projection.migrations()]
    assert numbers == sorted(numbers) and numbers[0] == 1
    assert projection.schema_version() == numbers[-1]
    assert projection.migrate() == numbers[-1]  # nothing left to do


def test_a_malformed_event_is_refused_before_anything_is_written(
    projection: Projection, storm_events: list[IncidentEvent]
) -> None:
    bad = storm_events[0].to_dict()
    del bad["title"]
    with pytest.raises(ValueError, match="event 1: title missing"):
        projection.apply([storm_events[1], bad])
    assert projection.incidents() == []
    errors: list[tuple[int, str]] = []
    assert projection.apply([storm_events[0], bad, [1, 2], storm_events[1]], errors) == 2
    assert errors == [(1, "title missing or not str"), (2, "not a JSON object")]
