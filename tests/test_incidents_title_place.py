"""The place of an incident's title says where, as people call it: a FIWARE river gauge's incident
was titled "tinto-level-high — urn:ngsi-ld:WaterObserved:tinto-campanha" in its SMS and email
subjects, although the entity has ``name: "Rio Tinto - Campanhã"`` (Smart Data Models), which
ingest keeps as a label and the rules copy onto the alarm. Correlated by entity, the title now says
the entity's name; without one it keeps the id, and a parish or an area is its own value, as
before. The name is text from the data (anyone who may write the entity writes it), so it reaches
an SMS without line breaks, bidi overrides or invisible characters, and bounded. The title reads
only the incident's state: a replay, and a manager restored from a snapshot, title alike."""

from __future__ import annotations

import zlib

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from atalaia.incidents import snapshot
from atalaia.incidents.emit import NAME_MAX, VALUE_MAX
from atalaia.incidents.manager import IncidentManager
from atalaia.incidents.testing import Driver, transition
from atalaia.notifiers.model import IncidentSnapshot, Notification
from atalaia.notifiers.render import render

GAUGE = "urn:ngsi-ld:WaterObserved:tinto-campanha"
NAME = "Rio Tinto - Campanhã"

#: what a title's place never holds (listed here, independently of the code): C0, DEL and C1
#: controls, the line and paragraph separators, bidi marks, embeddings, overrides and isolates,
#: zero-width characters, the BOM, tag characters, lone surrogates
FORBIDDEN = (
    {chr(c) for c in [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, 0x061C, 0x200B, 0x200E, 0x200F]}
    | {chr(c) for c in [*range(0x202A, 0x202F), *range(0x2060, 0x2065), *range(0x2066, 0x2070), 0xFEFF]}
    | {chr(c) for c in [*range(0xFFF9, 0xFFFC), *range(0xE0000, 0xE0080), *range(0xD800, 0xE000)]}
)
HOSTILE = ["\r\n", "\n", "\r", "\x00", "\x1b[31m", "\x85", "\u2028", "\u2029", "\u202e", "\u202d",
           "\u2066", "\u2067", "\u2069", "\u200f", "\u200e", "\u061c", "\u200b", "\ufeff", "\U000e0041",
           "\ud800", "\t", "  ", "URGENTE: ligue 912345678", "{{ 7*7 }}", "{% raw %}", "%s", "—",
           " +3 more — ", "Campanhã", "a\u0301" * 3, "🌊"]  # fmt: skip


def place(title: str) -> str:
    return title.split(" — ", 1)[1]


def test_an_entity_with_a_name_is_titled_by_its_name() -> None:
    d = Driver()
    ev = d.fire("tinto-level-high", GAUGE, at=0, name=NAME, group="hydro")
    assert ev.title == "tinto-level-high — Rio Tinto - Campanhã"
    assert ev.correlation == {"entity": GAUGE}, "the correlation (and the ids) keep the entity's id"
    ev = d.fire("tinto-flow-high", GAUGE, at=60, name=NAME, group="hydro")
    assert ev.title == "tinto-level-high +1 more — Rio Tinto - Campanhã"
    # a tenant's incident: the tenant first, as before, then the name
    t = Driver()
    ev = t.fire("tinto-level-high", GAUGE, at=0, name=NAME, tenant="porto")
    assert ev.title == "tinto-level-high — porto, Rio Tinto - Campanhã"


def test_the_sms_and_the_email_subject_say_the_name() -> None:
    d = Driver()
    ev = d.fire("tinto-level-high", GAUGE, at=0, name=NAME, severity="critical")
    n = Notification("n", "p", 0, 1, 0, "ana", "escalation", ev.at, IncidentSnapshot.from_event(ev))
    for lang in ("pt-PT", "en-GB"):
        m = render(n, lang)
        assert NAME in m.subject and NAME in m.short, (m.subject, m.short)
        assert GAUGE not in m.subject and GAUGE not in m.short


def test_without_a_name_the_title_is_as_before() -> None:
    """(These pass on the code before too: they hold the format where there is no name.)"""
    d = Driver()
    assert d.fire("tinto-level-high", GAUGE, at=0).title == f"tinto-level-high — {GAUGE}"
    # a parish (an area) is already a name: an alarm's entity name does not replace it
    p = Driver()
    ev = p.fire("river-level-high", "porto-01", at=0, parish="Campanhã", name="Ponte do Freixo")
    assert ev.title == "river-level-high — Campanhã"
    # a rule correlating by several labels: their values, as before
    c = Driver()
    ev = c.fire("rain-intense", "rain-7", at=0, correlation="district,parish", district="13", parish="Sé")
    assert ev.title == "rain-intense — 13, Sé"


