"""Rules and incidents per tenant (entity identity is (tenant, id)) and ``require_observed_time``."""

from __future__ import annotations

from types import SimpleNamespace

import orjson

from atalaia.incidents.events import IncidentEvent
from atalaia.incidents.manager import IncidentManager
from atalaia.rules.engine import RuleEngine
from atalaia.rules.loader import load_texts

RULES = """
rules:
  - id: river-high
    select: {type: WaterObserved, attribute: height}
    severities: [{severity: high, above: 4.0}]
  - id: river-high-measured
    select: {type: WaterObserved, attribute: height}
    require_observed_time: true
    severities: [{severity: high, above: 4.0}]
  - id: parish-high
    select: {type: WaterObserved, attribute: height}
    key: [parish]
    severities: [{severity: medium, above: 4.0}]
  - id: tenant-a-only
    select: {type: WaterObserved, attribute: height, where: {tenant: a}}
    severities: [{severity: low, above: 4.0}]
"""


def obs(at: str, height: float, tenant: str | None = None, time_source: str | None = None) -> dict:
    o = {
        "time": at,
        "entity": "urn:ngsi-ld:WaterObserved:g1",
        "type": "WaterObserved",
        "attributes": {"height": height},
        "labels": {"parish": "Ribeira"},
    }
    if tenant:
        o["tenant"] = tenant
    if time_source:
        o["time_source"] = time_source
    return o


def test_same_entity_in_two_tenants_gives_two_alarms_and_two_incidents() -> None:
    engine = RuleEngine(load_texts([("t.yaml", RULES)]))
    out, rejected = engine.observe_batch(
        [obs("2026-01-28T10:00:00Z", 5.0, "a"), obs("2026-01-28T10:00:00Z", 5.0, "b")]
    )
    assert rejected == []
    got = sorted((t.rule, t.key, t.tenant, t.entity) for t in out)
    e = "urn:ngsi-ld:WaterObserved:g1"
    assert got == [
        ("parish-high", "a|Ribeira", "a", e),
        ("parish-high", "b|Ribeira", "b", e),
        ("river-high", f"a|{e}", "a", e),
        ("river-high", f"b|{e}", "b", e),
        ("river-high-measured", f"a|{e}", "a", e),
        ("river-high-measured", f"b|{e}", "b", e),
        ("tenant-a-only", f"a|{e}", "a", e),
    ]
    assert len({t.id for t in out}) == len(out)  # deterministic ids differ between tenants
    assert orjson.loads(out[0].to_json())["tenant"] in ("a", "b")

    manager = IncidentManager()
    state = manager.initial_state()
    river = [t.to_dict() for t in out if t.rule == "river-high"]
    state, outputs = manager.step_batch(state, river, "2026-01-28T10:00:00Z")
    incidents = {o.incident: o for o in outputs if isinstance(o, IncidentEvent)}
    assert len(incidents) == 2
    assert sorted(i.tenant for i in incidents.values()) == ["a", "b"]
    assert all(i.correlation["tenant"] == i.tenant for i in incidents.values())
    assert all(orjson.loads(i.to_json())["tenant"] == i.tenant for i in incidents.values())


def test_without_tenant_keys_and_records_are_as_before() -> None:
    engine = RuleEngine(load_texts([("t.yaml", RULES)]))
    out, _ = engine.observe_batch([obs("2026-01-28T10:00:00Z", 5.0)])
    river = next(t for t in out if t.rule == "river-high")
    assert river.key == "urn:ngsi-ld:WaterObserved:g1"
    assert "tenant" not in river.to_dict() and "service_path" not in river.to_dict()
    manager = IncidentManager()
    _, outputs = manager.step_batch(manager.initial_state(), [river.to_dict()], "2026-01-28T10:00:00Z")
    (inc,) = [o for o in outputs if isinstance(o, IncidentEvent)]
    assert inc.tenant is None and "tenant" not in inc.correlation


