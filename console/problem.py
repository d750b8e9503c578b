"""RFC 9457 problem details: the body of every 4xx/5xx answer of the HTTP API (console, CAP
pages, ingest endpoints, ``/health`` and ``/metrics``)."""

from __future__ import annotations

from typing import Any

PROBLEM = "application/problem+json"


def problem(status: int, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
