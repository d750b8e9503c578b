"""The console's live feed in a storm (console/live.py): what waits for a board's event stream is
the latest row of each incident, so a board that reads its stream is never dropped because one
fetched batch held more changes than a queue; a stream opened after a change was read is sent
that change (the list a board loads then is the SQL projection's, which may be behind); memory
stays bounded for a stream that does not read."""

from __future__ import annotations

import asyncio

import pytest

from atalaia.console import live
from atalaia.console.live import IncidentFeed


def row(incident: str, version: int, state: str = "unacknowledged") -> dict:
    return {"id": incident, "version": version, "state": state}


async def drain(sub) -> list[dict]:
    out = []
    while (r := await sub.get(0.01)) not in (None, False):
        out.append(r)
    return out


def test_a_storm_batch_larger_than_a_queue_keeps_the_stream_and_sends_each_incident_latest():
    feed = IncidentFeed("127.0.0.1:9", "atalaia.incidents")
    sub = feed.subscribe()
    # one fetched batch: 600 incidents opening, returning to normal and closing (1 800 changes),
    # read and published before the stream's handler runs again
    for state, version in (("unacknowledged", 1), ("returned-unacknowledged", 2), ("closed", 3)):
        for k in range(600):
            feed.publish(row(f"i{k}", version, state))
    assert not sub.dropped and sub in feed.subscribers, "a board that reads its stream is kept"
    got = asyncio.run(drain(sub))
    assert {r["id"]: (r["version"], r["state"]) for r in got} == {f"i{k}": (3, "closed") for k in range(600)}
    assert len(got) == 600


def test_a_stream_opened_after_a_change_was_read_is_sent_it():
    asyncio.run(opened_after_a_change())


async def opened_after_a_change():
    feed = IncidentFeed("127.0.0.1:9", "atalaia.incidents")
    feed.publish(row("a", 1))
    feed.publish(row("a", 2, "closed"))  # closed just before the board's stream opened
    feed.publish(row("b", 1))
    sub = feed.subscribe()
    assert [(r["id"], r["version"], r["state"]) for r in await drain(sub)] == [
        ("a", 2, "closed"),
        ("b", 1, "unacknowledged"),
    ]
    feed.publish(row("b", 2))
    assert [(r["id"], r["version"]) for r in await drain(sub)] == [("b", 2)]


def test_memory_is_bounded_for_a_stream_that_does_not_read(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(live, "PENDING_MAX", 50)
    monkeypatch.setattr(live, "RECENT_MAX", 20)
    feed = IncidentFeed("127.0.0.1:9", "atalaia.incidents")
    sub = feed.subscribe()
    for version in range(1, 5):  # changes to the same incidents take their place
        for k in range(50):
            feed.publish(row(f"i{k}", version))
    assert not sub.dropped and len(sub.pending) == 50
    feed.publish(row("one-more", 1))  # a 51st incident waiting: dropped (the board reloads)
    assert sub.dropped and sub not in feed.subscribers
    assert len(feed.recent) == 20
    got = asyncio.run(drain(feed.subscribe()))
    assert [r["id"] for r in got] == [f"i{k}" for k in range(31, 50)] + ["one-more"]


def test_recent_changes_are_forgotten_after_recent_s(monkeypatch: pytest.MonkeyPatch):
    clock = [1000.0]

    class Clock:  # the feed's clock only (the event loop keeps its own)
        monotonic = staticmethod(lambda: clock[0])
        time = staticmethod(lambda: clock[0])

    monkeypatch.setattr(live, "time", Clock)
    feed = IncidentFeed("127.0.0.1:9", "atalaia.incidents")
    feed.publish(row("old", 1))
    clock[0] += live.RECENT_S + 1
    feed.publish(row("new", 1))
    assert [r["id"] for r in asyncio.run(drain(feed.subscribe()))] == ["new"]


def tenant_row(incident: str, version: int, tenant: str) -> dict:
    return {**row(incident, version), "correlation": {"tenant": tenant}}


def test_a_tenant_scoped_stream_holds_only_its_tenant_rows_and_survives_another_tenant_storm(
    monkeypatch: pytest.MonkeyPatch,
):
    """A tenant-scoped user's stream waited with every tenant's rows (filtered only when sent),
    so another tenant's storm of more than ``PENDING_MAX`` incidents dropped it (the board
    reloaded, again and again) and held their memory; now it holds and is sent only its own."""
    monkeypatch.setattr(live, "PENDING_MAX", 50)
    feed = IncidentFeed("127.0.0.1:9", "atalaia.incidents")
    feed.publish(tenant_row("b-before", 1, "porto"))
    feed.publish(tenant_row("a-before", 1, "braga"))

    def sees(r: dict) -> bool:
        return (r.get("correlation") or {}).get("tenant") == "braga"

    sub = feed.subscribe(sees)
    for k in range(200):  # the other tenant's storm
        feed.publish(tenant_row(f"b{k}", 1, "porto"))
    feed.publish(tenant_row("a-after", 1, "braga"))
    assert not sub.dropped and sub in feed.subscribers
    assert [r["id"] for r in asyncio.run(drain(sub))] == ["a-before", "a-after"]


def test_a_waiting_change_keeps_the_server_time_it_first_waited_from(monkeypatch: pytest.MonkeyPatch):
    """The board says how far behind it is from the server time since which each change it is
    sent waited for it: a newer change of an incident still waiting keeps the first one's time
    (the board was behind on that incident since then), and the recent changes a new stream is
    sent first wait from the stream's opening."""
    clock = [1000.0]

    class Clock:  # the feed's clock only (the event loop keeps its own)
        monotonic = staticmethod(lambda: clock[0])
        time = staticmethod(lambda: clock[0])

    monkeypatch.setattr(live, "time", Clock)
    feed = IncidentFeed("127.0.0.1:9", "atalaia.incidents")
    feed.publish(row("old", 1))
    clock[0] = 1005.0
    sub = feed.subscribe()  # "old" replayed: it waits from now
    clock[0] = 1010.0
    feed.publish(row("a", 1))
    clock[0] = 1012.0
    feed.publish(row("a", 2))  # a newer change while "a" waits
    clock[0] = 1020.0
    feed.publish(row("b", 1))
    taken = []

    async def take():
        while (r := await sub.get(0.01)) not in (None, False):
            taken.append((r["id"], r["version"], sub.taken_since))

    async def both():
        await take()
        assert taken == [("old", 1, 1005.0), ("a", 2, 1010.0), ("b", 1, 1020.0)]
        clock[0] = 1030.0
        feed.publish(row("a", 3))  # sent since: waits from its own time again
        await take()

    asyncio.run(both())
    assert taken[-1] == ("a", 3, 1030.0) and not sub.since
