"""The console API as an OpenAPI 3.1 document (served at ``/openapi.json``, read by ``/docs``).
Written by hand next to the routes in ``console/api.py``; ``tests/test_console_api.py`` runs
schemathesis against it, so a route that answers something this document does not allow fails."""

from __future__ import annotations

from typing import Any

from atalaia.console.present import SEVERITIES, STATES
from atalaia.incidents.config import ACTIONS as INCIDENT_ACTIONS

ACTIONS = list(INCIDENT_ACTIONS)  # the operator actions of incidents.yaml permissions


def _nullable(kind: str | list[str]) -> dict[str, Any]:
    kinds = [kind] if isinstance(kind, str) else list(kind)
    return {"type": [*kinds, "null"]}


def _object(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


SUPPRESSION = {
    "type": ["array", "null"],
    "description": "the suppression text as its reasons (null when none), each with its kind: "
    "chattering (until: the time the chattering shelve ends), inhibited (rule, key), maintenance (name, "
    "comment), silenced (silence, comment), unsuppressed (rule, key; timeline only)",
    "items": {"type": "object", "required": ["kind"], "properties": {"kind": {"type": "string"}}},
}
TIME = {"type": "string", "description": "RFC 3339, UTC"}
PROBLEM = _object(
    ["type", "title", "status", "detail"],
    {
        "type": {
            "type": "string",
            "format": "uri",
            "description": "`about:blank`, or for a refusal the console names `urn:atalaia:console:<code>` "
            "(stable: `nothing-to-acknowledge`, `nothing-firing`, `role-not-allowed`, `silences-everything`, "
            "`invalid-command`, `invalid-silence`, `invalid-draft`, `too-long`, ...: incidents/README.md, "
            '"Commands and roles"), to be said in the reader\'s language; `title` and `detail` are English',
        },
        "params": {
            "type": "object",
            "description": "with a `urn:atalaia:console:` type: the values its `detail` names (e.g. "
            '`{"state": "acknowledged"}`), strings or integers; `{}` when none',
            "additionalProperties": {"type": ["string", "integer"]},
        },
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "field": {"type": "string", "description": "the query parameter or body field at fault"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "field": {"type": "string"},
                    "message": {"type": "string"},
                    "code": {
                        "type": "string",
                        "description": "a draft's problem the pages say in their language (`missing`, "
                        "`empty-text`, `area-empty`, `area-missing`); absent for the others",
                    },
                },
            },
        },
    },
)
INCIDENT = _object(
    ["id", "state", "severity", "title", "opened_at", "updated_at"],
    {
        "id": {"type": "string"},
        "version": {"type": "integer"},
        "state": {"type": "string", "enum": list(STATES)},
        "active": {"type": "boolean"},
        "severity": {"type": "string"},
        "title": {"type": "string"},
        "correlation": {"type": "object"},
        "labels": {"type": "object"},
        "location": _nullable(["array", "object"]),
        "alarm_count": {"type": "integer"},
        "opened_at": TIME,
        "updated_at": TIME,
        "closed_at": _nullable("string"),
        "acknowledged_by": _nullable("string"),
        "shelved_until": _nullable("string"),
        "shelved_until_clear": {
            "type": ["boolean", "null"],
            "description": "true while a one-shot shelve is on: shelved until its alarms return to "
            "normal, at most until shelved_until; null otherwise",
        },
        "assignee": _nullable("string"),
        "overlay": {
            "type": ["string", "null"],
            "enum": ["shelved", "suppressed", "out-of-service", None],
            "description": "the operator overlay; null while state 'suppressed' means every alarm is "
            "suppressed (inhibited, silenced, in maintenance) and no operator suppressed the incident",
        },
        "needs_ack": {
            "type": ["boolean", "null"],
            "description": "an annunciation waits for acknowledgement (null: not known, an older row)",
        },
        "last_change": {"type": "string"},
        "last_event": {"type": "string"},
        "actions": {
            "type": "array",
            "items": {"type": "string", "enum": ACTIONS},
            "description": "what the caller's role may do in this state",
        },
    },
)
ALARM = _object(
    ["rule", "key", "state", "severity", "count", "first_seen", "last_seen"],
    {
        "rule": {"type": "string"},
        "key": {"type": "string"},
        "entity": _nullable("string"),
        "state": {"type": "string"},
        "severity": {"type": "string"},
        "value": _nullable("number"),
        "unit": _nullable("string"),
        "description": _nullable("string"),
        "summary": _nullable("string"),
        "runbook": _nullable("string"),
        "count": {"type": "integer"},
        "first_seen": TIME,
        "last_seen": TIME,
        "suppressed": _nullable("string"),
        "suppression": SUPPRESSION,
        "chattering": {"type": "boolean"},
    },
)
AUDIT = _object(
    ["version", "at", "change", "changes", "state", "severity", "actor", "reason", "why"],
    {
        "version": {"type": "integer"},
        "at": TIME,
        "change": {"type": "string"},
        "changes": {"type": "array", "items": {"type": "string"}},
        "state": {"type": "string"},
        "severity": {"type": "string"},
        "actor": {"type": "string"},
        "reason": {"type": "string"},
        "why": {
            "type": "string",
            "description": "what the change meant, e.g. why acknowledgement is needed again",
        },
        "shelve_end": {
            "type": ["string", "null"],
            "enum": ["expired", "cleared", "one-shot-expired", None],
            "description": "an unshelve the incident manager made: a shelve's time ran out (expired), "
            "a one-shot shelve's alarms returned to normal (cleared) or it reached its bound with "
            "alarms still firing (one-shot-expired); null otherwise",
        },
        "why_parts": {
            "type": "array",
            "items": {"type": "object", "required": ["code"], "properties": {"code": {"type": "string"}}},
            "description": "the why as codes with from/to, for translation",
        },
        "suppression": SUPPRESSION,
        "reason_lead": {
            "type": ["string", "null"],
            "description": "with suppression: the reason's text before it (an incident opened already suppressed)",
        },
        "command": _nullable("string"),
    },
)
DELIVERY = _object(
    ["notification_id", "incident", "target", "channel", "kind", "status", "attempts"],
    {
        "notification_id": {"type": "string"},
        "incident": {"type": "string"},
        "target": {"type": "string"},
        "channel": {"type": "string"},
        "kind": {"type": "string"},
        "step": {"type": "integer"},
        "repeat": {"type": "integer"},
        "status": {"type": "string"},
        "attempts": {"type": "integer"},
        "last_error": _nullable("string"),
        "queued_at": TIME,
        "updated_at": TIME,
        "delivered_at": _nullable("string"),
    },
)


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


