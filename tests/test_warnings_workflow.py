"""The warning workflow (atalaia.warnings.core): four eyes, Update/Cancel referencing the original,
expiry, refusals audited, idempotent commands, snapshots; a stateful hypothesis test of its
invariants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from lxml import etree

from atalaia.warnings.cap import Q, polygon_text, validate
from atalaia.warnings.catalogue import Catalogue
from atalaia.warnings.config import Approval, WarningsConfig
from atalaia.warnings.core import Workflow

T0 = datetime(2026, 12, 4, 17, tzinfo=UTC)
DRAFT = {
    "sender": "protecao.civil@cm-porto.pt",
    "status": "Actual",
    "level": "orange",
    "event": {"pt-PT": "Cheia", "en-GB": "Flood"},
    "headline": {"pt-PT": "Aviso laranja", "en-GB": "Orange warning"},
    "instruction": {"pt-PT": "Afaste-se da zona ribeirinha.", "en-GB": "Keep away from the riverside."},
    "onset": "2026-12-04T18:00:00+00:00",
    "expires": "2026-12-05T06:00:00+00:00",
    "area": {"desc": {"pt-PT": "Campanhã", "en-GB": "Campanhã"}, "geocodes": {"DICOFRE": ["131203"]}},
}


class Driver:
    def __init__(self, config: WarningsConfig | None = None) -> None:
        self.wf = Workflow(config)
        self.state = self.wf.initial_state()
        self.outputs: list[dict] = []
        self.clock = T0

    def do(self, action: str, actor: str, role: str, at: datetime | None = None, **kw) -> dict:
        """One command, a second after the previous one (two equal commands at one time are one)."""
        self.clock = at or self.clock + timedelta(seconds=1)
        self.state, out = self.wf.step(
            self.state, {"action": action, "actor": actor, "role": role, **kw}, self.clock
        )
        self.outputs += out
        return out[-1]

    def issued(self, draft: dict = DRAFT) -> str:
        w = self.do("draft", "ana", "operator", draft=draft).warning
        self.do("submit", "ana", "operator", warning=w)
        assert self.do("approve", "rui", "approver", warning=w).ok
        assert self.do("issue", "ana", "operator", warning=w).ok
        return w

    def caps(self) -> list[dict]:
        return [o for o in self.outputs if o.kind == "cap"]


def test_self_approval_is_refused_and_audited() -> None:
    d = Driver()
    w = d.do("draft", "ana", "operator", draft=DRAFT).warning
    d.do("submit", "ana", "operator", warning=w)
    r = d.do("approve", "ana", "approver", warning=w)
    assert not r.ok and "four eyes" in r.error
    r = d.do("approve", "rui", "operator", warning=w)
    assert not r.ok and "approver role" in r.error
    r = d.do("issue", "ana", "operator", warning=w)
    assert not r.ok and "submitted" in r.error
    assert d.caps() == []
    audit = d.state.warnings[w].audit
    assert [(a.actor, a.action, a.ok) for a in audit[-3:]] == [
        ("ana", "approve", False),
        ("rui", "approve", False),
        ("ana", "issue", False),
    ]
    # someone who edited it is an author too
    d.do("edit", "rui", "approver", warning=w, draft={"level": "red"})
    d.do("submit", "ana", "operator", warning=w)
    assert not d.do("approve", "rui", "approver", warning=w).ok
    assert d.do("approve", "eva", "approver", warning=w).ok


def test_an_approval_is_of_the_version_the_approver_saw() -> None:
    """Four eyes on what was reviewed: the approver read version N (an Exercise in one parish);
    meanwhile its author made it another warning (Actual, red) and submitted it again. The
    approval, which named no version, approved the warning the approver had never seen, and its
    author issued it. An approval that names the version it was given for is refused once the
    warning changed, and names both versions."""
    d = Driver()
    w = d.do("draft", "ana", "operator", draft={**DRAFT, "status": "Exercise", "level": "yellow"}).warning
    d.do("submit", "ana", "operator", warning=w)
    seen = d.state.warnings[w].version  # what rui opened and read
    d.do("edit", "ana", "operator", warning=w, draft={"status": "Actual", "level": "red"})
    d.do("submit", "ana", "operator", warning=w)
    r = d.do("approve", "rui", "approver", warning=w, version=seen)
    assert not r.ok and f"version {seen}" in r.error and f"version {d.state.warnings[w].version}" in r.error
    assert d.state.warnings[w].state == "submitted" and d.state.warnings[w].approver is None
    assert not d.do("issue", "ana", "operator", warning=w).ok and d.caps() == []
    assert (d.state.warnings[w].audit[-2].action, d.state.warnings[w].audit[-2].ok) == ("approve", False)
    # rui reads it again: the approval of the version now shown goes through
    assert d.do("approve", "rui", "approver", warning=w, version=d.state.warnings[w].version).ok
    assert d.do("issue", "ana", "operator", warning=w).ok
    assert d.caps()[0].status == "Actual"


def test_viewer_cannot_act_and_rejection_needs_a_reason() -> None:
    d = Driver()
    assert not d.do("draft", "vic", "viewer", draft=DRAFT).ok
    w = d.do("draft", "ana", "operator", draft=DRAFT).warning
    d.do("submit", "ana", "operator", warning=w)
    assert not d.do("reject", "rui", "approver", warning=w).ok
    assert d.do("reject", "rui", "approver", warning=w, reason="wrong parish").ok
    assert d.state.warnings[w].state == "rejected"
    assert d.state.warnings[w].audit[-1].reason == "wrong parish"


def test_update_and_cancel_reference_the_original() -> None:
    d = Driver()
    w = d.issued()
    first = d.caps()[0]
    # an issued warning is never edited
    assert not d.do("edit", "ana", "operator", warning=w, draft={"level": "red"}).ok
    u = d.do("update", "ana", "operator", warning=w, draft={"level": "red"}).warning
    d.do("submit", "ana", "operator", warning=u)
    d.do("approve", "rui", "approver", warning=u)
    assert d.do("issue", "ana", "operator", warning=u, at=T0 + timedelta(hours=1)).ok
    update = d.caps()[1]
    assert update.msgType == "Update"
    assert update.references == [f"protecao.civil@cm-porto.pt,{first.identifier},{first.sent}"]
    assert d.state.warnings[w].state == "updated" and d.state.warnings[w].superseded_by == u
    assert [x.id for x in d.wf.active(d.state)] == [u]
    assert d.state.warnings[w].xml == first.xml  # the original document is untouched
    c = d.do("cancel", "ana", "operator", warning=u, reason="river falling").warning
    d.do("submit", "ana", "operator", warning=c)
    d.do("approve", "rui", "approver", warning=c)
    assert d.do("issue", "ana", "operator", warning=c, at=T0 + timedelta(hours=2)).ok
    cancel = d.caps()[2]
    assert cancel.msgType == "Cancel"
    assert cancel.references == [f"protecao.civil@cm-porto.pt,{update.identifier},{update.sent}"]
    assert d.state.warnings[u].state == "cancelled"
    assert d.wf.active(d.state) == []
    for cap in d.caps():
        assert validate(cap.xml.encode()) == []
        assert etree.fromstring(cap.xml.encode()).findtext(Q + "identifier") == cap.identifier


def test_an_update_or_cancel_drafted_directly_replaces_the_warning_it_references() -> None:
    """An Update or Cancel written as a new draft (msgType and references given, as the console's
    form or a file allows) has the outcome of the update/cancel action: issuing it marks the warning
    it references updated / cancelled, and the feed no longer shows that warning as in force beside
    its own Cancel (a reader would see a cancelled warning still active)."""
    d = Driver()
    w = d.issued()
    first = d.caps()[0]
    u = d.issued({**DRAFT, "msgType": "Update", "references": [first.identifier], "level": "red"})
    assert d.state.warnings[w].state == "updated" and d.state.warnings[w].superseded_by == u
    assert d.state.warnings[u].supersedes == w
    assert [x.id for x in d.wf.active(d.state)] == [u]
    update = d.caps()[1]
    ref = f"{DRAFT['sender']},{update.identifier},{update.sent}"  # a full reference: the same
    c = d.issued({**DRAFT, "msgType": "Cancel", "references": [ref]})
    assert d.state.warnings[u].state == "cancelled" and d.state.warnings[u].superseded_by == c
    assert d.state.warnings[c].state == "cancelled", "a Cancel is a notice, not a warning in force"
    assert d.wf.active(d.state) == []
    assert [x.id for x in d.wf.in_feed(d.state, d.clock)] == [c]
    # a warning no longer in force is not replaced again: the Cancel is refused, as the action is
    again = d.do("draft", "ana", "operator", draft={**DRAFT, "msgType": "Cancel", "references": [ref]})
    d.do("submit", "ana", "operator", warning=again.warning)
    d.do("approve", "rui", "approver", warning=again.warning)
    r = d.do("issue", "ana", "operator", warning=again.warning)
    assert not r.ok and "no longer active" in r.error and update.identifier in r.error, r


def test_a_cancel_drafted_directly_is_never_blocked_by_bindings_made_since() -> None:
    """As the cancel action's: a public warning must always be withdrawable."""
    d = Driver()
    d.issued()
    ident = d.caps()[0].identifier
    d.wf = Workflow(WarningsConfig(senders={"gaia": (DRAFT["sender"],)}))  # bound since, to gaia
    assert not d.do("draft", "ana", "operator", draft={**DRAFT, "headline": "Outro"}).ok
    c = d.issued({**DRAFT, "msgType": "Cancel", "references": [ident]})
    assert d.state.warnings[c].supersedes is not None and d.wf.active(d.state) == []


