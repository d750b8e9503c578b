"""Tenancy on warnings and PGU upserts: a warning drafted from an incident keeps the incident's
tenant (on its events and on the CAP record of ``atalaia.warnings``), an Update keeps it, and the
NGSI-LD Alert upsert of an incident or warning goes to the incident's tenant (``NGSILD-Tenant``)
unless the target fixes one or opts out (``tenant_from_incident: false``)."""

from __future__ import annotations

from datetime import UTC, datetime

from atalaia.notifiers.config import load_config_text
from atalaia.notifiers.engine import EscalationEngine, EscalationState
from atalaia.notifiers.log import SQLiteDeliveryLog
from atalaia.notifiers.pipeline import Backoff
from atalaia.notifiers.service import Notifier
from atalaia.notifiers.testing import HttpSink, incident_event
from atalaia.notifiers.warning import warning_notifications
from atalaia.streams.clock import parse_time
from atalaia.warnings.catalogue import Catalogue
from atalaia.warnings.core import Workflow
from atalaia.warnings.from_incident import draft_from_incident
from atalaia.warnings.records import CapRecord, decode_warning_record

T0 = datetime(2026, 12, 4, 17, tzinfo=UTC)


def gaia_incident(**kw) -> dict:
    return incident_event(
        incident="inc-gaia-1",
        severity="critical",
        correlation={"parish": "Campanhã", "tenant": "gaia"},
        labels={"hazard": "flood", "parish": "Campanhã"},
        tenant="gaia",
        **kw,
    )


def issue(wf: Workflow, st, wid: str):
    st, _ = wf.step(st, {"action": "submit", "warning": wid, "actor": "ana", "role": "operator"}, T0)
    st, _ = wf.step(st, {"action": "approve", "warning": wid, "actor": "rui", "role": "approver"}, T0)
    return wf.step(st, {"action": "issue", "warning": wid, "actor": "ana", "role": "operator"}, T0)


def test_a_warning_from_an_incident_keeps_its_tenant_on_events_and_cap_records() -> None:
    draft = draft_from_incident(gaia_incident(), Catalogue.load(), "pc@cm-gaia.pt", T0)
    draft["instruction"] = {"pt-PT": "Evite a zona.", "en-GB": "Avoid the area."}  # (the operator's)
    assert draft["tenant"] == "gaia" and draft["incident"] == "inc-gaia-1"
    only_corr = {**gaia_incident(), "tenant": None}
    assert draft_from_incident(only_corr, Catalogue.load(), "pc@cm-gaia.pt", T0)["tenant"] == "gaia"
    assert "tenant" not in draft_from_incident(incident_event(), Catalogue.load(), "pc@cm-porto.pt", T0)

    wf = Workflow()
    st, out = wf.step(
        wf.initial_state(), {"action": "draft", "actor": "ana", "role": "operator", "draft": draft}, T0
    )
    wid = out[0].warning
    assert out[0].tenant == "gaia"
    st, out = issue(wf, st, wid)
    cap = next(o for o in out if o.kind == "cap")
    assert cap.tenant == "gaia" and ">gaia<" not in cap.xml  # not part of the CAP document
    assert all(o.tenant == "gaia" for o in out if o.kind == "warning")
    # an Update opens a new warning of the same tenant
    st, out = wf.step(
        st, {"action": "update", "warning": wid, "actor": "ana", "role": "operator", "draft": {}}, T0
    )
    upd = out[0].warning
    assert out[0].tenant == "gaia"
    st, out = issue(wf, st, upd)
    assert next(o for o in out if o.kind == "cap").tenant == "gaia"
    # snapshots keep it
    assert wf.restore(wf.snapshot(st)).warnings[upd].draft["tenant"] == "gaia"


def test_a_draft_command_may_name_its_tenant() -> None:
    wf = Workflow()
    draft = draft_from_incident(incident_event(), Catalogue.load(), "pc@cm-porto.pt", T0)
    cmd = {"action": "draft", "actor": "ana", "role": "operator", "draft": draft, "tenant": "porto"}
    _, out = wf.step(wf.initial_state(), cmd, T0)
    assert out[0].tenant == "porto"


PGU = """
targets:
  pgu: {{channel: ngsi-ld, url: "{url}"{extra}}}
warnings: {{targets: [pgu]}}
routes: [{{policy: p}}]
policies:
  p: {{steps: [{{targets: [pgu], wait: 10m}}]}}
"""


async def upsert_tenants(
    tmp_path, extra: str = "", event: dict | None = None, warning: CapRecord | None = None
) -> list:
    http = await HttpSink().start()
    try:
        cfg = load_config_text(PGU.format(url=http.url, extra=extra), "pgu.yaml")
        if warning is not None:
            notes = warning_notifications(warning, cfg)
        else:
            ev = event or gaia_incident()
            _, notes = EscalationEngine(cfg).step(EscalationState(), ev, parse_time(ev["at"]))
        notifier = Notifier(
            cfg, SQLiteDeliveryLog(tmp_path / f"d{len(extra)}.sqlite"), backoff=Backoff(0.05, 0.2)
        )
        await notifier.start()
        try:
            delivered = await notifier.deliver(notes)
        finally:
            await notifier.aclose()
        assert delivered
        return [r.headers.get("NGSILD-Tenant") for r in http.received("/ngsi-ld/v1/entityOperations/upsert")]
    finally:
        await http.stop()


async def test_pgu_upsert_goes_to_the_incidents_tenant_by_default(tmp_path) -> None:
    assert await upsert_tenants(tmp_path) == ["gaia"]
    assert await upsert_tenants(tmp_path, extra=", tenant: porto") == ["porto"]  # a fixed tenant wins
    assert await upsert_tenants(tmp_path, extra=", tenant_from_incident: false") == [None]
    assert await upsert_tenants(tmp_path, event=incident_event(severity="critical")) == [None]  # single city


async def test_a_warnings_pgu_upsert_goes_to_the_warnings_tenant(tmp_path) -> None:
    wf = Workflow()
    draft = draft_from_incident(gaia_incident(), Catalogue.load(), "pc@cm-gaia.pt", T0)
    draft["instruction"] = {"pt-PT": "Evite a zona.", "en-GB": "Avoid the area."}  # (the operator's)
    st, out = wf.step(
        wf.initial_state(), {"action": "draft", "actor": "ana", "role": "operator", "draft": draft}, T0
    )
    _, out = issue(wf, st, out[0].warning)
    cap = decode_warning_record(next(o for o in out if o.kind == "cap").to_json())  # as consumed
    assert await upsert_tenants(tmp_path, warning=cap) == ["gaia"]