SILENCE = _object(
    ["id", "matchers", "author", "comment", "starts_at", "ends_at", "status", "source"],
    {
        "id": {
            "type": "string",
            "description": "s-… (derived from the command id); maintenance-… for incidents.yaml",
        },
        "matchers": {"type": "array", "items": {"type": "string"}},
        "author": {"type": "string"},
        "comment": {"type": "string"},
        "starts_at": TIME,
        "ends_at": TIME,
        "created_at": TIME,
        "source": {"type": "string", "enum": ["api", "config"]},
        "name": _nullable("string"),
        "status": {"type": "string", "enum": ["pending", "active", "expired"]},
        "expired_by": _nullable("string"),
    },
)
NEW_SILENCE = _object(
    ["matchers", "comment"],
    {
        "matchers": {
            "type": "array",
            "items": {"type": "string"},
            "description": 'Alertmanager syntax: name="v", name!="v", name=~"regex", name!~"regex" '
            "(regexes fully anchored); at least one must need a label value",
        },
        "comment": {"type": "string", "maxLength": 2000},
        "start": {"type": "string", "description": "RFC 3339 with a zone; default now"},
        "end": {"type": "string", "description": "RFC 3339 with a zone"},
        "duration": {"type": ["string", "number"], "description": "instead of end: 2h or seconds"},
    },
)


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/problem+json": {"schema": PROBLEM}}}


#: a command sent again with the same key (by the same user, to the same path) is the same command
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "a client's own key (1 to 128 printable ASCII characters, e.g. a UUID): a command sent "
    "again with the same key by the same user to the same path is the same command, answered as the "
    "first (the same warning, the same reply of the incident manager), never drafted or applied "
    "twice; another key, user or path is another command; a malformed key is a 400, a key sent "
    "again with another body a 422 (a key is for one command)",
    "schema": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[\\x20-\\x7e]+$"},
}


def _q(name: str, description: str, schema: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
        **kw,
    }


ID = {"name": "incident", "in": "path", "required": True, "schema": {"type": "string"}}
SILENCE_ID = {"name": "silence", "in": "path", "required": True, "schema": {"type": "string"}}
UNAUTHORIZED = _problem("no valid token (when the console has users)")
QUEUED = _json({"type": "object"}, "queued: no answer within 5 s")
# (the routes that take an Idempotency-Key)
QUEUED_KEYED = "queued: no answer within 5 s (send it again with its Idempotency-Key)"
BAD_BODY_OR_KEY = _problem(
    "the body is not a JSON object (nested more than 64 deep), or a malformed Idempotency-Key"
)


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """A required application/json request body."""
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _body_answers(answers: dict[str, Any]) -> dict[str, Any]:
    """``answers`` with the problems any JSON request body may get (400, 413, 415), in status order."""
    merged = {
        "400": _problem("the body is not a JSON object, or nests arrays and objects more than 64 deep"),
        "413": _problem("too large"),
        "415": _problem("not application/json"),
        **answers,
    }
    return dict(sorted(merged.items()))