def test_a_cancel_made_by_the_action_is_an_all_clear_unless_the_command_says_otherwise() -> None:
    """The README: "A Cancel gets responseType AllClear unless given". The cancel action copied
    the original's Shelter into the Cancel, telling people to stay sheltered after the warning was
    withdrawn."""

    def responses(cap) -> list[str]:
        root = etree.fromstring(cap.xml.encode())
        return [[r.text for r in i.iter(Q + "responseType")] for i in root.iter(Q + "info")]

    d = Driver()
    for given, expected in ((None, "AllClear"), (["Monitor"], "Monitor")):
        w = d.issued({**DRAFT, "responseType": ["Shelter"], "headline": f"Abrigo {given}"})
        c = d.do("cancel", "ana", "operator", warning=w, draft={"responseType": given} if given else None)
        d.do("submit", "ana", "operator", warning=c.warning)
        d.do("approve", "rui", "approver", warning=c.warning)
        assert d.do("issue", "ana", "operator", warning=c.warning).ok
        cancel = d.caps()[-1]
        assert cancel.msgType == "Cancel" and responses(cancel) == [[expected], [expected]], given
    # an update keeps what the warning says to do
    w = d.issued({**DRAFT, "responseType": ["Shelter"], "headline": "Abrigo"})
    u = d.do("update", "ana", "operator", warning=w, draft={"level": "red"}).warning
    d.do("submit", "ana", "operator", warning=u)
    d.do("approve", "rui", "approver", warning=u)
    assert d.do("issue", "ana", "operator", warning=u).ok
    assert responses(d.caps()[-1]) == [["Shelter"], ["Shelter"]]


def test_expired_warnings_leave_the_active_list() -> None:
    d = Driver()
    w = d.issued()
    assert [x.id for x in d.wf.active(d.state)] == [w]
    d.state, out = d.wf.tick(d.state, "2026-12-05T05:59:59+00:00")
    assert out == [] and d.wf.active(d.state)
    d.state, out = d.wf.tick(d.state, "2026-12-05T06:00:00+00:00")
    assert [(o.change, o.state) for o in out] == [("expired", "expired")]
    assert d.wf.active(d.state) == []
    assert not d.do("update", "ana", "operator", warning=w, draft={"level": "red"}).ok


def test_an_invalid_document_is_refused_never_issued() -> None:
    d = Driver()
    w = d.do("draft", "ana", "operator", draft=DRAFT).warning
    d.do("submit", "ana", "operator", warning=w)
    d.do("approve", "rui", "approver", warning=w)
    r = d.do("issue", "ana", "operator", warning=w, at=datetime(2026, 12, 6, tzinfo=UTC))
    assert not r.ok and "expired" in r.error
    bad = {**DRAFT, "level": "purple"}
    r = d.do("draft", "ana", "operator", draft=bad)
    assert not r.ok and "unknown level 'purple'" in r.error
    # an Update of a warning whose identifier is unknown is refused on drafting, and cannot be
    # issued (strict references: a draft made before that check, an older state)
    upd = {**DRAFT, "msgType": "Update", "references": ["NOT-ISSUED-HERE"]}
    d.clock = T0 + timedelta(minutes=5)
    r = d.do("draft", "ana", "operator", draft=upd)
    assert not r.ok and "references.0: no issued warning 'NOT-ISSUED-HERE'" in r.error, r
    w2 = d.do(
        "draft", "ana", "operator", draft={**upd, "references": ["PT-CM-PORTO-20261204170000-0123456789"]}
    ).warning
    d.state.warnings[w2].draft["references"] = ["NOT-ISSUED-HERE"]
    d.do("submit", "ana", "operator", warning=w2)
    d.do("approve", "rui", "approver", warning=w2)
    r = d.do("issue", "ana", "operator", warning=w2)
    assert not r.ok and "NOT-ISSUED-HERE" in r.error
    assert d.caps() == [] and d.state.warnings[w2].state == "approved"