def test_require_observed_time_skips_fallback_timed_observations_and_counts_them() -> None:
    engine = RuleEngine(load_texts([("t.yaml", RULES)]))
    out, rejected = engine.observe_batch(
        [
            obs("2026-01-28T10:00:00Z", 5.0, time_source="received"),
            obs("2026-01-28T10:00:01Z", 5.0, time_source="notified"),
        ]
    )
    assert rejected == []  # skipped, not a DLQ case
    assert {t.rule for t in out} == {"river-high", "parish-high"}
    assert engine.stats["skipped_unobserved_time"] == 2
    out, _ = engine.observe_batch([obs("2026-01-28T10:00:02Z", 5.0, time_source="observed")])
    assert [(t.rule, t.state) for t in out] == [("river-high-measured", "firing")]
    out, _ = engine.observe_batch([obs("2026-01-28T10:00:03Z", 1.0)])  # a record without time_source
    assert ("river-high-measured", "resolved") in [(t.rule, t.state) for t in out]


def test_require_observed_time_keeps_old_fingerprints_and_restores() -> None:
    from atalaia.rules.base import fingerprint

    plain = load_texts(
        [("t.yaml", "rules: [{id: r, select: {type: T, attribute: x}, severity: low, stuck_for: 1h}]")]
    )
    explicit = load_texts(
        [
            (
                "t.yaml",
                "rules: [{id: r, select: {type: T, attribute: x}, severity: low, stuck_for: 1h, "
                "require_observed_time: false}]",
            )
        ]
    )
    assert fingerprint(plain.rules[0]) == fingerprint(explicit.rules[0])
    rs = load_texts([("t.yaml", RULES)])
    engine = RuleEngine(rs)
    engine.observe_batch([obs("2026-01-28T10:00:00Z", 5.0, "a", "received")])
    restored = RuleEngine.restore(rs, engine.snapshot())
    assert restored.stats["skipped_unobserved_time"] == 1
    assert {a["key"] for a in restored.active_alarms()} == {"a|urn:ngsi-ld:WaterObserved:g1", "a|Ribeira"}


def test_lateness_is_judged_by_observation_time() -> None:
    """A burst of old stored notifications: their observation times, not their arrival, decide."""
    engine = RuleEngine(load_texts([("t.yaml", RULES)]), allowed_lateness=300)
    engine.observe_batch([obs("2026-01-28T10:00:00Z", 1.0, "a")])
    _, rejected = engine.observe_batch([obs("2026-01-28T09:00:00Z", 5.0, "a", "observed")])
    assert len(rejected) == 1 and "too late" in rejected[0].reason
    assert engine.stats["rejected_late"] == 1


def test_one_senders_fast_clock_never_makes_anothers_readings_late() -> None:
    """Live, tenant b's sensors stamped readings 280 s ahead (inside the 5 min tolerance): the
    latest event time moved ahead of the wall clock, and tenant a's river readings of 90 s ago went
    to the DLQ as "too late" (6 min behind it). Lateness is judged behind the wall clock as well."""
    engine = RuleEngine(load_texts([("t.yaml", RULES)]), allowed_lateness=300, max_future=300)
    engine.advance("2026-01-28T10:00:00Z")  # the live stage's tick: the wall clock
    ahead = [{**obs("2026-01-28T10:04:40Z", 1.0, "b"), "entity": f"urn:b{i}"} for i in range(3)]
    assert engine.observe_batch(ahead)[1] == []
    out, rejected = engine.observe_batch([obs("2026-01-28T09:58:30Z", 5.0, "a")])
    assert rejected == [] and any(t.rule == "river-high" and t.state == "firing" for t in out)
    _, rejected = engine.observe_batch([{**obs("2026-01-28T09:54:00Z", 5.0, "a"), "entity": "urn:a2"}])
    assert len(rejected) == 1 and "6m behind the clock 2026-01-28T10:00:00" in rejected[0].reason, rejected
    # without a clock (replay, backtest) the latest event time alone decides, as before
    replay = RuleEngine(load_texts([("t.yaml", RULES)]), allowed_lateness=300)
    replay.observe_batch(ahead)
    _, rejected = replay.observe_batch([obs("2026-01-28T09:58:30Z", 5.0, "a")])
    assert len(rejected) == 1 and "behind the latest event time" in rejected[0].reason


def test_tenant_that_cannot_be_a_key_is_rejected() -> None:
    from atalaia.rules.replay import replay

    result = replay(
        load_texts([("t.yaml", RULES)]), [(1, {**obs("2026-01-28T10:00:00Z", 5.0), "tenant": "a|b"})]
    )
    assert result.rejected == [(1, "'tenant' must be text without '|'")] and result.transitions == []


