"""Population warnings in the console (issue 12): pages and API over the warnings stage.

* ``GET  /warnings``                           the warnings page (active, in progress, past; CAP and feed links)
* ``GET  /warnings/{id}``                      the draft editor with live CAP and SMS preview, actions by role
* ``GET  /api/warnings``                       every warning (newest first) with what the caller may do
* ``GET  /api/warnings/{id}``                  one warning: draft, state, audit trail, actions
* ``GET  /api/warnings/{id}/issued``           the CAP document it was issued as (the one served at
  ``/cap/alerts/<identifier>.xml``) and the SMS each SMS target sends for it
* ``POST /api/warnings``                       a new draft (``{"draft": {...}}``)
* ``POST /api/incidents/{id}/warning-draft``   a new draft prefilled from the incident (area from its
  parishes, level from its severity, event from its rules' ``hazard`` label)
* ``GET  /api/incidents/{id}/warnings``        the warnings drafted for an incident (links on its page)
* ``POST /api/warnings/preview``               the CAP XML of a draft and the SMS each SMS target would send
  for it (not stored; a role that may draft; checked and rendered in a worker thread); with
  ``"action": "update"`` or ``"cancel"`` and ``"warning"``, of the Update or Cancel of that issued
  warning that the same command would draft
* ``POST /api/warnings/{id}/commands``         edit / submit / approve / reject / issue / update / cancel

Commands go on ``atalaia.commands`` (``"kind": "warning"``) and the answer is the warnings stage's
reply on ``atalaia.warnings``: 200, 403 (role, four eyes), 404, 409 (state), 422 (bad draft, naming
the field), or 202 when no reply came in time. Reads come from the warnings stage of this process
(as ``/cap/feed.atom`` does): a console without it answers 503.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import time
from datetime import UTC, datetime
from typing import Any

import faust
import msgspec
import orjson

from atalaia.console.bodies import read_object
from atalaia.console.idempotency import Requests, keyed, reused
from atalaia.warnings.core import CLOSED, superseding_draft
from atalaia.warnings.feed import FEED_PATH, alert_path
from atalaia.warnings.records import WarningCommand

ACTIONS = ("edit", "submit", "approve", "reject", "issue", "update", "cancel")
DEFAULT_SENDER = "protecao.civil@cm-porto.pt"
REPLY_WAIT_S = 5.0
PAST = 100  # past warnings (updated, cancelled, expired, rejected) listed by default, newest first
#: the threads that check and render drafts: their own two, so that a burst of big previews waits
#: here and never holds the default executor's threads (checkpoints, sign-ins' password hashing)
DRAFT_THREADS = 2
_drafts_pool: concurrent.futures.ThreadPoolExecutor | None = None


async def off_loop(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` on the drafts' own threads (not the event loop, not the default executor)."""
    global _drafts_pool
    if _drafts_pool is None:
        _drafts_pool = concurrent.futures.ThreadPoolExecutor(DRAFT_THREADS, thread_name_prefix="drafts")
    return await asyncio.get_running_loop().run_in_executor(_drafts_pool, fn, *args)


#: a draft's problems the pages say in their operator's language (``errors[].code``; i18n ``pb.draft.<code>``)
DRAFT_ERROR_CODES = {
    "Field required": "missing",
    "empty text": "empty-text",
    "the event may not be empty": "empty-text",
    "an area needs geocodes, a polygon or a circle": "area-empty",
    "missing required key 'area' (geocodes and/or a polygon)": "area-missing",
}
FORBIDDEN = ("four eyes", "approving needs", "a viewer may not")


def warning_actions(w: Any, role: str, approver_role: str, skip_for: tuple[str, ...]) -> list[str]:
    """What ``role`` may do with warning ``w`` in its state (the stage decides; this hides the rest).

    >>> from types import SimpleNamespace as W
    >>> warning_actions(W(state="submitted", draft={}), "approver", "approver", ())
    ['edit', 'approve', 'reject']
    >>> warning_actions(W(state="submitted", draft={}), "operator", "approver", ())
    ['edit', 'reject']
    >>> warning_actions(W(state="issued", draft={}), "viewer", "approver", ())
    []
    """
    if role == "viewer":
        return []
    skip = w.draft.get("status", "Actual") in skip_for
    out = {
        "draft": ["edit", "submit", "reject"] + (["issue"] if skip else []),
        "submitted": ["edit"] + (["approve"] if role == approver_role else []) + ["reject"],
        "approved": ["edit", "issue", "reject"],
        "rejected": ["edit"],
        "issued": ["update", "cancel"],
    }
    actions = list(out.get(w.state, []))
    if skip and w.state == "submitted":
        actions.append("issue")
    return actions


