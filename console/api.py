"""Operations-centre HTTP API and pages on the Faust web server (documented in
``console/openapi.py``, served at ``/openapi.json`` and ``/docs``).

* ``GET  /``                                  the live triage board (static page)
* ``GET  /incidents/{id}``                    the incident page (the link in every SMS and email)
* ``GET  /api/incidents``                     incidents from the SQL projection, filtered, in triage order
* ``GET  /api/incidents/{id}``                one incident with its alarms, audit trail and allowed actions
* ``GET  /api/incidents/{id}/deliveries``     who was notified, when, how, with what result
* ``GET  /api/incidents/{id}/series``         recent observations behind each alarm (``console/series.py``)
* ``GET  /api/deliveries``                    the delivery log
* ``GET  /api/stream``                        server-sent events: every incident change, live
* ``POST /api/login``, ``POST /api/logout``     sign in with a username and password (a session
  token, used as a Bearer token) and out; see ``console/auth.py``
* ``POST /api/incidents/{id}/commands``       acknowledge / shelve / comment / ... → ``atalaia.commands``;
  answers 200 (accepted), 404 (unknown incident), 409 (refused by the incident manager, with its
  reason; 422 naming ``until`` for a one-shot shelve of an incident with nothing firing) or 202
  (queued: no reply within 5 s); an ``Idempotency-Key`` header makes a retry the
  same command, answered as the first (``console/idempotency.py``)
* ``/warnings``, ``/api/warnings...``         population warnings: see ``console/warnings_api.py``
* ``GET  /api/areas``                         the CAOP parishes as GeoJSON for the maps: see ``console/areas.py``

Bad requests get a 4xx with an ``application/problem+json`` body naming the field. Commands are
validated with the incidents package's ``Command`` model before they reach Kafka; whether the
incident accepts them (state, role) is decided by the incident manager, which answers on
``atalaia.replies``.
"""

from __future__ import annotations

import asyncio
import functools
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import faust
import orjson
from aiohttp import web
from pydantic import ValidationError

from atalaia.console.bodies import read_object
from atalaia.console.idempotency import Requests, keyed, reused
from atalaia.console.problem import PROBLEM, client_address, client_group, problem, proxy_networks
from atalaia.streams.clock import format_time, utc
from atalaia.streams.sink import SinkUnavailable

PROJECTION_READ_S = 15.0  # a console read of the projection database answers 503 after this long
STATIC = Path(__file__).parent / "static"
STATIC_FILES = {  # served under /console/<name>
    "console.js": "text/javascript",
    "warnings.js": "text/javascript",
    "map.js": "text/javascript",
    "map.css": "text/css",
    "console.css": "text/css",
    "i18n.json": "application/json",
}
_INCLUDE = re.compile(rb"^<!--#include ([a-z]+) -->\n", re.MULTILINE)


@functools.cache
def page(name: str) -> bytes:
    """A console page as served: its ``<!--#include NAME -->`` lines replaced by the parts every
    page shares (``static/parts/NAME.html``: who is signed in, sign-out, language, the sign-in
    form). Read once per process, so a request never reads the disk."""
    return _INCLUDE.sub(
        lambda m: (STATIC / "parts" / f"{m[1].decode()}.html").read_bytes(), (STATIC / name).read_bytes()
    )


REPLY_WAIT_S = 5.0  # how long a command request waits for the incident manager's reply
PING_S = 5.0  # server-sent-event heartbeat (the board's "updated N s ago")
#: open live streams (/api/stream) per signed-in user (whatever their tokens and sessions), per
#: client (an IPv4 address, an IPv6 /64), and in all: one user or one client cannot take them all
STREAMS_PER_USER = 8
STREAMS_PER_CLIENT = 16
STREAMS_TOTAL = 500


#: on an answer that carries a secret (a sign-in's session token): never stored by any cache
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


R = TypeVar("R")


