"""Operations-centre HTTP API on the Faust web server.

* ``GET  /``                                  the live incident board (static page)
* ``GET  /api/incidents[?state=open|all]``    incidents from the SQL projection
* ``GET  /api/incidents/{id}``                one incident with its alarms and audit trail
* ``POST /api/incidents/{id}/commands``       acknowledge / shelve / comment / ... → ``atalaia.commands``;
  answers 200 (accepted), 409 (refused by the incident manager, with its reason) or 202 (queued:
  no reply within 5 s)

Bad requests get a 4xx with an ``application/problem+json`` body. Commands are validated with
the incidents package's ``Command`` model before they reach Kafka; whether the incident accepts
them (state, role) is decided by the incident manager, which answers on ``atalaia.replies``.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import faust
import orjson
from pydantic import ValidationError

from atalaia.streams.app import PROBLEM, problem

STATIC = Path(__file__).parent / "static"
REPLY_WAIT_S = 5.0  # how long a command request waits for the incident manager's reply


def install(app: faust.App, settings: Any, publish: Any, bootstrap: str) -> None:
    """Add the console routes to ``app``; ``publish(topic, value, key)`` sends to Kafka."""
    from atalaia.console.auth import Authenticator
    from atalaia.console.replies import ReplyWatcher
    from atalaia.incidents.commands import Command
    from atalaia.incidents.projection import Projection

    replies = app.service(ReplyWatcher(bootstrap, settings.topic("replies")))
    auth = Authenticator.from_file(settings.console_users)

    state: dict[str, Any] = {}

    def projection() -> Projection:
        proj = getattr(app, "atalaia_projection", None)
        if proj is not None:
            return proj
        if "proj" not in state:
            state["proj"] = Projection.connect(settings.projection_url(), schema=settings.database_schema)
        return state["proj"]

    @app.page("/")
    class Board(faust.web.View):
        async def get(self, request: Any) -> Any:
            return self.bytes((STATIC / "index.html").read_bytes(), content_type="text/html")

    def refuse(view: Any, request: Any) -> Any:
        """With authentication on, reading needs a token too (any role)."""
        if auth.enabled and auth.identify(request.headers.get("Authorization")) is None:
            return view.json(
                problem(401, "Not authenticated", "send Authorization: Bearer <token>"),
                status=401,
                content_type=PROBLEM,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return None

    @app.page("/api/incidents")
    class Incidents(faust.web.View):
        async def get(self, request: Any) -> Any:
            if (denied := refuse(self, request)) is not None:
                return denied
            which = request.query.get("state", "open")
            try:
                limit = int(request.query.get("limit", "200"))
            except ValueError:
                return self.json(
                    problem(400, "Bad query", "limit must be an integer"), status=400, content_type=PROBLEM
                )
            p = projection()
            rows = p.open_incidents() if which == "open" else p.incidents(limit=limit)
            return self.json({"incidents": rows[:limit]})

    @app.page("/api/incidents/{incident}")
    class IncidentDetail(faust.web.View):
        async def get(self, request: Any, incident: str) -> Any:
            if (denied := refuse(self, request)) is not None:
                return denied
            p = projection()
            row = p.incident(incident)
            if row is None:
                return self.json(problem(404, "No such incident", incident), status=404, content_type=PROBLEM)
            return self.json({"incident": row, "alarms": p.alarms(incident), "history": p.history(incident)})

    @app.page("/api/whoami")
    class WhoAmI(faust.web.View):
        async def get(self, request: Any) -> Any:
            if not auth.enabled:
                return self.json({"authentication": "off", "note": "commands are trusted as sent (demo)"})
            who = auth.identify(request.headers.get("Authorization"))
            if who is None:
                return self.json(
                    problem(401, "Not authenticated", "send Authorization: Bearer <token>"),
                    status=401,
                    content_type=PROBLEM,
                )
            return self.json({"authentication": "token", "actor": who.actor, "role": who.role})

    @app.page("/api/incidents/{incident}/commands")
    class Commands(faust.web.View):
        async def post(self, request: Any, incident: str) -> Any:
            # JSON only: a cross-site form or text/plain POST from an operator's browser is refused
            ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype != "application/json":
                return self.json(
                    problem(415, "Unsupported media type", "send the command as application/json"),
                    status=415,
                    content_type=PROBLEM,
                )
            if request.content_length and request.content_length > 64 * 1024:
                return self.json(
                    problem(413, "Command too large", "a command is at most 64 KiB"),
                    status=413,
                    content_type=PROBLEM,
                )
            try:
                body = orjson.loads(await request.read())
                if not isinstance(body, dict):
                    raise ValueError("the body must be a JSON object")
            except (ValueError, orjson.JSONDecodeError) as e:
                return self.json(
                    problem(400, "Bad command", f"body is not a JSON object: {e}"),
                    status=400,
                    content_type=PROBLEM,
                )
            if auth.enabled:
                who = auth.identify(request.headers.get("Authorization"))
                if who is None:
                    return self.json(
                        problem(401, "Not authenticated", "send Authorization: Bearer <token>"),
                        status=401,
                        content_type=PROBLEM,
                        headers={"WWW-Authenticate": "Bearer"},
                    )
                body["actor"], body["role"] = who.actor, who.role  # never trust the body for these
            body["incident"] = incident
            body.setdefault(
                "id",
                hashlib.blake2b(orjson.dumps([incident, body, time.time_ns()]), digest_size=12).hexdigest(),
            )
            try:
                cmd = Command.model_validate(body)
            except ValidationError as e:
                errors = [
                    {"field": ".".join(map(str, err["loc"])), "message": err["msg"]} for err in e.errors()
                ]
                return self.json(
                    problem(
                        422,
                        "Invalid command",
                        "; ".join(f"{x['field']}: {x['message']}" for x in errors),
                        errors=errors,
                    ),
                    status=422,
                    content_type=PROBLEM,
                )
            await publish(
                settings.topic("commands"), orjson.dumps(cmd.model_dump(mode="json")), incident.encode()
            )
            reply = await replies.wait(cmd.id, REPLY_WAIT_S)
            if reply is None:  # the incident manager is busy or down: the command is queued
                return self.json({"command": cmd.id, "status": "queued"}, status=202)
            if not reply.get("accepted"):
                return self.json(
                    problem(409, "Command refused", str(reply.get("reason", "")), command=cmd.id),
                    status=409,
                    content_type=PROBLEM,
                )
            return self.json({"command": cmd.id, "status": "accepted", "reply": reply}, status=200)