def warning_json(w: Any, actions: list[str]) -> dict[str, Any]:
    d = w.view()
    d["actions"] = actions
    d["cap_url"] = alert_path(w.identifier) if w.identifier else None
    for k in ("status", "msgType", "level", "event", "incident"):
        d[k] = w.draft.get(k, {"status": "Actual", "msgType": "Alert"}.get(k))
    return d


def install(app: faust.App, settings: Any, publish: Any, bootstrap: str, ctx: dict[str, Any]) -> None:
    """The warnings routes; ``ctx`` holds the console's helpers (fail, who, projection, page)."""
    from atalaia.console.api import too_long
    from atalaia.console.auth import MAX_ACTOR_CHARS
    from atalaia.console.replies import ReplyWatcher, warning_reply
    from atalaia.incidents.commands import MAX_REASON_CHARS
    from atalaia.notifiers.warning import ShortText, parse_cap, sms_message, sms_previews, warning_link
    from atalaia.warnings.config import load_config
    from atalaia.warnings.from_incident import draft_from_incident
    from atalaia.warnings.http import _core
    from atalaia.warnings.loader import field_errors

    fail, identify, projection, page = ctx["fail"], ctx["identify"], ctx["projection"], ctx["page"]
    replies = app.service(ReplyWatcher(bootstrap, settings.topic("warnings"), decode=warning_reply))
    cache: dict[str, Any] = {}

    def core() -> Any | None:
        stage = (getattr(app, "atalaia_stages", None) or {}).get("warnings")
        return _core(stage) if stage is not None else None

    def config() -> Any:
        c = core()
        if c is not None:
            return c.workflow.config
        if "config" not in cache:
            cache["config"] = load_config(settings.warnings_path, settings.public_url())
        return cache["config"]

    def catalogue() -> Any:
        c = core()
        if c is not None:
            return c.workflow.catalogue
        if "cat" not in cache:
            cache["cat"] = config().catalogue()
        return cache["cat"]

    def escalation() -> Any:
        """The escalation file as the delivery stage reads it (links to the running console), for
        the preview of what each SMS target sends; None when it cannot be read."""
        if "escalation" not in cache:
            try:
                from atalaia.notifiers.config import load_config as load_escalation
                from atalaia.notifiers.config import with_console_url

                cache["escalation"] = with_console_url(load_escalation(settings.escalation_path), settings)
            except Exception:  # (the delivery stage reports a broken file)
                cache["escalation"] = None
        return cache["escalation"]

    def sms_of(xml: bytes) -> tuple[ShortText, list[dict[str, Any]]]:
        """What each warnings SMS target would send for this CAP document, and the SMS to show
        first: the first target's, else (no SMS target receives it) the default target's."""
        from zoneinfo import ZoneInfo

        w = parse_cap(xml)
        esc = escalation()
        targets = sms_previews(w, esc) if esc is not None else []
        if targets:
            first = targets[0]
            return ShortText(first["text"], first["segments"], first["encoding"], first["length"]), targets
        base = esc.console_url if esc is not None else settings.public_url()
        tz = ZoneInfo(esc.timezone) if esc is not None else ZoneInfo("Europe/Lisbon")
        return sms_message(w, tz, "pt-PT", warning_link(base, w["identifier"])), targets

    def rule_labels() -> dict[str, dict[str, str]]:
        if "labels" not in cache:
            try:
                from atalaia.rules.loader import load_rules

                rules = load_rules(list(settings.rules_paths))
                cache["labels"] = {lr.rule.id: dict(lr.rule.labels) for lr in rules.rules}
            except Exception:  # the hazard then comes from the incident's own labels only
                cache["labels"] = {}
        return cache["labels"]

    def warnings_list() -> list[Any]:
        c = core()
        if c is None:
            return []
        for _ in range(3):  # the stage may change the dict between our reads
            try:
                return sorted(c.state.warnings.values(), key=lambda w: w.created, reverse=True)
            except RuntimeError:
                continue
        return []

    def actions_for(w: Any, role: str) -> list[str]:
        cfg = config()
        return warning_actions(w, role, cfg.approval.role, tuple(cfg.approval.skip_for))

    def caller(view: Any, request: Any, body: dict[str, Any] | None = None) -> Any:
        """(actor, role) or a problem response: from the token, or (demo) as the body says."""
        who = identify(request)
        if who is None:
            return None, fail(view, 401, "Not authenticated", "send Authorization: Bearer <token>")
        if ctx["auth"].enabled:
            return (who.actor, who.role), None
        body = body or {}
        actor = str(body.get("actor") or who.actor)
        role = str(body.get("role") or who.role)
        if (long := too_long({"actor": actor}, {"actor": MAX_ACTOR_CHARS})) is not None:
            return None, fail(view, 422, "Invalid command", long[0], field="actor")  # (kept in the audit)
        return (actor, role), None

    def tenants_of(request: Any) -> frozenset[str] | None:
        """The tenants the caller may see (None: every tenant)."""
        who = identify(request)
        return None if who is None else who.tenants

    def visible(w: Any, tenants: frozenset[str] | None) -> bool:
        """A tenant-scoped user sees only the warnings of their tenants (the draft's ``tenant``)."""
        return tenants is None or w.draft.get("tenant") in tenants

    def scoped_draft(view: Any, draft: dict[str, Any], tenants: frozenset[str] | None) -> Any:
        """A scoped user's draft belongs to one of their tenants: named, or their only one."""
        if tenants is None:
            return None
        t = draft.get("tenant")
        if t is None and len(tenants) == 1:
            draft["tenant"] = next(iter(tenants))
            return None
        if isinstance(t, (list, dict)):  # (no tenant's name: never looked up among theirs)
            return fail(view, 422, "Invalid draft", "tenant: a tenant's name (text)", field="draft.tenant")
        if t is None:
            return fail(
                view,
                422,
                "Invalid draft",
                f"tenant: one of {', '.join(sorted(tenants))}",
                field="draft.tenant",
            )
        if t not in tenants:
            return fail(view, 403, "Not allowed", f"you may not draft warnings for tenant {t!r}")
        return None

    async def linked_incident_refused(view: Any, request: Any, draft: dict[str, Any]) -> Any:
        """A scoped user may link a draft only to an incident they see (else its warnings would
        show on another tenant's incident page)."""
        who = identify(request)
        linked = draft.get("incident")
        if who is None or who.tenants is None or linked is None:
            return None
        row = await projection(lambda p: p.incident(str(linked)))
        if row is None or not who.sees(row):
            return fail(
                view,
                422,
                "Invalid draft",
                f"incident: no incident {linked!r} of yours",
                field="draft.incident",
            )
        return None

    def default_sender(tenant: Any) -> str:
        """The sender a new draft starts with: the tenant's first in ``senders:``, else the
        configured default (with ``senders:`` on, another tenant's default would be refused)."""
        cfg = config()
        own = (getattr(cfg, "senders", None) or {}).get(tenant) if isinstance(tenant, str) else None
        return own[0] if own else getattr(cfg, "sender", None) or DEFAULT_SENDER

    def default_area(tenant: str | None) -> dict[str, Any] | None:
        """The area a new draft of the warnings page starts with: a parish of the tenant's
        territory (``tenant_areas:``), else the first configured parish (the operator edits it)."""
        try:
            codes = catalogue().codes("DICOFRE")
        except Exception:  # (the warnings stage reports a broken catalogue)
            return None
        own = (getattr(config(), "tenant_areas", None) or {}).get(tenant) if tenant else None
        if own:
            codes = [c for c in codes if c.startswith(tuple(own))]
        return {"geocodes": {"DICOFRE": codes[:1]}} if codes else None

    def sender_refused(view: Any, draft: dict[str, Any], tenants: frozenset[str] | None) -> Any:
        """A scoped user may not send as another tenant: a sender that only other tenants' issued
        warnings carry is theirs (the configured default sender is everyone's)."""
        sender = draft.get("sender")
        c = core()
        if tenants is None or sender is None or c is None:
            return None
        from atalaia.warnings.config import sender_key

        written, sender = sender, sender_key(str(sender))  # (one address whatever its case)
        if sender == sender_key(getattr(config(), "sender", None) or DEFAULT_SENDER):
            return None
        users: set[Any] = set()
        for _ in range(3):  # the stage may change the dicts between our reads
            try:
                for wid, s, _sent in list(c.state.issued.values()):
                    w = c.state.warnings.get(wid)
                    if sender_key(str(s)) == sender and w is not None:
                        users.add(w.draft.get("tenant"))
                break
            except (RuntimeError, ValueError):
                continue
        if users - {None} and not users & tenants:  # (a tenant-less warning's sender is no tenant's)
            return fail(
                view,
                403,
                "Not allowed",
                f"sender {written!r} is another tenant's (their issued warnings carry it)",
                field="draft.sender",
            )
        return None

    def references_refused(view: Any, draft: dict[str, Any], own: str | None = None) -> Any:
        """422 for references the workflow would refuse (another tenant's warning; an Update or
        Cancel with another sender than the original's), or for an identifier it would (issued
        already, or another pending warning's; ``own``: the warning this draft is)."""
        c = core()
        found = (
            c.workflow.reference_problems(c.state, draft, datetime.now(UTC))
            + c.workflow.identifier_problems(c.state, draft, own)
            if c is not None
            else []
        )
        if found:
            return bad_draft(view, [{"field": f, "message": m} for f, m in found])
        return None

    async def tenancy_refused(view: Any, draft: dict[str, Any]) -> Any:
        """422 for what the warnings file's ``senders:`` and ``tenant_areas:`` refuse of a checked
        draft (as drafting it would; the territory check runs in a worker thread)."""
        c = core()
        if c is None:
            return None
        found = await off_loop(c.workflow.tenancy_findings, c.state, draft)
        if found:
            return bad_draft(view, [{"field": f, "message": m} for f, m in found])
        return None

    async def draft_refused(
        view: Any, request: Any, draft: dict[str, Any], changed: Any = None, own: str | None = None
    ) -> Any:
        """The tenant rules on a checked new or changed draft (sender, linked incident,
        references, identifier) after ``scoped_draft``: a problem response, or None. ``changed``:
        the fields an edit changes (sender and incident are checked when they change; default: a
        new draft); ``own``: the warning an edit changes."""
        new = changed is None
        if (new or "sender" in changed) and (refused := sender_refused(view, draft, tenants_of(request))):
            return refused
        if (new or "incident" in changed) and (
            refused := await linked_incident_refused(view, request, draft)
        ):
            return refused
        return await issue_refused(view, draft, own)

    async def issue_refused(view: Any, draft: dict[str, Any], own: str | None) -> Any:
        """What issuing a checked draft would refuse, said now: its references, then the warnings
        file's sender and area bindings."""
        refused = references_refused(view, draft, own)
        return refused if refused is not None else await tenancy_refused(view, draft)

    async def read_body(view: Any, request: Any) -> tuple[dict[str, Any] | None, Any]:
        body = await read_object(
            request, "request", 256 * 1024, empty_ok=True, timeout=settings.http_body_timeout_s
        )
        return (None, fail(view, *body)) if isinstance(body, tuple) else (body, None)

    async def body_and_caller(view: Any, request: Any) -> tuple[dict[str, Any] | None, Any, Any]:
        """The JSON body and (actor, role), or a problem response (the body's first, then the caller's)."""
        body, bad = await read_body(view, request)
        if bad is not None:
            return None, None, bad
        (who, denied) = caller(view, request, body)
        return body, who, denied

    async def drafting_body(view: Any, request: Any) -> tuple[dict[str, Any] | None, Any, Any]:
        """``body_and_caller`` for a request that drafts: also refused when this caller may not."""
        body, who, problem = await body_and_caller(view, request)
        if problem is None:
            problem = drafting_refused(view, who[1])
        return body, who, problem

    def drafting_refused(view: Any, role: str) -> Any:
        """A problem response when this role may not draft, or the warnings stage does not run here."""
        if role == "viewer":
            return fail(
                view, 403, "Not allowed", "a viewer may not act on warnings", code="viewer-may-not-act"
            )
        if core() is None:
            return no_stage(view)
        return None

    def check_now(data: dict[str, Any]) -> tuple[Any, list[dict[str, str]]]:
        """The draft and its problems as fields (anything the model cannot take is a problem too;
        so is an ``expires`` already past: it could never be issued)."""
        from atalaia.warnings.draft import expired_problem

        try:
            draft, errors = field_errors(data, catalogue())
        except Exception as e:  # a body the checks did not foresee is still the caller's error
            return None, [{"field": "", "message": f"not a draft: {e}"}]
        if draft is not None and (late := expired_problem(draft, datetime.now(UTC))):
            errors = [*errors, {"field": late[0], "message": late[1]}]
        return draft, errors

    def incomplete_of(data: dict[str, Any]) -> list[tuple[str, str]]:
        """What a stored draft lacks to be submitted, approved or issued (``incomplete_problems``)."""
        from atalaia.warnings.draft import Draft, incomplete_problems

        return incomplete_problems(Draft.model_validate(data))

    def boundary_notes(draft: Any) -> list[str]:
        """What the draft's CAP document does to fit its bound (the areas file's boundaries
        simplified or left out), as the preview's notes say it."""
        from atalaia.warnings.cap import fit_shapes

        note = fit_shapes(draft, catalogue()).note if draft is not None else None
        return [note] if note else []

    async def check(data: dict[str, Any]) -> tuple[Any, list[dict[str, str]]]:
        """``check_now`` in a worker thread: a big draft never holds the event loop (the
        incident manager, the live board and the broker's heartbeats run on it)."""
        return await off_loop(check_now, data)

    def no_stage(view: Any) -> Any:
        return fail(view, 503, "Warnings unavailable", "the warnings stage does not run in this process")

    def shown_warning(view: Any, request: Any, warning: str) -> tuple[Any, Any]:
        """(the warning the caller may see, None), or (None, the answer to give instead: 503
        without the stage, 404 for an unknown one or another tenant's, as if unknown)."""
        c = core()
        if c is None:
            return None, no_stage(view)
        w = c.state.warnings.get(warning)
        if w is None or not visible(w, tenants_of(request)):
            return None, fail(view, 404, "No such warning", warning)
        return w, None

    def bad_draft(view: Any, errors: list[dict[str, str]], prefix: str = "draft.") -> Any:
        errors = [
            {
                "field": prefix + e["field"] if e["field"] not in ("", "draft") else "draft",
                "message": e["message"],
            }
            for e in errors
        ]
        for e in errors:  # the messages the pages say in their own words (the others as written)
            if (code := DRAFT_ERROR_CODES.get(e["message"])) is not None:
                e["code"] = code
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return fail(
            view,
            422,
            "Invalid draft",
            detail,
            field=errors[0]["field"],
            errors=errors,
            code="invalid-draft",
            params={"count": len(errors), "fields": ", ".join(dict.fromkeys(e["field"] for e in errors))},
        )

    keyed_requests = Requests()  # (a key sent again with another body is a 422, not the first's reply)

    async def send(
        view: Any, request: Any, command: WarningCommand, status: int = 200, notes: list[str] | None = None
    ) -> Any:
        # a client that sends a command again (its answer was lost, or it was 202 queued) with
        # the same key sends the same command: the warnings stage answers it once, and again
        # with the same answer (the same warning), instead of drafting a second warning
        cid, bad_key = keyed(fail, view, request, command.actor)
        if bad_key is not None:
            return bad_key
        # (an `issue` sent with its `submit`'s key was answered as the submit: never issued). The
        # request as the client wrote it (read already, so cached), not the command made of it: a
        # retried warning-draft makes its draft again, with another time in it
        if cid is not None:
            raw = await request.read()
            asked = orjson.loads(raw) if raw.strip() else {}
            if (other := reused(fail, view, keyed_requests, cid, asked)) is not None:
                return other
        if cid is None:
            cid = hashlib.blake2b(
                command.to_json() + str(time.time_ns()).encode(), digest_size=12
            ).hexdigest()
        # its time is the operator's, written into the command: a replay after a crash of the
        # warnings stage gives the same CAP `sent`, identifier and delivery ids, not new ones
        at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")
        command = msgspec.structs.replace(command, id=cid, at=command.at or at)
        key = (command.warning or command.id).encode()
        await publish(settings.topic("commands"), command.to_json(), key)
        reply = await replies.wait(command.id, REPLY_WAIT_S)
        if reply is None:
            return view.json({"command": command.id, "status": "queued"}, status=202)
        if not reply.get("ok"):
            reason = str(reply.get("error") or "refused")
            code = 403 if reason.startswith(FORBIDDEN) else 404 if reason.startswith("no warning") else 409
            if reason.startswith("bad draft"):
                code = 422
            return fail(view, code, "Command refused", reason, command=command.id)
        answer = {"command": command.id, "status": "accepted", "warning": reply.get("warning")}
        if notes is not None:  # (what its CAP document will have to do, as the preview says)
            answer["notes"] = notes
        return view.json(answer, status=status)

    @app.page("/warnings")
    class WarningsPage(faust.web.View):
        async def get(self, request: Any) -> Any:
            return self.bytes(page("warnings.html"), content_type="text/html")

    @app.page("/warnings/{warning}")
    class WarningPage(faust.web.View):
        async def get(self, request: Any, warning: str) -> Any:
            return self.bytes(page("warning.html"), content_type="text/html")

    @app.page("/api/warnings")
    class Warnings(faust.web.View):
        async def get(self, request: Any) -> Any:
            (who, denied) = caller(self, request, dict(request.query))
            if denied is not None:
                return denied
            try:
                past_limit = int(request.query.get("past", str(PAST)))
                if not 0 <= past_limit <= 1000:
                    raise ValueError
            except ValueError:
                return fail(self, 400, "Bad filter", "past: an integer between 0 and 1000", field="past")
            tenants = tenants_of(request)
            rows, past = [], 0
            for w in warnings_list():  # (newest first) every active and pending one, the newest past ones
                if not visible(w, tenants):
                    continue
                if w.state in CLOSED:
                    past += 1
                    if past > past_limit:
                        continue
                rows.append(warning_json(w, actions_for(w, who[1])))
            return self.json(
                {
                    "warnings": rows,
                    "past_omitted": max(0, past - past_limit),
                    "available": core() is not None,
                    "feed": FEED_PATH,
                    "may_draft": who[1] != "viewer",
                    "sender": default_sender(sorted(tenants)[0] if tenants and len(tenants) == 1 else None),
                    "area": default_area(sorted(tenants)[0] if tenants and len(tenants) == 1 else None),
                }
            )

        async def post(self, request: Any) -> Any:
            body, who, problem = await drafting_body(self, request)
            if problem is not None:
                return problem
            draft = body.get("draft")
            if not isinstance(draft, dict):
                return fail(self, 422, "Invalid draft", "draft: a JSON object is required", field="draft")
            refused = scoped_draft(self, draft, tenants_of(request))
            if refused is not None:
                return refused
            model, errors = await check(draft)
            if errors:
                return bad_draft(self, errors)
            refused = await draft_refused(self, request, draft)
            if refused is not None:
                return refused
            return await send(
                self,
                request,
                WarningCommand(action="draft", actor=who[0], role=who[1], draft=draft),
                status=201,
                notes=await off_loop(boundary_notes, model),
            )

    @app.page("/api/warnings/preview")
    class Preview(faust.web.View):
        async def post(self, request: Any) -> Any:
            from atalaia.warnings.cap import CapInvalid, Reference, render

            body, who, problem = await body_and_caller(self, request)
            if problem is not None:
                return problem
            if who[1] == "viewer":  # (as drafting: the preview is the drafting editor's)
                return fail(
                    self, 403, "Not allowed", "a viewer may not act on warnings", code="viewer-may-not-act"
                )
            data = body.get("draft")
            if not isinstance(data, dict):
                return fail(self, 422, "Invalid draft", "draft: a JSON object is required", field="draft")
            data = dict(data)  # (not stored: the tenant a scoped user's draft would get, for the checks)
            own = body.get("warning")  # (an edit's preview: its own identifier is no conflict)
            own = own if isinstance(own, str) else None
            action = body.get("action")
            c = core()
            if action is not None:  # the Update or Cancel of an issued warning, as that command drafts it
                if action not in ("update", "cancel"):
                    return fail(self, 422, "Invalid preview", "action: update or cancel", field="action")
                w = c.state.warnings.get(own or "") if c is not None else None
                if w is None or not visible(w, tenants_of(request)):
                    return fail(self, 404, "No such warning", str(own))
                if w.state != "issued" or not w.identifier:
                    return fail(
                        self,
                        409,
                        "Not issued",
                        f"only an issued warning is updated or cancelled (it is {w.state})",
                    )
                data = superseding_draft(w.draft, action, data, w.identifier)
                own = None  # (a new warning)
            refused = scoped_draft(self, data, tenants_of(request))
            if refused is not None:
                return refused
            draft, errors = await check(data)
            if errors or draft is None:
                return bad_draft(self, errors or [{"field": "", "message": "not a draft"}])
            refused = await issue_refused(self, data, own)
            if refused is not None:
                return refused

            def resolve(identifier: str) -> Any:
                known = c.state.issued.get(identifier) if c is not None else None
                return Reference(known[1], identifier, known[2]) if known else None

            now = datetime.now(UTC).replace(microsecond=0)

            def build() -> Any:  # (in a worker thread, as the check)
                try:
                    doc = render(draft, catalogue(), now, resolve=resolve, bbox=config().region)
                except CapInvalid as e:
                    return [{"field": "", "message": p} for p in e.problems]
                except Exception as e:  # a draft the builder cannot handle is still a bad draft, not a 500
                    return [{"field": "", "message": str(e)}]
                return doc, *sms_of(doc.xml)

            built = await off_loop(build)
            if isinstance(built, list):
                return bad_draft(self, built)
            doc, sms, targets = built
            return self.json(
                {
                    "cap": doc.xml.decode(),
                    "identifier": doc.identifier,
                    "msgType": doc.msg_type,
                    "sms": sms.to_dict(),
                    "sms_targets": targets,
                    "notes": list(doc.notes),
                }
            )

    @app.page("/api/warnings/{warning}")
    class WarningDetail(faust.web.View):
        async def get(self, request: Any, warning: str) -> Any:
            (who, denied) = caller(self, request, dict(request.query))
            if denied is not None:
                return denied
            (w, denied) = shown_warning(self, request, warning)
            if denied is not None:
                return denied
            return self.json({"warning": warning_json(w, actions_for(w, who[1]))})

    issued_sms: dict[str, Any] = {}  # CAP identifier -> (SMS, targets): a document never changes

    @app.page("/api/warnings/{warning}/issued")
    class WarningIssued(faust.web.View):
        async def get(self, request: Any, warning: str) -> Any:
            (_who, denied) = caller(self, request, dict(request.query))
            if denied is not None:
                return denied
            (w, denied) = shown_warning(self, request, warning)
            if denied is not None:
                return denied
            if not w.xml or not w.identifier:
                return fail(
                    self, 404, "Not issued", f"warning {warning} is {w.state}: it has no CAP document"
                )
            if w.identifier not in issued_sms:
                while len(issued_sms) >= 64:
                    issued_sms.pop(next(iter(issued_sms)))
                issued_sms[w.identifier] = await off_loop(sms_of, w.xml.encode())
            sms, targets = issued_sms[w.identifier]
            return self.json(
                {
                    "cap": w.xml,
                    "identifier": w.identifier,
                    "sent": w.sent,
                    "url": alert_path(w.identifier),
                    "state": w.state,
                    "sms": sms.to_dict(),
                    "sms_targets": targets,
                }
            )

    @app.page("/api/warnings/{warning}/commands")
    class WarningCommands(faust.web.View):
        async def post(self, request: Any, warning: str) -> Any:
            body, who, problem = await body_and_caller(self, request)
            if problem is not None:
                return problem
            action = body.get("action")
            if action not in ACTIONS:
                return fail(
                    self, 422, "Invalid command", f"action: one of {', '.join(ACTIONS)}", field="action"
                )
            actor, role = who
            cfg = config()
            if role == "viewer":
                return fail(
                    self, 403, "Not allowed", "a viewer may not act on warnings", code="viewer-may-not-act"
                )
            if action == "approve" and role != cfg.approval.role:
                return fail(
                    self, 403, "Not allowed", f"approving needs the {cfg.approval.role} role (not {role})"
                )
            c = core()
            if c is None:
                return no_stage(self)
            w = c.state.warnings.get(warning)
            tenants = tenants_of(request)
            if w is None or not visible(w, tenants):  # another tenant's: as if unknown
                return fail(self, 404, "No such warning", warning)
            reason = body.get("reason") or ""
            if not isinstance(reason, str):
                return fail(self, 422, "Invalid command", "reason: a string", field="reason")
            if (long := too_long(body, {"reason": MAX_REASON_CHARS})) is not None:  # (kept in the audit)
                return fail(self, 422, "Invalid command", long[0], field="reason")
            if action == "reject" and not reason.strip():
                return fail(
                    self, 422, "Invalid command", "reason: a rejection needs a reason", field="reason"
                )
            changes = body.get("draft") or {}
            if not isinstance(changes, dict):
                return fail(self, 422, "Invalid draft", "draft: a JSON object", field="draft")
            moved_to = changes.get("tenant", w.draft.get("tenant"))
            if not isinstance(moved_to, str | None):  # (no tenant's name: never looked up among theirs)
                return fail(
                    self, 422, "Invalid draft", "tenant: a tenant's name (text)", field="draft.tenant"
                )
            if tenants is not None and moved_to not in tenants:
                return fail(self, 403, "Not allowed", "a warning may not be moved to another tenant")
            version = body.get("version")  # approve: the version the approver read
            if version is not None and (type(version) is not int or not 0 <= version < 2**63):
                return fail(
                    self, 422, "Invalid command", "version: a warning version (an integer)", field="version"
                )
            cmd = WarningCommand(
                action=action,
                warning=warning,
                actor=actor,
                role=role,
                reason=reason,
                version=version if action == "approve" else None,
            )
            skip = w.draft.get("status", "Actual") in tuple(cfg.approval.skip_for)
            ready_for = {"submit": ("draft",), "approve": ("submitted",), "issue": ("approved",)}
            if skip:  # (issued without approval: from any state before it)
                ready_for["issue"] = ("draft", "submitted", "approved")
            if w.state in ready_for.get(action, ()):
                # a draft may be saved incomplete, not sent on towards the public: each missing
                # field named, as the warnings stage would refuse it (it checks again)
                missing = await off_loop(incomplete_of, w.draft)
                if missing:
                    return bad_draft(self, [{"field": f, "message": m} for f, m in missing])
            if action in ("update", "cancel") and w.state != "issued":
                # only an issued warning is updated or cancelled: the workflow refuses (409) and
                # audits it; its draft (a reference to no identifier yet) is no draft to check
                return await send(self, request, cmd)
            if action in ("edit", "update", "cancel"):
                if action == "edit":
                    merged = {**w.draft, **changes}
                else:  # what the warnings stage will draft
                    merged = superseding_draft(w.draft, action, changes, w.identifier or "")
                _, errors = await check(merged)
                if errors:
                    return bad_draft(self, errors)
                refused = await draft_refused(
                    self, request, merged, changed=changes, own=warning if action == "edit" else None
                )
                if refused is not None:
                    return refused
                cmd = msgspec.structs.replace(cmd, draft=changes)
            return await send(self, request, cmd)

    @app.page("/api/incidents/{incident}/warnings")
    class IncidentWarnings(faust.web.View):
        async def get(self, request: Any, incident: str) -> Any:
            who = identify(request)
            if who is None:
                return fail(self, 401, "Not authenticated", "send Authorization: Bearer <token>")
            row = await projection(lambda p: p.incident(incident))
            if row is None or not who.sees(row):
                return fail(self, 404, "No such incident", incident)
            linked = [  # another tenant's warning linked to this incident: not shown
                w for w in warnings_list() if w.draft.get("incident") == incident and visible(w, who.tenants)
            ]
            return self.json(
                {
                    "warnings": [warning_json(w, actions_for(w, who.role)) for w in linked],
                    "available": core() is not None,
                }
            )

    @app.page("/api/incidents/{incident}/warning-draft")
    class DraftFromIncident(faust.web.View):
        async def post(self, request: Any, incident: str) -> Any:
            body, who, problem = await drafting_body(self, request)
            if problem is not None:
                return problem
            row, alarm_rows = await projection(lambda p: (p.incident(incident), p.alarms(incident)))
            ident = identify(request)
            if row is None or (ident is not None and not ident.sees(row)):  # another tenant's: unknown
                return fail(self, 404, "No such incident", incident)
            labels = rule_labels()
            alarms = [
                {"labels": {**labels.get(a.get("rule"), {}), **(a.get("labels") or {})}} for a in alarm_rows
            ]
            event = {
                "incident": incident,
                "severity": row.get("severity"),
                "title": row.get("title"),
                "labels": row.get("labels") or {},
                "correlation": row.get("correlation") or {},
                "location": row.get("location"),  # the parish it lies in, when no label names one
                "alarms": alarms,
            }
            tenant = (row.get("correlation") or {}).get("tenant")  # (the draft's, as draft_from_incident)
            sender = default_sender(None if tenant is None else str(tenant))
            draft = draft_from_incident(event, catalogue(), sender, datetime.now(UTC).replace(microsecond=0))
            overrides = body.get("draft") or {}
            if not isinstance(overrides, dict):
                return fail(self, 422, "Invalid draft", "draft: a JSON object", field="draft")
            draft.update(overrides)
            refused = scoped_draft(self, draft, tenants_of(request))  # as POST /api/warnings
            if refused is not None:
                return refused
            if "area" not in draft:  # never the whole municipality by default: the operator chooses
                detail = (
                    "draft.area: the incident names no parish the configured areas know and has no "
                    "location in one; give the area (geocodes, a polygon or a circle)"
                )
                return fail(self, 422, "Invalid draft", detail, field="draft.area")
            _, errors = await check(draft)
            if errors:
                return bad_draft(self, errors)
            refused = await draft_refused(self, request, draft)
            if refused is not None:
                return refused
            cmd = WarningCommand(action="draft", actor=who[0], role=who[1], draft=draft, incident=incident)
            return await send(self, request, cmd, status=201)