def rfc3339(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return format_time(utc(round(epoch, 3)))  # millisecond precision is what the console shows


def install(app: faust.App, settings: Any, publish: Any, bootstrap: str) -> None:
    """Add the console routes to ``app``; ``publish(topic, value, key)`` sends to Kafka."""
    from atalaia.console.auth import MAX_ACTOR_CHARS, Authenticator, Identity
    from atalaia.console.filters import SCAN_LIMIT, FilterError, parse_filter
    from atalaia.console.live import IncidentFeed
    from atalaia.console.openapi import document
    from atalaia.console.present import alarm_suppression, allowed_actions, counts, explain
    from atalaia.console.replies import ReplyWatcher, command_reply
    from atalaia.incidents.commands import MAX_REASON_CHARS, Command
    from atalaia.incidents.config import DEFAULT_PERMISSIONS
    from atalaia.incidents.operator import ONE_SHOT_REFUSED
    from atalaia.incidents.projection import Projection
    from atalaia.incidents.stage import projection_sink
    from atalaia.rules.info import RuleCatalog

    replies = app.service(ReplyWatcher(bootstrap, settings.topic("replies"), decode=command_reply))
    feed = app.service(IncidentFeed(bootstrap, settings.topic("incidents")))
    from atalaia.console.series import POINTS, SERIES, TOTAL_SERIES, ObservationBuffer

    observations = app.service(ObservationBuffer(bootstrap, settings.topic("observations")))
    app.atalaia_observations = observations
    app.atalaia_feed = feed
    from atalaia.console.auth import DeviceCookies

    devices = (
        DeviceCookies.from_file(settings.data_dir / "console-device.key") if settings.console_users else None
    )
    auth = Authenticator.from_file(settings.console_users, devices=devices)
    if not auth.enabled:
        import logging

        logging.getLogger("atalaia.console").warning(
            "the console has no users (ATALAIA_CONSOLE_USERS): anyone who reaches %s can act as any "
            "operator, including drafting, approving and issuing public warnings; for the demo only",
            settings.public_url(),
        )
    https_console = settings.public_url().startswith("https:")  # device cookies only over TLS then
    permissions = _permissions(settings, DEFAULT_PERMISSIONS)
    proxies = proxy_networks(settings.trusted_proxies)  # whose X-Forwarded-For names the client
    state: dict[str, Any] = {}

    async def projection(read: Callable[[Projection], R]) -> R:
        """``read(projection)`` in the projection's own thread (``streams.sink``): no query blocks
        the loop. The projection stage's database if this process runs it, else one of its own."""
        sink = getattr(app, "atalaia_projection", None) or state.get("proj")
        if sink is None:
            opened = await asyncio.to_thread(projection_sink, settings)
            sink = state.setdefault("proj", opened)
            if sink is not opened:  # another request opened it meanwhile
                await asyncio.to_thread(opened.close, Projection.close)
        try:  # a database that does not answer (frozen, unreachable): 503, not a page that hangs
            return await asyncio.wait_for(sink.run(read), PROJECTION_READ_S)
        except TimeoutError:
            raise SinkUnavailable(
                f"{sink.what} did not answer within {PROJECTION_READ_S:.0f} s", sink.what
            ) from None

    def catalog() -> dict[str, Any]:
        """The rules' units, descriptions and runbooks, following the rule files (hot reload)."""
        if "rules" not in state:
            state["rules"] = RuleCatalog(settings.rules_paths)
        return state["rules"].current()

    async def deliveries(incident: str | None, limit: int) -> dict[str, Any]:
        """``deliveries_json`` of the delivery log if this console can read it (same data
        directory as the notifier), on a connection of its own (the notifier's belongs to its
        sender), in that connection's own thread (``streams.sink``): off the loop."""
        if "deliveries" not in state:
            path = settings.data_dir / "deliveries.sqlite"
            if not path.exists():
                return deliveries_json(None, incident, limit)
            from atalaia.notifiers.log import SQLiteDeliveryLog
            from atalaia.streams.sink import Sink

            opened = await asyncio.to_thread(Sink, lambda: SQLiteDeliveryLog(path), "console-deliveries")
            if state.setdefault("deliveries", opened) is not opened:  # another request opened it meanwhile
                await asyncio.to_thread(opened.close, SQLiteDeliveryLog.close)
        return await state["deliveries"].run(deliveries_json, incident, limit)

    def fail(view: Any, status: int, title: str, detail: str, **extra: Any) -> Any:
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return view.json(
            problem(status, title, detail, **extra), status=status, content_type=PROBLEM, headers=headers
        )

    def identify(request: Any) -> Identity | None:
        """Who is asking: the token's user; None when authentication is on and the token is bad.
        Without authentication (the demo) the caller is an anonymous operator."""
        if not auth.enabled:
            return Identity(request.query.get("actor") or "operator", "operator")
        return auth.identify(request.headers.get("Authorization"))

    @app.page("/")
    class Board(faust.web.View):
        async def get(self, request: Any) -> Any:
            return self.bytes(page("index.html"), content_type="text/html")

    @app.page("/incidents/{incident}")
    class IncidentPage(faust.web.View):
        async def get(self, request: Any, incident: str) -> Any:
            return self.bytes(page("incident.html"), content_type="text/html")

    @app.page("/docs")
    class Docs(faust.web.View):
        async def get(self, request: Any) -> Any:
            return self.bytes(page("docs.html"), content_type="text/html")

    @app.page("/openapi.json")
    class OpenAPI(faust.web.View):
        async def get(self, request: Any) -> Any:
            return self.json(document())

    @app.page("/console/{name}")
    class Static(faust.web.View):
        async def get(self, request: Any, name: str) -> Any:
            if name not in STATIC_FILES:
                return fail(self, 404, "Not found", name)
            return self.bytes(page(name), content_type=STATIC_FILES[name])

    @app.page("/api/incidents")
    class Incidents(faust.web.View):
        async def get(self, request: Any) -> Any:
            who = identify(request)
            if who is None:
                return fail(self, 401, "Not authenticated", "send Authorization: Bearer <token>")
            try:
                f = parse_filter(request.query)
            except FilterError as e:
                return fail(self, 400, "Bad filter", str(e), field=e.field)
            if f.open_only:
                rows = await projection(lambda p: p.open_incidents())
            elif f.states is not None and len(f.states) == 1:
                one = f.states[0]
                rows = await projection(lambda p: p.incidents(limit=SCAN_LIMIT, state=one))
            else:
                rows = await projection(lambda p: p.incidents(limit=SCAN_LIMIT))
            chosen, total = f.choose([r for r in rows if who.sees(r)])
            for r in chosen:
                r["actions"] = allowed_actions(r, who.role, permissions)
            # never a cut list that looks whole: how many match, and whether more than these do
            # (open incidents are all read; a history of SCAN_LIMIT rows or more is read in part)
            exact = f.open_only or len(rows) < SCAN_LIMIT
            return self.json(
                {
                    "incidents": chosen,
                    "counts": counts(chosen),
                    "total": total,
                    "total_exact": exact,
                    "truncated": total > len(chosen) or not exact,
                }
            )

    @app.page("/api/incidents/{incident}")
    class IncidentDetail(faust.web.View):
        async def get(self, request: Any, incident: str) -> Any:
            who = identify(request)
            if who is None:
                return fail(self, 401, "Not authenticated", "send Authorization: Bearer <token>")
            row, alarm_rows, history = await projection(
                lambda p: (p.incident(incident), p.alarms(incident), p.history(incident))
            )
            if row is None or not who.sees(row):  # another tenant's incident: as if unknown
                return fail(self, 404, "No such incident", incident)
            rules = catalog()
            alarms = []
            for a in alarm_rows:
                info = rules.get(a["rule"])
                a.update(
                    info.to_dict()
                    if info
                    else {"unit": None, "description": None, "summary": None, "runbook": None}
                )
                a["suppression"] = alarm_suppression(a)  # (`suppressed` as parts, for the page's words)
                alarms.append(a)
            actions = allowed_actions(row, who.role, permissions)
            row["actions"] = actions
            return self.json(
                {
                    "incident": row,
                    "alarms": alarms,
                    "history": explain(history),
                    "actions": actions,
                }
            )

    def deliveries_json(log: Any, incident: str | None, limit: int) -> dict[str, Any]:
        if log is None:
            return {"deliveries": [], "attempts": [], "available": False}
        out = []
        for d in log.deliveries(incident, limit):
            row = {k: getattr(d, k) for k in d.__dataclass_fields__}
            for k in ("queued_at", "updated_at", "delivered_at"):
                row[k] = rfc3339(row[k])
            out.append(row)
        attempts = []
        if incident is not None:
            for a in log.attempts(incident, limit):
                row = {k: getattr(a, k) for k in a.__dataclass_fields__}
                row["started_at"] = rfc3339(row["started_at"])
                attempts.append(row)
        return {"deliveries": out, "attempts": attempts, "available": True}

    @app.page("/api/incidents/{incident}/deliveries")
    class IncidentDeliveries(faust.web.View):
        async def get(self, request: Any, incident: str) -> Any:
            who = identify(request)
            if who is None:
                return fail(self, 401, "Not authenticated", "send Authorization: Bearer <token>")
            row = await projection(lambda p: p.incident(incident))
            if row is None or not who.sees(row):  # unknown, or another tenant's
                return fail(self, 404, "No such incident", incident)
            return self.json(await deliveries(incident, 1000))

    @app.page("/api/incidents/{incident}/series")
    class IncidentSeries(faust.web.View):
        async def get(self, request: Any, incident: str) -> Any:
            who = identify(request)
            if who is None:
                return fail(self, 401, "Not authenticated", "send Authorization: Bearer <token>")
            try:
                limit = int(request.query.get("points", str(POINTS)))
                if not 1 <= limit <= POINTS:
                    raise ValueError
            except ValueError:
                return fail(
                    self, 400, "Bad filter", f"points: an integer between 1 and {POINTS}", field="points"
                )
            row, alarm_rows = await projection(lambda p: (p.incident(incident), p.alarms(incident)))
            if row is None or not who.sees(row):
                return fail(self, 404, "No such incident", incident)
            from atalaia.streams.ingest.observation import entity_key

            tenant = (row.get("correlation") or {}).get("tenant") or row.get("tenant")
            rules, store, out, seen = catalog(), observations.store, [], set()
            # the alarms of rules that read an attribute first: an entity's attribute is charted
            # once, in the unit of the rule that reads it (not bare, for an absence rule's alarm)
            alarm_rows = sorted(
                alarm_rows, key=lambda a: not getattr(rules.get(a["rule"]), "attribute", None)
            )
            for a in alarm_rows:
                entity = a.get("entity")
                if not entity:
                    continue
                info = rules.get(a["rule"])
                key = entity_key(tenant, entity)
                names = [info.attribute] if info and info.attribute else store.attributes(key)
                for attribute in names:
                    if (key, attribute) in seen:
                        continue
                    seen.add((key, attribute))
                    out.append(
                        {
                            "rule": a["rule"],
                            "entity": entity,
                            "attribute": attribute,
                            "unit": info.unit if info else None,
                            "aggregate": info.aggregate if info else None,
                            "value": a.get("value"),
                            "points": [
                                {"at": rfc3339(t), "value": v}
                                for t, v in store.get(key, attribute, limit, info.unit if info else None)
                            ],
                        }
                    )
            return self.json(
                {
                    "series": out,
                    "available": observations.connected,
                    "limits": {"points": POINTS, "series": SERIES, "total_series": TOTAL_SERIES},
                }
            )

    @app.page("/api/deliveries")
    class Deliveries(faust.web.View):
        async def get(self, request: Any) -> Any:
            who = identify(request)
            if who is None:
                return fail(self, 401, "Not authenticated", "send Authorization: Bearer <token>")
            try:
                limit = int(request.query.get("limit", "200"))
                if not 1 <= limit <= 1000:
                    raise ValueError
            except ValueError:
                return fail(self, 400, "Bad filter", "limit: an integer between 1 and 1000", field="limit")
            body = await deliveries(None, limit)
            body.pop("attempts")
            if who.tenants is not None:  # only deliveries of incidents this user may see
                ids = {d["incident"] for d in body["deliveries"]}
                rows = await projection(lambda p: {i: p.incident(i) for i in ids})
                body["deliveries"] = [d for d in body["deliveries"] if who.sees(rows[d["incident"]])]
            return self.json(body)

    streams: dict[str, int] = {}  # open live streams per client (client:ADDRESS) and per user (user:ACTOR)

    @app.page("/api/stream")
    class Stream(faust.web.View):
        async def get(self, request: Any) -> Any:
            who = identify(request)
            if who is None:
                return fail(self, 401, "Not authenticated", "send Authorization: Bearer <token>")
            # each open board holds a stream for as long as it is open: a few per user and per
            # client (an IPv6 client's whole /64), a few hundred in all, so neither one token nor
            # a flood of connections can take the console from everyone else
            # (per user with a users file; the demo's users are whatever a request says)
            user = f"user:{who.actor}" if auth.enabled else None
            client = f"client:{client_group(client_address(request, proxies))}"
            keys = [k for k in (user, client) if k is not None]
            if user is not None and streams.get(user, 0) >= STREAMS_PER_USER:
                return fail(
                    self, 429, "Too many live streams", f"at most {STREAMS_PER_USER} open boards per user"
                )
            if streams.get(client, 0) >= STREAMS_PER_CLIENT:
                return fail(
                    self, 429, "Too many live streams", f"at most {STREAMS_PER_CLIENT} open boards per client"
                )
            if sum(n for k, n in streams.items() if k.startswith("client:")) >= STREAMS_TOTAL:
                return fail(
                    self,
                    503,
                    "Too many live streams",
                    f"the console serves {STREAMS_TOTAL} open boards at most",
                )
            for key in keys:
                streams[key] = streams.get(key, 0) + 1
            try:
                return await self._stream(request, who)
            finally:
                for key in keys:
                    if streams[key] <= 1:
                        del streams[key]
                    else:
                        streams[key] -= 1

        async def _stream(self, request: Any, who: Any) -> Any:
            resp = web.StreamResponse(
                headers={
                    "Content-Type": "text/event-stream",
                    "Cache-Control": "no-cache",
                    "X-Accel-Buffering": "no",
                }
            )
            # subscribed before the answer starts: a board loads the list as soon as its stream
            # is open, so every change from then on must reach it
            sub = feed.subscribe(who.sees if who.tenants is not None else None)
            # a session token is checked again while the stream is open (an API token's user
            # cannot change: the users file is read at start)
            header = request.headers.get("Authorization")
            session, checked = auth.enabled and auth.session(header) is not None, time.monotonic()
            try:
                await resp.prepare(request)
                await resp.write(b"retry: 2000\n\n")
                await resp.write(_sse("ping", {"at": time.time(), "feed": feed.connected}))
                while not sub.dropped and not feed.should_stop:
                    row = await sub.get(PING_S)
                    if session and time.monotonic() - checked >= 1.0:
                        # signed out, or the session expired: the stream ends (it went on sending
                        # every change to a signed-out board); a dictionary lookup at most once a
                        # second, not a walk of the users per event in a storm
                        checked = time.monotonic()
                        if auth.session(header) is None:
                            await resp.write(_sse("signed-out", {"at": time.time()}))
                            break
                    if row is False:
                        await resp.write(_sse("ping", {"at": time.time(), "feed": feed.connected}))
                        continue
                    if row is None:
                        break
                    if not who.sees(row):
                        continue
                    # queued_at: the server time since which this change waited to be sent
                    # (the board's "behind by N s", measured on the server's clock)
                    row = dict(
                        row, actions=allowed_actions(row, who.role, permissions), queued_at=sub.taken_since
                    )
                    await resp.write(_sse("incident", row))
            except (ConnectionResetError, asyncio.CancelledError):
                pass
            finally:
                feed.unsubscribe(sub)
            return resp

    @app.page("/api/login")
    class Login(faust.web.View):
        async def post(self, request: Any) -> Any:
            from atalaia.console.auth import LoginLimited, LoginRefused, SessionsFull

            if not auth.enabled:
                return fail(self, 409, "Authentication is off", "this console has no users file")
            body = await read_object(request, "sign-in", 8 * 1024, timeout=settings.http_body_timeout_s)
            if isinstance(body, tuple):
                return fail(self, *body)
            for field in ("username", "password"):
                v = body.get(field)
                if not isinstance(v, str) or not v or len(v) > 1024:
                    return fail(
                        self, 422, "Invalid sign-in", f"{field}: a non-empty string is required", field=field
                    )
            from atalaia.console.auth import DEVICE_TTL_S, device_cookie_name

            cookie = device_cookie_name(body["username"])
            try:
                token, session = await asyncio.to_thread(
                    auth.login,
                    body["username"],
                    body["password"],
                    client_address(request, proxies),
                    request.cookies.get(cookie),
                )
            except LoginLimited as e:
                wait = max(1, int(e.retry_after + 0.999))
                return self.json(
                    problem(429, "Too many sign-in attempts", str(e), retry_after=wait),
                    status=429,
                    content_type=PROBLEM,
                    headers={"Retry-After": str(wait)},
                )
            except LoginRefused as e:
                return fail(self, 401, "Sign-in refused", str(e))
            except SessionsFull as e:  # (nobody else is signed out to make room)
                wait = int(e.retry_after)
                return self.json(
                    problem(503, "Too many sessions", str(e), retry_after=wait),
                    status=503,
                    content_type=PROBLEM,
                    headers={"Retry-After": str(wait)},
                )
            who = session.identity
            answer = self.json(
                {
                    "token": token,
                    "token_type": "Bearer",
                    "expires_at": rfc3339(session.expires),
                    "actor": who.actor,
                    "role": who.role,
                    "tenants": sorted(who.tenants) if who.tenants is not None else None,
                },
                headers=NO_STORE,  # it carries the session token: no cache (browser, proxy) keeps it
            )
            # this browser signed in as this user: its later sign-ins are limited by its own
            # failures, not by someone else's (console.auth.DeviceCookies); only sign-in sees it
            answer.set_cookie(
                cookie,
                session.device,
                max_age=int(DEVICE_TTL_S),
                path="/api/login",
                httponly=True,
                samesite="Strict",
                secure=request.secure or https_console,
            )
            return answer

    @app.page("/api/logout")
    class Logout(faust.web.View):
        async def post(self, request: Any) -> Any:
            header = request.headers.get("Authorization")
            if auth.enabled and auth.identify(header) is None:
                return fail(self, 401, "Not authenticated", "send Authorization: Bearer <token>")
            ended = auth.logout(header)
            return self.json({"signed_out": ended})

    @app.page("/api/whoami")
    class WhoAmI(faust.web.View):
        async def get(self, request: Any) -> Any:
            if not auth.enabled:
                return self.json(
                    {
                        "authentication": "off",
                        "role": "operator",
                        "note": "commands are trusted as sent (demo)",
                    }
                )
            who = auth.identify(request.headers.get("Authorization"))
            if who is None:
                return fail(self, 401, "Not authenticated", "send Authorization: Bearer <token>")
            scope = sorted(who.tenants) if who.tenants is not None else None
            body = {"authentication": "token", "actor": who.actor, "role": who.role, "tenants": scope}
            session = auth.session(request.headers.get("Authorization"))
            if session is not None:
                body["session_expires_at"] = rfc3339(session.expires)
            return self.json(body)

    _install_silences(
        app,
        settings,
        publish,
        replies,
        {
            "fail": fail,
            "identify": identify,
            "projection": projection,
            "permissions": permissions,
            "auth": auth,
        },
    )

    @app.page("/silences")
    class SilencesPage(faust.web.View):
        async def get(self, request: Any) -> Any:
            return self.bytes(page("silences.html"), content_type="text/html")

    keyed_requests = Requests()  # (a key sent again with another body is a 422, not the first's reply)

    @app.page("/api/incidents/{incident}/commands")
    class Commands(faust.web.View):
        async def post(self, request: Any, incident: str) -> Any:
            # JSON only: a cross-site form or text/plain POST from an operator's browser is refused
            body = await read_object(request, "command", 64 * 1024, timeout=settings.http_body_timeout_s)
            if isinstance(body, tuple):
                return fail(self, *body)
            # the request as the client wrote it, less its own id (a key makes the id): a key sent
            # again with another one is refused below
            asked = {k: v for k, v in body.items() if k != "id"}
            if auth.enabled:
                who = auth.identify(request.headers.get("Authorization"))
                if who is None:
                    return fail(self, 401, "Not authenticated", "send Authorization: Bearer <token>")
                body["actor"], body["role"] = who.actor, who.role  # never trust the body for these
                if who.tenants is not None and not who.sees(await projection(lambda p: p.incident(incident))):
                    # another tenant's incident (or one not projected yet): as if unknown
                    return fail(self, 404, "No such incident", incident)
            if "at" in body:  # the server sets the time, as it does actor and role
                return fail(
                    self, 422, "Invalid command", AT_REFUSED, errors=[{"field": "at", "message": AT_REFUSED}]
                )
            # a reason is a few lines and an assignee a name: the whole 64 KiB body was taken, and
            # the incident manager keeps each open incident's latest audit entries in its state,
            # and the ids of its last commands (an id the client chose; the demo's actor too)
            limits = {"reason": MAX_REASON_CHARS, "assignee": MAX_ACTOR_CHARS, "id": MAX_ID_CHARS}
            if not auth.enabled:
                limits["actor"] = MAX_ACTOR_CHARS
            if (long := too_long(body, limits)) is not None:
                return fail(
                    self, 422, "Invalid command", long[0], errors=[long[1]], **too_long_code(long, limits)
                )
            # a command sent again with its Idempotency-Key (its answer was lost, or it was 202
            # queued) is the same command: the manager applies an id once, and the retry gets the
            # reply the first got (console/idempotency.py, as the warnings commands)
            cid, bad_key = keyed(fail, self, request, str(body.get("actor") or ""))
            if bad_key is not None:
                return bad_key
            body["incident"] = incident
            if cid is not None:
                body["id"] = cid
            body.setdefault("id", secrets.token_hex(12))  # (not derived from the body: any body has one)
            try:
                cmd = Command.model_validate(body)
            except (ValidationError, TypeError) as e:
                errors = (
                    [
                        {
                            "field": ".".join(map(str, err["loc"])),
                            "message": err["msg"].removeprefix("Value error, "),
                        }
                        for err in e.errors()
                    ]
                    if isinstance(e, ValidationError)
                    else [{"field": "", "message": str(e)}]
                )
                return fail(
                    self,
                    422,
                    "Invalid command",
                    "; ".join(f"{x['field']}: {x['message']}" for x in errors),
                    errors=errors,
                    code="invalid-command",
                    params={"fields": ", ".join(dict.fromkeys(x["field"] for x in errors))},
                )
            if (other := reused(fail, self, keyed_requests, cid, asked)) is not None:
                return other
            await publish(
                settings.topic("commands"), orjson.dumps(cmd.model_dump(mode="json")), incident.encode()
            )
            reply = await replies.wait(cmd.id, REPLY_WAIT_S)
            if reply is None:  # the incident manager is busy or down: the command is queued
                return self.json({"command": cmd.id, "status": "queued"}, status=202)
            if not reply.get("accepted"):
                reason = str(reply.get("reason", ""))
                said = said_as(reply)  # its code and values, for the operator's language
                if reason.startswith("unknown incident"):
                    return fail(self, 404, "No such incident", reason, command=cmd.id, **said)
                if reason.startswith(ONE_SHOT_REFUSED):  # a one-shot shelve with nothing firing:
                    # the request cannot be, as a bad field (whenever it is sent, nothing to wait for)
                    msg = reason.removeprefix(ONE_SHOT_REFUSED + ": ")
                    return fail(
                        self,
                        422,
                        "Invalid command",
                        reason,
                        command=cmd.id,
                        errors=[{"field": "until", "message": msg}],
                        **said,
                    )
                return fail(self, 409, "Command refused", reason, command=cmd.id, **said)
            return self.json({"command": cmd.id, "status": "accepted", "reply": reply}, status=200)

    from atalaia.console import areas, warnings_api

    areas.install(app, settings, {"fail": fail})

    warnings_api.install(
        app,
        settings,
        publish,
        bootstrap,
        {"fail": fail, "identify": identify, "projection": projection, "page": page, "auth": auth},
    )


def _install_silences(app: Any, settings: Any, publish: Any, replies: Any, ctx: dict[str, Any]) -> None:
    """``GET/POST /api/silences``, ``DELETE /api/silences/{id}``: runtime silences (label matchers),
    created and expired through ``atalaia.commands`` (the incident manager keeps them in its state)."""
    from atalaia.incidents.model import to_us
    from atalaia.incidents.silences import (
        EVERY_ALARM,
        MAX_SPAN,
        SilenceCommand,
        config_silence,
        matches_every_alarm,
        silence_tenant,
        silence_view,
    )

    fail, identify, projection, permissions = (
        ctx["fail"],
        ctx["identify"],
        ctx["projection"],
        ctx["permissions"],
    )

    def config_silences() -> list[Any]:
        try:
            from atalaia.incidents.config import load_config

            return [config_silence(m) for m in load_config(settings.incidents_path).maintenance]
        except Exception:
            return []

    def errors_of(e: Exception) -> list[dict[str, str]]:
        if not isinstance(e, ValidationError):
            return [{"field": "", "message": str(e)}]
        out = []
        for err in e.errors():
            field = ".".join(map(str, err["loc"]))
            msg = str(err["msg"]).removeprefix("Value error, ")
            if not field and ":" in msg:  # a cross-field check says which field first
                field, msg = (x.strip() for x in msg.split(":", 1))
            out.append({"field": field or "body", "message": msg})
        return out

    async def body_of(view: Any, request: Any) -> dict[str, Any] | Any:
        body = await read_object(request, "silence", 64 * 1024, timeout=settings.http_body_timeout_s)
        return fail(view, *body) if isinstance(body, tuple) else body

    async def send(view: Any, request: Any, body: dict[str, Any], ok_status: int) -> Any:
        who = identify(request)
        if who is None:
            return fail(view, 401, "Not authenticated", "send Authorization: Bearer <token>")
        if ctx["auth"].enabled:
            body["actor"], body["role"] = who.actor, who.role  # never trust the body for these
        else:  # the demo trusts actor and role as sent, as for incident commands (audit, roles)
            for key, value in (("actor", who.actor), ("role", who.role)):
                if not isinstance(body.get(key), str) or not body[key].strip():
                    body[key] = value
        if "at" in body:  # the server sets the time, as it does actor and role
            return fail(
                view, 422, "Invalid silence", AT_REFUSED, errors=[{"field": "at", "message": AT_REFUSED}]
            )
        allowed = permissions.get("silence", ())
        if body["role"] not in allowed:
            return fail(
                view,
                403,
                "Forbidden",
                f"role {body['role']} may not create or expire silences",
                code="role-not-allowed",
                params={"role": str(body["role"]), "action": "silence", "allowed": ", ".join(allowed)},
            )
        if who.tenants is not None:
            if body.get("action") == "silence":
                refused = scope_silence(view, body, who.tenants)
                if refused is not None:
                    return refused
            elif not any(r["id"] == body.get("silence") for r in await listing("all", who.tenants)):
                return fail(view, 404, "No such silence", str(body.get("silence")))  # another tenant's
        if (long := too_long(body, {"id": MAX_ID_CHARS})) is not None:  # (kept in the manager's state)
            return fail(
                view,
                422,
                "Invalid silence",
                long[0],
                errors=[long[1]],
                **too_long_code(long, {"id": MAX_ID_CHARS}),
            )
        body.setdefault("id", secrets.token_hex(12))
        try:
            cmd = SilenceCommand.model_validate(body)
        except (ValidationError, TypeError, ValueError) as e:
            errs = errors_of(e)
            detail = "; ".join(f"{x['field']}: {x['message']}" for x in errs)
            if any(x["message"].startswith(EVERY_ALARM) for x in errs):  # (an empty-matching matcher)
                return fail(view, 422, "Invalid silence", detail, errors=errs, code="silences-everything")
            return fail(
                view,
                422,
                "Invalid silence",
                detail,
                errors=errs,
                code="invalid-silence",
                params={"fields": ", ".join(dict.fromkeys(x["field"] for x in errs))},
            )
        if cmd.action == "silence" and matches_every_alarm(cmd.matchers):
            msg = (
                "these matchers would silence every alarm (every alarm has a rule, a key and a "
                'severity): add one that picks some alarms, like parish="Ribeira" or rule=~"river-.*"'
            )
            return fail(
                view,
                422,
                "Invalid silence",
                f"matchers: {msg}",
                errors=[{"field": "matchers", "message": msg}],
                code="silences-everything",
            )
        # the 366 d limit of duration holds for an end too: from the start, or from now without one
        if cmd.end is not None and cmd.end - max(cmd.start or _utcnow(), _utcnow()) > MAX_SPAN:
            msg = f"at most {MAX_SPAN.days}d after the start (or from now)"
            return fail(
                view,
                422,
                "Invalid silence",
                f"end: {msg}",
                errors=[{"field": "end", "message": msg}],
                code="silence-too-long",
                params={"days": str(MAX_SPAN.days)},
            )
        await publish(settings.topic("commands"), orjson.dumps(cmd.model_dump(mode="json")), b"silences")
        reply = await replies.wait(cmd.id, REPLY_WAIT_S)
        if reply is None:
            return view.json({"command": cmd.id, "status": "queued"}, status=202)
        if not reply.get("accepted"):
            reason = str(reply.get("reason", ""))
            if reason.startswith("unknown silence"):
                return fail(view, 404, "No such silence", reason, command=cmd.id, **said_as(reply))
            return fail(view, 409, "Silence refused", reason, command=cmd.id, **said_as(reply))
        return view.json(
            {"command": cmd.id, "status": "accepted", "silence": reply.get("incident"), "reply": reply},
            status=ok_status,
        )

    def scope_silence(view: Any, body: dict[str, Any], tenants: frozenset[str]) -> Any:
        """A tenant-scoped user silences only their tenants' alarms: the silence needs a
        ``tenant="X"`` matcher for one of them (added when they have just one)."""
        matchers = body.get("matchers")
        if isinstance(matchers, str):
            matchers = [matchers]
        if isinstance(matchers, dict):  # {name: value} equalities, as the command reads them
            matchers = [f'{k}="{v}"' for k, v in matchers.items()]
        if not isinstance(matchers, list):  # any other form: never past the tenant check
            return fail(
                view,
                422,
                "Invalid silence",
                'matchers: a list like ["parish=\\"Ribeira\\""]',
                field="matchers",
            )
        t = silence_tenant(matchers)
        if t is None and len(tenants) == 1:
            body["matchers"] = [*matchers, f'tenant="{next(iter(tenants))}"']
            return None
        body["matchers"] = matchers  # (the form the tenant was judged on)
        if t is None:
            return fail(
                view,
                422,
                "Invalid silence",
                f'matchers: add tenant="X" for one of your tenants ({", ".join(sorted(tenants))})',
                field="matchers",
                code="tenant-needed",
                params={"tenants": ", ".join(sorted(tenants))},
            )
        if t not in tenants:
            return fail(
                view,
                403,
                "Forbidden",
                f"you may not silence alarms of tenant {t!r}",
                code="tenant-not-yours",
                params={"tenant": t},
            )
        return None

    async def listing(status: str, tenants: frozenset[str] | None = None) -> list[dict[str, Any]]:
        expired = status in ("all", "expired")
        stored = await projection(lambda p: p.silences(include_expired=expired))
        now = to_us(time.time())
        rows = []
        for r in stored:
            r["status"] = (
                "expired"
                if r["last_change"] == "expired" or now >= to_us(r["ends_at"])
                else "pending"
                if now < to_us(r["starts_at"])
                else "active"
            )
            r["name"] = None
            rows.append({k: r[k] for k in _SILENCE_FIELDS})
        rows += [silence_view(s, now) for s in config_silences()]
        return [
            r
            for r in rows
            if (
                status == "all" or r["status"] == status or (status == "current" and r["status"] != "expired")
            )
            and (tenants is None or silence_tenant(r["matchers"]) in tenants)  # a scoped user: theirs only
        ]

    @app.page("/api/silences")
    class Silences(faust.web.View):
        async def get(self, request: Any) -> Any:
            who = identify(request)
            if who is None:
                return fail(self, 401, "Not authenticated", "send Authorization: Bearer <token>")
            status = request.query.get("status", "current")
            if status not in ("current", "active", "pending", "expired", "all"):
                return fail(
                    self,
                    400,
                    "Bad filter",
                    "status: current, active, pending, expired or all",
                    field="status",
                )
            return self.json({"silences": await listing(status, who.tenants)})

        async def post(self, request: Any) -> Any:
            body = await body_of(self, request)
            if not isinstance(body, dict):
                return body
            body["action"] = "silence"
            return await send(self, request, body, 201)

    @app.page("/api/silences/{silence}")
    class SilenceItem(faust.web.View):
        async def get(self, request: Any, silence: str) -> Any:
            who = identify(request)
            if who is None:
                return fail(self, 401, "Not authenticated", "send Authorization: Bearer <token>")
            hit = next((r for r in await listing("all", who.tenants) if r["id"] == silence), None)
            if hit is None:
                return fail(self, 404, "No such silence", silence)
            return self.json(hit)

        async def delete(self, request: Any, silence: str) -> Any:
            # who is asking comes first: without a token nothing is said of the silence (a
            # maintenance window's id answered 409 and an unknown one 401)
            who = identify(request)
            if who is None:
                return fail(self, 401, "Not authenticated", "send Authorization: Bearer <token>")
            if any(s.id == silence for s in config_silences()):
                if who.tenants is not None and not any(
                    r["id"] == silence for r in await listing("all", who.tenants)
                ):
                    return fail(self, 404, "No such silence", silence)  # another tenant's
                return fail(
                    self,
                    409,
                    "Silence refused",
                    f"{silence} is a maintenance window of incidents.yaml: edit the file",
                )
            return await send(self, request, {"action": "expire-silence", "silence": silence}, 200)


#: why a client's ``at`` is refused: a command's time is the server's (the incident manager's clock
#: when it takes the command), as its actor and role are the token's: a client-set time would
#: stretch a shelve past ``shelving.max`` or back-date the audit trail
AT_REFUSED = "set by the server: leave it out (a command takes effect when the incident manager takes it)"


#: a command id a client chooses (the body's ``id``) at most, as an ``Idempotency-Key``: the
#: incident manager remembers the ids of its last commands (``memory``) in its state
MAX_ID_CHARS = 128


def said_as(reply: dict[str, Any]) -> dict[str, Any]:
    """A refusal's ``code`` and ``params`` as the incident manager's reply gives them, for
    :func:`~atalaia.console.problem.problem` (nothing for a reply without a code)."""
    code = reply.get("code")
    if not isinstance(code, str) or not code:
        return {}
    params = reply.get("params")
    return {"code": code, "params": params if isinstance(params, dict) else {}}


def too_long_code(long: tuple[str, dict[str, str]], limits: dict[str, int]) -> dict[str, Any]:
    """The ``code`` and ``params`` of :func:`too_long`'s refusal."""
    field = long[1]["field"]
    return {"code": "too-long", "params": {"field": field, "max": limits[field]}}


def too_long(body: dict[str, Any], limits: dict[str, int]) -> tuple[str, dict[str, str]] | None:
    """The problem's detail and error for the first text field of ``body`` longer than its limit
    in ``limits`` (characters), or None.

    >>> too_long({"reason": "ok", "id": "x" * 129}, {"reason": 2000, "id": 128})
    ('id: at most 128 characters', {'field': 'id', 'message': 'at most 128 characters'})
    >>> too_long({"id": 7}, {"id": 128}) is None  # (not text: the command's model says so)
    True
    """
    for field, most in limits.items():
        value = body.get(field)
        if isinstance(value, str) and len(value) > most:
            msg = f"at most {most} characters"
            return f"{field}: {msg}", {"field": field, "message": msg}
    return None


def _utcnow() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


_SILENCE_FIELDS = (
    "id",
    "matchers",
    "author",
    "comment",
    "starts_at",
    "ends_at",
    "created_at",
    "source",
    "name",
    "status",
    "expired_by",
)


def _sse(event: str, data: Any) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _permissions(settings: Any, default: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """The role table the incident manager uses (its config file), to hide what would be refused."""
    try:
        from atalaia.incidents.config import load_config

        return dict(load_config(settings.incidents_path).permissions)
    except Exception:  # the manager still decides; only the buttons are less exact
        return dict(default)
