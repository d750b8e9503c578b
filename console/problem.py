"""RFC 9457 problem details: the body of every 4xx/5xx answer of the HTTP API (console, CAP
pages, ingest endpoints, ``/health`` and ``/metrics``)."""

from __future__ import annotations

from typing import Any

PROBLEM = "application/problem+json"


#: the ``type`` of a problem the console names: this, then its code (``urn:atalaia:console:nothing-to-acknowledge``)
TYPE_PREFIX = "urn:atalaia:console:"


def problem(
    status: int,
    title: str,
    detail: str,
    code: str | None = None,
    params: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """An RFC 9457 body. With a ``code`` (a refusal the console's pages say in their operator's
    language: ``console/static/i18n.json``, ``pb.<code>``) its ``type`` is
    ``urn:atalaia:console:<code>`` and ``params`` holds the values its ``detail`` names (``{}``
    when none); without one, ``about:blank``. ``title`` and ``detail`` stay English, as before."""
    if code is None:
        return {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return {
        "type": TYPE_PREFIX + code,
        "title": title,
        "status": status,
        "detail": detail,
        "params": dict(params or {}),
        **extra,
    }


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


def proxy_networks(spec: Any = ()) -> tuple[Any, ...]:
    """The networks whose ``X-Forwarded-For`` is believed: this machine's (the front process of
    ``atalaia up``, a local reverse proxy) always, plus ``spec`` (``ATALAIA_TRUSTED_PROXIES``:
    addresses or CIDR networks of reverse proxies elsewhere, e.g. another container's).
    Raises ``ValueError`` naming a bad entry."""
    import ipaddress

    nets = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]
    for entry in spec or ():
        try:
            net = ipaddress.ip_network(str(entry).strip().strip("[]"), strict=False)
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network (CIDR)") from None
        mapped = getattr(net.network_address, "ipv4_mapped", None)
        if mapped is not None and net.prefixlen >= 96:  # ::ffff:10.0.0.0/104: as peers are judged
            net = ipaddress.ip_network(f"{mapped}/{net.prefixlen - 96}")
        if net.prefixlen == 0:
            raise ValueError(
                f"{entry!r} would trust every client's X-Forwarded-For (any client could name any "
                "address): name the proxies' own addresses or network"
            )
        nets.append(net)
    return tuple(nets)


def _forwarded(request: Any) -> str:
    """Every ``X-Forwarded-For`` line of a request, as one list (a proxy may add its own line
    after the client's instead of extending it: reading the first line only took the client's)."""
    headers = request.headers
    lines = headers.getall("X-Forwarded-For", []) if hasattr(headers, "getall") else []
    if not lines and headers.get("X-Forwarded-For"):
        lines = [headers["X-Forwarded-For"]]
    return ", ".join(line.strip() for line in lines if line.strip())


#: this machine only (the default)
LOCAL_PROXIES = proxy_networks()


def _trusted(address: str, proxies: tuple[Any, ...]) -> bool:
    import ipaddress

    address = address.strip()
    if address == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == n.version and ip in n for n in proxies)


def client_address(request: Any, proxies: tuple[Any, ...] = LOCAL_PROXIES) -> str:
    """The address of the client behind a request. A request from a trusted proxy (this
    machine: the front process of ``atalaia up`` forwards the console to the ops process, so
    every request came from 127.0.0.1 there; or a reverse proxy in ``proxies``) names its client
    in ``X-Forwarded-For``: the last address in it that is not a trusted proxy's. A request from
    elsewhere is its peer: a client cannot claim another address."""
    remote = request.remote or "?"
    if not _trusted(remote, proxies):
        return remote
    hops = [h.strip() for h in _forwarded(request).split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, proxies):
            return hop[:64]
    return hops[0][:64] if hops else remote


def forwarded_for(request: Any, proxies: tuple[Any, ...] = LOCAL_PROXIES) -> str:
    """The ``X-Forwarded-For`` a forwarding hop sends on: what a trusted proxy said before it,
    then this request's peer (any other client's own header is dropped: it could say anything)."""
    remote = request.remote or "?"
    before = _forwarded(request) if _trusted(remote, proxies) else ""
    return f"{before}, {remote}" if before else remote


def client_group(address: str) -> str:
    """Whom a request counts against in per-client limits (the front's forwarded requests, the
    console's live streams): its IPv4 address, or its IPv6 /64 (one host or network holds a
    whole /64: rotating addresses in it is no other client)."""
    import ipaddress

    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return address  # (not an address: counted as itself)
    if ip.version == 4:
        return str(ip)
    if ip.ipv4_mapped is not None:  # ::ffff:198.51.100.7 is an IPv4 client, not the /64 of ::
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))  # (a zone, %eth0, is dropped)