def test_rules_core_keys_forwarded_observations_and_alarms_by_tenant() -> None:
    from atalaia.detectors.config import load_config
    from atalaia.rules.stage import RuleFiles, RulesCore
    from atalaia.streams.settings import CONFIG_DIR, Settings

    core = RulesCore(
        RuleFiles([CONFIG_DIR / "rules"]), load_config(CONFIG_DIR / "detectors.yaml"), Settings()
    )
    records = []
    for tenant in ("a", "b"):
        o = {
            "time": "2026-01-28T10:00:00Z",
            "entity": "urn:x",
            "type": "WaterObserved",
            "attributes": {"waterLevel": 9.0, "height": 9.0},
            "labels": {"parish": "Ribeira"},
            "tenant": tenant,
            "time_source": "observed",
        }
        records.append(
            SimpleNamespace(
                value=orjson.dumps(o),
                topic="t.observations",
                offset=0,
                headers=[],
                timestamp=1_769_594_400_000,
            )
        )
    outs = core.process(records, now=1769594400.0)
    alarms = [orjson.loads(o.value) for o in outs if o.topic == "alarms"]
    assert alarms, "the example rules fire on a 9 m water level"
    assert {a["tenant"] for a in alarms} == {"a", "b"}
    assert all(a["key"].startswith(a["tenant"] + "|") for a in alarms)
    forwarded = [o.key for o in outs if o.topic == "shared-observations"]
    assert set(forwarded) <= {b"a|urn:x", b"b|urn:x"}


def test_replay_prints_one_alarm_per_tenant(tmp_path) -> None:
    from click.testing import CliRunner

    from atalaia.streams.cli import main

    rules = tmp_path / "r.yaml"
    rules.write_text(RULES)
    data = tmp_path / "obs.jsonl"
    data.write_bytes(
        b"\n".join(orjson.dumps(obs("2026-01-28T10:00:00Z", 5.0, t)) for t in ("a", "b", None)) + b"\n"
    )
    res = CliRunner().invoke(main, ["rules", "replay", str(rules), str(data)])
    assert res.exit_code == 0, res.output
    keys = [orjson.loads(line)["key"] for line in res.stdout.splitlines() if '"river-high"' in line]
    e = "urn:ngsi-ld:WaterObserved:g1"
    assert sorted(keys) == sorted([f"a|{e}", f"b|{e}", e])


#: a label-keyed join over two types (rain by parish and a river gauge's height)
JOIN_RULE = (
    "group: g\nrules:\n"
    "  - id: parish-flood\n"
    "    select: {type: WaterObserved}\n"
    "    join: {on: [parish], within: 10m}\n"
    "    all:\n"
    "      - {type: WeatherObserved, attribute: precipitation, aggregate: {function: sum, window: 10m}, above: 20}\n"
    "      - {attribute: height, above: 4}\n"
    "    severity: high\n"
)


def test_a_join_rule_forwards_every_type_it_reads_to_the_shared_stage(tmp_path) -> None:
    """A label-keyed compound rule needs every part's observations in the one-partition stage:
    the partitioned rules stage forwards each condition's type, not only ``select.type``."""
    from atalaia.detectors.config import load_config
    from atalaia.rules.stage import RuleFiles, RulesCore
    from atalaia.streams.settings import CONFIG_DIR, Settings

    (tmp_path / "join.yaml").write_text(JOIN_RULE)
    core = RulesCore(RuleFiles([tmp_path]), load_config(CONFIG_DIR / "detectors.yaml"), Settings())
    assert {"WaterObserved", "WeatherObserved"} <= core.forward_types


def test_a_label_keyed_rule_added_by_a_reload_is_forwarded_to(tmp_path) -> None:
    """Started with entity-keyed rules only, the partitioned stage forwarded nothing to the
    label-keyed stage, and a parish rule added by a hot reload never saw an observation (it fired
    only after a restart): an empty set of forwarded types was never computed again."""
    import os
    import time

    from atalaia.detectors.config import load_config
    from atalaia.rules.stage import RuleFiles, RulesCore
    from atalaia.streams.settings import CONFIG_DIR, Settings

    entity = (
        "group: e\nrules:\n  - id: river-high\n    select: {type: WaterObserved, attribute: height}\n"
        "    severities: [{severity: high, above: 4}]\n"
    )
    (tmp_path / "entity.yaml").write_text(entity)
    core = RulesCore(RuleFiles([tmp_path]), load_config(CONFIG_DIR / "detectors.yaml"), Settings())
    assert core.forward_types == frozenset()
    (tmp_path / "join.yaml").write_text(JOIN_RULE)
    later = os.stat(tmp_path / "entity.yaml").st_mtime + 5
    os.utime(tmp_path / "join.yaml", (later, later))

    def reloaded(until) -> bool:  # the reload runs in its thread; tick picks its result up
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            core.tick(later)
            if until():
                return True
            time.sleep(0.05)
        return False

    assert reloaded(lambda: {"WaterObserved", "WeatherObserved"} <= core.forward_types)
    (tmp_path / "join.yaml").unlink()  # and removed again: nothing is forwarded
    assert reloaded(lambda: core.forward_types == frozenset())


