"""Hostile operator commands and alarms against the incident manager (a penetration test's findings):
a refused command leaves the state exactly as it was, times out of range are refused up front, a
silence's end is bounded like its duration, and an alarm's tenant comes only from its tenant field."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atalaia.console.filters import FilterError, parse_filter
from atalaia.incidents import manager as manager_module
from atalaia.incidents.commands import Command
from atalaia.incidents.events import CommandReply, IncidentEvent
from atalaia.incidents.manager import IncidentManager
from atalaia.incidents.silences import SilenceCommand
from atalaia.incidents.testing import at_s, transition
from atalaia.rules.engine import RuleEngine
from atalaia.rules.loader import load_texts
from atalaia.streams.ingest import encode_observation, parse_payload

NOW = at_s(100)
BAD_TIMES = [
    "9999-12-31T23:00:00Z",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "1969-12-31T23:59:59Z",
    "9001-01-01T00:00:00Z",
    "2026-01-01T00:00:00",  # no offset
]


def _opened() -> tuple[IncidentManager, object, str]:
    mgr = IncidentManager()
    state = mgr.initial_state()
    state, out = mgr.step(state, transition("river-high", "g1", "firing", 0, parish="Ribeira"), at_s(0))
    (ev,) = [o for o in out if isinstance(o, IncidentEvent)]
    state, _ = mgr.tick(state, NOW)
    return mgr, state, ev.incident


def _cmd(iid: str, action: str, **kw: object) -> dict:
    return {"incident": iid, "action": action, "actor": "ana", "role": "operator", **kw}


def _valid_after(mgr: IncidentManager, state, iid: str) -> None:
    """The incident still takes commands: shelve it (refused if it were wedged), then acknowledge."""
    errors: list = []
    state, out = mgr.step_batch(
        state,
        [_cmd(iid, "shelve", duration="1h", reason="crew", id="ok-1"), _cmd(iid, "unshelve", id="ok-2")],
        NOW,
        errors,
    )
    assert errors == []
    replies = [o for o in out if isinstance(o, CommandReply)]
    assert [(r.action, r.accepted) for r in replies] == [("shelve", True), ("unshelve", True)]
    assert replies[0].at == NOW  # the manager's time
    state, out = mgr.step_batch(state, [_cmd(iid, "acknowledge", id="ok-3")], NOW, errors)
    assert errors == [] and [o.accepted for o in out if isinstance(o, CommandReply)] == [True]
    # and an alarm that joins it is taken, not refused
    state, out = mgr.step_batch(
        state, [transition("rain-high", "g2", "firing", 90, parish="Ribeira")], NOW, errors
    )
    assert errors == [] and any(isinstance(o, IncidentEvent) and o.incident == iid for o in out)


@pytest.mark.parametrize("bad", BAD_TIMES)
@pytest.mark.parametrize("action", ["shelve", "comment", "acknowledge", "close"])
def test_a_command_with_a_time_out_of_range_is_refused_and_changes_nothing(bad: str, action: str) -> None:
    mgr, state, iid = _opened()
    before = mgr.snapshot(state)
    errors: list = []
    cmd = _cmd(iid, action, duration="8h", reason="x", at=bad)
    state, out = mgr.step_batch(state, [cmd], NOW, errors)
    assert out == [] and len(errors) == 1 and "at" in errors[0][1]
    assert mgr.snapshot(state) == before
    with pytest.raises(ValueError, match="at"):
        Command.model_validate(cmd)
    _valid_after(mgr, state, iid)


@pytest.mark.parametrize("bad", [datetime(9999, 12, 31, 23, tzinfo=UTC), datetime(1900, 1, 1, tzinfo=UTC)])
def test_the_manager_checks_the_time_itself_even_past_the_model(bad: datetime) -> None:
    """A Command built without validation (model_construct) is still refused before any change."""
    mgr, state, iid = _opened()
    before = mgr.snapshot(state)
    cmd = Command.model_construct(
        id="c1",
        incident=iid,
        action="shelve",
        actor="ana",
        role="operator",
        reason="x",
        duration=3600.0,
        at=bad,
    )
    errors: list = []
    state, out = mgr.step_batch(state, [cmd], NOW, errors)
    assert out == [] and errors and mgr.snapshot(state) == before
    _valid_after(mgr, state, iid)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    action=st.sampled_from(["acknowledge", "shelve", "comment", "assign", "escalate", "suppress", "close"]),
    role=st.sampled_from(["operator", "supervisor"]),
    where=st.sampled_from(["apply", "finish"]),
    exc=st.sampled_from([OverflowError("date value out of range"), ValueError("boom")]),
)
def test_a_command_that_raises_anywhere_leaves_the_state_exactly_as_before(action, role, where, exc) -> None:
    """Restore on error: whatever part of applying a command fails (here made to fail on purpose,
    after the incident was changed), the manager's state is as before it, byte for byte."""
    mgr, state, iid = _opened()
    before = mgr.snapshot(state)
    original = manager_module.build_event if where == "finish" else manager_module.operator._apply

    def failing(*a, **kw):
        original(*a, **kw)  # the change is made, then something fails
        raise exc

    mp = pytest.MonkeyPatch()
    try:
        if where == "finish":
            mp.setattr(manager_module, "build_event", failing)
        else:
            mp.setattr(manager_module.operator, "_apply", failing)
        errors: list = []
        cmd = _cmd(iid, action, role=role, reason="x", duration="1h", id="boom")
        state, out = mgr.step_batch(state, [cmd], NOW, errors)
    finally:
        mp.undo()
    if errors:  # it was applied (not refused for its state or role) and failed: nothing is left of it
        assert out == [] and errors[0][0] == 0
        assert mgr.snapshot(state) == before
    else:  # refused for its role or the incident's state: answered, nothing applied
        assert [o.accepted for o in out] == [False]
    _valid_after(mgr, state, iid)