def test_alarms_that_disagree_on_the_name_keep_the_id() -> None:
    """The incident's labels are those all its alarms share: an entity renamed between two alarms
    (or an alarm of it without the name) leaves no name, and the title says the id, deterministically."""
    d = Driver()
    assert place(d.fire("tinto-level-high", GAUGE, at=0, name=NAME).title) == NAME
    assert place(d.fire("tinto-flow-high", GAUGE, at=60, name="Rio Tinto (Campanhã)").title) == GAUGE
    assert place(d.fire("tinto-level-high", GAUGE, at=120, name=NAME).title) == GAUGE


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(st.sampled_from(HOSTILE), st.text(max_size=40)),
        max_size=12,
    ),
    st.integers(0, 5000),
)
def test_a_hostile_name_is_one_bounded_line(pieces: list[str], pad: int) -> None:
    """Any name (control characters, CR LF, bidi overrides, zero-width and tag characters, lone
    surrogates, template syntax, thousands of characters): the title's place holds none of the
    forbidden characters, at most ``NAME_MAX`` characters, no doubled or edge spaces; a name with
    nothing visible left keeps the id; the SMS and the subject are one line with the title in."""
    name = "".join(pieces) + "x" * pad
    d = Driver()
    ev = d.fire("tinto-level-high", GAUGE, at=0, name=name, severity="critical")
    assert ev.title.startswith("tinto-level-high — ")
    where = place(ev.title)
    assert not FORBIDDEN & set(ev.title), repr(ev.title)
    assert where == where.strip() and "  " not in where and len(where) <= max(NAME_MAX, len(GAUGE))
    visible = "".join(c for c in name if c not in FORBIDDEN and not c.isspace())
    if not visible:
        assert where == GAUGE
    else:
        assert len(where) <= NAME_MAX
        if len(name) <= NAME_MAX and not FORBIDDEN & set(name) and name == " ".join(name.split()):
            assert where == name, "a plain name is shown as it is"
        if len(visible) > NAME_MAX:
            assert where.endswith("…")
    n = Notification("n", "p", 0, 1, 0, "ana", "escalation", ev.at, IncidentSnapshot.from_event(ev))
    m = render(n, "en-GB")
    assert m.subject == f"[Atalaia CRITICAL] {ev.title}", "the subject is the title, whole and as it is"
    assert "\n" not in m.short and "\r" not in m.short and where in m.short


@given(st.text(min_size=1, max_size=3000))
def test_a_hostile_correlation_value_is_one_bounded_line_too(value: str) -> None:
    """A parish label (or an id) is data too: shown without control or invisible characters, at
    most ``VALUE_MAX`` characters (cut in the middle: two long ids differ at their end)."""
    d = Driver()
    ev = d.fire("river-level-high", "porto-01", at=0, parish=value)
    where = place(ev.title)
    assert not FORBIDDEN & set(where) and where and len(where) <= VALUE_MAX, repr(where)
    if value == " ".join(value.split()) and not FORBIDDEN & set(value) and len(value) <= VALUE_MAX:
        assert where == value


def test_a_long_id_is_cut_in_its_middle() -> None:
    long = "urn:ngsi-ld:WaterObserved:" + "x" * 300 + "-gauge-07"
    ev = Driver().fire("tinto-level-high", long, at=0)
    where = place(ev.title)
    assert len(where) == VALUE_MAX and where.startswith("urn:ngsi-ld:") and where.endswith("x-gauge-07")


INPUTS = [
    transition("tinto-level-high", GAUGE, "firing", 0, name=NAME + "\r\n\u202eevil"),
    transition("tinto-flow-high", GAUGE, "firing", 30, severity="critical", name=NAME + "\r\n\u202eevil"),
    transition("river-level-high", "porto-01", "firing", 40, parish="Campanhã", name="Ponte"),
    transition("tinto-level-high", GAUGE, "resolved", 90, name=NAME + "\r\n\u202eevil"),
    transition("tinto-level-high", "urn:x:other", "firing", 100, name="x" * 300),
]


def _run(mgr: IncidentManager, inputs: list, restart_at: int | None = None) -> list[dict]:
    state, outs = mgr.initial_state(), []
    for i, tr in enumerate(inputs):
        if i == restart_at:
            state = mgr.restore(mgr.snapshot(state))
        state, out = mgr.step(state, tr, tr["at"])
        outs.extend(o.to_dict() for o in out)
    return outs


def test_a_replay_titles_alike() -> None:
    """The same inputs replayed (from the start, or through a restart at any point) write the same
    events, byte for byte, names and all."""
    from atalaia.incidents.config import IncidentConfig

    first = _run(IncidentManager(IncidentConfig()), INPUTS)
    assert [place(e["title"]) for e in first if e.get("kind") == "incident"][:2] == [f"{NAME} evil"] * 2
    for restart_at in range(len(INPUTS)):
        assert _run(IncidentManager(IncidentConfig()), INPUTS, restart_at) == first


def test_a_snapshot_from_before_restores_and_titles_by_name_from_its_next_change() -> None:
    """A checkpoint written before titles said names holds the id title: restored, the incident's
    current event (sent again after a broker reset) is the one it wrote, unchanged; its next change
    is titled by the name. No field was added to the state."""
    d = Driver()
    d.fire("tinto-level-high", GAUGE, at=0, name=NAME)
    blob = snapshot.dump(d.state)
    raw = orjson.loads(zlib.decompress(blob[len(snapshot.MAGIC) :]))
    for inc in raw["incidents"].values():
        inc["title"] = f"tinto-level-high — {GAUGE}"  # what the earlier version wrote
    d.state = d.manager.restore(snapshot.MAGIC + zlib.compress(orjson.dumps(raw)))
    (again,) = d.manager.announce(d.state)
    assert again.to_dict() == d.outputs[-1].to_dict() | {"title": f"tinto-level-high — {GAUGE}"}
    later = d.fire("tinto-level-high", GAUGE, at=60, name=NAME, severity="critical")
    assert (later.incident, later.version) == (again.incident, again.version + 1)
    assert later.title == "tinto-level-high — Rio Tinto - Campanhã"
