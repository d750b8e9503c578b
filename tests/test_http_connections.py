"""The HTTP server answers only the hosts it should (DNS rebinding), and its connections are bounded: headers that never end (slowloris) are cut after
``ATALAIA_HTTP_IDLE_S``, and beyond ``ATALAIA_HTTP_MAX_CONNECTIONS`` the oldest connections that
are not being answered are closed. 20 000 such connections took every file descriptor of the
alarm process (found by attacking the product) and the rules stage stopped."""

from __future__ import annotations

import contextlib
import socket
import time
from types import SimpleNamespace

import httpx
import pytest

from atalaia.streams.connections import ConnectionGuard


class Conn(SimpleNamespace):
    def force_close(self) -> None:  # as aiohttp's: the transport goes
        self.closed = True
        self.transport = None


def conns(n: int, busy: bool = False) -> list[Conn]:
    return [
        Conn(
            _request_count=0,
            _request_in_progress=busy,
            closed=False,
            transport=SimpleNamespace(close=lambda: None),
        )
        for _ in range(n)
    ]


def test_sweep_closes_idle_connections_and_the_oldest_surplus_never_one_being_answered():
    guard = ConnectionGuard(app=None, idle_s=10.0, max_connections=5)
    old, busy = conns(3), conns(2, busy=True)
    assert guard.sweep(old + busy, now=0.0) == 0
    new = conns(3)
    assert guard.sweep(old + busy + new, now=5.0) == 3  # 8 open > 5: the 3 oldest not being answered
    assert all(c.closed for c in old) and not any(c.closed for c in busy + new)
    for c in new[:2]:
        c._request_count = 1  # they began a request at 12 s
    assert guard.sweep(busy + new, now=12.0) == 0
    assert guard.sweep(busy + new, now=15.5) == 1  # new[2]: 10.5 s without a request
    assert guard.sweep(busy + new, now=22.5) == 2  # the others: 10.5 s after theirs
    assert not any(c.closed for c in busy), "a request being answered (a live stream) is kept"
    # a long request that ends: its idle time starts then (last seen busy at 22.5 s)
    for c in busy:
        c._request_in_progress = False
    assert guard.sweep(busy, now=30.0) == 0
    assert guard.sweep(busy, now=33.0) == 2
    assert guard.sweep(busy, now=60.0) == 0, "a connection already closing is not closed (or counted) again"


def _slow(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=5)
    s.sendall(b"POST /ngsi-ld/notify HTTP/1.1\r\nHost: x\r\n")  # and never the end of the headers
    return s


def _closed(s: socket.socket) -> bool:
    s.settimeout(0.2)
    try:
        return s.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:  # reset
        return True


@pytest.mark.broker
def test_headers_that_never_end_are_cut_and_connections_are_bounded(make_worker):
    w = make_worker(
        "--stages",
        "ingest",
        extra_env={
            "ATALAIA_HTTP_IDLE_S": "3",
            "ATALAIA_HTTP_MAX_CONNECTIONS": "40",
            "ATALAIA_HTTP_ALLOWED_HOSTS": '["atalaia.example"]',
        },
    )
    w.start(("ingest",))
    # on 127.0.0.1 it answers local names and the allowed ones, not a name a web page pointed at
    # 127.0.0.1 (DNS rebinding: the open demo console driven from an operator's browser)
    port = w.url.rsplit(":", 1)[1]
    for host, status in (
        (f"localhost:{port}", 200),
        (f"127.0.0.1:{port}", 200),
        ("atalaia.example", 200),
        (f"attacker.example:{port}", 421),
        ("", 421),
    ):
        r = httpx.get(f"{w.url}/livez", headers={"Host": host}, timeout=5)
        assert r.status_code == status, (host, r.status_code)
        # and never framed, never sniffed (the open demo console could be clickjacked)
        assert r.headers["X-Frame-Options"] == "DENY" and r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Content-Security-Policy"] == "frame-ancestors 'none'"
        if status == 421:
            assert r.headers["content-type"].startswith("application/problem+json")
    socks = [_slow(w.url) for _ in range(60)]
    try:
        # beyond 40, the oldest are closed at the next sweep (every 5 s); all of them once idle
        deadline = time.monotonic() + 30
        while not all(_closed(s) for s in socks[:20]):
            assert time.monotonic() < deadline, "surplus connections were never closed"
            time.sleep(0.5)
        while not all(_closed(s) for s in socks):
            assert time.monotonic() < deadline, "idle connections were never closed"
            time.sleep(0.5)
        # the server answers as ever
        assert httpx.get(f"{w.url}/livez", timeout=5).status_code == 200
        metrics = httpx.get(f"{w.url}/metrics", timeout=5).text
        assert 'atalaia_http_connections_closed_total{reason="limit"}' in metrics
        assert 'atalaia_http_connections_closed_total{reason="idle"}' in metrics
    finally:
        for s in socks:
            s.close()


