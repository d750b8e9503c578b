"""The public HTTP side of a multi-process ``atalaia up`` (see ``streams.processes``).

The alarms process owns the public port: the ingest endpoints are answered there, on the alarm
path's own loop. Every other path (console, API, live board, CAP feed) belongs to the ops process
and is forwarded to it as a byte stream (``install_forwarding``), so console and incident work
never run on the alarm path's loop. ``/health`` merges what every process reports
(``peer_health``), ``/readyz`` their readiness (``peer_ready``); a process that does not answer
makes it ``degraded``, never hangs it.
``/metrics`` merges every process's samples, labelled ``process`` (``peer_metrics``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import faust
from multidict import CIMultiDict

#: a request header that describes the body as the client sent it, not as the front forwards it
#: (decoded; its length is set anew, as Content-Length is hop-by-hop here)
DECODED = {"content-encoding"}
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}
PEER_TIMEOUT_S = 1.5


def peer(entry: str) -> tuple[str, str]:
    """(name, URL) of an ``ATALAIA_PEERS`` entry, ``NAME=URL`` or a bare URL (named by it)."""
    name, sep, url = entry.partition("=")
    return (name, url) if sep and not name.startswith(("http://", "https://")) else (entry, entry)


#: the credentials the metrics auth accepts (``streams.ingest.auth.credentials``): forwarded to the
#: other processes, which check them again (X-Auth-Token alone had reached them as no credential:
#: their 401 made /health and /metrics report the ops process as down)
AUTH_HEADERS = ("Authorization", "X-Auth-Token")


def _auth(headers: Any) -> list[tuple[str, str]]:
    getall = getattr(headers, "getall", None)
    return [
        (name, value)
        for name in AUTH_HEADERS
        for value in (getall(name, []) if getall else [headers[name]] if name in headers else [])
    ]


async def peer_metrics(peers: list[str], headers: Any, name: str, own: bytes) -> bytes:
    """This process's Prometheus exposition merged with the other processes'
    (``GET <peer>/metrics?local``): one family per metric name, every sample labelled
    ``process="<name>"``, and ``atalaia_process_up{process}`` 1 or 0 for each process, so one
    scrape of the public port sees all of ``atalaia up``."""
    import aiohttp
    from prometheus_client.exposition import generate_latest
    from prometheus_client.metrics_core import Metric
    from prometheus_client.parser import text_string_to_metric_families

    up = Metric("atalaia_process_up", "1 when the process answered this scrape, else 0", "gauge")
    families: dict[str, Metric] = {up.name: up}

    def add(process: str, text: str) -> None:
        for fam in text_string_to_metric_families(text):
            into = families.setdefault(fam.name, Metric(fam.name, fam.documentation, fam.type, fam.unit))
            into.samples += [s._replace(labels={**s.labels, "process": process}) for s in fam.samples]
        up.add_sample("atalaia_process_up", {"process": process}, 1.0)

    add(name, own.decode())
    timeout = aiohttp.ClientTimeout(total=PEER_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one(entry: str) -> tuple[str, str | Exception]:
            process, url = peer(entry)
            try:
                async with session.get(f"{url.rstrip('/')}/metrics?local=1", headers=_auth(headers)) as r:
                    if r.status != 200:  # an error answer is not an exposition: counted as down
                        raise ValueError(f"HTTP {r.status}")
                    return process, await r.text()
            except (TimeoutError, aiohttp.ClientError, ValueError) as e:
                return process, e

        for process, got in await asyncio.gather(*(one(p) for p in peers)):
            if isinstance(got, str):
                try:
                    add(process, got)
                    continue
                except ValueError:  # not an exposition: counted as down
                    pass
            up.add_sample("atalaia_process_up", {"process": process}, 0.0)

    class Merged:
        def collect(self) -> list[Metric]:
            return list(families.values())

    return generate_latest(Merged())  # type: ignore[arg-type]


#: how long a computed /metrics answer is served again: a scrape merges every process's samples
#: on the alarms process's loop (20 concurrent scrapers had raised ingest p50 from 17 to 407 ms)
METRICS_TTL_S = 1.0


class SharedBytes:
    """Bytes computed at most once per ``ttl`` seconds per key: a request within ``ttl`` of the
    last computation gets its result; concurrent requests while it runs share the one computation
    (a request that goes away does not cancel it for the others). A failure is not kept."""

    def __init__(self, ttl: float = METRICS_TTL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._done: dict[Hashable, tuple[float, bytes]] = {}
        self._running: dict[Hashable, asyncio.Future[bytes]] = {}

    async def get(self, key: Hashable, make: Callable[[], Awaitable[bytes]]) -> bytes:
        hit = self._done.get(key)
        if hit is not None and self.clock() - hit[0] < self.ttl:
            return hit[1]
        task = self._running.get(key)
        if task is None:
            task = self._running[key] = asyncio.ensure_future(self._compute(key, make))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved if none waits
        return await asyncio.shield(task)

    async def _compute(self, key: Hashable, make: Callable[[], Awaitable[bytes]]) -> bytes:
        try:
            body = await make()
            self._done[key] = (self.clock(), body)
            return body
        finally:
            self._running.pop(key, None)


async def metrics_body(cache: SharedBytes, peers: list[str], name: str, headers: Any, local: bool) -> bytes:
    """The ``/metrics`` body: this process's exposition, merged with the other processes' unless
    ``local`` (``?local``). In ``atalaia up`` (``peers``) each variant is cached apart by ``cache``;
    a lone worker's is its own exposition only, as cheap as before, and exact right after a request
    (what its tests read). The caller has checked the request's credentials (per request: a cached
    answer is never served unchecked)."""
    from prometheus_client import generate_latest

    if not peers:
        return generate_latest()

    async def make() -> bytes:
        own = generate_latest()
        return own if local else await peer_metrics(peers, headers, name, own)

    return await cache.get("local" if local else "merged", make)


_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z")


def _gist(problem: Any) -> Any:
    """A problem with its times blanked: what two processes say of one condition differs only
    there (the broker unreachable since their last answered checks, a second or two apart)."""
    return _TIME.sub("…", problem) if isinstance(problem, str) else problem


async def peer_health(
    peers: list[str], headers: Any, status: str, problems: list[Any], stages: dict[str, Any]
) -> tuple[str, list[Any], dict[str, Any]]:
    """This process's health merged with the other processes' (``GET <peer>/health?local``)."""
    import aiohttp

    from atalaia.streams.metrics import HEALTH_RANK as rank  # the worst status is the merged one

    problems = list(problems)
    auth = _auth(headers)
    timeout = aiohttp.ClientTimeout(total=PEER_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one(entry: str) -> tuple[str, Any]:
            url = peer(entry)[1]
            try:
                async with session.get(f"{url.rstrip('/')}/health?local=1", headers=auth) as r:
                    # only a 200 or a 503 (the report of a process starting or failed) is a
                    # report; an error answer (401 problem+json: {"status": 401, ...}) is not
                    if r.status not in (200, 503):
                        return url, ValueError(f"HTTP {r.status}")
                    got = await r.json(content_type=None)
                    if not isinstance(got, dict) or got.get("status") not in rank:
                        return url, ValueError("not a health report")
                    if not isinstance(got.get("stages", {}), dict):
                        return url, ValueError("not a health report")
                    return url, got
            except (TimeoutError, aiohttp.ClientError, ValueError) as e:
                return url, e

        for url, got in await asyncio.gather(*(one(u) for u in peers)):
            if isinstance(got, Exception) or not isinstance(got, dict):
                why = f"{type(got).__name__}: {got}" if str(got) else type(got).__name__
                problems.append(f"process at {url} does not answer: {why}")
                status = max(status, "degraded", key=rank.__getitem__)
                continue
            status = max(status, got.get("status", "failed"), key=lambda s: rank.get(s, 3))
            # a condition every process sees (the broker unreachable, restarted) is said once,
            # as the first process to report it says it
            said = [_gist(p) for p in problems]
            for p in got.get("problems", []):
                if _gist(p) not in said:
                    problems.append(p)
                    said.append(_gist(p))
            for name, st in got.get("stages", {}).items():  # `worker --processes`: same names
                mine = stages.get(name)
                if mine is None:
                    stages[name] = st
                else:
                    lags = [x for x in (mine.get("lag"), st.get("lag")) if isinstance(x, int)]
                    waits = [
                        x for x in (mine.get("behind_s"), st.get("behind_s")) if isinstance(x, float | int)
                    ]
                    stages[name] = {
                        **mine,
                        "processed": mine.get("processed", 0) + st.get("processed", 0),
                        "partitions": sorted({*mine.get("partitions", []), *st.get("partitions", [])}),
                        "lag": sum(lags) if lags else None,
                        "behind_s": max(waits) if waits else None,
                    }
    return status, problems, stages


async def peer_ready(peers: list[str], status: str) -> str:
    """This process's ``/health`` status merged with the other processes' readiness
    (``GET <peer>/readyz?local``, open: no credentials): the worst of them. A process that does not
    answer, or not with a readiness, counts as ``degraded`` (as in ``peer_health``): the ingest
    endpoints here still serve."""
    import aiohttp

    from atalaia.streams.metrics import HEALTH_RANK as rank

    timeout = aiohttp.ClientTimeout(total=PEER_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one(entry: str) -> str:
            try:
                async with session.get(f"{peer(entry)[1].rstrip('/')}/readyz?local=1") as r:
                    got = await r.json(content_type=None) if r.status in (200, 503) else None
            except (TimeoutError, aiohttp.ClientError, ValueError):
                return "degraded"
            said = got.get("status") if isinstance(got, dict) else None
            if r.status == 200 and said == "ready":
                return "ok"
            return said if r.status == 503 and said in ("starting", "failed") else "degraded"

        for theirs in await asyncio.gather(*(one(u) for u in peers)):
            status = max(status, theirs, key=rank.__getitem__)
    return status


#: live event streams the front forwards at most (the ops process refuses beyond its own caps)
STREAMS_MAX = 1000
#: a client's requests forwarded at once, at most (a browser opens six at a time; live streams
#: apart): a third of the upstream pool's 100, so one client never holds all of it
PER_CLIENT = 32


def install_forwarding(
    app: faust.App,
    upstream: str,
    proxies: tuple[Any, ...] | None = None,
    body_timeout_s: float = 10.0,
    write_timeout_s: float = 30.0,
) -> None:
    """Forward every path this app has no page for to ``upstream`` (registered last, so the
    app's own pages win). Responses are streamed (the live board's server-sent events).

    Bounded in time, as ingest is: a body not received within ``body_timeout_s`` is answered
    408 and its connection closed, and an answer the client does not read for
    ``write_timeout_s`` (the server's idle limit) is cut off (slow senders and non-readers held their connections, and
    the upstream pool's, for ever: thousands of them took every file descriptor of the alarm
    process, and a hundred froze the console for everyone). Waiting for a pooled upstream
    connection is bounded too (502)."""
    import aiohttp
    from aiohttp import web
    from aiohttp.http_exceptions import HttpProcessingError
    from aiohttp.web_protocol import RequestPayloadError

    from atalaia.console.problem import (
        LOCAL_PROXIES,
        PROBLEM,
        client_address,
        client_group,
        forwarded_for,
        problem,
    )

    base = upstream.rstrip("/")
    state: dict[str, aiohttp.ClientSession] = {}

    def session(kind: str) -> aiohttp.ClientSession:
        # two pools: the live boards' event streams hold their connection for as long as they are
        # open, so they get their own (the ops process caps them per client and in all); requests
        # keep aiohttp's 100 (100 open boards had taken all of one shared pool: every console
        # request waited for a minute)
        if kind not in state or state[kind].closed:
            limit = STREAMS_MAX if kind == "stream" else 100
            state[kind] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=limit),
                timeout=aiohttp.ClientTimeout(total=None, connect=15, sock_connect=5),
                auto_decompress=False,
                # every client's requests share these sessions: a cookie the ops process sets
                # (a sign-in's device cookie) goes back to that client only, never into a jar
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return state[kind]

    busy: dict[str, int] = {}  # client address -> its requests being forwarded

    async def forward(request: Any) -> Any:
        """One request forwarded, at most ``PER_CLIENT`` of one client at a time (429 beyond): a
        client that opens a hundred requests and reads none of the answers would hold the whole
        upstream pool until each is cut off, and the console would answer nobody else."""
        if request.path == "/api/stream":  # (their own pool; the ops process caps them per client)
            return await _forward(request)
        client = client_group(client_address(request, proxies or LOCAL_PROXIES))
        if busy.get(client, 0) >= PER_CLIENT:
            detail = f"more than {PER_CLIENT} requests of this client at once; wait for their answers"
            return web.json_response(
                problem(429, "Too many requests", detail),
                status=429,
                content_type=PROBLEM,
                headers={"Retry-After": "5"},
            )
        busy[client] = busy.get(client, 0) + 1
        try:
            return await _forward(request)
        finally:
            if busy[client] <= 1:
                del busy[client]
            else:
                busy[client] -= 1

    async def _forward(request: Any) -> Any:
        # the upstream's own Host (the client's is in X-Forwarded-Host): the ops process listens on
        # 127.0.0.1 and answers local names only (streams.connections.host_guard)
        # the body goes on decoded (aiohttp decodes a request's Content-Encoding as it reads it),
        # so its encoding and length are not the client's: sent on, the ops process decoded gzip
        # twice and refused every compressed console request
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP | DECODED}
        headers["X-Forwarded-Host"] = request.host
        headers["X-Forwarded-For"] = forwarded_for(
            request, proxies or LOCAL_PROXIES
        )  # the ops process limits per client
        try:
            async with asyncio.timeout(body_timeout_s):
                body = await request.read() if request.can_read_body else None
        except TimeoutError:  # a slow sender (or one that stopped): answered, then closed
            detail = f"the body was not received within {body_timeout_s:g} s"
            return await closing(
                request,
                web.json_response(problem(408, "Request timeout", detail), status=408, content_type=PROBLEM),
            )
        except (RequestPayloadError, HttpProcessingError) as e:  # e.g. gzip over bytes that are not
            detail = f"the body cannot be read: {' '.join(str(e).split())[:200]}"
            return web.json_response(
                problem(400, "Unreadable body", detail), status=400, content_type=PROBLEM
            )
        except (ConnectionError, RuntimeError):  # the client went away mid-body: nobody to answer
            return await closing(request, web.Response(status=400))  # (nobody reads it)
        stream = request.path == "/api/stream"  # (the live board: the console's one event stream)
        try:
            async with session("stream" if stream else "api").request(
                request.method, f"{base}{request.rel_url}", headers=headers, data=body, allow_redirects=False
            ) as up:
                out = web.StreamResponse(
                    status=up.status,
                    headers=CIMultiDict((k, v) for k, v in up.headers.items() if k.lower() not in HOP_BY_HOP),
                )
                await out.prepare(request)
                try:
                    async for chunk in up.content.iter_any():
                        async with asyncio.timeout(write_timeout_s):
                            await out.write(chunk)
                    await out.write_eof()
                except TimeoutError:  # the client does not read: cut off, the upstream released
                    await closing(request, out)
                except ConnectionError:  # the client went away (a live board closed): nobody to tell
                    pass
                return out
        except (TimeoutError, aiohttp.ClientError) as e:
            return web.json_response(
                {
                    "type": "about:blank",
                    "title": "Console unavailable",
                    "status": 502,
                    "detail": f"the ops process does not answer: {type(e).__name__}",
                },
                status=502,
                content_type="application/problem+json",
            )
        except ConnectionError:  # the browser went away before the answer began
            return web.Response(status=400)  # (nobody reads it; 499 is no status Faust's monitor knows)

    async def closing(request: Any, response: Any) -> Any:
        """``response`` sent (if it is not yet), then the client's connection closed (the server
        would otherwise wait for the rest of the body before reusing it); one that was being
        sent is aborted (its client does not read: what is buffered for it is dropped, not kept
        until it reads)."""
        cut = response.prepared
        response.force_close()
        try:
            if not response.prepared:
                await response.prepare(request)
                await response.write_eof()
        except (ConnectionError, RuntimeError):  # gone already
            pass
        protocol = getattr(request, "protocol", None)
        if protocol is not None:
            transport = getattr(protocol, "transport", None)
            protocol.force_close()
            if transport is not None:
                if cut:  # reset, not closed: the kernel keeps no unsent megabytes for a non-reader
                    with contextlib.suppress(OSError, AttributeError, TypeError):
                        linger = struct.pack("ii", 1, 0)
                        transport.get_extra_info("socket").setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, linger
                        )
                    transport.abort()
                else:
                    transport.close()
        return response

    from mode import Service

    class CloseSession(Service):
        async def on_stop(self) -> None:
            for s in state.values():
                if not s.closed:
                    await s.close()

    app.service(CloseSession())

    @app.page("/{tail:.*}")
    class Forward(faust.web.View):
        async def get(self, request: Any, **kw: Any) -> Any:
            return await forward(request)

        async def post(self, request: Any, **kw: Any) -> Any:
            return await forward(request)

        async def put(self, request: Any, **kw: Any) -> Any:
            return await forward(request)

        async def patch(self, request: Any, **kw: Any) -> Any:
            return await forward(request)

        async def delete(self, request: Any, **kw: Any) -> Any:
            return await forward(request)