def test_an_entity_id_holding_the_key_separator_is_not_another_tenants_entity() -> None:
    """A tenant-less sender named its entity ``a|urn:…:g1``: its alarm key was tenant a's
    ``a|urn:…:g1``, so its normal reading resolved tenant a's alarm (and, sent first, took tenant
    a's reading into a tenant-less alarm). Keys escape ``|`` now; label keys too."""
    engine = RuleEngine(load_texts([("t.yaml", RULES)]))
    e = "urn:ngsi-ld:WaterObserved:g1"
    tenants_own = obs("2026-01-28T10:00:00Z", 5.0, "a")
    forged = {**obs("2026-01-28T10:01:00Z", 1.0), "entity": f"a|{e}", "labels": {"parish": "a|Ribeira"}}
    out, rejected = engine.observe_batch([tenants_own, forged])
    assert rejected == []
    assert {(t.rule, t.key, t.state) for t in out if t.rule in ("river-high", "parish-high")} == {
        ("river-high", f"a|{e}", "firing"),
        ("parish-high", "a|Ribeira", "firing"),
    }  # the forged normal readings resolved nothing of tenant a's
    out, _ = engine.observe_batch([{**forged, "time": "2026-01-28T10:02:00Z", "attributes": {"height": 6.0}}])
    keys = {(t.rule, t.key, t.tenant) for t in out if t.rule in ("river-high", "parish-high")}
    assert keys == {("river-high", f"a\\|{e}", None), ("parish-high", "a\\|Ribeira", None)}


def test_entity_keys_of_different_tenants_or_ids_never_meet() -> None:
    """Every (tenant, id) over a small alphabet holding the separator and the escape: no two make
    one key (exhaustive: 4 tenants by 40 ids)."""
    from itertools import product

    from atalaia.streams.ingest.observation import entity_key

    ids = ["".join(p) for n in range(4) for p in product("a|\\", repeat=n)]
    keys = [entity_key(t, k) for t in (None, "a", "a\\", "aa") for k in ids]
    assert len(set(keys)) == len(keys) == 160


def test_incident_correlation_keys_of_different_labels_never_meet() -> None:
    """An incident's correlation key is ``name=value&…``: a label value holding ``&`` or ``=``
    made another correlation's key (a ``&b=`` with an empty b was a empty with b ``&b=``)."""
    from itertools import product

    from atalaia.incidents.manager import _key_text

    values = ["".join(p) for n in range(4) for p in product("b&=\\", repeat=n)]
    corrs = [{"a": x, "b": y} for x in values for y in values] + [{"a": x} for x in values]
    assert len({_key_text(c) for c in corrs}) == len(corrs)
    assert _key_text({"tenant": "a", "entity": "urn:x"}) == "tenant=a&entity=urn:x"  # as before


