"""The public CAP pages are cached (``warnings.http``): the feed is built once per change of what it
lists (issue, cancel, expiry, restore, a Cancel leaving with time), not per request (1000 warnings
had cost 163 ms of the ops process per request), and both pages send an ETag and Cache-Control and
answer a matching ``If-None-Match`` (or ``If-Modified-Since``) with a 304 and no body."""

from __future__ import annotations

from datetime import timedelta
from email.utils import format_datetime
from typing import Any

import feedparser
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from test_warnings_feed import DRAFT, T0, Stage, issue, run

from atalaia.console.problem import PROBLEM
from atalaia.warnings import http as cap_http
from atalaia.warnings.config import WarningsConfig
from atalaia.warnings.feed import ALERT_ROUTE, FEED_PATH, FEED_TYPE
from atalaia.warnings.http import FeedCache, pages
from atalaia.warnings.stage import WarningsCore

CFG = WarningsConfig(base_url="https://avisos.example/")


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times the feed was built (``atom_feed`` parses every document)."""
    n: list[int] = []
    real = cap_http.atom_feed

    def counting(*a: Any, **kw: Any) -> bytes:
        n.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(cap_http, "atom_feed", counting)
    return n


def cancel(core: WarningsCore, warning: str, at: Any) -> dict:
    c = run(core, at, action="cancel", warning=warning, actor="ana", role="operator", reason="river falling")[
        -1
    ]["warning"]
    run(core, at, action="submit", warning=c, actor="ana", role="operator")
    run(core, at, action="approve", warning=c, actor="rui", role="approver")
    return next(
        o
        for o in run(core, at, action="issue", warning=c, actor="ana", role="operator")
        if o["kind"] == "cap"
    )


def test_the_feed_is_built_again_only_when_what_it_lists_changes(builds: list[int]) -> None:
    core = WarningsCore()
    stage = Stage(core)
    feeds = FeedCache(stage, CFG)
    w, cap = issue(core, DRAFT, T0)
    t = T0 + timedelta(minutes=1)
    body, etag, modified = feeds.get(now=t)
    assert len(builds) == 1 and modified == t
    for later in (t, t + timedelta(seconds=5), t + timedelta(minutes=10)):  # nothing changed
        assert feeds.get(now=later) == (body, etag, modified)
    assert len(builds) == 1
    assert [e.id for e in feedparser.parse(body).entries] == [
        f"https://avisos.example/cap/alerts/{cap['identifier']}.xml"
    ]

    # a restored state (rebalance, restart) with the same warnings: the same feed and ETag
    stage.cores = {0: WarningsCore(state=core.snapshot())}
    assert feeds.get(now=t + timedelta(minutes=11)) == (body, etag, modified) and len(builds) == 1
    stage.cores = {0: core}

    # a command: a new warning is issued
    issue(core, {**DRAFT, "headline": {"pt-PT": "Outro", "en-GB": "Other"}}, T0 + timedelta(minutes=20))
    body2, etag2, modified2 = feeds.get(now=T0 + timedelta(minutes=21))
    assert len(builds) == 2 and etag2 != etag and modified2 > modified
    assert len(feedparser.parse(body2).entries) == 2

    # a cancel: the warning is replaced by its Cancel
    at = T0 + timedelta(hours=1)
    c = cancel(core, w, at)
    body3, etag3, _ = feeds.get(now=at)
    assert len(builds) == 3 and etag3 != etag2 and c["identifier"] in body3.decode()

    # time alone: the Cancel leaves once the warning would have expired (no tick has run)
    body4, _, _ = feeds.get(now=T0 + timedelta(hours=14))
    assert len(builds) == 4 and c["identifier"] not in body4.decode()

    # the tick expires the last warning
    core.tick((T0 + timedelta(days=2)).timestamp())
    body5, _, _ = feeds.get(now=T0 + timedelta(days=2))
    assert len(builds) == 5 and feedparser.parse(body5).entries == []

    # each tenant's feed is kept apart
    feeds.get("porto", now=T0 + timedelta(days=2))
    feeds.get(now=T0 + timedelta(days=2))
    assert len(builds) == 6


def test_a_change_within_the_second_the_feed_was_built_gets_a_later_last_modified(builds: list[int]) -> None:
    core = WarningsCore()
    feeds = FeedCache(Stage(core), CFG)
    _, first, modified = feeds.get(now=T0)
    issue(core, DRAFT, T0)
    _, second, modified2 = feeds.get(now=T0 + timedelta(milliseconds=500))
    assert second != first and modified2 > modified


def cap_app(stage: Stage) -> web.Application:
    feed, alert = pages(stage, CFG)
    app = web.Application()
    app.router.add_get(FEED_PATH, feed)

    async def one(request: web.Request) -> web.Response:
        return await alert(request, request.match_info["name"])

    app.router.add_get(ALERT_ROUTE, one)
    return app


async def test_the_feed_page_sends_an_etag_and_answers_304_while_nothing_changed(builds: list[int]) -> None:
    core = WarningsCore()
    issue(core, DRAFT, T0)
    async with TestClient(TestServer(cap_app(Stage(core)))) as client:
        r = await client.get(FEED_PATH)
        body = await r.read()
        assert r.status == 200 and r.headers["Content-Type"].startswith(FEED_TYPE)
        etag, cache = r.headers["ETag"], r.headers["Cache-Control"]
        assert etag.startswith('"') and "max-age=" in cache and "public" in cache
        assert len(feedparser.parse(body).entries) == 1
        modified = r.headers["Last-Modified"]

        for inm in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            r = await client.get(FEED_PATH, headers={"If-None-Match": inm})
            assert r.status == 304 and await r.read() == b"", inm
            assert r.headers["ETag"] == etag and r.headers["Cache-Control"] == cache
        r = await client.get(FEED_PATH, headers={"If-Modified-Since": modified})
        assert r.status == 304
        r = await client.get(FEED_PATH, headers={"If-None-Match": '"other"', "If-Modified-Since": modified})
        assert r.status == 200 and await r.read() == body  # If-None-Match decides when both are sent
        assert len(builds) == 1  # one build for all of these requests

        issue(core, {**DRAFT, "headline": {"pt-PT": "Outro", "en-GB": "Other"}}, T0 + timedelta(minutes=1))
        r = await client.get(FEED_PATH, headers={"If-None-Match": etag})
        assert r.status == 200 and r.headers["ETag"] != etag
        assert len(feedparser.parse(await r.read()).entries) == 2
        old = format_datetime(T0, usegmt=True)
        assert (await client.get(FEED_PATH, headers={"If-Modified-Since": old})).status == 200

        r = await client.get(FEED_PATH, params={"tenant": "porto"}, headers={"If-None-Match": etag})
        assert r.status == 200 and r.headers["ETag"] != etag
        r = await client.get(FEED_PATH, params={"tenant": "a\x01b"})
        assert r.status == 400 and r.headers["Content-Type"].startswith(PROBLEM)


async def test_a_cap_document_page_sends_an_etag_and_answers_304() -> None:
    core = WarningsCore()
    _, cap = issue(core, DRAFT, T0)
    async with TestClient(TestServer(cap_app(Stage(core)))) as client:
        path = f"/cap/alerts/{cap['identifier']}.xml"
        r = await client.get(path)
        assert r.status == 200 and (await r.text()) == cap["xml"]
        etag = r.headers["ETag"]
        assert "max-age=" in r.headers["Cache-Control"]
        r = await client.get(path, headers={"If-None-Match": etag})
        assert r.status == 304 and await r.read() == b"" and r.headers["ETag"] == etag
        r = await client.get("/cap/alerts/nope.xml", headers={"If-None-Match": etag})
        assert r.status == 404 and r.headers["Content-Type"].startswith(PROBLEM)
