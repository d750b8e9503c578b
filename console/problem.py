"""RFC 9457 problem details: the body of every 4xx/5xx answer of the HTTP API (console, CAP
pages, ingest endpoints, ``/health`` and ``/metrics``)."""

from __future__ import annotations

from typing import Any

PROBLEM = "application/problem+json"


def problem(status: int, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}


def is_loopback(address: str) -> bool:
    """Is ``address`` (an IP address, ``[::1]``, or ``localhost``) this machine's?"""
    import ipaddress

    address = address.strip()
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def client_address(request: Any) -> str:
    """The address of the client behind a request. A request from this machine (the front
    process of ``atalaia up`` forwards the console to the ops process, so every request came
    from 127.0.0.1 there; or a local reverse proxy) names its client in ``X-Forwarded-For``:
    the last address in it that is not this machine's. A request from elsewhere is its peer:
    a remote client cannot claim another address."""
    remote = request.remote or "?"
    if not is_loopback(remote):
        return remote
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not is_loopback(hop):
            return hop[:64]
    return remote


def forwarded_for(request: Any) -> str:
    """The ``X-Forwarded-For`` a forwarding hop sends on: what a local proxy said before it,
    then this request's peer (a remote client's own header is dropped: it could say anything)."""
    remote = request.remote or "?"
    before = request.headers.get("X-Forwarded-For", "").strip() if is_loopback(remote) else ""
    return f"{before}, {remote}" if before else remote