def test_open_alarms_are_announced_again_and_the_manager_takes_only_what_it_missed() -> None:
    """``atalaia up`` stopped (or was killed) while alarms were still on the embedded broker's
    topics: the rules stage restored its state ("firing") but the incident manager never heard of
    them, and the sensor stayed alarmed with no incident until it cleared and fired again. After a
    broker reset the rules stage announces every open alarm again: the manager that saw it counts
    a duplicate, one that did not opens the very incident it would have."""
    rules = (
        RULES
        + """  - id: river-high-for
    select: {type: WaterObserved, attribute: height}
    severities: [{severity: high, above: 4.0, for: 5m}]
"""
    )
    engine = RuleEngine(load_texts([("t.yaml", rules)]))
    first, _ = engine.observe_batch([obs("2026-01-28T10:00:00Z", 5.0, "a")])
    later, _ = engine.observe_batch([obs("2026-01-28T10:06:00Z", 5.2, "a")])  # the `for` rule fires
    sent = [t.to_dict() for t in first + later]
    assert {(t["rule"], t["state"]) for t in sent} >= {("river-high", "firing"), ("river-high-for", "firing")}

    restored = RuleEngine.restore(load_texts([("t.yaml", rules)]), engine.snapshot())
    again = [t.to_dict() for t in restored.announce()]
    assert {(t["rule"], t["key"], t["state"]) for t in again} == {
        (t["rule"], t["key"], "firing") for t in sent if t["state"] == "firing"
    }
    plain = next(t for t in again if t["rule"] == "river-high")
    assert plain["id"] == next(t["id"] for t in sent if t["rule"] == "river-high")  # the same transition

    manager = IncidentManager()
    state, outputs = manager.step_batch(manager.initial_state(), sent, "2026-01-28T10:06:00Z")
    opened = {o.incident for o in outputs if isinstance(o, IncidentEvent)}
    assert opened
    state, outputs = manager.step_batch(state, again, "2026-01-28T10:07:00Z")
    assert [o for o in outputs if isinstance(o, IncidentEvent)] == []  # all seen: nothing changes

    missed = IncidentManager()  # the transitions were lost in flight: only the announcement arrives
    _, outputs = missed.step_batch(missed.initial_state(), again, "2026-01-28T10:07:00Z")
    assert {o.incident for o in outputs if isinstance(o, IncidentEvent)} == opened


def test_open_incidents_are_announced_again_at_their_current_version() -> None:
    """The incident manager's events still in flight on the old broker were lost with it: the
    projection and the escalation never saw an incident the manager holds (opened, never paged).
    After a reset it sends each open incident's current event again, same id and version: the
    escalation that missed it starts paging, one that had it pages nobody again."""
    from datetime import UTC, datetime

    from atalaia.incidents.testing import Driver
    from atalaia.notifiers.config import load_config_text
    from atalaia.notifiers.engine import EscalationEngine, EscalationState
    from tests.test_notifiers_escalation import CONFIG

    d = Driver()
    opened = d.fire("river-level-high", "porto-01", at=0, parish="Ribeira")
    again = d.manager.announce(d.state)
    assert [(e.incident, e.version, e.id, e.state, e.at) for e in again] == [
        (opened.incident, opened.version, opened.id, opened.state, opened.at)
    ]
    assert d.manager.announce(d.state) == again  # no new version: announcing twice is the same

    t0 = datetime(2026, 1, 1, 0, 1, tzinfo=UTC)
    engine = EscalationEngine(load_config_text(CONFIG, "escalation.yaml"))
    seen = EscalationState()
    _, notes = engine.step(seen, orjson.loads(opened.to_json()), t0)
    assert notes  # paged once
    # those pages were lost in flight too: the escalation announces its latest page again, same
    # ids (the delivery stage sends what it never received, skips by its log what it had)
    assert sorted(n.id for n in engine.announce(seen)) == sorted(n.id for n in notes)
    _, notes = engine.step(seen, orjson.loads(again[0].to_json()), t0)
    assert notes == []  # the same version: nobody paged twice
    missed = EscalationState()  # the opening event was lost in flight: only the announcement
    _, notes = engine.step(missed, orjson.loads(again[0].to_json()), t0)
    assert {n.step for n in notes} == {0}


