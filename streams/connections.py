"""Bounds on the HTTP server's connections: a client that opens thousands of connections and
sends their request headers a byte every few seconds (slowloris) took every file descriptor of
the alarm process (aiohttp has no time limit on reading a request's headers): the next
checkpoint file could not be opened and the rules stage stopped.

``ConnectionGuard`` looks at the server's connections every few seconds and closes:

* a connection that has sent no complete request for ``idle_s`` (headers that never end, or an
  idle keep-alive connection; a request being answered, such as a live board's event stream,
  is never closed here);
* beyond ``max_connections`` (by default half the process's file-descriptor limit, so the rest
  stay for checkpoints, the broker and the other process), the oldest connections that are not
  being answered.

It also raises the process's soft descriptor limit to the hard one at start (the usual 1 024 is
little for a server). Counted in ``atalaia_http_connections_closed_total{reason}``.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from mode import Service
from prometheus_client import Counter

log = logging.getLogger("atalaia.http")

CLOSED = Counter(
    "atalaia_http_connections_closed_total",
    "HTTP connections the server closed: idle (no complete request for a while) or over the limit",
    ["reason"],
)
IDLE_S = 30.0  # no complete request for this long: closed
EVERY_S = 5.0


def raise_descriptor_limit() -> int:
    """The soft RLIMIT_NOFILE raised to the hard one; returns the soft limit now in force."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        return int(soft) if soft != resource.RLIM_INFINITY else 1 << 20
    except (ImportError, OSError, ValueError):  # not on this platform, or not allowed
        return 1024


