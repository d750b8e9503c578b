"""The warning workflow: a pure state machine ``step(state, command, now) -> (state, outputs)``.

draft → submitted → approved → issued → updated / cancelled / expired; ``reject`` (with a reason)
at any step before issue. Four eyes: an ``Actual`` warning is issued only after a person other than
its authors, holding the approver role, approved it (configuration may let Exercise and Test skip
approval). An issued warning is never edited: ``update`` and ``cancel`` open a new warning
(msgType Update / Cancel, referencing the original) that goes through the same workflow, and
issuing it supersedes the original. Every change and every refusal is audited (actor, role, time,
reason). Issuing renders the CAP document and validates it; a document that fails is refused, never
issued. No I/O, no wall clock; ids and versions are deterministic, and a command seen before
(same ``id``) changes nothing and gets its first reply again.

>>> from datetime import datetime, UTC
>>> wf = Workflow()
>>> st = wf.initial_state()
>>> t = datetime(2026, 12, 4, 17, tzinfo=UTC)
>>> draft = {"sender": "pc@cm-porto.pt", "level": "orange", "event": {"pt-PT": "Cheia", "en-GB": "Flood"},
...          "area": {"geocodes": {"DICOFRE": ["131203"]}}}
>>> st, out = wf.step(st, {"action": "draft", "actor": "ana", "role": "operator", "draft": draft}, t)
>>> w = out[0].warning
>>> st, out = wf.step(st, {"action": "submit", "warning": w, "actor": "ana", "role": "operator"}, t)
>>> [p.split(":")[0] for p in out[-1].error.removeprefix("bad draft: ").split("; ")]  # saved, not submitted
['headline.pt-PT', 'headline.en-GB', 'instruction.pt-PT', 'instruction.en-GB', 'expires']
>>> texts = {"headline": {"pt-PT": "Cheia no Douro", "en-GB": "Douro flood"},
...          "instruction": {"pt-PT": "Afaste-se do rio.", "en-GB": "Keep away from the river."},
...          "expires": "2026-12-05T06:00:00+00:00"}
>>> t = t.replace(minute=5)  # (the same command at the same time would be the one seen before)
>>> st, out = wf.step(st, {"action": "edit", "warning": w, "actor": "ana", "role": "operator", "draft": texts}, t)
>>> st, out = wf.step(st, {"action": "submit", "warning": w, "actor": "ana", "role": "operator"}, t)
>>> st, out = wf.step(st, {"action": "approve", "warning": w, "actor": "ana", "role": "approver"}, t)
>>> out[-1].ok, out[-1].error
(False, 'four eyes: ana drafted this warning and may not approve it')
>>> st, out = wf.step(st, {"action": "approve", "warning": w, "actor": "rui", "role": "approver"}, t)
>>> st, out = wf.step(st, {"action": "issue", "warning": w, "actor": "ana", "role": "operator"}, t)
>>> [type(o).__name__ for o in out], out[0].state
(['WarningEvent', 'CapRecord', 'WarningReply'], 'issued')
>>> out[1].identifier  # doctest: +ELLIPSIS
'PT-CM-PORTO-20261204170500-...'
"""

from __future__ import annotations

import hashlib
import zlib
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import orjson
from pydantic import ValidationError

from atalaia.warnings.cap import (
    DRAFTING_SKEW,
    CapInvalid,
    Reference,
    other_senders_identifier,
    reference_after,
    render,
    sent_of_identifier,
)
from atalaia.warnings.catalogue import Catalogue
from atalaia.warnings.config import WarningsConfig
from atalaia.warnings.draft import (
    DEFAULT_LANGUAGE,
    Draft,
    cap_time,
    expired_problem,
    incomplete_problems,
    parse_reference,
    problems,
    size_problems,
)
from atalaia.warnings.records import (
    CapRecord,
    WarningCommand,
    WarningEvent,
    WarningRecord,
    WarningReply,
    refused_reply,
    warning_command_from_dict,
)

PENDING = ("draft", "submitted", "approved")  # (a rejected one may be edited back into a draft)
MAX_PENDING = 500  # warnings in progress at once: beyond, a new draft is refused (the state stays bounded)
ACTIVE = ("issued",)
CLOSED = ("updated", "cancelled", "expired", "rejected")
MAGIC = b"ATALAIA-WARNINGS/1\n"