def test_the_announcement_is_each_alarms_last_transition_verbatim() -> None:
    """Review of the announcement: made up as "open since", it lost what came after the opening
    (a severity change, a resolve: the incident stayed active for ever and could not be closed),
    and a `for:` alarm's made-up firing at its pending start had another id than the real one
    (a second incident where the first was lost only by the manager). Now the last transition of
    each alarm, open or ended in the last hour, is told again as it was."""
    rules = """rules:
  - id: level
    select: {type: WaterObserved, attribute: height}
    severities: [{severity: critical, above: 5.0}, {severity: high, above: 4.0}]
  - id: level-for
    select: {type: WaterObserved, attribute: height}
    severities: [{severity: high, above: 4.0, for: 5m}]
  - id: gate
    select: {type: WaterObserved, attribute: gate}
    severities: [{severity: low, equals: open}]
    annotations: {summary: "gate {{ value }}"}
"""
    ruleset = load_texts([("t.yaml", rules)])

    def reading(at: str, height: float, entity: str = "urn:w1", gate: str = "closed") -> dict:
        return {**obs(at, height), "entity": entity, "labels": {"gate": gate}}

    engine = RuleEngine(ruleset)
    seen, _ = engine.observe_batch(
        [
            reading("2026-01-28T10:00:00Z", 5.5),
            reading("2026-01-28T10:00:00Z", 4.5, "urn:w2", "open"),
            reading("2026-01-28T10:00:00Z", 1.0, "urn:w3", "open"),
        ]
    )
    lost, _ = engine.observe_batch(
        [reading("2026-01-28T10:06:00Z", 4.5), reading("2026-01-28T10:06:00Z", 1.0, "urn:w2", "closed")]
    )
    assert {(t.rule, t.key, t.state, t.severity) for t in lost} >= {
        ("level", "urn:w1", "firing", "high"),  # critical -> high
        ("level-for", "urn:w1", "firing", "high"),
        ("level", "urn:w2", "resolved", "high"),
        ("gate", "urn:w2", "resolved", "low"),
    }
    told = RuleEngine.restore(ruleset, engine.snapshot()).announce()
    by = {(t.rule, t.key): t for t in told}
    for t in lost:  # the very transitions, same ids
        assert by[(t.rule, t.key)].id == t.id and by[(t.rule, t.key)].at == t.at
    w3 = next(t for t in seen if t.rule == "gate" and t.key == "urn:w3")  # still open: told as it was
    assert by[("gate", "urn:w3")].id == w3.id and by[("gate", "urn:w3")].annotations == {
        "summary": "gate open"
    }

    manager = IncidentManager()  # saw the first batch only: the second was lost in flight
    state, _ = manager.step_batch(
        manager.initial_state(), [t.to_dict() for t in seen], "2026-01-28T10:01:00Z"
    )
    state, _ = manager.step_batch(state, [t.to_dict() for t in told], "2026-01-28T10:07:00Z")
    incidents = {i.id: i for i in state.incidents.values()}
    w1 = next(i for i in incidents.values() if any(k.endswith("urn:w1") for k in i.alarms))
    assert {a.rule: a.severity for a in w1.alarms.values() if a.rule == "level"} == {"level": "high"}
    w2 = [i for i in incidents.values() if any(k.endswith("urn:w2") for k in i.alarms)]
    assert all(not i.active for i in w2)  # its resolve was told again: back to normal


def test_a_closed_incidents_last_event_is_announced_for_an_hour() -> None:
    """Review: the announcement held only open incidents, so an incident whose "closed" event was
    lost in flight stayed open in the projection and its escalation went on paging. The last event
    of an incident closed in the last hour is announced too; the escalation stops on it."""
    from datetime import UTC, datetime

    from atalaia.incidents.testing import Driver
    from atalaia.notifiers.config import load_config_text
    from atalaia.notifiers.engine import EscalationEngine, EscalationState
    from tests.test_notifiers_escalation import CONFIG

    d = Driver()
    opened = d.fire("river-level-high", "porto-01", at=0, parish="Ribeira")
    engine = EscalationEngine(load_config_text(CONFIG, "escalation.yaml"))
    esc = EscalationState()
    engine.step(esc, orjson.loads(opened.to_json()), datetime(2026, 1, 1, tzinfo=UTC))
    d.resolve("river-level-high", "porto-01", at=60)
    closed = d.command("acknowledge", at=70)  # normal and acknowledged: the policy closes it
    assert isinstance(closed, IncidentEvent) and closed.state == "closed"
    told = {e.incident: e for e in d.manager.announce(d.state)}
    assert told[opened.incident].id == closed.id  # the lost "closed", verbatim
    engine.step(esc, orjson.loads(told[opened.incident].to_json()), datetime(2026, 1, 1, 0, 2, tzinfo=UTC))
    assert esc.escalations[opened.incident].status == "closed"
    restored = d.manager.restore(d.manager.snapshot(d.state))  # kept across a restart
    assert [e.id for e in d.manager.announce(restored)] == [closed.id]
    later = d.fire("river-level-high", "porto-02", at=3 * 3600, parish="Foz")  # an hour on: forgotten
    assert {e.incident for e in d.manager.announce(d.state)} == {later.incident}