class ConnectionGuard(Service):
    """Closes the web server's idle and surplus connections (see the module docstring)."""

    def __init__(
        self, app: Any, idle_s: float = IDLE_S, max_connections: int | None = None, **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.app = app
        self.idle_s = idle_s
        limit = raise_descriptor_limit()
        self.max_connections = max_connections or max(64, limit // 2)
        # per open connection (by id, rebuilt at each sweep): (the connection, when it was first
        # seen or last busy, requests it has begun)
        self._seen: dict[int, tuple[Any, float, int]] = {}
        self._warned = 0.0

    def _server(self) -> Any:
        runner = getattr(getattr(self.app, "web", None), "_runner", None)
        return getattr(runner, "server", None)

    @Service.task
    async def _watch(self) -> None:
        while not self.should_stop:
            await self.sleep(EVERY_S)
            try:
                server = self._server()
                if server is not None:
                    self.sweep(server.connections, time.monotonic())
            except Exception as e:  # never the server's end
                log.error("cannot look at the HTTP connections: %r", e)

    def sweep(self, connections: list[Any], now: float) -> int:
        """Close the idle connections and the surplus; returns how many were closed."""
        waiting = []  # (since, connection) of those not answering a request
        closed = 0
        seen, self._seen = self._seen, {}
        live = 0
        for conn in connections:
            if getattr(conn, "transport", True) is None:  # closing already (its task ends)
                continue
            live += 1
            count = getattr(conn, "_request_count", 0)  # (counts a request when its headers arrive)
            was, since, seen_count = seen.get(id(conn), (None, now, count))
            if was is not conn or count != seen_count:
                since = now  # new here (an id can be reused), or it began a request since
            if getattr(conn, "_request_in_progress", False):
                self._seen[id(conn)] = (conn, now, count)  # busy: idle time starts when it is done
                continue
            self._seen[id(conn)] = (conn, since, count)
            if now - since >= self.idle_s:
                closed += self._close(conn, "idle")
            else:
                waiting.append((since, conn))
        surplus = live - closed - self.max_connections
        if surplus > 0:
            waiting.sort(key=lambda sc: sc[0])
            for _, conn in waiting[:surplus]:
                closed += self._close(conn, "limit")
            if now - self._warned > 60:
                self._warned = now
                log.warning(
                    "more than %d HTTP connections open: closing the oldest that are not being answered",
                    self.max_connections,
                )
        return closed

    @staticmethod
    def _close(conn: Any, reason: str) -> int:
        transport = getattr(conn, "transport", None)
        try:
            conn.force_close()
            if transport is not None:
                transport.close()
        except Exception:  # already closing
            return 0
        CLOSED.labels(reason).inc()
        return 1


LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def allowed_hosts(settings: Any) -> frozenset[str] | None:
    """The Host header names the server answers, or None for any. A server on a loopback address
    answers localhost, the console URL's host and ``http_allowed_hosts``: a web page an operator
    opens elsewhere cannot reach it through a DNS name it points at 127.0.0.1 (DNS rebinding),
    which would let it drive the console, open by default in the demo."""
    from atalaia.console.problem import is_loopback

    extra = {h.strip().lower() for h in settings.http_allowed_hosts if h.strip()}
    if "*" in extra or not is_loopback(settings.http_host):
        return None
    from urllib.parse import urlsplit

    names = set(LOCAL_NAMES) | extra
    if settings.console_url:
        host = urlsplit(settings.console_url).hostname
        if host:
            names.add(host.lower())
    return frozenset(names)


def host_guard(allowed: frozenset[str]) -> Any:
    """aiohttp middleware: 421 problem+json for a Host header not in ``allowed``."""
    from aiohttp import web

    from atalaia.console.problem import PROBLEM, problem

    @web.middleware
    async def guard(request: Any, handler: Any) -> Any:
        try:
            host = (request.url.host or "").lower()
        except ValueError:
            host = ""
        if host not in allowed and f"[{host}]" not in allowed:
            body = problem(
                421,
                "Misdirected request",
                f"this server does not answer for host {host[:60]!r} (ATALAIA_HTTP_ALLOWED_HOSTS)",
            )
            return web.json_response(body, status=421, content_type=PROBLEM)
        return await handler(request)

    return guard


SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",  # a response is what its Content-Type says
    "X-Frame-Options": "DENY",  # the console is never framed (clickjacking)
    "Content-Security-Policy": "frame-ancestors 'none'",
    "Referrer-Policy": "same-origin",
}


async def security_headers(request: Any, response: Any) -> None:
    """aiohttp ``on_response_prepare``: the headers above on every answer (set unless the handler
    chose its own)."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def problem_defaults() -> Any:
    """aiohttp middleware: aiohttp's own error answers (an unknown path's 404, a wrong method's
    405, a CORS preflight ``OPTIONS`` nobody answers, a body over the size limit's 413...) are
    ``text/plain``; the project answers API errors as problem+json (RFC 9457). An
    ``HTTPException`` (status 400 or more) with aiohttp's plain text becomes
    ``application/problem+json`` with status, title and detail (its text, when not the bare
    default); its headers are kept (``Allow``
    on a 405) and no CORS header is added (the console is same-origin only). Answers a handler
    returns (problem+json already, HTML pages, the live event stream) are never touched.

    Any other exception a handler raises (a fault of the server's) answers 500 problem+json
    without a word of the traceback, and is logged as one ERROR line naming the request, the
    exception and where it was raised (aiohttp answered ``text/plain`` and logged a traceback per
    request). An answer already under way is left to aiohttp, which closes the connection. A
    database server that cannot be reached (``SinkUnavailable``: the projection's PostgreSQL
    stopped) answers 503 problem+json with ``Retry-After``, one WARNING line, no ERROR."""
    from aiohttp import web
    from multidict import CIMultiDict

    from atalaia.console.problem import PROBLEM, problem
    from atalaia.streams.sink import SinkUnavailable

    def details(exc: web.HTTPException, request: Any) -> str:
        if exc.text and exc.text != f"{exc.status}: {exc.reason}":
            return exc.text[:500]  # aiohttp's own words (a body over the size limit: how large)
        if exc.status == 404:
            return f"no such path: {request.path[:200]}"
        if exc.status == 405:
            allowed = ", ".join(sorted(getattr(exc, "allowed_methods", ()) or ()))
            method = request.method[:20]
            return f"method {method} is not allowed here" + (f" (allowed: {allowed})" if allowed else "")
        return exc.reason

    @web.middleware
    async def to_problem(request: Any, handler: Any) -> Any:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            plain = (exc.content_type or "text/plain") == "text/plain"  # aiohttp's: not a body of ours
            if exc.status < 400 or not plain or exc.empty_body:
                raise
            skip = {"content-type", "content-length", "content-encoding", "transfer-encoding"}
            headers = CIMultiDict((k, v) for k, v in exc.headers.items() if k.lower() not in skip)
            body = problem(exc.status, exc.reason, details(exc, request))
            return web.json_response(body, status=exc.status, content_type=PROBLEM, headers=headers)
        except Exception as exc:
            writer, transport = request.writer, request.transport
            if (writer is not None and writer.output_size > 0) or transport is None or transport.is_closing():
                raise  # part of an answer went out already, or the client is gone: nothing to say
            if isinstance(exc, SinkUnavailable):  # a database server down: not a fault of ours
                log.warning("%s %s: %s", request.method[:20], request.path[:200], str(exc)[:300])
                detail = f"{exc.what} is unavailable now; try again shortly (/health says why)"
                body = problem(503, "Service Unavailable", detail)
                return web.json_response(body, status=503, content_type=PROBLEM, headers={"Retry-After": "5"})
            where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
            log.error(
                "%s %s failed: %s: %r%s",
                request.method[:20],
                request.path[:200],
                type(exc).__name__,
                str(exc)[:300],
                f" (at {where.filename}:{where.lineno})" if where else "",
            )
            body = problem(500, "Internal Server Error", "the server could not answer this request")
            return web.json_response(body, status=500, content_type=PROBLEM)

    return to_problem


def unavailable_as_503(publish: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """``publish`` for the console. A command the broker did not take is answered 503 problem+json
    with ``Retry-After``, the operator's client sends it again (it was a 500 with a traceback); a
    timeout says the command may have been taken, to be checked before it is sent again (the
    stages drop a repeat only by its id: a client's ``id`` or ``Idempotency-Key``). A command the
    broker took but the ingest log could not keep (a full disk) goes on: it will be applied, and
    answering "send it again" would apply it twice; the error is logged (a kill -9 before the
    stages' next checkpoint would lose it)."""
    from aiohttp import web
    from aiokafka.errors import KafkaError, KafkaTimeoutError

    from atalaia.streams.ingestlog import IngestLogError

    async def guarded(topic: str, value: bytes, key: bytes | None = None, headers: Any = None) -> None:
        try:
            await publish(topic, value, key, headers)
        except IngestLogError as e:
            logging.getLogger("atalaia.console").error(
                "a console command was sent but the ingest log could not keep it (%s): a kill -9 of "
                "atalaia up before the next checkpoint would lose it",
                e,
            )
        except (KafkaError, OSError) as e:
            logging.getLogger("atalaia.console").warning("a console command was not sent: %s", e)
            if isinstance(e, KafkaTimeoutError):
                detail = (
                    "the broker did not confirm the command in time: it may have been taken; check "
                    "before sending it again"
                )
            else:
                detail = f"the broker did not take the command ({str(e)[:200]}); send it again"
            raise web.HTTPServiceUnavailable(text=detail, headers={"Retry-After": "5"}) from None

    return guarded


def unreadable_bodies() -> Any:
    """aiohttp middleware: after a handler answered a request whose body could not be decoded
    (``Content-Encoding: gzip`` over bytes that are not gzip: the handler answers 400 and keeps
    a DLQ record), aiohttp went on reading the rest of the body to reuse the connection, met the
    same error again and logged it as an ERROR "Unhandled exception" with three tracebacks, for
    every such request. The answer now closes the connection (its stream cannot be read on) and
    nothing more is read."""
    from aiohttp import web

    @web.middleware
    async def close_after(request: Any, handler: Any) -> Any:
        response = await handler(request)
        content = request.content
        if content.exception() is not None and not content.is_eof():
            content.feed_eof()
            response.force_close()
        return response

    return close_after


MALFORMED = Counter(
    "atalaia_http_malformed_requests_total",
    "requests refused before routing because they could not be parsed (bad URL, header, encoding)",
)


class ClientFaults(logging.Filter):
    """On aiohttp's server logger: a body a client sent that cannot be decoded (``gzip`` over
    bytes that are not), met again while aiohttp drains what a handler did not read (an answer
    given before the body arrived: a 404, a 401, a refusal), was logged as an ERROR "Unhandled
    exception" with three tracebacks per request. It is the client's fault, not the server's:
    rewritten as one ``atalaia.http`` WARNING line without a traceback, so the project's rate
    limit (``streams.logfilter``) holds it to one line a minute."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError
        from aiohttp.web_protocol import RequestPayloadError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, RequestPayloadError | HttpProcessingError):
            MALFORMED.inc()
            record.name, record.levelno, record.levelname = "atalaia.http", logging.WARNING, "WARNING"
            record.msg, record.args = (
                "a request body could not be decoded (%s); the connection is closed",
                (type(exc).__name__,),
            )
            record.exc_info, record.exc_text = None, None
        return True


def answer_malformed_requests() -> None:
    """A request aiohttp cannot parse (a control character or a broken host in its URL, a bad
    header, an unknown ``Content-Encoding``) is answered by aiohttp itself before any middleware:
    a text/plain 400 without the security headers, and an ERROR with a traceback in the log for
    every such request, so anyone could fill the log and page whoever watches it. Patched
    (once, process-wide) so that a client's 4xx parse error answers problem+json with the
    security headers and logs one WARNING line without a traceback (rate-limited as the
    project's warnings are, ``streams.logfilter``), counted in
    ``atalaia_http_malformed_requests_total``. Other errors keep aiohttp's handling."""
    from http import HTTPStatus

    from aiohttp import web, web_protocol
    from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError

    from atalaia.console.problem import PROBLEM, problem

    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ClientFaults) for f in server_log.filters):
        server_log.addFilter(ClientFaults())
    original = web_protocol.RequestHandler.handle_error
    if getattr(original, "atalaia", False):
        return

    def handle_error(self: Any, request: Any, status: int = 500, exc: Any = None, message: Any = None) -> Any:
        if not isinstance(exc, HttpProcessingError) or not 400 <= status < 500:
            return original(self, request, status, exc, message)
        MALFORMED.inc()
        if isinstance(exc, BadHttpMethod) and self._request_count == 1:
            # as aiohttp: TLS or another protocol sent to this port (scanners): not worth a warning
            log.debug("refused a request that is not HTTP (%s)", type(exc).__name__)
        else:  # (the address is not in the words: one line per minute for every client, IPv6 too)
            log.warning("refused a malformed HTTP request (%s)", type(exc).__name__)
        if request.writer.output_size > 0:  # as aiohttp: part of an answer went out already
            raise ConnectionError("Response is sent already, cannot send another response")
        words = next((line.strip() for line in str(exc.message).splitlines() if line.strip()), "")
        try:
            title = HTTPStatus(status).phrase
        except ValueError:
            title = "Bad Request"
        detail = (
            f"the request could not be parsed: {words[:200]}" if words else "the request could not be parsed"
        )
        resp = web.json_response(
            problem(status, title, detail), status=status, content_type=PROBLEM, headers=SECURITY_HEADERS
        )
        resp.force_close()
        return resp

    handle_error.atalaia = True  # type: ignore[attr-defined]
    web_protocol.RequestHandler.handle_error = handle_error  # type: ignore[method-assign]


def exposure_problem(settings: Any, http: bool | str) -> str | None:
    """Why this process must not serve HTTP as configured, or None. On a loopback address (the
    default) the console may run without users and ingest without tokens (the demo). Listening
    anywhere else (``ATALAIA_HTTP_HOST=0.0.0.0``) without them would let anyone who reaches the
    port act as any operator, issue public warnings, or feed observations that open incidents;
    that is refused at start, naming what to set. ``http``: the role served (True/"all": console
    and ingest; "console"; "ingest"; "health" and False: neither)."""
    from atalaia.console.problem import is_loopback

    if not http or http == "health" or is_loopback(settings.http_host):
        return None
    where = f"ATALAIA_HTTP_HOST={settings.http_host} (port {settings.http_port})"
    missing = []
    # an ingest front with a console upstream serves the console too (it forwards it)
    console = http in (True, "all", "console") or (http == "ingest" and bool(settings.console_upstream))
    if console and settings.console_users is None:
        missing.append(
            "ATALAIA_CONSOLE_USERS (a users file: atalaia users passwd NAME --role supervisor --file "
            "users.yaml); without it anyone who reaches the console acts as any operator, including "
            "issuing public warnings"
        )
    if http in (True, "all", "ingest") and settings.ingest_tokens is None:
        missing.append(
            "ATALAIA_INGEST_TOKENS (a token file: atalaia tokens new --source NAME --file "
            "ingest-tokens.yaml); without it anyone who reaches the ingest endpoint feeds observations "
            "that open incidents"
        )
    if not missing:
        return None
    return (
        f"refusing to listen on {where} without authentication: set "
        + "; and ".join(missing)
        + ". Or listen on 127.0.0.1 (the default) behind a reverse proxy that authenticates."
    )


def port_problem(host: str, port: int) -> str | None:
    """Why the HTTP server could not listen on ``host:port``, found before anything starts (a
    broker, the stages), or None. A port taken by another program stopped ``up`` only after its
    banner said it was up, with a traceback from the web server."""
    import errno
    import socket

    try:
        infos = socket.getaddrinfo(
            host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as e:
        return f"ATALAIA_HTTP_HOST={host}: not an address of this machine ({e.strerror})"
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
        sock.bind(address)
    except OSError as e:
        where = f"{host}:{port}"
        if e.errno == errno.EADDRINUSE:
            return f"port {port} on {host} is in use by another program: stop it, or set ATALAIA_HTTP_PORT"
        if e.errno == errno.EADDRNOTAVAIL:
            return f"ATALAIA_HTTP_HOST={host}: not an address of this machine"
        if e.errno == errno.EACCES:
            return f"{where}: permission denied (ports below 1024 need privileges): set ATALAIA_HTTP_PORT"
        return f"cannot listen on {where}: {e.strerror or e}"
    finally:
        sock.close()
    return None