def document(server_url: str | None = None) -> dict[str, Any]:
    sev_list = {"type": "string", "description": f"comma-separated: {', '.join(SEVERITIES)}"}
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Atalaia console API",
            "version": "1",
            "description": "Incidents, their audit trail and deliveries, operator commands and live "
            "updates. With `ATALAIA_CONSOLE_USERS` set every request needs `Authorization: Bearer <token>`.",
        },
        "components": {
            "schemas": {
                "Problem": PROBLEM,
                "Incident": INCIDENT,
                "Alarm": ALARM,
                "Audit": AUDIT,
                "Delivery": DELIVERY,
                "Silence": SILENCE,
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{}, {"bearer": []}],
        "paths": {
            "/api/incidents": {
                "get": {
                    "summary": "Incidents, in triage order (unacknowledged, severity, oldest first)",
                    "parameters": [
                        _q("state", "open (default), all, or comma-separated states: " + ", ".join(STATES)),
                        _q("severity", "only these severities", sev_list),
                        _q(
                            "min_severity",
                            "this severity or higher",
                            {"type": "string", "enum": list(SEVERITIES)},
                        ),
                        _q(
                            "label",
                            "name=value on the incident's labels (repeatable)",
                            {"type": "array", "items": {"type": "string"}},
                            style="form",
                            explode=True,
                        ),
                        _q("q", "text in the id, title, assignee or labels"),
                        _q(
                            "since",
                            "updated at or after (RFC 3339)",
                            {"type": "string", "format": "date-time"},
                        ),
                        _q("until", "updated before (RFC 3339)", {"type": "string", "format": "date-time"}),
                        _q("limit", "at most this many (1-1000, default 200)", {"type": "integer"}),
                        _q(
                            "sort",
                            "triage (default) or updated",
                            {"type": "string", "enum": ["triage", "updated"]},
                        ),
                    ],
                    "responses": {
                        "200": _json(
                            _object(
                                ["incidents", "counts", "total", "total_exact", "truncated"],
                                {
                                    "incidents": {"type": "array", "items": INCIDENT},
                                    "total": {
                                        "type": "integer",
                                        "description": "incidents that match, listed or not (at least "
                                        "this many when total_exact is false)",
                                    },
                                    "total_exact": {
                                        "type": "boolean",
                                        "description": "false when a history of 10 000 incidents or more "
                                        "was read in part",
                                    },
                                    "truncated": {
                                        "type": "boolean",
                                        "description": "more incidents match than are listed (limit): "
                                        "filter to narrow, or raise limit",
                                    },
                                    "counts": {
                                        "type": "object",
                                        "properties": {
                                            "state": {
                                                "type": "object",
                                                "additionalProperties": {"type": "integer"},
                                            },
                                            "severity": {
                                                "type": "object",
                                                "additionalProperties": {"type": "integer"},
                                            },
                                        },
                                    },
                                },
                            ),
                            "the incidents that match",
                        ),
                        "400": _problem("a bad filter; `field` names it"),
                        "401": UNAUTHORIZED,
                    },
                }
            },
            "/api/incidents/{incident}": {
                "get": {
                    "summary": "One incident: alarms (with units), audit trail (with why), allowed actions",
                    "parameters": [ID],
                    "responses": {
                        "200": _json(
                            _object(
                                ["incident", "alarms", "history", "actions"],
                                {
                                    "incident": INCIDENT,
                                    "alarms": {"type": "array", "items": ALARM},
                                    "history": {"type": "array", "items": AUDIT},
                                    "actions": {
                                        "type": "array",
                                        "items": {"type": "string", "enum": ACTIONS},
                                    },
                                },
                            ),
                            "the incident",
                        ),
                        "401": UNAUTHORIZED,
                        "404": _problem("no such incident"),
                    },
                }
            },
            "/api/incidents/{incident}/deliveries": {
                "get": {
                    "summary": "Who was notified of this incident, when, by which channel, with what result",
                    "parameters": [ID],
                    "responses": {
                        "200": _json(
                            _object(
                                ["deliveries", "available"],
                                {
                                    "deliveries": {"type": "array", "items": DELIVERY},
                                    "attempts": {"type": "array", "items": {"type": "object"}},
                                    "available": {
                                        "type": "boolean",
                                        "description": "false when this console cannot read the delivery log",
                                    },
                                },
                            ),
                            "the delivery log for the incident",
                        ),
                        "401": UNAUTHORIZED,
                        "404": _problem("no such incident"),
                    },
                }
            },
            "/api/incidents/{incident}/series": {
                "get": {
                    "summary": "Recent observations behind each alarm (the entity's attribute the rule "
                    "reads), from the console's bounded in-memory buffer, oldest first; values in the "
                    "rule's `unit`, converted as the rules convert them (a reading whose unit does not "
                    "convert is left out)",
                    "parameters": [
                        ID,
                        _q(
                            "points", "at most this many per series (1-120, default 120)", {"type": "integer"}
                        ),
                    ],
                    "responses": {
                        "200": _json(
                            _object(
                                ["series", "available", "limits"],
                                {
                                    "series": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["rule", "entity", "attribute", "points"],
                                            "properties": {
                                                "rule": {"type": "string"},
                                                "entity": {"type": "string"},
                                                "attribute": {"type": "string"},
                                                "unit": _nullable("string"),
                                                "aggregate": _nullable("string"),
                                                "value": _nullable("number"),
                                                "points": {
                                                    "type": "array",
                                                    "items": {
                                                        "type": "object",
                                                        "required": ["at", "value"],
                                                        "properties": {
                                                            "at": TIME,
                                                            "value": {"type": "number"},
                                                        },
                                                    },
                                                },
                                            },
                                        },
                                    },
                                    "available": {
                                        "type": "boolean",
                                        "description": "whether the buffer is reading atalaia.observations",
                                    },
                                    "limits": {
                                        "type": "object",
                                        "description": "the buffer's bounds: `points` per series, "
                                        "`series` per tenant (its least recently fed goes beyond), "
                                        "`total_series` over every tenant (beyond it a series of the "
                                        "tenant holding the most goes: one tenant's sensors never push "
                                        "out a tenant's that holds fewer)",
                                    },
                                },
                            ),
                            "the series",
                        ),
                        "400": _problem("a bad points"),
                        "401": UNAUTHORIZED,
                        "404": _problem("no such incident"),
                    },
                }
            },
            "/api/incidents/{incident}/commands": {
                "post": {
                    "summary": "An operator command (sent on atalaia.commands; the incident manager decides)",
                    "parameters": [ID, IDEMPOTENCY_KEY],
                    "requestBody": _json_body(
                        _object(
                            ["action"],
                            {
                                "action": {"type": "string", "enum": ACTIONS},
                                "id": {
                                    "type": "string",
                                    "maxLength": 128,
                                    "description": "optional: the command's id, applied once "
                                    "(the Idempotency-Key header is the usual way)",
                                },
                                "actor": {
                                    "type": "string",
                                    "maxLength": 128,
                                    "description": "the demo (no users file) only: else the token's",
                                },
                                "role": {"type": "string"},
                                "reason": {"type": "string", "maxLength": 2000},
                                "duration": {
                                    "type": ["string", "number"],
                                    "description": "shelve: 30m or seconds (with until: clear, the "
                                    "longest it may last; default shelving.max)",
                                },
                                "until": {
                                    "type": "string",
                                    "enum": ["clear"],
                                    "description": "shelve only: a one-shot shelve, until the "
                                    "incident's alarms return to normal (at most duration); 422 "
                                    "naming until when none fires",
                                },
                                "assignee": {"type": "string", "maxLength": 128},
                                "version": {
                                    "type": "integer",
                                    "minimum": 1,
                                    "maximum": 2**53,
                                    "description": "the incident version the operator saw: an acknowledge "
                                    "is refused (409, saying what came since) if the incident asked for "
                                    "acknowledgement again after it",
                                },
                            },
                        )
                    ),
                    "responses": _body_answers(
                        {
                            "200": _json({"type": "object"}, "accepted"),
                            "202": _json({"type": "object"}, QUEUED_KEYED),
                            "400": BAD_BODY_OR_KEY,
                            "401": UNAUTHORIZED,
                            "404": _problem("no such incident"),
                            "409": _problem(
                                "refused by the incident manager (closed, role, state), with the reason"
                            ),
                            "422": _problem(
                                "invalid command; `errors` names the fields (`until` for a one-shot "
                                "shelve of an incident with no firing alarm: nothing to wait for); "
                                "or an Idempotency-Key sent again with another command (`field`: "
                                "Idempotency-Key)"
                            ),
                        }
                    ),
                }
            },
            "/api/deliveries": {
                "get": {
                    "summary": "The delivery log, most recent last",
                    "parameters": [
                        _q("limit", "at most this many (1-1000, default 200)", {"type": "integer"})
                    ],
                    "responses": {
                        "200": _json(
                            _object(
                                ["deliveries", "available"],
                                {
                                    "deliveries": {"type": "array", "items": DELIVERY},
                                    "available": {"type": "boolean"},
                                },
                            ),
                            "deliveries",
                        ),
                        "400": _problem("a bad limit"),
                        "401": UNAUTHORIZED,
                    },
                }
            },
            "/api/silences": {
                "get": {
                    "summary": "Silences: runtime ones (from the projection) and the maintenance windows of incidents.yaml",
                    "parameters": [
                        _q(
                            "status",
                            "current (default: pending and active), active, pending, expired or all",
                            {"type": "string", "enum": ["current", "active", "pending", "expired", "all"]},
                        )
                    ],
                    "responses": {
                        "200": _json(
                            _object(["silences"], {"silences": {"type": "array", "items": SILENCE}}),
                            "silences",
                        ),
                        "400": _problem("a bad status"),
                        "401": UNAUTHORIZED,
                    },
                },
                "post": {
                    "summary": "Create a silence (sent on atalaia.commands; effective at once, no restart)",
                    "requestBody": _json_body(NEW_SILENCE),
                    "responses": _body_answers(
                        {
                            "201": _json({"type": "object"}, "created: `silence` is its id"),
                            "202": QUEUED,
                            "401": UNAUTHORIZED,
                            "403": _problem("this role may not silence"),
                            "409": _problem("refused by the incident manager, with the reason"),
                            "422": _problem(
                                "bad matchers, regex, times or comment; `errors` names the fields"
                            ),
                        }
                    ),
                },
            },
            "/api/silences/{silence}": {
                "get": {
                    "summary": "One silence",
                    "parameters": [SILENCE_ID],
                    "responses": {
                        "200": _json(SILENCE, "the silence"),
                        "401": UNAUTHORIZED,
                        "404": _problem("no such silence"),
                    },
                },
                "delete": {
                    "summary": "Expire a silence now (alarms it matched are annunciated again); "
                    "without a valid token 401, whatever the id",
                    "parameters": [SILENCE_ID],
                    "responses": {
                        "200": _json({"type": "object"}, "expired"),
                        "202": QUEUED,
                        "401": UNAUTHORIZED,
                        "403": _problem("this role may not expire silences"),
                        "404": _problem("no such (unexpired) silence"),
                        "409": _problem("a maintenance window of incidents.yaml (edit the file), or refused"),
                        "422": _problem("a bad id"),
                    },
                },
            },
            "/api/stream": {
                "get": {
                    "summary": "Server-sent events: `incident` (a changed row, as in /api/incidents, "
                    "with `queued_at`: the server time, in epoch seconds, since which the change waited "
                    "to be sent on this stream), `ping` after 5 s with nothing to send (`at`: the server "
                    "time it was sent; `feed`: whether the console reads the broker)",
                    "responses": {
                        "200": {"description": "an event stream", "content": {"text/event-stream": {}}},
                        "401": UNAUTHORIZED,
                        "429": _problem(
                            "this user holds 8 open streams, or this client (an IPv4 address, an IPv6 /64) 16"
                        ),
                        "503": _problem("the console serves 500 open streams at most"),
                    },
                }
            },
            "/api/login": {
                "post": {
                    "summary": "Sign in with a username and password (users file, `password_argon2`): a "
                    "session token to send as `Authorization: Bearer <token>`; failures are limited per user "
                    "and per client address, except for a browser presenting the device cookie an earlier "
                    "sign-in of the same user set (`atalaia_device_…`), which is limited by its own failures",
                    "security": [{}],
                    "requestBody": _json_body(
                        _object(
                            ["username", "password"],
                            {
                                "username": {"type": "string"},
                                "password": {"type": "string"},
                            },
                        )
                    ),
                    "responses": _body_answers(
                        {
                            "200": _json(
                                _object(
                                    ["token", "token_type", "expires_at", "actor", "role"],
                                    {
                                        "token": {"type": "string"},
                                        "token_type": {"type": "string", "enum": ["Bearer"]},
                                        "expires_at": TIME,
                                        "actor": {"type": "string"},
                                        "role": {"type": "string"},
                                        "tenants": _nullable("array"),
                                    },
                                ),
                                "signed in",
                            )
                            | {
                                "headers": {
                                    "Set-Cookie": {
                                        "schema": {"type": "string"},
                                        "description": "the device cookie of this browser for this user "
                                        "(HttpOnly, SameSite=Strict, Path=/api/login, 30 days)",
                                    },
                                    "Cache-Control": {
                                        "schema": {"type": "string", "enum": ["no-store"]},
                                        "description": "the answer carries a token: no cache keeps it",
                                    },
                                    "Pragma": {"schema": {"type": "string", "enum": ["no-cache"]}},
                                }
                            },
                            "401": _problem("wrong username or password"),
                            "409": _problem("authentication is off (no users file)"),
                            "422": _problem("username or password missing; `field` names it"),
                            "429": {
                                "description": "too many failed sign-ins for this user or address lately",
                                "headers": {"Retry-After": {"schema": {"type": "string"}}},
                                "content": {"application/problem+json": {"schema": PROBLEM}},
                            },
                            "503": {
                                "description": "every session place is taken by other users' live "
                                "sessions: nobody is signed out to make room",
                                "headers": {"Retry-After": {"schema": {"type": "string"}}},
                                "content": {"application/problem+json": {"schema": PROBLEM}},
                            },
                        }
                    ),
                }
            },
            "/api/logout": {
                "post": {
                    "summary": "End the caller's session (a session token stops working at once)",
                    "responses": {
                        "200": _json(
                            _object(["signed_out"], {"signed_out": {"type": "boolean"}}),
                            "`signed_out` false for an API token (nothing to end)",
                        ),
                        "401": UNAUTHORIZED,
                    },
                }
            },
            "/api/whoami": {
                "get": {
                    "summary": "Whether authentication is on, and who the token belongs to",
                    "responses": {"200": _json({"type": "object"}, "who"), "401": UNAUTHORIZED},
                }
            },
        },
    }
    doc["components"]["schemas"]["Warning"] = WARNING
    doc["components"]["schemas"]["Areas"] = AREAS
    doc["paths"].update(warning_paths())
    doc["paths"].update(area_paths())
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc


