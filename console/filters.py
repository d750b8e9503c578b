"""Query filters of ``GET /api/incidents``, parsed and checked before any row is read: a bad
value is a :class:`FilterError` naming the field (the API answers 400 problem+json)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from atalaia.console.present import SEVERITIES, STATES, severity_rank, triage
from atalaia.rules.matchers import Matcher

MAX_LIMIT = 1000
SCAN_LIMIT = 10_000  # rows read from the projection for state=all|closed before filtering


class FilterError(ValueError):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.field, self.message = name, message


@dataclass(frozen=True, slots=True)
class IncidentFilter:
    states: tuple[str, ...] | None = None  # None = every state
    open_only: bool = True
    severities: tuple[str, ...] | None = None
    min_severity: str | None = None
    labels: tuple[Matcher, ...] = ()  # label=name=value: equalities (``rules.matchers``)
    text: str | None = None
    since: datetime | None = None  # updated at or after
    until: datetime | None = None  # updated before
    limit: int = 200
    sort: str = "triage"

    def match(self, i: dict[str, Any]) -> bool:
        if self.open_only and i.get("state") == "closed":
            return False
        if self.states is not None and i.get("state") not in self.states:
            return False
        if self.severities is not None and i.get("severity") not in self.severities:
            return False
        if self.min_severity is not None and severity_rank(i.get("severity")) < severity_rank(
            self.min_severity
        ):
            return False
        labels = i.get("labels") or {}
        correlation = i.get("correlation") or {}
        for m in self.labels:
            if not m.accepts(str(labels.get(m.name, correlation.get(m.name, "")))):
                return False
        if self.text:
            hay = " ".join(
                [str(i.get("id", "")), str(i.get("title", "")), str(i.get("assignee") or "")]
                + [f"{k}={v}" for k, v in {**correlation, **labels}.items()]
            ).casefold()
            if self.text.casefold() not in hay:
                return False
        if self.since or self.until:
            t = parse_time(str(i.get("updated_at") or ""), "updated_at")
            if self.since and t < self.since:
                return False
            if self.until and t >= self.until:
                return False
        return True

    def apply(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.choose(rows)[0]

    def choose(self, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
        """The first ``limit`` rows that match, in order, and how many match in all."""
        chosen = [r for r in rows if self.match(r)]
        if self.sort == "triage":
            chosen = triage(chosen)
        else:
            chosen.sort(key=lambda r: (str(r.get("updated_at") or ""), r["id"]), reverse=True)
        return chosen[: self.limit], len(chosen)


def parse_time(text: str, name: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise FilterError(name, f"{text!r} is not an RFC 3339 time (e.g. 2026-01-28T10:00:00Z)") from None
    if t.tzinfo is None:
        raise FilterError(name, f"{text!r} has no offset (add Z or +00:00)")
    try:
        return t.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+14:00: before the first representable instant
        raise FilterError(name, f"{text!r} is out of range") from None


def _choices(name: str, raw: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    values = tuple(v.strip() for v in raw.split(",") if v.strip())
    if not values:
        raise FilterError(name, "empty")
    bad = [v for v in values if v not in allowed]
    if bad:
        raise FilterError(name, f"unknown {', '.join(map(repr, bad))} (one of {', '.join(allowed)})")
    return values


KNOWN = {"state", "severity", "min_severity", "label", "q", "since", "until", "limit", "sort"}


def parse_filter(query: Any) -> IncidentFilter:
    """``query`` is a multidict (aiohttp ``request.query``) or a plain dict."""
    get_all = getattr(query, "getall", None)

    def values(name: str) -> list[str]:
        if get_all is not None:
            return list(get_all(name, []))
        v = query.get(name)
        return [] if v is None else (list(v) if isinstance(v, list | tuple) else [v])

    unknown = sorted(set(query.keys()) - KNOWN)
    if unknown:
        raise FilterError(unknown[0], f"unknown filter (known: {', '.join(sorted(KNOWN))})")
    kw: dict[str, Any] = {}
    for name in KNOWN - {"label"}:
        if len(values(name)) > 1:
            raise FilterError(name, "given more than once")
    state = query.get("state", "open")
    if state == "open":
        kw.update(states=None, open_only=True)
    elif state == "all":
        kw.update(states=None, open_only=False)
    else:
        kw.update(states=_choices("state", state, STATES), open_only=False)
    if "severity" in query:
        kw["severities"] = _choices("severity", query["severity"], SEVERITIES)
    if "min_severity" in query:
        kw["min_severity"] = _choices("min_severity", query["min_severity"], SEVERITIES)[0]
    labels = []
    for raw in values("label"):
        name, sep, value = raw.partition("=")
        if not sep or not name.strip():
            raise FilterError("label", f"{raw!r}: expected name=value, e.g. parish=Bonfim")
        labels.append(Matcher(name.strip(), "=", value))
    kw["labels"] = tuple(labels)
    if query.get("q"):
        kw["text"] = query["q"][:200]
    for name in ("since", "until"):
        if name in query:
            kw[name] = parse_time(query[name], name)
    if kw.get("since") and kw.get("until") and kw["since"] >= kw["until"]:
        raise FilterError("until", "must be after since")
    if "limit" in query:
        try:
            limit = int(query["limit"])
        except ValueError:
            raise FilterError("limit", f"{query['limit']!r} is not an integer") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise FilterError("limit", f"must be between 1 and {MAX_LIMIT}")
        kw["limit"] = limit
    if "sort" in query:
        kw["sort"] = _choices("sort", query["sort"], ("triage", "updated"))[0]
    return IncidentFilter(**kw)
