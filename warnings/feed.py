"""The public CAP feed: an Atom 1.0 document (RFC 4287) listing the active warnings, each entry
linking to its CAP document (``application/cap+xml``) at ``/cap/alerts/<identifier>.xml``.

>>> print(atom_feed([], "http://localhost:8080", updated="2026-12-04T17:00:00+00:00").decode())  # doctest: +ELLIPSIS
<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <id>http://localhost:8080/cap/feed.atom</id>
  ...
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import quote, urlencode

from lxml import etree

from atalaia.warnings.cap import CONTENT_TYPE, Q, cap_datetime

ATOM = "http://www.w3.org/2005/Atom"
A = f"{{{ATOM}}}"
FEED_PATH = "/cap/feed.atom"
FEED_TYPE = "application/atom+xml"
#: the route of a CAP document's page: any segment (aiohttp's default ``{name}`` leaves out ``{``
#: and ``}``, CAP-valid in an identifier, so their links answered 404)
ALERT_ROUTE = "/cap/alerts/{name:[^/]+}"


def alert_path(identifier: str) -> str:
    """The page of a CAP document: the identifier percent-encoded once, every character but
    letters, digits and ``_.-~`` (a ``/``, ``%``, ``?`` or ``#`` in an identifier is CAP-valid). The
    router decodes the segment once (``http.pages``), so every identifier leads to its own document.

    >>> alert_path("PT-%41/x")
    '/cap/alerts/PT-%2541%2Fx.xml'
    """
    return f"/cap/alerts/{quote(identifier, safe='')}.xml"


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    el = etree.SubElement(parent, A + tag, attrs)
    if text is not None:
        el.text = text
    return el


def _entry_fields(xml: bytes | str) -> dict[str, str | None]:
    root = etree.fromstring(xml.encode() if isinstance(xml, str) else xml)
    info = root.find(Q + "info")

    def text(tag: str) -> str | None:
        return info.findtext(Q + tag) if info is not None else None

    areas = [a.findtext(Q + "areaDesc") for a in info.iter(Q + "area")] if info is not None else []
    return {
        "identifier": root.findtext(Q + "identifier"),
        "sender": root.findtext(Q + "sender"),
        "sent": root.findtext(Q + "sent"),
        "status": root.findtext(Q + "status"),
        "msgType": root.findtext(Q + "msgType"),
        "title": text("headline") or text("event"),
        "summary": text("description") or text("headline") or text("event"),
        "severity": text("severity"),
        "expires": text("expires"),
        "area": ", ".join(a for a in areas if a),
    }


def atom_feed(
    documents: Iterable[bytes | str],
    base_url: str,
    *,
    updated: str,
    title: str = "Atalaia — avisos à população / public warnings",
    tenant: str | None = None,
) -> bytes:
    """The Atom feed of these CAP documents (the active warnings), newest first. ``updated`` is
    the feed's time when it has no entry newer (e.g. the time the last warning left it)."""
    base = base_url.rstrip("/")
    entries = sorted((_entry_fields(x) for x in documents), key=lambda e: e["sent"] or "", reverse=True)
    stamp = max([cap_datetime(updated)] + [cap_datetime(e["sent"]) for e in entries if e["sent"]])
    self_url = base + FEED_PATH + (f"?{urlencode({'tenant': tenant})}" if tenant else "")
    feed = etree.Element(A + "feed", nsmap={None: ATOM})
    _sub(feed, "id", self_url)
    _sub(feed, "title", title)
    _sub(feed, "updated", stamp)
    _sub(feed, "link", rel="self", type=FEED_TYPE, href=self_url)
    author = _sub(feed, "author")
    _sub(author, "name", "Atalaia")
    _sub(feed, "generator", "Atalaia")
    for e in entries:
        href = base + alert_path(e["identifier"] or "")
        entry = _sub(feed, "entry")
        _sub(entry, "id", href)
        title = e["title"] or e["identifier"] or ""
        if e["status"] != "Actual":
            title = f"[{e['status']}] {title}"
        _sub(entry, "title", title)
        _sub(entry, "updated", cap_datetime(e["sent"]))
        _sub(entry, "published", cap_datetime(e["sent"]))
        who = _sub(entry, "author")
        _sub(who, "name", e["sender"] or "")
        _sub(entry, "link", rel="alternate", type=CONTENT_TYPE, href=href)
        for term in filter(None, (e["status"], e["msgType"], e["severity"])):
            _sub(entry, "category", term=term)
        summary = e["summary"] or ""
        if e["area"]:
            summary = f"{summary} ({e['area']})" if summary else e["area"]
        if e["expires"]:
            summary += f" — até / until {e['expires']}"
        _sub(entry, "summary", summary)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + etree.tostring(
        feed, encoding="UTF-8", pretty_print=True
    )