# ---------------------------------------------------------------- population warnings (console/warnings_api.py)
WARNING_ACTIONS = ["edit", "submit", "approve", "reject", "issue", "update", "cancel"]
WARNING = _object(
    ["id", "version", "state", "draft", "authors", "created", "audit", "actions"],
    {
        "id": {"type": "string"},
        "version": {"type": "integer"},
        "state": {
            "type": "string",
            "enum": [
                "draft",
                "submitted",
                "approved",
                "issued",
                "updated",
                "cancelled",
                "expired",
                "rejected",
            ],
        },
        "draft": {"type": "object", "description": "the draft (DESIGN.md, Warning draft → CAP)"},
        "authors": {"type": "array", "items": {"type": "string"}},
        "created": TIME,
        "approver": _nullable("string"),
        "supersedes": _nullable("string"),
        "superseded_by": _nullable("string"),
        "identifier": _nullable("string"),
        "sent": _nullable("string"),
        "expires": _nullable("string"),
        "audit": {"type": "array", "items": {"type": "object"}},
        "actions": {"type": "array", "items": {"type": "string", "enum": WARNING_ACTIONS}},
        "cap_url": _nullable("string"),
    },
)
WID = {"name": "warning", "in": "path", "required": True, "schema": {"type": "string"}}
_DRAFT_BODY = _json_body(
    {
        "type": "object",
        "properties": {
            "draft": {"type": "object", "description": "draft fields"},
            "actor": {"type": "string", "description": "demo only (no users file)"},
            "role": {"type": "string", "description": "demo only (no users file)"},
        },
    }
)
_ACCEPTED = _object(
    ["command", "status"],
    {
        "command": {"type": "string"},
        "status": {"type": "string"},
        "warning": _nullable("string"),
        "notes": {
            "type": "array",
            "items": {"type": "string"},
            "description": "a new draft's: what its CAP document does to fit the bound (the areas "
            "file's boundaries simplified or left out), as the preview's notes say",
        },
    },
)


