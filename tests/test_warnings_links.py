"""The public link of an issued warning (``/cap/alerts/<identifier>.xml``, in the Atom feed, the
console and the channels' messages) leads to that warning's own document, whatever characters its
CAP identifier holds: a reader who follows the link of one warning must never receive another."""

from __future__ import annotations

import asyncio

import feedparser
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree
from test_feed_cache import CFG, cap_app
from test_warnings_feed import DRAFT, T0, Stage, issue
from yarl import URL

from atalaia.warnings.cap import Q
from atalaia.warnings.draft import _BAD_ID_CHARS
from atalaia.warnings.feed import ALERT_ROUTE, alert_path
from atalaia.warnings.http import pages
from atalaia.warnings.stage import WarningsCore


async def test_every_feed_link_serves_its_own_warning() -> None:
    core = WarningsCore()
    idents = ["PT-A", "PT-%41", "PT-1%2F..%2F", "PT-1/../x", "PT-é?q=1#f", "PT-a+b;c", "PT-{1}"]
    for i, ident in enumerate(idents):
        draft = {**DRAFT, "identifier": ident, "expires": "2099-01-01T00:00:00+00:00"}  # (in the feed now)
        draft["headline"] = {"pt-PT": f"Aviso {i}", "en-GB": f"Warning {i}"}
        issue(core, draft, T0)
    async with TestClient(TestServer(cap_app(Stage(core)))) as client:
        feed = feedparser.parse(await (await client.get("/cap/feed.atom")).read())
        links = [e.link for e in feed.entries]
        assert len(links) == len(idents)
        served = []
        for link in links:
            path = link.removeprefix(CFG.base_url.rstrip("/"))
            r = await client.get(URL(path, encoded=True))  # as a feed reader sends it: not re-encoded
            assert r.status == 200, (link, await r.text())
            served.append(etree.fromstring(await r.read()).findtext(Q + "identifier"))
            assert link.endswith(alert_path(served[-1]))
        assert sorted(served) == sorted(idents)


class _Docs:
    """A warnings core holding one document per identifier (what ``pages`` reads)."""

    def __init__(self, identifier: str) -> None:
        self.identifier = identifier

    def document(self, identifier: str) -> str | None:
        return f"<alert>{self.identifier}</alert>" if identifier == self.identifier else None


# CAP 1.2 §3.2.1: any text without spaces, commas, '<' or '&' (and XML's characters)
# (with what URLs make special drawn often: percent escapes, '/', '..', '?', '#', braces)
identifiers = (
    st.lists(
        st.one_of(
            st.sampled_from(["%41", "%2F", "%252F", "%", "/", "..", "?", "#", "{", "}", "+", ";"]),
            st.text(
                st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), min_size=1, max_size=5
            ),
        ),
        min_size=1,
        max_size=6,
    )
    .map("".join)
    .filter(lambda s: not _BAD_ID_CHARS.search(s))
)


@settings(max_examples=300, deadline=None)
@given(identifiers)
def test_the_link_of_any_identifier_resolves_back_to_it(identifier: str) -> None:
    stage = type("S", (), {"cores": {0: _Docs(identifier)}})()
    _, alert = pages(stage, CFG)
    app = web.Application()
    app.router.add_get(ALERT_ROUTE, alert)

    async def get() -> web.Response:
        req = make_mocked_request("GET", alert_path(identifier), app=app)
        match = await app.router.resolve(req)
        assert match.route.resource is not None and match.http_exception is None
        return await alert(req, match["name"])

    r = asyncio.run(get())
    assert r.status == 200 and r.body == f"<alert>{identifier}</alert>".encode()