def test_a_silence_that_raises_leaves_the_state_exactly_as_before(monkeypatch) -> None:
    mgr, state, iid = _opened()
    before = mgr.snapshot(state)

    def failing(*a, **kw):
        raise OverflowError("date value out of range")

    monkeypatch.setattr(manager_module, "_silence_event", failing)
    silence = {
        "action": "silence",
        "actor": "sup",
        "role": "supervisor",
        "matchers": ['parish="Ribeira"', 'rule="gauge-swap"'],  # not the incident's alarms
        "comment": "works",
        "duration": "1h",
    }
    errors: list = []
    state, out = mgr.step_batch(state, [silence], NOW, errors)
    assert errors and out == []
    assert mgr.snapshot(state) == before
    monkeypatch.undo()
    state, out = mgr.step_batch(state, [silence], NOW, errors)
    assert [o.accepted for o in out if isinstance(o, CommandReply)] == [True]
    _valid_after(mgr, state, iid)


SILENCE = {  # a supervisor's silence of one parish, without its times
    "action": "silence",
    "actor": "sup",
    "role": "supervisor",
    "matchers": ['parish="Ribeira"'],
    "comment": "x",
}


@pytest.mark.parametrize("field", ["start", "end", "at"])
@pytest.mark.parametrize("bad", BAD_TIMES)
def test_a_silence_with_a_time_out_of_range_is_refused_up_front(field: str, bad: str) -> None:
    body = {**SILENCE, "duration": "1h", field: bad}
    with pytest.raises(ValueError, match=r"out of range|offset"):
        SilenceCommand.model_validate(body)
    mgr, state, _ = _opened()
    before = mgr.snapshot(state)
    errors: list = []
    state, out = mgr.step_batch(state, [body], NOW, errors)
    assert errors and out == [] and mgr.snapshot(state) == before


def test_a_silence_end_is_bounded_like_its_duration() -> None:
    body = SILENCE
    with pytest.raises(ValueError, match="366d"):
        SilenceCommand.model_validate({**body, "start": NOW, "end": "9000-12-31T00:00:00Z"})
    # only an end: the manager measures it from when it takes the command, and refuses it
    mgr, state, _ = _opened()
    state, out = mgr.step_batch(state, [{**body, "id": "far", "end": "9000-12-31T00:00:00Z"}], NOW)
    (reply,) = [o for o in out if isinstance(o, CommandReply)]
    assert not reply.accepted and "366d" in reply.reason and state.silences == {}
    # 366 days is still fine
    state, out = mgr.step_batch(state, [{**body, "id": "year", "end": at_s(100 + 366 * 86400)}], NOW)
    (reply,) = [o for o in out if isinstance(o, CommandReply)]
    assert reply.accepted


