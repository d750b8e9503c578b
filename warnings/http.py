"""Public CAP pages on the worker's HTTP server: ``GET /cap/feed.atom`` (Atom 1.0, the active
warnings; ``?tenant=NAME`` for one tenant's) and ``GET /cap/alerts/<identifier>.xml`` (each issued CAP document, past ones too). They
read the warnings stage's state in this process (``atalaia.commands`` has one partition)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from atalaia.warnings.cap import CONTENT_TYPE
from atalaia.warnings.config import WarningsConfig
from atalaia.warnings.feed import FEED_PATH, FEED_TYPE, atom_feed


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


def install(app: Any, stage: Any, config: WarningsConfig) -> None:
    import faust

    from atalaia.console.problem import PROBLEM, problem

    @app.page(FEED_PATH)
    class CapFeed(faust.web.View):
        async def get(self, request: Any) -> Any:
            from atalaia.streams.ingest.entity import bad_tenant

            tenant = request.query.get("tenant") or None
            why = bad_tenant(tenant)
            if why is not None:  # (a control character cannot go into the feed's XML: it answered 500)
                return self.json(problem(400, "Bad tenant", why), status=400, content_type=PROBLEM)
            return self.bytes(feed_bytes(stage, config, tenant=tenant), content_type=FEED_TYPE)

    @app.page("/cap/alerts/{name}")
    class CapAlert(faust.web.View):
        async def get(self, request: Any, name: str) -> Any:
            core = _core(stage)
            identifier = unquote(name).removesuffix(".xml")
            xml = core.document(identifier) if core and name.endswith(".xml") else None
            if xml is None:
                return self.json(
                    problem(404, "No such warning", f"no CAP document {identifier!r}"),
                    status=404,
                    content_type=PROBLEM,
                )
            return self.bytes(xml.encode(), content_type=CONTENT_TYPE)
