"""An incident's title leads with the rule of its most severe firing alarm: one critical because of
heavy rain was titled "pm25-high +3 more — Campanhã" (its first rule), and that title is the
subject of its SMS and emails. Ties go to the rule that came first; when nothing fires the title
keeps the rule it led with. The title is no part of any id (incident, event), which stay as they
were."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from atalaia.incidents import snapshot
from atalaia.incidents.testing import Driver
from atalaia.rules.alarm import severity_rank

RULES = ["pm25-high", "rain-intense", "river-level-high", "wind-strong"]
SEVERITIES = ["low", "medium", "high", "critical"]


def test_the_title_leads_with_the_most_severe_rule() -> None:
    d = Driver()
    d.fire("pm25-high", "air-1", at=0, parish="Campanhã", severity="medium")
    d.fire("noise-high", "mic-1", at=10, parish="Campanhã", severity="low")
    d.fire("wind-strong", "wind-1", at=20, parish="Campanhã", severity="high")
    ev = d.fire("rain-intense", "rain-7", at=30, parish="Campanhã", severity="critical")
    assert (ev.severity, ev.title) == ("critical", "rain-intense +3 more — Campanhã")
    first = ev.incident
    ev = d.resolve("rain-intense", "rain-7", at=40, parish="Campanhã", severity="critical")
    assert (ev.severity, ev.title) == ("high", "wind-strong +3 more — Campanhã")
    assert ev.incident == first, "the id does not follow the title"


@given(
    st.lists(
        st.tuples(st.sampled_from(RULES), st.integers(0, 2), st.sampled_from(SEVERITIES), st.booleans()),
        min_size=1,
        max_size=25,
    )
)
def test_the_lead_is_the_most_severe_firing_rule_earliest_on_a_tie(steps) -> None:
    """Any sequence of firings and resolutions of a few rules in one parish: after each event the
    title leads with the rule of the most severe firing alarm, on a tie the rule that came first,
    and with the last such rule when nothing fires; restored from a snapshot, it goes on alike."""
    d = Driver()
    firing: dict[tuple[str, int], str] = {}  # the reference model
    arrival: list[str] = []
    lead = None
    for i, (rule, station, severity, fire) in enumerate(steps):
        key = f"{rule}-{station}"
        if (rule, station) not in firing and not fire:
            continue  # (a resolution of an alarm nobody holds opens nothing)
        if fire:
            ev = d.fire(rule, key, at=10 * i, parish="Campanhã", severity=severity)
            firing[(rule, station)] = severity
            if rule not in arrival:
                arrival.append(rule)
        else:
            ev = d.resolve(rule, key, at=10 * i, parish="Campanhã", severity=severity)
            firing.pop((rule, station))
        if firing:
            top = max(severity_rank(s) for s in firing.values())
            lead = next(
                r
                for r in arrival
                if any(r == fr and severity_rank(s) == top for (fr, _), s in firing.items())
            )
        more = f" +{len(arrival) - 1} more" if len(arrival) > 1 else ""
        assert ev is not None and ev.title == f"{lead}{more} — Campanhã", (steps[: i + 1], ev.title)
        if i == len(steps) // 2:  # a restart: the counts behind the lead come back with the state
            d.state = snapshot.load(snapshot.dump(d.state))


def test_a_snapshot_from_before_counts_its_rules_again() -> None:
    """A snapshot written before the title followed the most severe rule has no per-rule counts:
    they are counted from its alarms when it is loaded, so the next event's title is right."""
    import zlib

    import orjson

    d = Driver()
    d.fire("pm25-high", "air-1", at=0, parish="Campanhã", severity="medium")
    d.fire("rain-intense", "rain-7", at=10, parish="Campanhã", severity="critical")
    blob = snapshot.dump(d.state)
    raw = orjson.loads(zlib.decompress(blob[len(snapshot.MAGIC) :]))
    for inc in raw["incidents"].values():
        del inc["rule_firing"], inc["lead"]
    d.state = snapshot.load(snapshot.MAGIC + zlib.compress(orjson.dumps(raw)))
    ev = d.fire("wind-strong", "wind-1", at=20, parish="Campanhã", severity="high")
    assert ev.title == "rain-intense +2 more — Campanhã"