def _command_answers(created: bool = False) -> dict[str, Any]:
    return _body_answers(
        {
            ("201" if created else "200"): _json(_ACCEPTED, "accepted by the warnings stage"),
            "202": _json(_ACCEPTED, QUEUED_KEYED),
            "400": BAD_BODY_OR_KEY,
            "401": UNAUTHORIZED,
            "403": _problem(
                "the caller's role may not do this (viewer, approving without the role, four eyes)"
            ),
            "404": _problem("no such warning or incident"),
            "409": _problem("refused by the workflow (state, expired, invalid CAP), with the reason"),
            "422": _problem(
                "a bad draft or command; `field` and `errors` name the fields; or an Idempotency-Key "
                "sent again with another command (`field`: Idempotency-Key)"
            ),
            "503": _problem("the warnings stage does not run in this process"),
        }
    )


def warning_paths() -> dict[str, Any]:
    return {
        "/api/warnings": {
            "get": {
                "summary": "Population warnings, newest first, each with what the caller may do: every active "
                "and pending one, and the newest past ones",
                "parameters": [
                    _q(
                        "past",
                        "how many past (updated, cancelled, expired, rejected) warnings to list (default 100)",
                        {"type": "integer", "minimum": 0, "maximum": 1000},
                    )
                ],
                "responses": {
                    "200": _json(
                        _object(
                            ["warnings", "available", "feed"],
                            {
                                "warnings": {"type": "array", "items": WARNING},
                                "available": {"type": "boolean"},
                                "feed": {"type": "string"},
                                "past_omitted": {
                                    "type": "integer",
                                    "description": "past warnings not listed (beyond ?past=)",
                                },
                                "may_draft": {"type": "boolean"},
                                "sender": {
                                    "type": "string",
                                    "description": "the sender a new draft of this user starts with",
                                },
                                "area": {
                                    "type": ["object", "null"],
                                    "description": "the area a new draft of this user starts with",
                                },
                            },
                        ),
                        "the warnings",
                    ),
                    "400": _problem("a bad filter"),
                    "401": UNAUTHORIZED,
                },
            },
            "post": {
                "summary": "A new draft (sent on atalaia.commands)",
                "parameters": [IDEMPOTENCY_KEY],
                "requestBody": _DRAFT_BODY,
                "responses": _command_answers(created=True),
            },
        },
        "/api/warnings/preview": {
            "post": {
                "summary": "The CAP 1.2 XML and the SMS each SMS target would send for a draft (nothing is stored or sent)",
                "requestBody": _json_body(
                    {
                        "type": "object",
                        "properties": {
                            **_DRAFT_BODY["content"]["application/json"]["schema"]["properties"],
                            "warning": {
                                "type": "string",
                                "description": "the warning this draft is an edit of (its own identifier is no conflict)",
                            },
                            "action": {
                                "type": "string",
                                "enum": ["update", "cancel"],
                                "description": "with `warning` (issued): preview the Update or Cancel of it that "
                                "this command with this `draft` (its changes) would draft",
                            },
                        },
                    }
                ),
                "responses": _body_answers(
                    {
                        "200": _json(
                            _object(
                                ["cap", "identifier", "sms"],
                                {
                                    "cap": {"type": "string"},
                                    "identifier": {"type": "string"},
                                    "notes": {"type": "array", "items": {"type": "string"}},
                                    "sms": {
                                        "type": "object",
                                        "description": "the SMS the first SMS target sends (else a default pt-PT one)",
                                        "properties": {
                                            "text": {"type": "string"},
                                            "segments": {"type": "integer"},
                                            "encoding": {"type": "string", "enum": ["gsm7", "ucs2"]},
                                            "length": {"type": "integer"},
                                        },
                                    },
                                    "sms_targets": {
                                        "type": "array",
                                        "description": "what each warnings SMS target receiving it sends, exactly",
                                        "items": {
                                            "type": "object",
                                            "properties": {
                                                "target": {"type": "string"},
                                                "lang": {"type": "string"},
                                                "max_segments": {"type": "integer"},
                                                "text": {"type": "string"},
                                                "segments": {"type": "integer"},
                                                "encoding": {"type": "string", "enum": ["gsm7", "ucs2"]},
                                                "length": {"type": "integer"},
                                            },
                                        },
                                    },
                                },
                            ),
                            "the preview",
                        ),
                        "401": UNAUTHORIZED,
                        "403": _problem("a role that may not draft (a viewer)"),
                        "404": _problem("with `action`: no such warning (`warning`)"),
                        "409": _problem("with `action`: the warning is not issued"),
                        "422": _problem(
                            "a bad draft; `field` and `errors` name the fields (also an area beyond "
                            "the bounds: 4000 distinct geocodes an area and in all, 100 polygons and "
                            "circles an area, 200 in all)"
                        ),
                    }
                ),
            }
        },
        "/api/warnings/{warning}": {
            "get": {
                "summary": "One warning: draft, state, audit trail, allowed actions",
                "parameters": [WID],
                "responses": {
                    "200": _json(
                        {"type": "object", "required": ["warning"], "properties": {"warning": WARNING}},
                        "the warning",
                    ),
                    "401": UNAUTHORIZED,
                    "404": _problem("no such warning"),
                    "503": _problem("the warnings stage does not run in this process"),
                },
            }
        },
        "/api/warnings/{warning}/issued": {
            "get": {
                "summary": "The CAP document the warning was issued as (served at /cap/alerts/<identifier>.xml) "
                "and the SMS each SMS target sends for it",
                "parameters": [WID],
                "responses": {
                    "200": _json(
                        _object(
                            ["cap", "identifier", "sent", "url", "sms"],
                            {
                                "cap": {"type": "string"},
                                "identifier": {"type": "string"},
                                "sent": {"type": "string"},
                                "url": {"type": "string"},
                                "state": {"type": "string"},
                                "sms": {"type": "object"},
                                "sms_targets": {"type": "array", "items": {"type": "object"}},
                            },
                        ),
                        "the issued document",
                    ),
                    "401": UNAUTHORIZED,
                    "404": _problem("no such warning, or it was never issued"),
                    "503": _problem("the warnings stage does not run in this process"),
                },
            }
        },
        "/api/warnings/{warning}/commands": {
            "post": {
                "summary": "edit, submit, approve (approver role, not an author), reject (with a reason), "
                "issue, update or cancel (a new warning referencing this one)",
                "parameters": [WID, IDEMPOTENCY_KEY],
                "requestBody": _json_body(
                    _object(
                        ["action"],
                        {
                            "action": {"type": "string", "enum": WARNING_ACTIONS},
                            "reason": {"type": "string", "maxLength": 2000},
                            "draft": {
                                "type": "object",
                                "description": "edit/update/cancel: changed fields",
                            },
                            "version": {
                                "type": "integer",
                                "minimum": 0,
                                "maximum": 2**63 - 1,
                                "description": "approve: the version of the warning the approver read; "
                                "the approval is refused (409) if it has changed since",
                            },
                            "actor": {
                                "type": "string",
                                "maxLength": 128,
                                "description": "the demo (no users file) only: else the token's",
                            },
                            "role": {"type": "string"},
                        },
                    )
                ),
                "responses": _command_answers(),
            }
        },
        "/api/incidents/{incident}/warnings": {
            "get": {
                "summary": "Population warnings drafted for this incident (their `incident`), newest first",
                "parameters": [ID],
                "responses": {
                    "200": _json(
                        _object(
                            ["warnings", "available"],
                            {
                                "warnings": {"type": "array", "items": WARNING},
                                "available": {
                                    "type": "boolean",
                                    "description": "false when the warnings stage does not run here",
                                },
                            },
                        ),
                        "the linked warnings",
                    ),
                    "401": UNAUTHORIZED,
                    "404": _problem("no such incident"),
                },
            }
        },
        "/api/incidents/{incident}/warning-draft": {
            "post": {
                "summary": "A draft prefilled from the incident: area from its parishes (DICOFRE), level "
                "from its severity, event from its rules' hazard label; `draft` overrides fields",
                "parameters": [ID, IDEMPOTENCY_KEY],
                "requestBody": _DRAFT_BODY,
                "responses": _command_answers(created=True),
            }
        },
    }