def test_one_senders_fast_clock_never_makes_anothers_sensor_absent_early() -> None:
    """Live, a sender stamping readings 280 s ahead (inside the 5 min tolerance) moved the latest
    event time ahead of the wall clock, and every other sensor's absence deadline inside those
    280 s fired at once: "no reading for 5 min" alarms for sensors that had reported 2 min ago.
    Absence is judged on the wall clock when there is one; replays keep event time."""
    silent = (
        RULES
        + """  - id: river-silent
    select: {type: WaterObserved}
    absent_for: 5m
    severity: medium
"""
    )
    engine = RuleEngine(load_texts([("t.yaml", silent)]), allowed_lateness=300, max_future=300)
    engine.advance("2026-01-28T10:00:00Z")  # the live stage's tick: the wall clock
    engine.observe_batch([obs("2026-01-28T09:58:00Z", 1.0, "a")])  # a's river gauge, 2 min ago
    ahead = [{**obs("2026-01-28T10:04:40Z", 1.0, "b"), "entity": f"urn:b{i}"} for i in range(3)]
    out, rejected = engine.observe_batch(ahead)
    more, _ = engine.observe_batch([{**obs("2026-01-28T10:04:50Z", 1.0, "b"), "entity": "urn:b9"}])
    assert rejected == [] and [t for t in out + more if t.rule == "river-silent"] == []
    assert engine.advance("2026-01-28T10:02:59Z") == []
    fired = engine.advance("2026-01-28T10:03:00Z")  # 5 min after a's reading, on the wall clock
    assert [(t.rule, t.state) for t in fired if "g1" in t.key] == [("river-silent", "firing")]
    # without a clock (replay, backtest) event time alone decides, as before
    replay = RuleEngine(load_texts([("t.yaml", silent)]), allowed_lateness=300)
    replay.observe_batch([obs("2026-01-28T09:58:00Z", 1.0, "a")])
    replay.observe_batch(ahead)
    out, _ = replay.observe_batch([{**obs("2026-01-28T10:04:50Z", 1.0, "b"), "entity": "urn:b9"}])
    assert [(t.rule, t.state) for t in out if "g1" in t.key] == [("river-silent", "firing")]


def test_absence_follows_event_time_while_a_backlog_is_read(tmp_path) -> None:
    """After an outage the stage reads 10 minutes of queued readings without ticking (absence on the
    wall clock would call every station silent). Meanwhile absence follows event time: a gauge
    silent for 7.5 minutes inside the backlog alarms at its deadline and resolves when it reports,
    and readings 7 minutes past the last tick are not refused as "ahead of the clock"."""
    from atalaia.detectors.config import load_config
    from atalaia.rules.engine import to_epoch
    from atalaia.rules.stage import RuleFiles, RulesCore
    from atalaia.streams.settings import CONFIG_DIR, Settings

    (tmp_path / "r.yaml").write_text(
        RULES
        + """  - id: river-silent
    select: {type: WaterObserved}
    absent_for: 5m
    severity: medium
"""
    )
    core = RulesCore(RuleFiles([tmp_path]), load_config(CONFIG_DIR / "detectors.yaml"), Settings())

    def rec(at: str, entity: str) -> SimpleNamespace:
        o = {**obs(at, 1.0, "a"), "entity": entity}
        return SimpleNamespace(
            value=orjson.dumps(o), topic="t.observations", offset=0, headers=[], timestamp=0
        )

    def silent(outs: list) -> list[tuple[str, str]]:
        alarms = [orjson.loads(o.value) for o in outs if o.topic == "alarms"]
        return [
            (a["at"], a["state"]) for a in alarms if a["rule"] == "river-silent" and a["key"].endswith("g1")
        ]

    def dlq(outs: list) -> list:
        return [o for o in outs if o.topic == "dlq"]

    t0 = to_epoch("2026-01-28T10:00:00Z")
    assert silent(core.process([rec("2026-01-28T09:59:30Z", "g1")], now=t0 - 30)) == []
    core.tick(t0)  # the last tick before the outage
    backlog = [rec(f"2026-01-28T10:0{m}:00Z", "g2") for m in range(8)] + [rec("2026-01-28T10:07:00Z", "g1")]
    later = t0 + 630  # read at 10:10:30, still catching up: no tick (backlog)
    outs = core.process(backlog, now=later)
    assert dlq(outs) == []
    # (absence on event time falls due as the readings pass the deadline: at 10:05)
    assert silent(outs) == [("2026-01-28T10:05:00Z", "firing"), ("2026-01-28T10:07:00Z", "resolved")]