def test_exercise_may_skip_approval_by_configuration_actual_never() -> None:
    exercise = {**DRAFT, "status": "Exercise"}
    d = Driver()
    w = d.do("draft", "ana", "operator", draft=exercise).warning
    assert not d.do("issue", "ana", "operator", warning=w).ok
    d = Driver(WarningsConfig(approval=Approval(skip_for=("Exercise", "Test"))))
    w = d.do("draft", "ana", "operator", draft=exercise).warning
    assert d.do("issue", "ana", "operator", warning=w).ok
    assert d.caps()[0].status == "Exercise"
    a = d.do("draft", "ana", "operator", draft=DRAFT).warning
    assert not d.do("issue", "ana", "operator", warning=a).ok
    with pytest.raises(ValueError):
        WarningsConfig(approval=Approval(skip_for=("Actual",)))


def test_a_drill_cannot_update_or_cancel_an_actual_warning() -> None:
    """With drills allowed to skip approval, one operator's Exercise (or Test) Cancel or Update of
    an Actual warning was issued at once: the real warning left the public feed, without a second
    person, and could no longer be updated or cancelled for real. An Update or Cancel keeps the
    status of the warning it replaces, however it is reached (an edit of the update too)."""
    d = Driver(WarningsConfig(approval=Approval(skip_for=("Exercise", "Test"))))
    w = d.issued()
    for action, status in (("cancel", "Exercise"), ("update", "Test")):
        r = d.do(action, "ana", "operator", warning=w, draft={"status": status})
        assert not r.ok and "keeps the status" in r.error, r
    u = d.do("update", "ana", "operator", warning=w, draft={"level": "red"}).warning
    r = d.do("edit", "ana", "operator", warning=u, draft={**DRAFT, "status": "Exercise"})
    assert not r.ok and "keeps the status" in r.error, r
    # nor by a fresh Exercise Cancel that references it, or a drill's Cancel edited to reference it
    actual = next(c for c in d.caps() if c.status == "Actual")
    ref = f"{DRAFT['sender']},{actual.identifier},{actual.sent}"
    fresh = {**DRAFT, "status": "Exercise", "msgType": "Cancel", "references": [ref]}
    r = d.do("draft", "ana", "operator", draft=fresh)
    assert not r.ok and "keeps the status" in r.error, r
    e = d.do("draft", "ana", "operator", draft={**DRAFT, "status": "Exercise"}).warning
    assert d.do("issue", "ana", "operator", warning=e).ok, "a drill may skip approval"
    ce = d.do("cancel", "ana", "operator", warning=e, reason="drill over").warning
    r = d.do("edit", "ana", "operator", warning=ce, draft={"references": [ref]})
    assert not r.ok and "keeps its references" in r.error, r
    for spelling in ({"msgType": "cancel"}, {"msgType": " CANCEL"}, {"msg_type": "Cancel"}):
        odd = {**DRAFT, "status": "Exercise", "references": [ref], **spelling}
        r = d.do("draft", "ana", "operator", draft=odd)
        assert not r.ok and "keeps the status" in r.error, (spelling, r)
    assert d.state.warnings[w].state == "issued", "the Actual warning is still out"
    c = d.do("cancel", "ana", "operator", warning=w, reason="river falling").warning
    assert not d.do("issue", "ana", "operator", warning=c).ok, "a real Cancel needs its approval"
    d.do("submit", "ana", "operator", warning=c)
    assert d.do("approve", "rui", "approver", warning=c).ok
    assert d.do("issue", "ana", "operator", warning=c).ok
    assert d.state.warnings[w].state == "cancelled"


def test_commands_are_idempotent_and_state_survives_a_snapshot() -> None:
    d = Driver()
    cmd = {"id": "c-1", "action": "draft", "actor": "ana", "role": "operator", "draft": DRAFT}
    d.state, out1 = d.wf.step(d.state, cmd, T0)
    d.state, out2 = d.wf.step(d.state, cmd, T0 + timedelta(minutes=5))
    assert len(d.state.warnings) == 1 and out2 == [out1[-1]]
    w = out1[-1].warning
    d.do("submit", "ana", "operator", warning=w)
    d.do("approve", "rui", "approver", warning=w)
    restored = d.wf.restore(d.wf.snapshot(d.state))
    assert d.wf.snapshot(restored) == d.wf.snapshot(d.state)
    # a crash after approval: both copies issue the same document (same ids), once each
    issue = {"id": "c-issue", "action": "issue", "warning": w, "actor": "ana", "role": "operator"}
    _, a = d.wf.step(d.state, issue, T0)
    _, b = d.wf.step(restored, issue, T0)
    assert a == b
    _, again = d.wf.step(restored, issue, T0)
    assert [o.kind for o in again] == ["reply"]


# --------------------------------------------------------------------------- stateful
ACTORS = [
    ("ana", "operator"),
    ("rui", "approver"),
    ("eva", "approver"),
    ("vic", "viewer"),
    ("sam", "supervisor"),
]


class WorkflowMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.wf = Workflow(WarningsConfig(approval=Approval(skip_for=("Exercise",))))
        self.state = self.wf.initial_state()
        self.now = T0
        self.versions: dict[str, int] = {}
        self.documents: dict[str, str] = {}  # warning -> its CAP xml, once issued

    def _run(self, cmd: dict | None) -> None:
        self.state, out = self.wf.step(self.state, cmd, self.now)
        for o in out:
            if o.kind == "warning":
                w = o.warning
                assert o.version == self.versions.get(w, 0) + (0 if o.change == "refused" else 1)
                self.versions[w] = o.version
            if o.kind == "cap":
                event(f"issued {o.status} {o.msgType}")
                w = self.state.warnings[o.warning]
                assert o.warning not in self.documents
                self.documents[o.warning] = o.xml
                assert validate(o.xml.encode()) == []
                if o.status == "Actual":
                    assert w.approver and w.approver not in w.authors
                    approvals = [a for a in w.audit if a.action == "approve" and a.ok]
                    assert approvals and approvals[-1].role == "approver"

    def _pick(self, data) -> str | None:
        ids = sorted(self.state.warnings)
        return data.draw(st.sampled_from(ids)) if ids else None

    @rule(
        who=st.sampled_from(ACTORS),
        status=st.sampled_from(["Actual", "Exercise", "Test"]),
        level=st.sampled_from(["yellow", "red"]),
    )
    def draft(self, who, status, level) -> None:
        self._run(
            {
                "action": "draft",
                "actor": who[0],
                "role": who[1],
                "draft": {**DRAFT, "status": status, "level": level},
            }
        )

    @rule(
        who=st.sampled_from(ACTORS),
        action=st.sampled_from(["edit", "submit", "approve", "reject", "issue", "update", "cancel"]),
        reason=st.sampled_from(["", "checked"]),
        data=st.data(),
    )
    def act(self, who, action, reason, data) -> None:
        w = self._pick(data)
        if w is None:
            return
        extra = (
            {"draft": {"level": data.draw(st.sampled_from(["orange", "red"]))}}
            if action in ("edit", "update")
            else {}
        )
        self._run(
            {"action": action, "warning": w, "actor": who[0], "role": who[1], "reason": reason, **extra}
        )

    @rule(level=st.sampled_from(["yellow", "orange", "red"]))
    def full_cycle(self, level) -> None:
        """Draft, submit, approve and issue an Actual warning in a row (Update/Cancel follow via push)."""
        d = {**DRAFT, "level": level, "expires": "2027-01-04T00:00:00+00:00"}
        before = set(self.state.warnings)
        self._run({"action": "draft", "actor": "ana", "role": "operator", "draft": d})
        for w in set(self.state.warnings) - before:
            for action, actor, role in (
                ("submit", "ana", "operator"),
                ("approve", "rui", "approver"),
                ("issue", "sam", "supervisor"),
            ):
                self._run({"action": action, "warning": w, "actor": actor, "role": role})

    @rule(data=st.data())
    def push(self, data) -> None:
        """The next step of the happy path, by a fitting person (so that issues, updates and cancels happen)."""
        w = self._pick(data)
        if w is None:
            return
        cur = self.state.warnings[w]
        step = {
            "draft": ("submit", "ana", "operator"),
            "submitted": ("approve", "eva", "approver"),
            "approved": ("issue", "sam", "supervisor"),
            "issued": (data.draw(st.sampled_from(["update", "cancel"])), "ana", "operator"),
        }.get(cur.state)
        if step:
            extra = {"draft": {"level": "red"}} if step[0] == "update" else {}
            self._run({"action": step[0], "warning": w, "actor": step[1], "role": step[2], **extra})

    @rule(minutes=st.integers(1, 900))
    def time_passes(self, minutes) -> None:
        self.now += timedelta(minutes=minutes)
        self._run(None)

    @invariant()
    def issued_documents_never_change(self) -> None:
        for wid, xml in self.documents.items():
            assert self.state.warnings[wid].xml == xml

    @invariant()
    def active_are_issued_and_unexpired(self) -> None:
        for w in self.wf.active(self.state):
            assert w.state == "issued" and w.identifier
            assert w.expires is None or datetime.fromisoformat(w.expires) > self.now

    @invariant()
    def snapshot_round_trips(self) -> None:
        snap = self.wf.snapshot(self.state)
        assert self.wf.snapshot(self.wf.restore(snap)) == snap