# ---------------------------------------------------------------- the maps' areas (console/areas.py)
AREA_FEATURE = _object(
    ["type", "id", "properties", "geometry"],
    {
        "type": {"const": "Feature"},
        "id": {"type": "string", "description": "`DICOFRE:<code>` or `DICO:<code>`"},
        "properties": {
            "type": "object",
            "required": ["kind", "code", "name", "names", "level"],
            "properties": {
                "kind": {"type": "string", "enum": ["DICOFRE", "DICO"]},
                "code": {"type": "string", "description": "the CAP geocode value"},
                "dicofre": {"type": "string", "pattern": "^[0-9]{6}$"},
                "dico": {"type": "string", "pattern": "^[0-9]{4}$"},
                "name": {"type": "string"},
                "names": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "folded names a `parish` label may use (a union's former parishes too)",
                },
                "level": {"type": "string", "enum": ["freguesia", "municipio"]},
            },
        },
        "geometry": {
            "type": "object",
            "required": ["type", "coordinates"],
            "properties": {"type": {"const": "MultiPolygon"}, "coordinates": {"type": "array"}},
        },
    },
)
AREAS = _object(
    ["type", "features"],
    {
        "type": {"const": "FeatureCollection"},
        "attribution": {"type": "string"},
        "features": {"type": "array", "items": AREA_FEATURE},
    },
)


def area_paths() -> dict[str, Any]:
    return {
        "/api/areas": {
            "get": {
                "summary": "The CAOP parishes (DICOFRE) and municipalities (DICO) of config/warnings.yaml "
                "`areas:` as GeoJSON ([lon, lat]; outer rings, as CAP warnings carry them), for the maps. "
                "Public data (CC BY 4.0): no token needed. Answers with an ETag; If-None-Match gets 304.",
                "security": [{}],
                "parameters": [
                    {"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {
                        "description": "a GeoJSON FeatureCollection",
                        "content": {"application/geo+json": {"schema": AREAS}},
                    },
                    "304": {"description": "not modified (the ETag matched)"},
                    "503": _problem("the configured GeoJSON could not be read"),
                },
            }
        }
    }
