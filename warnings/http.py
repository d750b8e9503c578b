"""Public CAP pages on the worker's HTTP server: ``GET /cap/feed.atom`` (Atom 1.0, the active
warnings; ``?tenant=NAME`` for one tenant's) and ``GET /cap/alerts/<identifier>.xml`` (each issued CAP document, past ones too). They
read the warnings stage's state in this process (``atalaia.commands`` has one partition)."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

from atalaia.warnings.cap import CONTENT_TYPE
from atalaia.warnings.config import WarningsConfig
from atalaia.warnings.feed import ALERT_ROUTE, FEED_PATH, FEED_TYPE, atom_feed


def _core(stage: Any) -> Any | None:
    cores = getattr(stage, "cores", {}) or {}
    return cores.get(0) or next(iter(cores.values()), None)


def feed_bytes(
    stage: Any, config: WarningsConfig, now: datetime | None = None, tenant: str | None = None
) -> bytes:
    """The feed of every active warning, or with ``tenant`` (``?tenant=`` on the page) of one
    municipality's or service's only."""
    core = _core(stage)
    when = (now or datetime.now(UTC)).replace(microsecond=0)
    docs = core.active_documents(tenant, when) if core else []
    title = f"{config.feed_title} — {tenant}" if tenant else config.feed_title
    return atom_feed(docs, config.base_url, updated=when.isoformat(), title=title, tenant=tenant)


#: Caching of the public pages. CAP feed consumers (aggregators, apps, other authorities' systems)
#: poll the feed, typically every 30 s to a few minutes; a warning is life-safety news, so a shared
#: cache may keep it 30 s at most (a new or cancelled warning reaches every reader within 30 s of
#: the server), and then revalidates with the ETag: a 304, no body, while nothing changed.
CACHE_CONTROL = "public, max-age=30"
#: tenants (``?tenant=``) whose feed is kept (least recently asked for dropped first)
FEED_CACHE_TENANTS = 256


def _etag(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def not_modified(headers: Any, etag: str, modified: datetime | None) -> bool:
    """Whether the request's ``If-None-Match`` (else ``If-Modified-Since``) matches (RFC 9110 13.1)."""
    inm = headers.get("If-None-Match")
    if inm is not None:
        tags = {t.strip().removeprefix("W/") for t in inm.split(",")}
        return "*" in tags or etag in tags
    ims = headers.get("If-Modified-Since")
    if ims is None or modified is None:
        return False
    try:
        since = parsedate_to_datetime(ims)
    except (TypeError, ValueError, IndexError):
        return False
    return since.tzinfo is not None and modified <= since


class FeedCache:
    """The feed's bytes, built again only when what it lists changed. Its input is the list of CAP
    documents ``active_documents`` gives (cheap: no parsing); the state behind it changes when the
    warnings stage processes a command (issue, update, cancel), when its tick expires warnings, when
    its state is restored (a rebalance, a restart) and, for the Cancel messages, with time alone
    (``Workflow.in_feed``): comparing that list catches all of them, without a hook into the stage.
    What costs is building the feed (every document parsed, the XML written: 163 ms for 1000
    warnings), done once per change. The feed's ``updated`` and ``Last-Modified`` are when the
    change was seen."""

    def __init__(self, stage: Any, config: WarningsConfig) -> None:
        self.stage = stage
        self.config = config
        self._feeds: OrderedDict[str | None, tuple[tuple[str, ...], bytes, str, datetime]] = OrderedDict()

    def get(self, tenant: str | None = None, now: datetime | None = None) -> tuple[bytes, str, datetime]:
        """(feed, ETag, Last-Modified) of every active warning, or of ``tenant``'s."""
        when = (now or datetime.now(UTC)).replace(microsecond=0)
        core = _core(self.stage)
        docs = tuple(core.active_documents(tenant, when)) if core else ()
        hit = self._feeds.get(tenant)
        if hit is not None and hit[0] == docs:
            self._feeds.move_to_end(tenant)
            return hit[1], hit[2], hit[3]
        if hit is not None and when <= hit[3]:  # changed within the second it was built: a later
            when = hit[3] + timedelta(seconds=1)  # Last-Modified, or If-Modified-Since would match
        title = f"{self.config.feed_title} — {tenant}" if tenant else self.config.feed_title
        body = atom_feed(docs, self.config.base_url, updated=when.isoformat(), title=title, tenant=tenant)
        etag = _etag(body)
        self._feeds[tenant] = (docs, body, etag, when)
        self._feeds.move_to_end(tenant)
        while len(self._feeds) > FEED_CACHE_TENANTS:
            self._feeds.popitem(last=False)
        return body, etag, when


def pages(stage: Any, config: WarningsConfig) -> tuple[Any, Any]:
    """The handlers of ``GET /cap/feed.atom`` and ``GET /cap/alerts/{name}`` (aiohttp requests)."""
    from aiohttp import web

    from atalaia.console.problem import PROBLEM, problem
    from atalaia.streams.ingest.entity import bad_tenant

    feeds = FeedCache(stage, config)

    def answer(request: Any, body: bytes, ctype: str, etag: str, modified: datetime | None) -> Any:
        headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
        if modified is not None:
            headers["Last-Modified"] = format_datetime(modified, usegmt=True)
        if not_modified(request.headers, etag, modified):
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, content_type=ctype, headers=headers)

    async def feed(request: Any) -> Any:
        tenant = request.query.get("tenant") or None
        why = bad_tenant(tenant)
        if why is not None:  # (a control character cannot go into the feed's XML: it answered 500)
            return web.json_response(problem(400, "Bad tenant", why), status=400, content_type=PROBLEM)
        body, etag, modified = feeds.get(tenant)
        return answer(request, body, FEED_TYPE, etag, modified)

    async def alert(request: Any, name: str) -> Any:
        """``name`` is the path segment as the router gives it: percent-decoded once, the one
        encoding ``feed.alert_path`` applies (decoding it again served ``PT-A`` at the link of
        ``PT-%41``, and a link with ``%2F`` in its identifier answered 404)."""
        core = _core(stage)
        identifier = name.removesuffix(".xml")
        xml = core.document(identifier) if core and name.endswith(".xml") else None
        if xml is None:
            return web.json_response(
                problem(404, "No such warning", f"no CAP document {identifier!r}"),
                status=404,
                content_type=PROBLEM,
            )
        body = xml.encode()  # an issued document never changes; hashing its few KiB costs microseconds
        return answer(request, body, CONTENT_TYPE, _etag(body), None)

    return feed, alert


def install(app: Any, stage: Any, config: WarningsConfig) -> None:
    import faust

    feed, alert = pages(stage, config)

    @app.page(FEED_PATH)
    class CapFeed(faust.web.View):
        async def get(self, request: Any) -> Any:
            return await feed(request)

    @app.page(ALERT_ROUTE)
    class CapAlert(faust.web.View):
        async def get(self, request: Any, name: str) -> Any:
            return await alert(request, name)