def test_a_filter_time_out_of_range_is_a_filter_error_naming_it() -> None:
    with pytest.raises(FilterError) as e:
        parse_filter({"since": "0001-01-01T00:00:00+14:00"})
    assert e.value.field == "since"


# ------------------------------------------------------------------ tenant labels
RULES = """
rules:
  - id: pm25-high
    select: {type: AirQualityObserved, attribute: pm25}
    severities: [{severity: high, above: 50}]
"""


def _entity(tenant_attr: str | None) -> bytes:
    e = {
        "id": "urn:ngsi-ld:AirQualityObserved:spoof-1",
        "type": "AirQualityObserved",
        "dateObserved": "2026-01-28T10:00:00Z",
        "pm25": 97,
        "parish": "Bonfim",
    }
    if tenant_attr is not None:
        e["tenant"] = tenant_attr
    return orjson.dumps({"id": "urn:n:2", "type": "Notification", "data": [e]})


@pytest.mark.parametrize(
    ("header", "attribute", "expected"),
    [(None, "porto", None), ("gaia", "porto", "gaia"), (None, None, None), ("porto", None, "porto")],
)
def test_an_entity_attribute_named_tenant_never_sets_the_incident_tenant(header, attribute, expected) -> None:
    """ingest → rules → incidents: the tenant is the observation's (the authenticated header's)."""
    headers = {"Content-Type": "application/json"} | ({"NGSILD-Tenant": header} if header else {})
    result = parse_payload(
        _entity(attribute), headers=headers, received_at=datetime(2026, 1, 28, 10, tzinfo=UTC)
    )
    observations = [orjson.loads(encode_observation(o)) for o in result.observations]  # the topic's record
    assert observations and all(o.get("tenant") == header for o in observations)
    engine = RuleEngine(load_texts([("t.yaml", RULES)]))
    alarms, rejected = engine.observe_batch(observations)
    assert rejected == [] and alarms
    mgr = IncidentManager()
    state, out = mgr.step_batch(mgr.initial_state(), [a.to_dict() for a in alarms], "2026-01-28T10:00:00Z")
    (inc,) = [o for o in out if isinstance(o, IncidentEvent)]
    assert inc.tenant == expected
    assert inc.correlation.get("tenant") == expected
    assert inc.labels.get("tenant") == expected
    for rec in next(iter(state.incidents.values())).alarms.values():
        assert rec.labels.get("tenant") == expected


def test_a_spoofed_tenant_label_at_the_manager_is_replaced_by_the_transition_tenant() -> None:
    mgr = IncidentManager()
    tr = transition("r", "k", "firing", 0, parish="Bonfim")
    tr["labels"] |= {"tenant": "porto", "service_path": "/x"}  # an entity's own attributes
    _, out = mgr.step(mgr.initial_state(), tr, at_s(0))
    (inc,) = [o for o in out if isinstance(o, IncidentEvent)]
    assert inc.tenant is None and "tenant" not in inc.correlation and "tenant" not in inc.labels
    assert "service_path" not in inc.labels
    _, out = mgr.step(mgr.initial_state(), {**tr, "tenant": "gaia"}, at_s(0))
    (inc,) = [o for o in out if isinstance(o, IncidentEvent)]
    assert inc.tenant == "gaia" and inc.correlation["tenant"] == "gaia" and inc.labels["tenant"] == "gaia"