@dataclass(slots=True)
class AuditEntry:
    at: str
    actor: str
    role: str
    action: str
    reason: str = ""
    ok: bool = True


@dataclass(slots=True)
class Warning:
    id: str
    version: int
    state: str  # draft | submitted | approved | issued | updated | cancelled | expired | rejected
    draft: dict[str, Any]
    authors: list[str]
    created: str
    approver: str | None = None
    supersedes: str | None = None  # the warning an Update/Cancel replaces
    superseded_by: str | None = None
    identifier: str | None = None  # the CAP document, once issued
    sent: str | None = None
    expires: str | None = None
    xml: str | None = None
    audit: list[AuditEntry] = field(default_factory=list)
    issued_version: int | None = None  # the version its CAP record was published at

    def view(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("xml")
        return d


@dataclass(slots=True)
class WarningsState:
    warnings: dict[str, Warning] = field(default_factory=dict)
    replies: OrderedDict[str, WarningReply] = field(default_factory=OrderedDict)  # command id -> reply
    issued: dict[str, list[str]] = field(default_factory=dict)  # CAP identifier -> [warning id, sender, sent]


class Refused(ValueError):
    """A command that may not be applied (the reason is audited and replied)."""


def _status(draft: dict[str, Any]) -> str:
    """A draft's CAP status as the document will carry it (``actual`` is ``Actual``)."""
    return str(draft.get("status") or "Actual").strip().capitalize()


def _kind(draft: dict[str, Any]) -> str:
    """A draft's CAP msgType as the document will carry it (``msgType`` or ``msg_type``, any
    case: the model reads them all, so every rule on the kind must too)."""
    raw = draft.get("msgType", draft.get("msg_type")) or "Alert"
    return str(raw).strip().capitalize()


def _t(now: datetime | str) -> datetime:
    return cap_time(now)


class Workflow:
    """The warning state machine for one configuration (levels, areas, approval policy)."""

    def __init__(self, config: WarningsConfig | None = None, catalogue: Catalogue | None = None) -> None:
        self.config = config or WarningsConfig()
        self.catalogue = catalogue or self.config.catalogue()
        self.memory = 10000

    def initial_state(self) -> WarningsState:
        return WarningsState()

    # ------------------------------------------------------------------ the step
    def step(
        self, state: WarningsState, command: WarningCommand | dict[str, Any] | None, now: datetime | str
    ) -> tuple[WarningsState, list[WarningRecord]]:
        """Apply one command (or ``None``: a timer tick that expires warnings). Outputs are the
        records of ``atalaia.warnings``: warning events (:class:`WarningEvent`, one per change),
        CAP documents to publish (:class:`CapRecord`) and the command's reply
        (:class:`WarningReply`). A command given as a dict is checked like the record."""
        t = _t(now)
        out: list[WarningRecord] = list(self._expire(state, t))
        if command is None:
            return state, out
        try:
            cmd = command if isinstance(command, WarningCommand) else warning_command_from_dict(command)
            at = cap_time(cmd.at) if cmd.at is not None else t
        except (msgspec.ValidationError, ValueError) as e:
            out.append(refused_reply(str(e)))
            return state, out
        cmd = msgspec.structs.replace(cmd, id=cmd.identity(at))
        if cmd.id in state.replies:
            out.append(state.replies[cmd.id])
            return state, out
        changes: list[WarningRecord] = []
        try:
            wid = self._apply(state, cmd, at, changes)
            reply = WarningReply(command=cmd.id, ok=True, error=None, warning=wid)
        except Refused as e:
            reply = WarningReply(command=cmd.id, ok=False, error=str(e), warning=cmd.warning)
            w = state.warnings.get(cmd.warning or "")
            if w is not None:  # the refusal is audited on the warning it concerns
                w.audit.append(AuditEntry(_iso(at), cmd.actor, cmd.role, cmd.action, str(e), ok=False))
                changes.append(self._event(w, "refused", cmd, at, reason=str(e)))
        out += changes
        out.append(reply)
        state.replies[cmd.id] = reply
        while len(state.replies) > self.memory:
            state.replies.popitem(last=False)
        return state, out

    def tick(self, state: WarningsState, now: datetime | str) -> tuple[WarningsState, list[WarningRecord]]:
        return self.step(state, None, now)

    # ------------------------------------------------------------------ commands
    def _apply(self, state: WarningsState, c: WarningCommand, at: datetime, out: list[WarningRecord]) -> str:
        if c.role == "viewer":
            raise Refused("a viewer may not act on warnings")
        if c.action == "draft":
            return self._new(state, c, at, out, c.draft or {})
        w = state.warnings.get(c.warning or "")
        if w is None:
            raise Refused(f"no warning {c.warning!r}")
        if c.action == "edit":
            self._need(w, c, ("draft", "submitted", "approved", "rejected"))
            merged = {**w.draft, **(c.draft or {})}
            withdraws = w.supersedes is not None or bool(self._replaced(state, merged))
            draft = self._check(c.draft or {}, keep=w.draft, withdraws=withdraws)
            if w.supersedes and (
                draft.get("references") != w.draft.get("references") or _kind(draft) != _kind(w.draft)
            ):
                raise Refused(
                    "an Update or Cancel keeps its references and its kind: draft a new warning instead"
                )
            self._check_expiry(draft, at)
            self._check_references(state, draft, own=w.id, now=at)
            w.draft = draft
            if c.actor not in w.authors:
                w.authors.append(c.actor)
            w.approver = None
            self._change(w, "draft", "edited", c, at, out)
        elif c.action == "submit":
            self._need(w, c, ("draft",))
            self._check(w.draft, withdraws=w.supersedes is not None or bool(self._replaced(state, w.draft)))
            self._check_complete(w.draft)
            if w.audit and w.audit[0].role == "system" and c.actor not in w.authors:
                w.authors.append(c.actor)  # a proposal (propose_warning) is the submitter's: four eyes hold
            self._change(w, "submitted", "submitted", c, at, out)
        elif c.action == "approve":
            self._need(w, c, ("submitted",))
            if c.role != self.config.approval.role:
                raise Refused(f"approving needs the {self.config.approval.role} role (not {c.role})")
            if c.actor in w.authors:
                raise Refused(f"four eyes: {c.actor} drafted this warning and may not approve it")
            if c.version is not None and c.version != w.version:
                # four eyes on what was read: it was changed (and submitted again) since
                raise Refused(
                    f"the warning changed since version {c.version}, the one you read; it is at "
                    f"version {w.version}: read it again before approving"
                )
            self._check_complete(w.draft)
            w.approver = c.actor
            self._change(w, "approved", "approved", c, at, out)
        elif c.action == "reject":
            self._need(w, c, ("draft", "submitted", "approved"))
            if not c.reason.strip():
                raise Refused("a rejection needs a reason")
            self._change(w, "rejected", "rejected", c, at, out)
        elif c.action == "issue":
            self._issue(state, w, c, at, out)
        elif c.action in ("update", "cancel"):
            if w.state != "issued":
                raise Refused(f"cannot {c.action} a warning that is {w.state} (only an issued one)")
            draft = superseding_draft(w.draft, c.action, c.draft or {}, w.identifier or "")
            return self._new(state, c, at, out, draft, supersedes=w.id)
        return w.id

    def _new(
        self,
        state: WarningsState,
        c: WarningCommand,
        at: datetime,
        out: list[WarningRecord],
        data: dict[str, Any],
        supersedes: str | None = None,
    ) -> str:
        if c.incident and "incident" not in data:
            data = {**data, "incident": c.incident}
        if c.tenant and "tenant" not in data:
            data = {**data, "tenant": c.tenant}
        withdraws = supersedes is not None or bool(self._replaced(state, data))
        draft = self._check(data, withdraws=withdraws)
        self._check_expiry(draft, at)
        self._check_references(state, draft, now=at)
        if not withdraws and sum(w.state in PENDING for w in state.warnings.values()) >= MAX_PENDING:
            raise Refused(
                f"{MAX_PENDING} warnings are in progress already (drafted, submitted or approved): "
                "issue or reject some first (an update or cancel of an issued warning is never held back)"
            )
        wid = "W-" + hashlib.blake2b(c.id.encode(), digest_size=8).hexdigest()
        if wid in state.warnings:
            raise Refused(f"warning {wid} exists")
        w = Warning(wid, 0, "draft", draft, [c.actor], _iso(at), supersedes=supersedes)
        state.warnings[wid] = w
        self._change(w, "draft", "drafted", c, at, out)
        return wid

    def _issue(
        self, state: WarningsState, w: Warning, c: WarningCommand, at: datetime, out: list[WarningRecord]
    ) -> None:
        skip = _status(w.draft) in self.config.approval.skip_for
        self._need(w, c, ("approved",) if not skip else ("draft", "submitted", "approved"))
        self._check_complete(w.draft)
        # what it replaces: the warning of the update/cancel action, or those issued here that an
        # Update or Cancel drafted directly references (the same outcome either way)
        replaced = [w.supersedes] if w.supersedes else self._replaced(state, w.draft)
        for wid in replaced:
            orig = state.warnings.get(wid)
            if orig is None or orig.state != "issued":
                what = orig.identifier if orig is not None and orig.identifier else wid
                state_now = f": it is {orig.state}" if orig is not None else ""
                raise Refused(f"the warning it replaces ({what}) is no longer active{state_now}")
        self._check_references(
            state, w.draft, identifiers=False
        )  # (an Update or Cancel keeps w's status too)
        draft = Draft.model_validate(w.draft)
        found = self._tenancy_problems(draft, w.draft, bool(replaced))
        if found:  # (the warnings file may have bound senders or areas since it was drafted)
            raise Refused("; ".join(f"{'.'.join(map(str, loc))}: {m}" for loc, m in found))
        sent = at

        def resolve(identifier: str) -> Reference | None:
            known = state.issued.get(identifier)
            return Reference(known[1], identifier, known[2]) if known else None

        if draft.expires is not None and draft.expires <= sent:
            raise Refused(f"the warning expired at {draft.expires.isoformat()}: it cannot be issued")
        try:
            doc = render(
                draft, self.catalogue, sent, resolve=resolve, strict_references=True, bbox=self.config.region
            )
        except CapInvalid as e:
            raise Refused(f"the CAP document is invalid: {e}") from None
        except ValueError as e:  # text XML cannot hold (a control character): refused, not a crash
            raise Refused(f"the CAP document cannot be written: {e}") from None
        if doc.identifier in state.issued:
            raise Refused(f"CAP identifier {doc.identifier} was issued already")
        w.identifier, w.sent, w.xml = doc.identifier, doc.sent, doc.xml.decode()
        w.expires = draft.expires.isoformat() if draft.expires else None
        state.issued[doc.identifier] = [w.id, doc.sender, doc.sent]
        self._change(w, "issued", "issued", c, at, out)
        w.issued_version = w.version
        out.append(self._cap_record(w))
        if replaced:
            w.supersedes = replaced[0]
            new_state = "cancelled" if draft.msg_type == "Cancel" else "updated"
            for wid in replaced:
                orig = state.warnings[wid]
                orig.superseded_by = w.id
                self._change(orig, new_state, new_state, c, at, out, reason=f"superseded by {doc.identifier}")
            if draft.msg_type == "Cancel":  # a Cancel is a notice, not an active warning
                self._change(w, "cancelled", "cancelled", c, at, out, reason="a Cancel message")

    @staticmethod
    def _replaced(state: WarningsState, data: dict[str, Any]) -> list[str]:
        """The ids of the warnings issued here that an Update or Cancel ``data`` references (bare
        or ``sender,identifier,sent``), in the order referenced; none for an Alert."""
        if _kind(data) not in ("Update", "Cancel"):
            return []
        refs = data.get("references") or []
        out: list[str] = []
        for raw in refs.split() if isinstance(refs, str) else refs:
            try:
                parsed = parse_reference(str(raw).strip())
            except ValueError:
                continue
            known = state.issued.get(parsed if isinstance(parsed, str) else parsed[1])
            if known and known[0] not in out:
                out.append(known[0])
        return out

    def _expire(self, state: WarningsState, now: datetime) -> list[WarningEvent]:
        out: list[WarningEvent] = []
        for w in state.warnings.values():
            if w.state == "issued" and w.expires and cap_time(w.expires) <= now:
                w.version += 1
                w.state = "expired"
                w.audit.append(AuditEntry(_iso(now), "atalaia", "system", "expire", "expires reached"))
                out.append(self._event(w, "expired", None, now, reason="expires reached"))
        return out

    # ------------------------------------------------------------------ helpers
    def _check(
        self, data: dict[str, Any], keep: dict[str, Any] | None = None, withdraws: bool = False
    ) -> dict[str, Any]:
        """The draft's fields if they make a valid draft; Refused naming the fields otherwise."""
        merged = {**(keep or {}), **data}
        too_big = size_problems(merged)
        if too_big:
            raise Refused("bad draft: " + "; ".join(f"{f}: {m}" for f, m in too_big))
        try:
            d = Draft.model_validate(merged)
        except ValidationError as e:
            raise Refused(f"bad draft: {_short(e, merged)}") from None
        found = problems(d, self.catalogue, self.config.region)
        if merged.get("tenant") is not None:  # (as the model reads it: 2024 is the tenant "2024")
            merged["tenant"] = str(merged["tenant"])
        # kept as the document will carry them, so no later rule meets another spelling
        # (" cancel", msg_type: a rule that read the raw field was passed by one)
        merged.pop("msg_type", None)
        merged["msgType"], merged["status"] = d.msg_type, d.status
        found += self._tenancy_problems(d, merged, withdraws)
        if found:
            raise Refused(
                "bad draft: " + "; ".join(f"{'.'.join(map(str, loc)) or 'draft'}: {m}" for loc, m in found)
            )
        return orjson.loads(orjson.dumps(merged, default=str))

    def _tenancy_problems(self, d: Draft, data: dict[str, Any], withdraws: bool = False) -> list[Any]:
        """The draft's sender and areas against the tenant's (``senders:``, ``tenant_areas:``).
        Not for the Cancel of a warning issued here (``withdraws``): it keeps that warning's
        tenant and sender (the reference rules), and bindings made since must never keep a
        public warning from being withdrawn."""
        if withdraws and d.msg_type == "Cancel":
            return []
        return self.config.tenancy_problems(d, data.get("sender"), data.get("tenant"), self.catalogue)

    def tenancy_findings(self, state: WarningsState, data: dict[str, Any]) -> list[tuple[str, str]]:
        """(field, message) for what ``senders:`` and ``tenant_areas:`` refuse of draft ``data`` (a
        checked draft), as drafting it would: for the console's checks and preview."""
        if not self.config.senders and not self.config.tenant_areas:
            return []
        try:
            d = Draft.model_validate(data)
        except ValidationError:
            return []  # (the draft's own checks name it)
        data = {**data, "tenant": _text_or_none(data.get("tenant"))}
        withdraws = bool(self._replaced(state, data))
        return [
            (".".join(map(str, loc)) or "draft", m) for loc, m in self._tenancy_problems(d, data, withdraws)
        ]

    def reference_problems(
        self, state: WarningsState, data: dict[str, Any], now: datetime | None = None
    ) -> list[tuple[str, str]]:
        """(field, message) for each reference of draft ``data`` to an issued warning it may not
        reference: one of another tenant (a warning references only its own tenant's), or, for an
        Update or Cancel, one whose sender is not this draft's (CAP: the same sender updates and
        cancels its messages; a reference written ``sender,identifier,sent`` must name the
        original's sender too). A bare reference to nothing issued here is refused unless the
        identifier carries its sent time (one Atalaia generated); full triples to warnings issued
        elsewhere are kept; one naming a warning issued here must carry its sender and sent. With
        ``now``, a reference to a message not issued here sent after ``now`` is refused too (a
        typo in its date or offset): this message is sent later still, and issuing refuses it."""
        refs = data.get("references") or []
        if isinstance(refs, str):
            refs = refs.split()
        if not isinstance(refs, list):
            return []
        tenant = _text_or_none(data.get("tenant"))
        sender = _text_or_none(data.get("sender"))
        kind, status = _kind(data), _status(data)  # (as the document will carry them: any spelling)
        out: list[tuple[str, str]] = []
        for i, raw in enumerate(refs):
            try:
                parsed = parse_reference(str(raw).strip())
            except ValueError:
                continue  # the draft's own checks name it
            ident = parsed if isinstance(parsed, str) else parsed[1]
            known = state.issued.get(ident)
            if not known and now is not None and (later := reference_after(str(raw), now, DRAFTING_SKEW)):
                out.append((f"references.{i}", later))  # (one issued here: its time is the workflow's)
                continue
            if not known:
                other = other_senders_identifier(ident, sender or "") if isinstance(parsed, str) else None
                if other is not None:
                    out.append((f"references.{i}", other))
                elif isinstance(parsed, str) and sent_of_identifier(ident) is None:
                    out.append(  # (issuing would refuse it, after the approval: say it now)
                        (
                            f"references.{i}",
                            f"no issued warning {ident!r} here: reference a warning issued elsewhere "
                            "as 'sender,identifier,sent'",
                        )
                    )
                continue
            orig = state.warnings.get(known[0])
            orig_tenant = _text_or_none(orig.draft.get("tenant")) if orig is not None else None
            if orig_tenant != tenant:
                out.append(
                    (
                        f"references.{i}",
                        f"{ident} is a warning of another tenant: a warning may reference only "
                        f"warnings of its own tenant ({tenant or 'none'})",
                    )
                )
                continue
            if not isinstance(parsed, str) and (parsed[0] != known[1] or parsed[2] != _sent_time(known[2])):
                out.append(  # (issuing would refuse it, after the approval: say it now)
                    (
                        f"references.{i}",
                        f"{str(raw).strip()!r} does not name the warning issued here as {ident}: it was "
                        f"sent by {known[1]} at {known[2]} (write '{known[1]},{ident},{known[2]}' or the "
                        "bare identifier)",
                    )
                )
                continue
            if kind in ("Update", "Cancel"):
                if orig is not None and _status(orig.draft) != status:
                    out.append(
                        (
                            "status",
                            f"{'an' if kind == 'Update' else 'a'} {kind} keeps the status of the warning it references: "
                            f"{ident} is {_status(orig.draft)}, not {status} (draft a new warning for a drill)",
                        )
                    )
                if sender != known[1]:  # (a full reference's own sender is checked above)
                    out.append(
                        (
                            "sender",
                            f"{'an' if kind == 'Update' else 'a'} {kind} keeps the sender of the warning it references: {ident} was "
                            f"sent by {known[1]}",
                        )
                    )
        return out

    @staticmethod
    def identifier_problems(
        state: WarningsState, data: dict[str, Any], own: str | None = None
    ) -> list[tuple[str, str]]:
        """(field, message) when draft ``data`` (warning ``own``, if it is one already) names a
        CAP identifier that is issued already, or that another warning not yet issued names:
        only one of them could ever be issued, and issuing would refuse the other after its
        approval."""
        ident = _text_or_none(data.get("identifier"))  # (as the document will carry it: 2024 is "2024")
        if not ident:
            return []
        if ident in state.issued:
            return [
                ("identifier", f"CAP identifier {ident} was issued already (as {state.issued[ident][0]})")
            ]
        for w in state.warnings.values():
            if w.id != own and w.state in PENDING and _text_or_none(w.draft.get("identifier")) == ident:
                return [("identifier", f"CAP identifier {ident} is {w.id}'s already (not yet issued)")]
        return []

    def _check_references(
        self,
        state: WarningsState,
        data: dict[str, Any],
        own: str | None = None,
        identifiers: bool = True,
        now: datetime | None = None,
    ) -> None:
        """Refused for ``reference_problems`` and, with ``identifiers``, for
        ``identifier_problems`` (``own``: the warning an edit changes). Issuing passes
        ``identifiers=False``: it checks only the issued identifiers, so two pending warnings a
        snapshot kept with one identifier never block each other."""
        found = self.reference_problems(state, data, now)
        if identifiers:
            found += self.identifier_problems(state, data, own)
        if found:
            raise Refused("bad draft: " + "; ".join(f"{f}: {m}" for f, m in found))

    @staticmethod
    def _check_complete(draft: dict[str, Any]) -> None:
        """Refused naming each missing field when the draft lacks what a warning must say before
        it is submitted, approved or issued (``draft.incomplete_problems``)."""
        found = incomplete_problems(Draft.model_validate(draft))
        if found:
            raise Refused("bad draft: " + "; ".join(f"{f}: {m}" for f, m in found))

    @staticmethod
    def _check_expiry(draft: dict[str, Any], at: datetime) -> None:
        """Refused when a new or edited draft expires at or before ``at`` (it could never be
        issued; issuing checks it again)."""
        found = expired_problem(Draft.model_validate(draft), at)
        if found:
            raise Refused(f"bad draft: {found[0]}: {found[1]}")

    @staticmethod
    def _need(w: Warning, c: WarningCommand, states: tuple[str, ...]) -> None:
        if w.state not in states:
            raise Refused(f"cannot {c.action} a warning that is {w.state} (only when {' or '.join(states)})")

    def _change(
        self,
        w: Warning,
        new_state: str,
        change: str,
        c: WarningCommand,
        at: datetime,
        out: list[WarningRecord],
        reason: str | None = None,
    ) -> None:
        w.version += 1
        w.state = new_state
        why = c.reason if reason is None else reason
        w.audit.append(AuditEntry(_iso(at), c.actor, c.role, c.action, why))
        out.append(self._event(w, change, c, at, reason=why))

    @staticmethod
    def _event(
        w: Warning, change: str, c: WarningCommand | None, at: datetime, reason: str = ""
    ) -> WarningEvent:
        return WarningEvent(
            warning=w.id,
            version=w.version,
            state=w.state,  # type: ignore[arg-type]  # the workflow's states
            change=change,
            at=_iso(at),
            actor=c.actor if c else "atalaia",
            role=c.role if c else "system",
            reason=reason,
            command=c.id if c else None,
            identifier=w.identifier,
            status=w.draft.get("status", "Actual"),
            msgType=w.draft.get("msgType", "Alert"),
            supersedes=w.supersedes,
            incident=w.draft.get("incident"),
            tenant=w.draft.get("tenant"),
        )

    # ------------------------------------------------------------------ queries and snapshots
    def active(self, state: WarningsState) -> list[Warning]:
        """The issued warnings still in force (newest first): what the feed lists."""
        return sorted(
            (w for w in state.warnings.values() if w.state in ACTIVE),
            key=lambda w: w.sent or "",
            reverse=True,
        )

    @staticmethod
    def _cap_record(w: Warning) -> CapRecord:
        """The record publishing ``w``'s CAP document, as it was at issue (its version then: the
        delivery ids of its notifications derive from it)."""
        from lxml import etree

        from atalaia.warnings.cap import Q

        doc = etree.fromstring(w.xml.encode(), etree.XMLParser(resolve_entities=False, no_network=True))
        refs = (doc.findtext(Q + "references") or "").split()
        return CapRecord(
            warning=w.id,
            version=w.issued_version if w.issued_version is not None else w.version,
            identifier=w.identifier or "",
            status=doc.findtext(Q + "status") or "Actual",
            msgType=doc.findtext(Q + "msgType") or "Alert",
            sent=w.sent or "",
            expires=w.expires,
            references=refs,
            tenant=w.draft.get("tenant"),
            xml=w.xml or "",
        )

    def announce(self, state: WarningsState, now: datetime) -> list[CapRecord]:
        """After a broker reset (``atalaia up`` restarted on its memory-only broker): the CAP
        record of every document still in the feed again, so that delivery, which may have lost
        it before sending, sends it (its notification ids are those of the first time: a target
        that had it already is not sent it twice). Warnings issued before their issue version was
        kept are announced only while still in force as issued (their version is the issue's)."""
        return [
            self._cap_record(w)
            for w in reversed(self.in_feed(state, now))
            if w.identifier
            and w.xml
            and (w.issued_version is not None or w.state == "issued")
            and (w.state != "issued" or not w.expires or cap_time(w.expires) > now)  # (not yet ticked)
        ]

    def in_feed(self, state: WarningsState, now: datetime) -> list[Warning]:
        """What the feed lists (newest first): the issued warnings in force, and the Cancel messages
        of warnings that would still be in force (until their expiry; a day without one): a reader
        of the feed alone must receive the Cancel, not see the warning vanish."""
        cancels = [
            w
            for w in state.warnings.values()
            if w.state == "cancelled"
            and w.xml
            and w.draft.get("msgType") == "Cancel"
            and (cap_time(w.expires) if w.expires else cap_time(w.sent) + timedelta(days=1)) > now
        ]
        return sorted([*self.active(state), *cancels], key=lambda w: w.sent or "", reverse=True)

    def by_identifier(self, state: WarningsState, identifier: str) -> Warning | None:
        known = state.issued.get(identifier)
        return state.warnings.get(known[0]) if known else None

    def snapshot(self, state: WarningsState) -> bytes:
        data = {
            "warnings": [asdict(w) for w in state.warnings.values()],
            "replies": [(k, msgspec.to_builtins(r)) for k, r in state.replies.items()],
            "issued": state.issued,
        }
        return MAGIC + zlib.compress(orjson.dumps(data), 1)

    def restore(self, data: bytes) -> WarningsState:
        if not data.startswith(MAGIC):
            raise ValueError("not a warnings snapshot")
        d = orjson.loads(zlib.decompress(data[len(MAGIC) :]))
        ws = {}
        for raw in d["warnings"]:
            raw["audit"] = [AuditEntry(**a) for a in raw["audit"]]
            ws[raw["id"]] = Warning(**raw)
        replies = OrderedDict((k, msgspec.convert(v, WarningReply)) for k, v in d["replies"])
        return WarningsState(ws, replies, d["issued"])


#: what a Cancel does not keep of the warning it withdraws (unless its command gives them): the
#: original's instruction, description and headline ("Evite a zona ribeirinha") and its response
#: (Shelter, Evacuate) are no advice once it is withdrawn, nor its onset a time to wait for
_NOT_CANCELLED = (
    "responseType",
    "response_type",
    "instruction",
    "description",
    "headline",
    "onset",
    "effective",
)


def superseding_draft(
    original: dict[str, Any], action: str, changes: dict[str, Any], identifier: str
) -> dict[str, Any]:
    """The draft of the Update (``action`` "update") or Cancel ("cancel") of the issued warning
    ``original`` (CAP ``identifier``): its fields, less what a Cancel does not keep, with
    ``changes`` over them. A Cancel without a headline of its own gets "Aviso cancelado: <event>"
    (in each of the event's Portuguese languages; "Warning cancelled: <event>" in the others), and
    is an all-clear (``responseType`` AllClear, by the renderer) unless the changes say otherwise."""
    dropped = ("identifier", "sent") + (_NOT_CANCELLED if action == "cancel" else ())
    draft = {k: v for k, v in original.items() if k not in dropped}
    draft = {**draft, **changes, "msgType": "Update" if action == "update" else "Cancel"}
    if action == "cancel" and "headline" not in changes:
        event = draft.get("event")
        try:  # the original's languages: its event's, else its headline's... (a Cancel keeps them)
            langs = Draft.model_validate(original).languages_as_written
        except ValidationError:
            langs = []
        if isinstance(event, str) and langs not in ([], [DEFAULT_LANGUAGE]):  # (headlines in several)
            draft["headline"] = {
                lang: f"{'Aviso cancelado' if lang.lower().startswith('pt') else 'Warning cancelled'}: {event}"
                for lang in langs
            }
        elif isinstance(event, str):
            draft["headline"] = f"Aviso cancelado: {event}"
        elif isinstance(event, dict):
            draft["headline"] = {
                lang: f"{'Aviso cancelado' if str(lang).lower().startswith('pt') else 'Warning cancelled'}: {text}"
                for lang, text in event.items()
            }
    draft["references"] = [identifier]  # (the reference rules hold it to the original's status)
    return draft


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat()


def _sent_time(v: str) -> datetime | None:
    try:
        return cap_time(v)
    except ValueError:
        return None


def _text_or_none(v: Any) -> str | None:
    return None if v is None else str(v)


def _short(e: ValidationError, data: Any = None) -> str:
    from atalaia.warnings.loader import unique_errors

    return "; ".join(f"{x['field'] or 'command'}: {x['message']}" for x in unique_errors(data, e.errors()))