WorkflowMachine.TestCase.settings = settings(
    max_examples=50, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_workflow_machine = WorkflowMachine.TestCase


def test_tenants_send_only_as_their_configured_senders() -> None:
    """A porto operator and approver issued as PROTECAO.CIVIL@CM-GAIA.PT (gaia's address in
    capitals) or as a gaia address gaia had not used yet, and then gaia could not use it.
    ``senders:`` in the warnings file binds senders to tenants, ignoring case."""
    senders = {"porto": ("protecao.civil@cm-porto.pt",), "gaia": ("protecao.civil@cm-gaia.pt",)}
    d = Driver(WarningsConfig(senders=senders))
    for tenant, sender, ok in (
        ("porto", "Protecao.Civil@CM-Porto.pt", True),
        ("porto", "PROTECAO.CIVIL@CM-GAIA.PT", False),
        ("porto", "presidente@cm-gaia.pt", False),
        ("gaia", "protecao.civil@cm-gaia.pt", True),
        (None, "protecao.civil@cm-gaia.pt", False),
        (None, "outro@example.pt", True),
        ("matosinhos", "outro@example.pt", True),
        ("matosinhos", "protecao.civil@cm-porto.pt", False),
    ):
        draft = {**DRAFT, "sender": sender, **({"tenant": tenant} if tenant else {})}
        r = d.do("draft", "ana", "operator", draft=draft)
        assert r.ok is ok, (tenant, sender, r)
        if not ok:
            assert "sender" in r.error, r


def test_tenants_warn_only_for_their_own_areas() -> None:
    """A tenant's user could draft (and, with its approver, issue) a warning for another tenant's
    parish: areas were nobody's. ``tenant_areas`` binds geocode prefixes to tenants, and a drawn
    polygon or circle must lie around the tenant's configured areas. (Two tenants inside Porto
    here: the configured CAOP areas are Porto's parishes.)"""
    east, west = ("131202", "131203"), ("131216", "131218")  # Bonfim, Campanhã; Foz, Lordelo
    d = Driver(WarningsConfig(tenant_areas={"east": east, "west": west, "ghost": ("1399",)}))
    desc = {"pt-PT": "Zona", "en-GB": "Zone"}

    def parish(code: str) -> dict:
        return {"desc": desc, "geocodes": {"DICOFRE": [code]}}

    foz = {"desc": desc, "polygon": [[41.150, -8.680], [41.155, -8.675], [41.148, -8.672], [41.150, -8.680]]}
    campanha_circle = {"desc": desc, "circle": "41.16,-8.57 1"}
    cases = (
        ("east", parish("131203"), None),
        ("east", parish("131216"), "not in tenant 'east'"),
        ("west", foz, None),
        ("east", foz, "outside tenant 'east'"),
        ("east", campanha_circle, None),
        ("west", campanha_circle, "outside tenant 'west'"),
        (None, parish("131203"), "in tenant 'east'"),
        ("north", parish("131210"), None),  # Paranhos: nobody's
        (None, parish("131210"), None),
        ("ghost", foz, "no configured areas to draw in"),
    )
    for tenant, area, refused in cases:
        draft = {**DRAFT, "area": area, **({"tenant": tenant} if tenant else {})}
        r = d.do("draft", "ana", "operator", draft=draft)
        assert r.ok is (refused is None), (tenant, area, r)
        if refused:
            assert refused in r.error and "area" in r.error, r


def test_senders_bindings_hold_against_look_alikes_and_odd_files() -> None:
    """Review of senders: a look-alike address (a Cyrillic o, a zero-width space, a fullwidth @, a
    closing dot) passed for another; a file could bind one address to two tenants, or none; a
    numeric tenant escaped the binding; a draft approved before the binding was issued after it."""
    senders = {"porto": ("protecao.civil@cm-porto.pt",)}
    d = Driver(WarningsConfig(senders=senders))
    for fake in (
        "protecao.civil@cm-p\u043erto.pt",
        "protecao.civil@cm-porto.pt\u200b",
        "protecao.civil\uff20cm-porto.pt",
        "protecao.civil@cm-porto.pt.",
    ):
        r = d.do("draft", "ana", "operator", draft={**DRAFT, "sender": fake, "tenant": "gaia"})
        assert not r.ok and "porto" in r.error, (fake, r)
    numeric = Driver(WarningsConfig(senders={"2024": ("x@y.pt",)}))
    r = numeric.do("draft", "ana", "operator", draft={**DRAFT, "sender": "other@z.pt", "tenant": 2024})
    assert not r.ok and "sends as x@y.pt only" in r.error, r
    w = numeric.do("draft", "ana", "operator", draft={**DRAFT, "sender": "x@y.pt", "tenant": 2024}).warning
    assert numeric.state.warnings[w].draft["tenant"] == "2024", "stored as the tenant it is"
    for bad, why in (
        ({"porto": ()}, "at least one sender"),
        ({"porto": ("Porto <a@b.pt>",)}, "not a CAP sender"),
        ({"porto": ("a@b.pt",), "gaia": ("A@B.PT",)}, "tenant 'porto''s too"),
    ):
        with pytest.raises(ValueError, match=why):
            WarningsConfig(senders=bad)

    # approved before the binding, issued after it: refused at issue
    before = Driver()
    w = before.do("draft", "ana", "operator", draft={**DRAFT, "tenant": "gaia"}).warning
    before.do("submit", "ana", "operator", warning=w)
    assert before.do("approve", "rui", "approver", warning=w).ok
    after = Workflow(WarningsConfig(senders=senders))
    _state, out = after.step(
        before.state, {"action": "issue", "actor": "ana", "role": "operator", "warning": w}, T0
    )
    assert not out[-1].ok and "porto" in out[-1].error, out[-1]


def test_tenant_areas_hold_against_wide_drawings_and_coarse_codes_but_never_block_a_cancel() -> None:
    """Review of tenant_areas: a 300 km circle centred inside the box passed; a municipality's
    code (DICO 1312) covering another tenant's parishes passed; overlapping or malformed
    prefixes were accepted; and bindings added after a warning was issued refused its Cancel,
    leaving a public warning that could not be withdrawn."""
    east, west = ("131202", "131203"), ("131216", "131218")
    d = Driver(WarningsConfig(tenant_areas={"east": east, "west": west}))
    desc = {"pt-PT": "Zona", "en-GB": "Zone"}
    for tenant, area, refused in (
        ("east", {"desc": desc, "circle": "41.16,-8.57 300"}, "outside tenant 'east'"),
        ("east", {"desc": desc, "circle": "41.16,-8.57 0.5"}, None),
        (None, {"desc": desc, "geocodes": {"DICO": ["1312"]}}, "in tenant 'east'"),
    ):
        r = d.do(
            "draft",
            "ana",
            "operator",
            draft={**DRAFT, "area": area, **({"tenant": tenant} if tenant else {})},
        )
        assert r.ok is (refused is None), (tenant, area, r)
        assert refused is None or refused in r.error, r
    for bad, why in (
        ({"porto": ("1312",), "bonfim": ("131202",)}, "overlaps"),
        ({"porto": (" 1312",)}, "not a geocode prefix"),
        ({"porto": ()}, "at least one geocode prefix"),
        ({"None": ("1312",)}, "not a tenant's name"),
    ):
        with pytest.raises(ValueError, match=why):
            WarningsConfig(tenant_areas=bad)

    # issued before the bindings; its Cancel is still possible after them (Actual: with approval)
    before = Driver()
    w = before.issued({**DRAFT, "tenant": "gaia"})  # Campanhã, porto's sender
    after = Driver(WarningsConfig(tenant_areas={"east": east}, senders={"gaia": ("pc@cm-gaia.pt",)}))
    after.state = before.state
    c = after.do("cancel", "ana", "operator", warning=w, reason="over").warning
    assert c is not None and after.state.warnings[c].state == "draft", after.outputs[-1]
    after.do("submit", "ana", "operator", warning=c)
    assert after.do("approve", "rui", "approver", warning=c).ok
    assert after.do("issue", "ana", "operator", warning=c).ok
    assert after.state.warnings[w].state == "cancelled"
    # an Update is a new message: it is held to the bindings
    u = Driver()
    w2 = u.issued({**DRAFT, "tenant": "gaia"})
    later = Driver(WarningsConfig(tenant_areas={"east": east}))
    later.state = u.state
    r = later.do("update", "ana", "operator", warning=w2, draft={"level": "red"})
    assert not r.ok and "east" in r.error, r


def test_drawn_areas_are_held_to_the_tenants_border_not_a_box_around_it() -> None:
    """tenant_areas held a drawing to the box around the tenant's parishes: east (Bonfim and
    Campanhã) could draw over Paranhos, nobody's, 1.5 km beyond its border but inside the box; and
    a tenant not listed could draw over a listed tenant's parishes. Now a drawing reaches at most
    1 km beyond its tenant's areas, and nobody else's reaches more than 1 km into them."""
    east, west = ("131202", "131203"), ("131216", "131218")
    d = Driver(WarningsConfig(tenant_areas={"east": east, "west": west}))
    desc = {"pt-PT": "Zona", "en-GB": "Zone"}

    def square(lat0: float, lon0: float, lat1: float, lon1: float) -> dict:
        ring = [[lat0, lon0], [lat1, lon0], [lat1, lon1], [lat0, lon1], [lat0, lon0]]
        return {"desc": desc, "polygon": ring}

    paranhos_north = square(41.175, -8.613, 41.181, -8.607)  # in east's box, > 1 km from east
    along_east = square(41.165, -8.596, 41.169, -8.590)  # astride east's border, < 1 km beyond
    in_campanha = square(41.155, -8.578, 41.158, -8.574)
    around_east = square(41.13, -8.62, 41.19, -8.54)  # its edge touches nobody; it covers east
    for tenant, area, refused in (
        ("east", paranhos_north, "outside tenant 'east'"),
        ("east", along_east, None),
        ("east", in_campanha, None),
        ("north", paranhos_north, None),  # not listed: nobody's parish is fine
        ("north", along_east, None),  # reaches less than 1 km into east
        ("north", in_campanha, "covers tenant 'east'"),
        (None, in_campanha, "covers tenant 'east'"),
        ("north", around_east, "covers tenant 'east'"),
        ("north", {"desc": desc, "circle": "41.16,-8.57 1.5"}, "covers tenant 'east'"),
        ("north", {"desc": desc, "circle": "41.183,-8.61 0.3"}, None),
        ("west", in_campanha, "outside tenant 'west'"),
    ):
        r = d.do(
            "draft",
            "ana",
            "operator",
            draft={**DRAFT, "area": area, **({"tenant": tenant} if tenant else {})},
        )
        assert r.ok is (refused is None), (tenant, area, r)
        if refused:
            assert refused in r.error and "area" in r.error, r


def test_a_tenants_territory_measures_reach_in_km_on_any_shape() -> None:
    """The territory's reach is a distance: positive outside, negative inside, the same for a point
    whatever shape it was sampled from; outlines are sampled every 250 m."""
    from atalaia.warnings.catalogue import Catalogue
    from atalaia.warnings.territory import STEP_KM, Shape, outline, territory

    cat = Catalogue.load()
    t = territory(cat, ("131203",))
    assert t is not None
    assert t.reach_km(np.array([[41.158, -8.576]]))[0] < -0.5  # Campanhã's middle
    assert 0.9 < t.reach_km(np.array([[41.158, -8.5526 + 0.012]]))[0] < 1.1  # 1 km east of its edge
    edge = outline([(41.15, -8.60), (41.16, -8.60)])  # 1.112 km: 5 steps
    assert len(edge) == 6 and np.allclose(np.diff(edge[:, 0]) * 111.2, 1.112 / 5)
    circle = Shape(centre=(41.16, -8.57), km=2.0)
    ring = circle.outline()[1:]
    dist = np.hypot((ring[:, 0] - 41.16) * 111.2, (ring[:, 1] + 8.57) * 111.2 * np.cos(np.radians(41.16)))
    assert np.allclose(dist, 2.0) and np.max(np.hypot(*np.diff(ring, axis=0).T)) * 111.2 <= 2 * STEP_KM
    # a municipality's outline counts only where none of its parishes is configured
    assert territory(cat, ("1312",)).reach_km(np.array([[41.158, -8.576]]))[0] < 0


def test_a_draft_is_kept_with_its_kind_and_status_as_the_document_carries_them() -> None:
    d = Driver()
    w = d.do("draft", "ana", "operator", draft={**DRAFT, "status": " exercise", "msg_type": "alert"}).warning
    kept = d.state.warnings[w].draft
    assert (kept["status"], kept["msgType"], "msg_type" in kept) == ("Exercise", "Alert", False)


def test_a_drawing_over_a_narrow_parish_of_another_tenant_is_refused() -> None:
    """Review: no point of a parish narrower than 2 km lies 1 km inside it, so a polygon over the
    whole city passed for a tenant owning only such a parish (Cedofeita…, Lordelo e Massarelos).
    Inside another tenant's parish a drawing may now reach at most half that parish's depth."""
    desc = {"pt-PT": "Zona", "en-GB": "Zone"}
    city = [[41.13, -8.70], [41.19, -8.70], [41.19, -8.55], [41.13, -8.55], [41.13, -8.70]]
    for owned in (("131217",), ("131218",), ("131202",)):
        d = Driver(WarningsConfig(tenant_areas={"centro": owned}))
        r = d.do(
            "draft",
            "ana",
            "operator",
            draft={**DRAFT, "tenant": "north", "area": {"desc": desc, "polygon": city}},
        )
        assert not r.ok and "covers tenant 'centro'" in r.error, (owned, r)


def test_an_unclosed_drawn_polygon_is_held_to_the_territories_as_its_closed_ring() -> None:
    """Review: a draft may leave its polygon open (CAP's document closes it), but the territory
    check walked it as given: its closing edge was never sampled and its inside was computed on
    an open ring, so an open triangle over a tenant's parish could pass where the closed one was
    refused."""
    desc = {"pt-PT": "Zona", "en-GB": "Zone"}
    d = Driver(WarningsConfig(tenant_areas={"east": ("131202", "131203")}))
    open_ring = [[41.1511, -8.6363], [41.1906, -8.5833], [41.1803, -8.5345], [41.1800, -8.5295]]
    for ring in (open_ring, [*open_ring, open_ring[0]]):  # its closing edge runs over Campanhã
        r = d.do(
            "draft",
            "ana",
            "operator",
            draft={**DRAFT, "tenant": "north", "area": {"desc": desc, "polygon": ring}},
        )
        assert not r.ok and "covers tenant 'east'" in r.error, (len(ring), r)


def test_a_command_without_its_time_is_timed_by_its_record_so_a_replay_publishes_the_same() -> None:
    """A script's issue command without ``at``, read again after a crash: the same CAP document
    (the record's time, not the batch's, makes its ``sent`` and so its identifier)."""
    from types import SimpleNamespace as R

    from atalaia.warnings.stage import WarningsCore

    core = WarningsCore()
    ts = int(T0.timestamp()) * 1000

    def run(cmds: list[dict], now: float) -> list[dict]:
        records = [R(value=orjson.dumps(c), topic="t.commands", timestamp=ts + i) for i, c in enumerate(cmds)]
        return [orjson.loads(o.value) for o in core.process(records, now)]

    def cmd(cid: str, action: str, actor: str, role: str, **kw) -> dict:
        return {"kind": "warning", "id": cid, "action": action, "actor": actor, "role": role, **kw}

    (wid,) = [
        o["warning"]
        for o in run([cmd("c1", "draft", "ana", "operator", draft=DRAFT)], ts / 1000)
        if o["kind"] == "reply"
    ]
    run(
        [
            cmd("c2", "submit", "ana", "operator", warning=wid),
            cmd("c3", "approve", "rui", "approver", warning=wid),
        ],
        ts / 1000,
    )
    before = core.snapshot()
    issue = [cmd("c4", "issue", "rui", "approver", warning=wid)]
    first = [o for o in run(issue, ts / 1000 + 5) if o["kind"] == "cap"]
    core.restore(before)
    again = [o for o in run(issue, ts / 1000 + 65) if o["kind"] == "cap"]
    assert len(first) == len(again) == 1 and first[0]["xml"] == again[0]["xml"]
    assert first[0]["identifier"].startswith("PT-") and "20261204" in first[0]["identifier"]


def test_after_a_broker_reset_the_documents_in_the_feed_are_announced_as_first_published() -> None:
    """``atalaia up`` restarted on its memory-only broker loses atalaia.warnings: a warning issued
    while delivery was not running was never delivered after the restart that configured it. The
    stage now announces the CAP record of every document in the feed (an Alert in force, a Cancel
    of one that would be), identical to the first publication, so delivery's deterministic ids
    send it to those that lack it and to no one twice."""
    from types import SimpleNamespace as R

    from atalaia.warnings.stage import WarningsCore

    core = WarningsCore()
    ts = int(T0.timestamp()) * 1000
    published: list[dict] = []

    def run(*cmds: dict) -> list[dict]:
        records = [R(value=orjson.dumps(c), topic="t.commands", timestamp=ts) for c in cmds]
        out = [orjson.loads(o.value) for o in core.process(records, ts / 1000)]
        published.extend(o for o in out if o["kind"] == "cap")
        return out

    def cmd(cid: str, action: str, actor: str, role: str, **kw) -> dict:
        return {"kind": "warning", "id": cid, "action": action, "actor": actor, "role": role, **kw}

    def issue(prefix: str, draft: dict) -> str:
        (wid,) = [
            o["warning"]
            for o in run(cmd(f"{prefix}1", "draft", "ana", "operator", draft=draft))
            if o["kind"] == "reply"
        ]
        run(
            cmd(f"{prefix}2", "submit", "ana", "operator", warning=wid),
            cmd(f"{prefix}3", "approve", "rui", "approver", warning=wid),
            cmd(f"{prefix}4", "issue", "rui", "approver", warning=wid),
        )
        return wid

    issue("a", DRAFT)
    other = issue("b", {**DRAFT, "level": "yellow"})
    (first_other,) = [p for p in published if p["warning"] == other]
    issue("c", {**DRAFT, "msgType": "Cancel", "references": [first_other["identifier"]]})
    assert len(published) == 3
    announced = [orjson.loads(o.value) for o in core.announce(ts / 1000 + 60)]
    # the first Alert in force, and the Cancel of the second (no longer in force itself)
    assert sorted(announced, key=lambda r: r["identifier"]) == sorted(
        [published[0], published[2]], key=lambda r: r["identifier"]
    )
    restored = WarningsCore(state=core.snapshot())
    assert [orjson.loads(o.value) for o in restored.announce(ts / 1000 + 60)] == announced
    assert core.announce(int(datetime(2026, 12, 6, tzinfo=UTC).timestamp())) == []  # all expired


def test_a_cancel_is_an_all_clear_not_the_original_instruction_again() -> None:
    """A Cancel kept the withdrawn warning's headline, instruction ("Evite a zona ribeirinha.")
    and validity beside responseType AllClear: the SMS told people to keep avoiding the area.
    It now says it is cancelled, in each language, with only what the command gives."""
    d = Driver()
    w = d.issued(
        {**DRAFT, "instruction": {"pt-PT": "Evite a zona ribeirinha.", "en-GB": "Avoid the riverside."}}
    )
    c = d.do("cancel", "ana", "operator", warning=w, reason="river falling").warning
    d.do("submit", "ana", "operator", warning=c)
    d.do("approve", "rui", "approver", warning=c)
    assert d.do("issue", "ana", "operator", warning=c).ok
    infos = etree.fromstring(d.caps()[-1].xml.encode()).findall(Q + "info")
    assert [
        (
            i.findtext(Q + "headline"),
            i.findtext(Q + "instruction"),
            i.findtext(Q + "responseType"),
            i.findtext(Q + "onset"),
        )
        for i in infos
    ] == [
        ("Aviso cancelado: Cheia", None, "AllClear", None),
        ("Warning cancelled: Flood", None, "AllClear", None),
    ]
    # what the command gives is kept
    w2 = d.issued({**DRAFT, "level": "red"})
    told = {"pt-PT": "Pode regressar a casa.", "en-GB": "You may return home."}
    c2 = d.do("cancel", "ana", "operator", warning=w2, draft={"instruction": told}).warning
    assert d.state.warnings[c2].draft["instruction"] == told


def test_an_identifier_issued_or_pending_elsewhere_is_refused_when_drafted_not_after_approval() -> None:
    """Two warnings naming one CAP identifier: only one could ever be issued. Issuing refused
    the other, after its approval (four eyes spent on a warning that could not go out); the
    draft and the edit that name it are refused now, an edit of the warning itself is not."""
    d = Driver()
    first = d.issued({**DRAFT, "identifier": "PT-CMP-2026-0001"})
    r = d.do("draft", "ana", "operator", draft={**DRAFT, "identifier": "PT-CMP-2026-0001"})
    assert not r.ok and "PT-CMP-2026-0001 was issued already" in r.error and first in r.error
    pending = d.do("draft", "ana", "operator", draft={**DRAFT, "identifier": "PT-CMP-2026-0002"}).warning
    r = d.do("draft", "ana", "operator", draft={**DRAFT, "identifier": "PT-CMP-2026-0002"})
    assert not r.ok and f"is {pending}'s already" in r.error
    other = d.do("draft", "ana", "operator", draft=DRAFT).warning
    r = d.do("edit", "ana", "operator", warning=other, draft={"identifier": "PT-CMP-2026-0002"})
    assert not r.ok and "identifier" in r.error
    assert d.do("edit", "ana", "operator", warning=pending, draft={"level": "red"}).ok  # its own
    d.do("reject", "rui", "approver", warning=pending, reason="wrong level")  # rejected: free again
    assert d.do("edit", "ana", "operator", warning=other, draft={"identifier": "PT-CMP-2026-0002"}).ok
    d.do("submit", "ana", "operator", warning=other)
    d.do("approve", "rui", "approver", warning=other)
    assert d.do("issue", "ana", "operator", warning=other).ok
    assert [c.identifier for c in d.caps()] == ["PT-CMP-2026-0001", "PT-CMP-2026-0002"]
    d.do("draft", "ana", "operator", draft={**DRAFT, "identifier": 20261204})  # (a YAML number)
    r = d.do("draft", "ana", "operator", draft={**DRAFT, "identifier": "20261204"})
    assert not r.ok and "20261204 is W-" in r.error, "the same identifier as the document carries it"


def test_warnings_in_progress_are_bounded_but_never_an_update_or_cancel(monkeypatch) -> None:
    """A signed-in operator drafting without end filled the stage's state; beyond the bound a new
    draft is refused, and an update or cancel of an issued warning still goes through."""
    import atalaia.warnings.core as core

    d = Driver()
    issued = d.issued()
    monkeypatch.setattr(core, "MAX_PENDING", 3)
    pending = [d.do("draft", "ana", "operator", draft=DRAFT) for _ in range(3)]
    assert all(r.ok for r in pending)
    r = d.do("draft", "ana", "operator", draft=DRAFT)
    assert not r.ok and "3 warnings are in progress already" in r.error
    assert d.do("cancel", "ana", "operator", warning=issued).ok
    for r in pending[:2]:  # (the cancel is in progress too: 2 left)
        assert d.do("reject", "rui", "approver", warning=r.warning, reason="duplicate").ok
    assert d.do("draft", "ana", "operator", draft=DRAFT).ok  # room again


@pytest.mark.parametrize(
    "area",
    [
        {"geocodes": {"DICOFRE": ["131203"]}},
        {"desc": {"pt-PT": "Ribeira", "en-GB": "Riverside"}, "geocodes": {"DICOFRE": ["131203"]}},
    ],
)
def test_a_warning_whose_languages_come_from_its_headline_can_be_cancelled(area) -> None:
    """An event written once ("Cheia") with headline and link per language is a warning in pt-PT
    and en-GB. Its Cancel dropped the headline, so it had one language, pt-PT, and its en-GB link
    was refused ("web.en-GB: language en-GB is not one of the warning's"): the issued warning could
    not be cancelled; with place names per language it had both, and an English block headed
    "Aviso cancelado". The Cancel keeps the languages, with a cancellation headline in each."""
    d = Driver()
    w = d.issued(
        {
            "sender": "protecao.civil@cm-porto.pt",
            "level": "orange",
            "event": "Cheia",
            "headline": {"pt-PT": "Cheia no Douro", "en-GB": "Douro flood"},
            "instruction": {"pt-PT": "Afaste-se do rio.", "en-GB": "Keep away from the river."},
            "expires": "2026-12-05T06:00:00+00:00",
            "web": {"pt-PT": "https://www.cm-porto.pt/pc", "en-GB": "https://www.cm-porto.pt/en/pc"},
            "area": area,
        }
    )
    r = d.do("cancel", "ana", "operator", warning=w, reason="over")
    assert r.ok, r.error
    d.do("submit", "ana", "operator", warning=r.warning)
    assert d.do("approve", "rui", "approver", warning=r.warning).ok
    assert d.do("issue", "ana", "operator", warning=r.warning).ok
    assert d.state.warnings[w].state == "cancelled"
    root = etree.fromstring(
        d.caps()[-1].xml.encode() if isinstance(d.caps()[-1].xml, str) else d.caps()[-1].xml
    )
    q = "{urn:oasis:names:tc:emergency:cap:1.2}"
    assert root.findtext(q + "msgType") == "Cancel"
    assert [(i.findtext(q + "language"), i.findtext(q + "headline")) for i in root.iter(q + "info")] == [
        ("pt-PT", "Aviso cancelado: Cheia"),
        ("en-GB", "Warning cancelled: Cheia"),
    ]


def test_a_warning_whose_areas_are_over_the_size_bound_can_still_be_cancelled(monkeypatch) -> None:
    """A Cancel keeps the areas of the warning it withdraws, and each geocode's boundaries were
    written again: a warning issued before the CAP document was bounded (or before the areas file
    gave finer boundaries) had a Cancel over the bound, refused at drafting ('its CAP document
    would be about 616 KiB, over the 384 KiB'), so the warning stayed in force. Such a Cancel
    writes the areas file's boundaries simplified to fit (as any warning now does: the same warning
    is drafted again, not refused), every geocode still there."""
    from atalaia.warnings import cap

    parishes = ["131202", "131203", "131210", "131211", "131216", "131217", "131218"]
    big = {
        "sender": "protecao.civil@cm-porto.pt",
        "level": "orange",
        "event": {"pt-PT": "Cheia", "en-GB": "Flood"},
        "headline": {"pt-PT": "Cheia", "en-GB": "Flood"},
        "instruction": {"pt-PT": "Afaste-se do rio.", "en-GB": "Keep away from the river."},
        "expires": "2026-12-05T06:00:00+00:00",
        "area": [
            {
                "desc": {"pt-PT": f"Zona {i}", "en-GB": f"Zone {i}"},
                "geocodes": {"DICOFRE": [parishes[i % 7]], "DICO": ["1312"]},
            }
            for i in range(100)
        ],
    }
    d = Driver()
    bound = cap.MAX_CAP_BYTES
    monkeypatch.setattr(cap, "MAX_CAP_BYTES", 4 * bound)  # (as it was issued: no bound)
    w = d.issued(big)
    assert len(d.caps()[-1].xml) > bound
    monkeypatch.setattr(cap, "MAX_CAP_BYTES", bound)
    again = d.do("draft", "ana", "operator", draft=big)
    assert again.ok, again.error  # (it was refused: 'its CAP document would be about 616 KiB')
    r = d.do("cancel", "ana", "operator", warning=w, reason="over")
    assert r.ok, r.error
    d.do("submit", "ana", "operator", warning=r.warning)
    assert d.do("approve", "rui", "approver", warning=r.warning).ok
    issued = d.do("issue", "ana", "operator", warning=r.warning)
    assert issued.ok, issued.error
    assert d.state.warnings[w].state == "cancelled"
    xml = d.caps()[-1].xml
    xml = xml.encode() if isinstance(xml, str) else xml
    assert len(xml) <= bound
    assert validate(xml) == []
    root = etree.fromstring(xml)
    areas = list(root.iter(Q + "area"))
    assert len(areas) == 200
    assert [g.findtext(Q + "value") for g in areas[0].iter(Q + "geocode")] == ["131202", "1312"]
    polygons = [p.text.split() for p in areas[0].iter(Q + "polygon")]
    assert len(polygons) == 2 and all(len(p) >= 4 and p[0] == p[-1] for p in polygons)  # (131202, 1312)
    porto = [polygon_text(r) for r in Catalogue.load().area("DICO", "1312").rings]
    assert len(polygons[1]) < len(porto[0].split())  # simplified


@pytest.mark.parametrize("ahead", [timedelta(seconds=40), timedelta(minutes=3)], ids=["40s", "3min"])
def test_an_update_to_a_message_another_system_just_sent_by_its_clock_can_be_drafted(ahead) -> None:
    """The sender's other system (a second site, the previous installation) sent a warning whose
    ``sent``, by its clock, is a little ahead of ours. Drafting its Update at once compared that
    time with the drafting time and refused it ('was sent after this message'), though the Update
    is sent at its issue, after the approval, and issuing compares with that ``sent`` exactly.
    Drafting allows ``cap.DRAFTING_SKEW`` (5 min); a typo of an hour or a day is still refused."""
    d = Driver()
    theirs = f"protecao.civil@cm-porto.pt,PT-SITE-B-7,{(T0 + ahead).isoformat()}"
    update = {**DRAFT, "msgType": "Update", "references": [theirs]}
    r = d.do("draft", "ana", "operator", at=T0, draft=update)
    assert r.ok, r.error
    d.do("submit", "ana", "operator", warning=r.warning)
    assert d.do("approve", "rui", "approver", warning=r.warning).ok
    issued = d.do("issue", "ana", "operator", warning=r.warning, at=T0 + timedelta(minutes=5))
    assert issued.ok, issued.error
    typo = f"protecao.civil@cm-porto.pt,PT-SITE-B-7,{(T0 + timedelta(hours=1)).isoformat()}"
    r = d.do("draft", "ana", "operator", at=T0, draft={**update, "references": [typo]})
    assert not r.ok and "references.0" in r.error and "was sent after this message" in r.error, r.error