@pytest.fixture
def ops_stand_in():
    """An HTTP server standing for the ops process (the console's upstream): /big answers 20 MB,
    /hold begins its answer and finishes it a minute later (a request in flight for a minute
    whether its client reads or not)."""
    import asyncio
    import threading

    from aiohttp import web

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * (20 << 20), content_type="application/json")

    async def hold(request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await out.prepare(request)
        await out.write(b"begun\n")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(release.wait(), 60)
        return out

    async def login(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"ok": True})

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_get("/big", big)
    app.router.add_get("/hold", hold)
    app.router.add_post("/api/login", login)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    loop.run_until_complete(web.SockSite(runner, sock).start())
    release = asyncio.Event()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def shut() -> None:
        release.set()  # the held answers end, then the server stops
        await runner.cleanup()

    asyncio.run_coroutine_threadsafe(shut(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


@pytest.mark.broker
def test_forwarded_console_paths_are_bounded_in_time_too(make_worker, ops_stand_in):
    """``atalaia up``'s public port forwards console paths to the ops process. A body sent a byte
    every few seconds was waited for without end (thousands of them, unauthenticated, took every
    file descriptor of the alarm process), and an answer the client never read held its
    connection and an upstream one (a hundred froze the console for everyone). Now: 408 after
    the body timeout, and an unread answer cut off after the idle limit."""
    w = make_worker(
        "--stages",
        "ingest",
        "--http-role",
        "ingest",
        extra_env={
            "ATALAIA_CONSOLE_UPSTREAM": ops_stand_in,
            "ATALAIA_HTTP_BODY_TIMEOUT_S": "2",
            "ATALAIA_HTTP_IDLE_S": "3",
        },
    )
    w.start(("ingest",))
    assert httpx.post(f"{w.url}/api/login", json={}, timeout=10).json() == {"ok": True}  # forwarded
    host, port = w.url.removeprefix("http://").split(":")
    slow = socket.create_connection((host, int(port)), timeout=15)
    slow.sendall(b"POST /api/login HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n{")
    started = time.monotonic()
    answer = slow.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 8, answer[:200]
    slow.settimeout(5)
    assert slow.recv(65536) in (b"",) or _closed(slow), "the connection is closed after the 408"
    slow.close()
    gone = socket.create_connection((host, int(port)), timeout=5)  # goes away mid-body
    gone.sendall(b'POST /api/login HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n{"a": ')
    gone.close()

    reader = socket.socket()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.connect((host, int(port)))
    reader.sendall(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n")  # and never read
    time.sleep(8)  # the idle limit (3 s) and more, reading nothing
    reader.settimeout(2)
    got, reset = 0, False
    try:
        while chunk := reader.recv(1 << 20):  # what it had received before it was cut off
            got += len(chunk)
    except ConnectionResetError:
        reset = True
    except TimeoutError:  # still open, the rest of the 20 MB waiting for it
        pass
    reader.close()
    assert reset and got < 10 << 20, f"an answer nobody reads held its connection ({got} bytes read)"
    assert httpx.post(f"{w.url}/api/login", json={}, timeout=10).status_code == 200

    # one client may hold a third of the upstream pool at most: the 33rd of its requests gets 429,
    # and the console still answers everybody else while its 32 are in flight (/hold: in flight
    # for a minute, whatever the client reads, so the count does not hang on the idle limit)
    def hold(who: bytes, *extra: bytes) -> socket.socket:
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(
            b"GET /hold HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: "
            + who
            + b"\r\n"
            + b"".join(extra)
            + b"\r\n"
        )
        return s

    hoarders = []
    try:
        for i in range(34):
            # (asking for an event stream does not take it out of the count, nor does rotating
            # addresses within one IPv6 /64)
            who = b"203.0.113.9" if i % 2 else b"2001:db8:0:1::%x" % (i + 1)
            hoarders.append(hold(who, b"Accept: text/event-stream\r\n"))
        # 17 each: a client in 2001:db8:0:1::/64 and 203.0.113.9 stay under the cap of 32
        assert [s.recv(12) for s in hoarders] == [b"HTTP/1.1 200"] * 34
        # 20 more from the /64 while those are in flight: 37 in all, so 5 are refused
        more = [hold(b"2001:db8:0:1:ffff::%x" % i) for i in range(20)]
        hoarders += more
        answers = sorted(s.recv(12) for s in more)
        assert answers == [b"HTTP/1.1 200"] * 15 + [b"HTTP/1.1 429"] * 5, "beyond a third of the pool"
        other = httpx.post(
            f"{w.url}/api/login", json={}, headers={"X-Forwarded-For": "198.51.100.1"}, timeout=5
        )
        assert other.status_code == 200
    finally:
        for s in hoarders:
            s.close()
    time.sleep(1)
    assert "Traceback" not in w.log.read_text(), "a client gone mid-body is no error of ours"
