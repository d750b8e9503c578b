"""Runtime silences in the pure incident manager: label matchers, author, comment, start/end;
effective at once, expire on time or by command, survive a snapshot/restore, and maintenance
windows of incidents.yaml are the same objects."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from atalaia.incidents.config import IncidentConfig
from atalaia.incidents.events import CommandReply, IncidentEvent
from atalaia.incidents.silences import (
    SilenceCommand,
    SilenceEvent,
    matches_every_alarm,
    parse_matchers,
    silence_id,
)
from atalaia.incidents.testing import Driver, at_s


def silence(d: Driver, at: float, cid: str = "c1", role: str = "supervisor", **kw):
    body = {
        "action": "silence",
        "id": cid,
        "actor": "rui",
        "role": role,
        "matchers": ['parish="Ribeira"', 'rule=~"river-.*"'],
        "comment": "gauge swap",
        "duration": "1h",
        "at": at_s(at),
        **kw,
    }
    return d.step(body, at)


def test_a_silence_suppresses_matching_alarms_at_once_and_says_by_which() -> None:
    d = Driver()
    ev = d.fire("river-level-high", "porto-01", at=0, parish="Ribeira")
    assert ev.state == "unacknowledged"
    out = silence(d, 60)
    reply = next(o for o in out if isinstance(o, CommandReply))
    sid = silence_id("c1")
    assert reply.accepted and reply.incident == sid
    cur = d.current(ev.incident)
    assert cur.state == "suppressed" and cur.actor == f"silence:{sid}"
    assert cur.alarms[0].suppressed == f"silenced by {sid}: gauge swap"
    created = next(o for o in out if isinstance(o, SilenceEvent))
    assert created.change == "created" and created.silenced == 1 and created.kind == "silence"
    # recording continues: a new transition still updates the incident, still silenced
    upd = d.fire("river-level-high", "porto-01", at=120, parish="Ribeira", severity="critical", value=5.0)
    assert upd.state == "suppressed" and upd.alarms[0].value == 5.0 and upd.version > cur.version
    # other alarms are not silenced
    assert d.fire("river-level-high", "porto-07", at=130, parish="Foz").state == "unacknowledged"
    # a new alarm that matches opens its incident already silenced (recorded, not annunciated)
    new = d.fire("river-level-high", "porto-02", at=140, parish="Ribeira", correlation="entity")
    assert new.state == "suppressed" and new.change == "opened"


def test_a_silence_ends_on_time_and_the_alarm_needs_acknowledgement_again() -> None:
    d = Driver()
    ev = d.fire("river-level-high", "porto-01", at=0, parish="Ribeira")
    silence(d, 60)
    out = d.tick(60 + 3600 + 5)
    cur = d.current(ev.incident)
    assert cur.state == "unacknowledged" and cur.at == at_s(3660) and cur.change == "alarm-unsuppressed"
    ended = [o for o in out if isinstance(o, SilenceEvent)]
    assert [e.change for e in ended] == ["expired"] and ended[0].ends_at == at_s(3660)
    assert not d.state.silences


def test_expire_by_command_and_unknown_silence_refused() -> None:
    d = Driver()
    ev = d.fire("river-level-high", "porto-01", at=0, parish="Ribeira")
    silence(d, 60)
    sid = silence_id("c1")
    out = d.step(
        {"action": "expire-silence", "silence": sid, "actor": "ana", "role": "operator", "id": "c2"}, 100
    )
    assert next(o for o in out if isinstance(o, CommandReply)).accepted
    assert d.current(ev.incident).state == "unacknowledged"
    ev_exp = next(o for o in out if isinstance(o, SilenceEvent))
    assert ev_exp.change == "expired" and ev_exp.expired_by == "ana" and ev_exp.ends_at == at_s(100)
    out = d.step(
        {"action": "expire-silence", "silence": sid, "actor": "ana", "role": "operator", "id": "c3"}, 110
    )
    rep = next(o for o in out if isinstance(o, CommandReply))
    assert not rep.accepted and "unknown silence" in rep.reason


def test_a_silence_that_starts_later_and_role_check() -> None:
    d = Driver()
    ev = d.fire("river-level-high", "porto-01", at=0, parish="Ribeira")
    out = silence(d, 10, role="viewer")
    rep = next(o for o in out if isinstance(o, CommandReply))
    assert not rep.accepted and rep.reason.startswith("role viewer may not silence")
    silence(d, 20, cid="c9", start=at_s(600), end=at_s(1200))
    assert d.current(ev.incident).state == "unacknowledged"
    out = d.tick(700)
    assert d.current(ev.incident).state == "suppressed" and d.current(ev.incident).at == at_s(600)
    assert [o.change for o in out if isinstance(o, SilenceEvent)] == ["started"]
    d.tick(1300)
    assert d.current(ev.incident).state == "unacknowledged"


def test_redelivered_silence_command_is_one_silence() -> None:
    d = Driver()
    silence(d, 0)
    out = silence(d, 0)
    assert out == [] and len(d.state.silences) == 1


def test_silences_survive_a_snapshot_restore() -> None:
    d = Driver()
    ev = d.fire("river-level-high", "porto-01", at=0, parish="Ribeira")
    silence(d, 60)
    blob = d.manager.snapshot(d.state)
    d2 = Driver()
    d2.state = d2.manager.restore(blob)
    d2.now = d.now
    # after the restart, a matching alarm is still silenced, and the silence still ends on time
    upd = d2.fire("river-level-high", "porto-01", at=200, parish="Ribeira", severity="critical")
    assert upd.state == "suppressed" and upd.alarms[0].suppressed.startswith("silenced by s-")
    d2.tick(3700)
    assert d2.current(ev.incident).state == "unacknowledged"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"matchers": ['parish=~"(unclosed"']}, "matchers"),
        ({"matchers": ["no operator"]}, "matchers"),
        ({"matchers": ['parish=~".*"']}, "matchers"),  # would silence everything
        ({"comment": ""}, "comment"),
        ({"duration": None, "end": None}, "end"),
        ({"end": "2026-01-01T10:00:00"}, "end"),
    ],
)
def test_bad_silence_commands_name_the_field(body: dict, field: str) -> None:
    base = {
        "action": "silence",
        "actor": "rui",
        "role": "supervisor",
        "matchers": ['a="b"'],
        "comment": "x",
        "duration": "1h",
    }
    with pytest.raises(ValidationError) as e:
        SilenceCommand.model_validate({**base, **body})
    assert field in str(e.value)


def test_maintenance_windows_are_silences_too() -> None:
    cfg = IncidentConfig.model_validate(
        {
            "maintenance": [
                {
                    "name": "w",
                    "matchers": ['entity="porto-01"'],
                    "start": at_s(0),
                    "end": at_s(600),
                    "reason": "swap",
                }
            ]
        }
    )
    d = Driver(cfg)
    sil = d.manager.maintenance[0]
    assert sil.source == "config" and sil.id.startswith("maintenance-") and sil.comment == "swap"
    assert isinstance(d.fire("river-level-high", "porto-01", at=10, parish="Ribeira"), IncidentEvent)
    assert d.current().state == "suppressed"


def test_the_projection_lists_silences_and_the_escalation_ignores_their_events() -> None:
    from datetime import UTC, datetime

    import orjson

    from atalaia.incidents.events import decode_incident_record
    from atalaia.incidents.projection import Projection
    from atalaia.notifiers.config import EscalationConfig
    from atalaia.notifiers.engine import EscalationEngine, EscalationState

    d = Driver()
    d.fire("river-level-high", "porto-01", at=0, parish="Ribeira")
    out = silence(d, 60)
    out += d.step(
        {
            "action": "expire-silence",
            "silence": silence_id("c1"),
            "actor": "ana",
            "role": "operator",
            "id": "c2",
        },
        100,
    )
    events = [o.to_dict() for o in out if not isinstance(o, CommandReply)]
    assert all(decode_incident_record(orjson.dumps(e)) for e in events)  # each one is the topic's record
    proj = Projection.connect(":memory:")
    proj.apply(events)
    assert proj.silences() == []
    rows = proj.silences(include_expired=True)
    assert len(rows) == 1 and rows[0]["matchers"] == ['parish="Ribeira"', 'rule=~"river-.*"']
    assert rows[0]["expired_by"] == "ana" and rows[0]["ends_at"] == at_s(100)
    engine = EscalationEngine(EscalationConfig.model_validate({"targets": {}, "policies": {}, "routes": []}))
    sil = [e for e in events if e["kind"] == "silence"]
    engine.step_batch(EscalationState(), sil, datetime(2026, 1, 1, tzinfo=UTC))


def test_a_silence_command_round_trips_as_json() -> None:
    cmd = SilenceCommand.model_validate(
        {
            "action": "silence",
            "actor": "a",
            "role": "engineer",
            "matchers": ['x=~"a|b"', 'y!="q\\"z"'],
            "comment": "c",
            "duration": "1h",
        }
    )
    again = SilenceCommand.model_validate(cmd.model_dump(mode="json"))
    assert again == cmd and again.id == cmd.id

    exp = SilenceCommand.model_validate(
        {"action": "expire-silence", "silence": "s-1", "actor": "a", "role": "operator"}
    )
    assert SilenceCommand.model_validate(exp.model_dump(mode="json")) == exp


@pytest.mark.parametrize(
    "matchers",
    [
        ['rule=~".+"'],
        ['rule!=""'],
        ['rule!~""'],
        ['key=~".+"', 'severity=~".+"'],
        ['severity=~"informational|low|medium|high|critical"'],
        ['severity!="none"', 'rule=~"..*"'],
        ['parish=~".*"', 'rule=~".+"'],
    ],
)
def test_matchers_that_pick_no_alarm_out_are_told(matchers: list[str]) -> None:
    """Every alarm carries a rule, a key and a severity: matchers that accept any value of those
    would silence every alarm though each one names a value (the console refuses them)."""
    assert matches_every_alarm(parse_matchers(matchers))


@pytest.mark.parametrize(
    "matchers",
    [
        ['parish="Ribeira"'],
        ['rule=~"river-.*"'],
        ['parish=~".+"'],  # only the alarms that have a parish
        ['rule=~".+"', 'parish="Ribeira"'],
        ['severity=~"high|critical"'],
        ['tenant="porto"', 'rule=~".+"'],  # a tenant-scoped user's silence of their tenant
    ],
)
def test_matchers_that_pick_some_alarms_are_not_refused(matchers: list[str]) -> None:
    assert not matches_every_alarm(parse_matchers(matchers))