# ------------------------------------------------------------------ through the console
@pytest.mark.broker
def test_the_console_sets_the_time_of_commands_and_silences(make_worker, broker, topic_prefix, tmp_path):
    """A client's ``at`` is refused (422 naming it) for incident commands and silences; times out
    of range and a silence's end past 366 d are 422/400 problem+json naming the field, not 500."""
    import asyncio
    import hashlib
    import time

    import httpx

    from tests.test_incidents_live import produce

    users = tmp_path / "users.yaml"
    users.write_text(
        f"users:\n  - {{actor: ana, role: operator, token_sha256: {hashlib.sha256(b'op').hexdigest()}}}\n"
        f"  - {{actor: rui, role: supervisor, token_sha256: {hashlib.sha256(b'sup').hexdigest()}}}\n"
    )
    w = make_worker(
        "--stages", "incidents,projection", extra_env={"ATALAIA_CONSOLE_USERS": str(users)}
    ).start(("incidents", "projection"))
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    tr = transition("river-level-high", "urn:ngsi-ld:WaterObserved:x", "firing", 0, parish="Bonfim")
    asyncio.run(produce(broker, f"{topic_prefix}.alarms", [{**tr, "id": "a1", "at": now, "group": "hydro"}]))
    op, sup = {"Authorization": "Bearer op"}, {"Authorization": "Bearer sup"}
    deadline, incidents = time.monotonic() + 30, []
    while not incidents and time.monotonic() < deadline:
        incidents = httpx.get(f"{w.url}/api/incidents", headers=op, timeout=5).json()["incidents"]
        time.sleep(0.3)
    assert incidents, "the alarm opened an incident"
    url = f"{w.url}/api/incidents/{incidents[0]['id']}/commands"

    def problem(r: httpx.Response, status: int, field: str) -> None:
        assert r.status_code == status, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        body = r.json()
        assert field in {e["field"] for e in body.get("errors", [])} or body.get("field") == field, body

    for at in ("2099-01-01T00:00:00Z", "9999-12-31T23:00:00Z", "0001-01-01T00:00:00+14:00"):
        shelve = {"action": "shelve", "duration": "1h", "reason": "x", "at": at}
        problem(httpx.post(url, json=shelve, headers=op, timeout=10), 422, "at")
    # the incident was not touched: it shelves for at most 8 h from now, and unshelves
    r = httpx.post(url, json={"action": "shelve", "duration": "1h", "reason": "crew"}, headers=op, timeout=10)
    assert r.status_code == 200, r.text
    reply_at = datetime.fromisoformat(r.json()["reply"]["at"].replace("Z", "+00:00"))
    assert abs((reply_at - datetime.now(UTC)).total_seconds()) < 120
    r = httpx.post(url, json={"action": "unshelve"}, headers=op, timeout=10)
    assert r.status_code == 200, r.text

    silences = f"{w.url}/api/silences"
    base = {"matchers": ['parish="Bonfim"', 'rule="no-such-rule"'], "comment": "x"}
    problem(
        httpx.post(silences, json={**base, "duration": "1h", "at": now}, headers=sup, timeout=10), 422, "at"
    )
    start = {**base, "start": "0001-01-01T00:00:00+14:00", "duration": "1h"}
    problem(httpx.post(silences, json=start, headers=sup, timeout=10), 422, "start")
    problem(
        httpx.post(silences, json={**base, "end": "9999-12-31T00:00:00Z"}, headers=sup, timeout=10),
        422,
        "end",
    )
    far = {**base, "start": now, "end": "2999-12-31T00:00:00Z"}
    problem(httpx.post(silences, json=far, headers=sup, timeout=10), 422, "end")
    problem(
        httpx.post(silences, json={**base, "end": "2999-12-31T00:00:00Z"}, headers=sup, timeout=10),
        422,
        "end",
    )
    r = httpx.get(
        f"{w.url}/api/incidents", params={"since": "0001-01-01T00:00:00+14:00"}, headers=op, timeout=5
    )
    problem(r, 400, "since")


@pytest.mark.parametrize("location", [[float("inf"), 41.1], [-8.6, float("nan")]])
def test_an_alarm_that_is_refused_changes_nothing(location) -> None:
    mgr, state, iid = _opened()
    before = mgr.snapshot(state)
    errors: list = []
    bad = transition("rain-high", "g9", "firing", 90, location=location, parish="Ribeira")
    state, out = mgr.step_batch(state, [bad], NOW, errors)
    assert out == [] and errors and "location" in errors[0][1]
    assert mgr.snapshot(state) == before
    _valid_after(mgr, state, iid)
