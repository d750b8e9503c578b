"""CAP 1.2 from warning drafts: `atalaia warnings render`, the XSD, the CAP text rules of
../shared/fixtures/cap/validate_cap.py, and an independent CAP parser (cap-tools) reading every
document back."""

from __future__ import annotations

import importlib.util
import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from ruamel.yaml import YAML

from atalaia.warnings.cap import CapInvalid, Q, Reference, render, validate
from atalaia.warnings.catalogue import Catalogue
from atalaia.warnings.cli import warnings as warnings_cli
from atalaia.warnings.draft import Draft
from atalaia.warnings.loader import DraftError, load_draft

SHARED_CAP = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "cap"
CAT = Catalogue.load()
SENT = "2026-12-04T17:00:00+00:00"

DESIGN_DRAFT = """\
sender: protecao.civil@cm-porto.pt
status: Actual              # Actual | Exercise | Test
msgType: Alert              # Alert | Update | Cancel
references: []
level: orange
urgency: Expected
category: Met
event: {pt-PT: Cheia, en-GB: Flood}
headline: {pt-PT: Aviso laranja de cheia, en-GB: Orange flood warning}
description: {pt-PT: O Douro está a subir., en-GB: The Douro is rising.}
instruction: {pt-PT: Evite a zona ribeirinha., en-GB: Avoid the riverside.}
onset: 2026-12-04T18:00:00+00:00
expires: 2026-12-05T06:00:00+00:00
area:
  desc: {pt-PT: Campanhã, en-GB: Campanhã}
  geocodes: {DICOFRE: ["131203"]}
  polygon: [[41.15, -8.60], [41.16, -8.59], [41.15, -8.58]]
incident: inc-0001
"""

VALID_DRAFTS = {
    "design": DESIGN_DRAFT,
    "exercise-one-language": """\
sender: protecao.civil@cm-porto.pt
status: Exercise
level: yellow
event: {pt-PT: Vento forte}
onset: 2026-12-04T18:00:00+01:00
area: {geocodes: {DICOFRE: ["131216", "131218"], DICO: ["1312"]}}
""",
    "test-polygon-only": """\
sender: protecao.civil@cm-porto.pt
status: Test
msgType: Alert
level: red
urgency: Immediate
certainty: Observed
category: [Met, Safety]
event: {en-GB: Flood, pt-PT: Cheia}
expires: 2026-12-05T06:00:00.750-02:00
area:
  desc: {en-GB: Riverside, pt-PT: Zona ribeirinha}
  polygon: [[41.14, -8.62], [41.145, -8.60], [41.14, -8.59], [41.135, -8.61], [41.14, -8.62]]
""",
    "update-bare-and-full-references": """\
sender: protecao.civil@cm-porto.pt
msgType: Update
references:
  - PT-CM-PORTO-20261204170000-0123456789
  - protecao.civil@cm-porto.pt,PT-CMP-7,2026-12-04T16:00:00+00:00
level: red
event: {pt-PT: Cheia, en-GB: Flood}
headline: {pt-PT: Aviso vermelho, en-GB: Red warning}
onset: 2026-12-04T20:00:00Z
expires: 2026-12-05T12:00:00Z
area: {desc: {pt-PT: Campanhã e Bonfim, en-GB: Campanhã and Bonfim}, geocodes: {DICOFRE: [131203, 131202]}}
""",
    "cancel-minimal": """\
sender: protecao.civil@cm-porto.pt
msgType: Cancel
references: [PT-CM-PORTO-20261204170000-0123456789]
identifier: PT-CMP-CANCEL-1
event: {pt-PT: Cheia, en-GB: Flood}
area: {geocodes: {DICOFRE: ["131203"]}}
""",
    "two-areas-circle": """\
sender: protecao.civil@cm-porto.pt
level: green
event: Nevoeiro
area:
  - {desc: Foz, geocodes: {DICOFRE: ["131216"]}}
  - {desc: Ribeira, circle: "41.1406,-8.6131 0.6"}
""",
}


def run(args: list[str]) -> tuple[int, str, str]:
    r = CliRunner().invoke(warnings_cli, args)
    return r.exit_code, r.stdout, r.stderr


def render_text(tmp_path: Path, text: str, sent: str = SENT) -> tuple[int, str, str]:
    f = tmp_path / "draft.yaml"
    f.write_text(text, encoding="utf-8")
    return run(["render", str(f), "--sent", sent])


def parse_back(xml: bytes):
    """The independent CAP 1.2 parser (cap-tools, xsdata bindings)."""
    from cap_tools.models import Alert
    from xsdata.formats.dataclass.parsers import XmlParser

    return XmlParser().from_bytes(xml, Alert)


def shared_checks(xml: bytes) -> list[str]:
    """The CAP text rules of ../shared/fixtures/cap/validate_cap.py, run on our output."""
    script = SHARED_CAP / "validate_cap.py"
    if not script.exists():
        pytest.skip("../shared/fixtures/cap is absent")
    spec = importlib.util.spec_from_file_location("shared_validate_cap", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    doc = etree.parse(io.BytesIO(xml))
    schema = etree.XMLSchema(etree.parse(str(SHARED_CAP / "CAP-v1.2.xsd")))
    return ([] if schema.validate(doc) else [str(schema.error_log)]) + mod.extra_checks(doc)


def check_document(xml: bytes, draft: Draft) -> None:
    """XSD + text rules, the shared validator, and cap-tools finds the same fields."""
    assert validate(xml) == []
    assert shared_checks(xml) == []
    root = etree.fromstring(xml)
    alert = parse_back(xml)
    assert alert.identifier == root.findtext(Q + "identifier")
    assert alert.status.value == draft.status
    assert alert.msg_type.value == draft.msg_type
    assert [i.language for i in alert.infos] == draft.languages
    level = CAT.level(draft.level) if draft.level else None
    for info in alert.infos:
        assert info.severity.value == (level.severity if level else "Unknown")
        assert len(info.areas) == len(draft.area)
        for area, da in zip(info.areas, draft.area, strict=True):
            codes = [(g.value_name.value, g.value.value) for g in area.geocodes]
            want = [
                (k.upper(), str(c).zfill(6 if k.upper() == "DICOFRE" else 4))
                for k, v in da.geocodes.items()
                for c in v
            ]
            assert codes == want
            assert area.area_desc
            for p in area.polygons:
                pairs = p.split()
                assert pairs[0] == pairs[-1] and len(pairs) >= 4
    for t in re.findall(rb"<(?:sent|onset|expires|effective)>([^<]+)<", xml):
        assert re.fullmatch(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", t), t
    if draft.msg_type != "Alert":
        assert [str(r.identifier) for r in alert.references_to_list()]


@pytest.mark.parametrize("name", sorted(VALID_DRAFTS))
def test_valid_drafts_render_valid_cap(tmp_path: Path, name: str) -> None:
    code, out, err = render_text(tmp_path, VALID_DRAFTS[name])
    assert code == 0, err
    draft = Draft.model_validate(YAML(typ="safe").load(VALID_DRAFTS[name]))
    check_document(out.encode(), draft)


def test_design_draft_fields(tmp_path: Path) -> None:
    code, out, _ = render_text(tmp_path, DESIGN_DRAFT, sent="2026-12-04T18:00:00.123+01:00")
    assert code == 0
    alert = parse_back(out.encode())
    assert "<sent>2026-12-04T17:00:00+00:00</sent>" in out
    assert alert.sent.to_datetime() == datetime(2026, 12, 4, 17, tzinfo=UTC)
    assert alert.incidents == "inc-0001"
    pt, en = alert.infos
    assert (pt.language, en.language) == ("pt-PT", "en-GB")
    assert (pt.event, en.event, pt.headline) == ("Cheia", "Flood", "Aviso laranja de cheia")
    assert (pt.urgency.value, pt.severity.value, pt.certainty.value) == ("Expected", "Severe", "Likely")
    params = {p.value_name.value: p.value.value for p in pt.parameters}
    assert params == {"awareness_level": "3; orange; Severe", "awareness_type": "12; flooding"}
    area = pt.areas[0]
    assert area.area_desc == "Campanhã"
    assert len(area.polygons) == 2  # Campanhã's CAOP boundary + the drawn one, closed
    assert area.polygons[1] == "41.15,-8.6 41.16,-8.59 41.15,-8.58 41.15,-8.6"
    assert pt.onset.to_datetime() == datetime(2026, 12, 4, 18, tzinfo=UTC)
    assert "<expires>2026-12-05T06:00:00+00:00</expires>" in out


def test_identifier_is_stable_and_unique(tmp_path: Path) -> None:
    a = render_text(tmp_path, DESIGN_DRAFT)[1]
    b = render_text(tmp_path, DESIGN_DRAFT)[1]
    assert a == b
    c = render_text(tmp_path, DESIGN_DRAFT.replace("level: orange", "level: red"))[1]
    d = render_text(tmp_path, DESIGN_DRAFT, sent="2026-12-04T17:00:01+00:00")[1]
    ids = {parse_back(x.encode()).identifier for x in (a, c, d)}
    assert len(ids) == 3
    given = render_text(tmp_path, DESIGN_DRAFT + "identifier: PT-CMP-2026-0001\n")[1]
    assert parse_back(given.encode()).identifier == "PT-CMP-2026-0001"


def test_references_are_sender_identifier_sent(tmp_path: Path) -> None:
    alert_xml = render_text(tmp_path, DESIGN_DRAFT)[1].encode()
    original = parse_back(alert_xml)
    update = DESIGN_DRAFT.replace("msgType: Alert", "msgType: Update").replace(
        "references: []", f"references: [{original.identifier}]"
    )
    code, out, err = render_text(tmp_path, update, sent="2026-12-04T19:00:00+00:00")
    assert code == 0, err
    assert err == ""  # an Atalaia identifier carries its sent time: the reference is exact
    refs = parse_back(out.encode()).references_to_list()
    sent = etree.fromstring(alert_xml).findtext(Q + "sent")
    assert [r.identifier for r in refs] == [original.identifier]
    assert parse_back(out.encode()).references == f"protecao.civil@cm-porto.pt,{original.identifier},{sent}"
    # a foreign bare identifier: rendered, with a note that its time is assumed
    code, out, err = render_text(tmp_path, update.replace(original.identifier, "OTHER-1"))
    assert code == 0 and "OTHER-1" in err
    assert parse_back(out.encode()).references == f"protecao.civil@cm-porto.pt,OTHER-1,{SENT}"
    # issuing resolves them from the issued warnings (strict: unknown is refused)
    d = Draft.model_validate(YAML(typ="safe").load(update.replace(original.identifier, "OTHER-1")))
    known = Reference("x@cm-porto.pt", "OTHER-1", "2026-12-01T00:00:00-00:00")
    doc = render(d, CAT, SENT, resolve={"OTHER-1": known}.get, strict_references=True)
    assert b"<references>x@cm-porto.pt,OTHER-1,2026-12-01T00:00:00-00:00</references>" in doc.xml
    with pytest.raises(CapInvalid):
        render(d, CAT, SENT, resolve=lambda _: None, strict_references=True)


def test_a_full_reference_must_name_the_message_issued_here_and_an_earlier_one() -> None:
    """An Update whose full reference had the wrong sent time was issued, and the original marked
    updated: a CAP reader matching the whole triple kept the original in force (cap-tools raised
    KeyError). Issuing (strict) refuses it, naming the right triple; and a reference sent after
    the message itself."""
    known = Reference("protecao.civil@cm-porto.pt", "PT-1", "2026-12-04T16:00:00+00:00")
    resolve = {"PT-1": known}.get

    def update(ref: str) -> Draft:
        text = DESIGN_DRAFT.replace("msgType: Alert", "msgType: Update").replace(
            "references: []", f"references: ['{ref}']"
        )
        return Draft.model_validate(YAML(typ="safe").load(text))

    good = "protecao.civil@cm-porto.pt,PT-1,2026-12-04T16:00:00+00:00"
    assert (
        f"<references>{good}</references>".encode()
        in render(update(good), CAT, SENT, resolve=resolve, strict_references=True).xml
    )
    for ref, says in (
        ("protecao.civil@cm-porto.pt,PT-1,2026-12-01T00:00:00+00:00", good),
        ("outro@cm-gaia.pt,PT-1,2026-12-04T16:00:00+00:00", good),
        ("x@cm-porto.pt,OTHER-9,2027-12-04T17:00:00+00:00", "sent after this message"),
    ):
        with pytest.raises(CapInvalid) as e:
            render(update(ref), CAT, SENT, resolve=resolve, strict_references=True)
        assert says in str(e.value), e.value
    render(
        update("protecao.civil@cm-porto.pt,PT-1,2026-12-01T00:00:00+00:00"), CAT, SENT
    )  # a preview: as written


def test_exercise_is_marked(tmp_path: Path) -> None:
    code, out, _ = render_text(tmp_path, DESIGN_DRAFT.replace("status: Actual", "status: Exercise"))
    assert code == 0
    alert = parse_back(out.encode())
    assert alert.status.value == "Exercise" and alert.note == "EXERCÍCIO / EXERCISE"
    assert all(i.headline.startswith("EXERCÍCIO / EXERCISE: ") for i in alert.infos)


BAD = [
    ("level: orange", "level: purple", 5, 8, "unknown level 'purple'"),
    ("msgType: Alert", "msgType: Update", 4, 13, "an Update needs references"),
    (
        "expires: 2026-12-05T06:00:00+00:00",
        "expires: 2026-12-04T06:00:00+00:00",
        13,
        10,
        "must be after onset",
    ),
    ('{DICOFRE: ["131203"]}', '{DICOFRE: ["131299"]}', 16, 24, "unknown DICOFRE geocode '131299'"),
    (
        "polygon: [[41.15, -8.60], [41.16, -8.59], [41.15, -8.58]]",
        "polygon: [[41.15, -8.60], [41.16, -8.59]]",
        17,
        12,
        "at least 3 distinct points",
    ),
    ("onset: 2026-12-04T18:00:00+00:00", "onset: 2026-12-04T18:00:00", 12, 8, "has no UTC offset"),
    ("onset: 2026-12-04T18:00:00+00:00", "onset: 2026-13-04T18:00:00+00:00", 12, 8, "not a date-time"),
    ("onset: 2026-12-04T18:00:00+00:00", "onset: 2026-12-04", 12, 8, "has no time of day"),
    ("status: Actual", "status: Drill", 2, 9, "unknown 'status'"),
    (
        "[[41.15, -8.60], [41.16, -8.59], [41.15, -8.58]]",
        "[[-8.60, 41.15], [-8.59, 41.16], [-8.58, 41.15]]",
        17,
        12,
        "[lat, lon]",
    ),
    ("incident: inc-0001", "incidnt: inc-0001", 18, 1, "unknown key 'incidnt' (did you mean 'incident'?)"),
    # a parameter the level writes: two contradicting awareness levels in one info block
    (
        "incident: inc-0001",
        'incident: inc-0001\nparameters: {awareness_level: "4; red; Extreme"}',
        19,
        31,
        "'awareness_level' comes from the draft's level",
    ),
    # a circle's centre swapped as lon,lat: refused like a swapped polygon (it rendered, exit 0)
    (
        'geocodes: {DICOFRE: ["131203"]}',
        'geocodes: {DICOFRE: ["131203"]}\n  circle: "-8.67,41.15 2"',
        17,
        11,
        "outside the served region",
    ),
]


@pytest.mark.parametrize(("old", "new", "line", "col", "message"), BAD, ids=[b[1][:30] for b in BAD])
def test_bad_drafts_name_file_line_col(tmp_path: Path, old, new, line, col, message) -> None:
    assert old in DESIGN_DRAFT
    code, out, err = render_text(tmp_path, DESIGN_DRAFT.replace(old, new))
    assert code == 1 and out == ""
    first = err.splitlines()[0]
    assert first.startswith(f"{tmp_path / 'draft.yaml'}:{line}:{col}: "), err
    assert message in first, err


def test_a_cancel_without_references_points_at_its_msgtype() -> None:
    text = DESIGN_DRAFT.replace("msgType: Alert", "msgType: Cancel").replace("references: []\n", "")
    with pytest.raises(DraftError) as e:
        load_draft(text, "d.yaml")
    assert str(e.value).startswith("d.yaml:3:10: a Cancel needs references")


def test_a_wrong_type_inside_a_text_field_names_the_field_not_a_validator() -> None:
    text = DESIGN_DRAFT.replace("event: {pt-PT: Cheia, en-GB: Flood}", "event: {pt-PT: [x], en-GB: Flood}")
    with pytest.raises(DraftError) as e:
        load_draft(text, "d.yaml")
    assert "'pt-PT' must be text, got ['x']" in str(e.value)
    assert "function-" not in str(e.value) and "[_text" not in str(e.value), str(e.value)


def test_a_key_that_is_no_text_and_a_control_character_are_draft_errors() -> None:
    with pytest.raises(DraftError) as e:
        load_draft(DESIGN_DRAFT + "? {a: 1}\n: x\n", "d.yaml")
    assert "keys must be text" in str(e.value) and str(e.value).startswith("d.yaml:"), str(e.value)
    nul = DESIGN_DRAFT.replace(
        "event: {pt-PT: Cheia, en-GB: Flood}", 'event: {pt-PT: "Cheia\\0", en-GB: Flood}'
    )
    with pytest.raises(DraftError) as e:
        load_draft(nul, "d.yaml")
    assert "control character U+0000" in str(e.value), str(e.value)


def test_bad_sent_option_and_missing_file(tmp_path: Path) -> None:
    code, _, err = render_text(tmp_path, DESIGN_DRAFT, sent="2026-12-04T17:00:00")
    assert code == 2 and "--sent" in err
    code, _, err = run(["render", str(tmp_path / "nope.yaml")])
    assert code == 1 and ":1:1: cannot read" in err


def test_validator_agrees_with_the_shared_fixtures() -> None:
    if not SHARED_CAP.exists():
        pytest.skip("../shared/fixtures/cap is absent")
    for f in sorted((SHARED_CAP / "examples").glob("*.xml")) + sorted(
        (SHARED_CAP / "constructed").glob("*.xml")
    ):
        assert validate(f.read_bytes(), bbox=None, strict=False) == [], f
    for f in sorted((SHARED_CAP / "invalid").glob("*.xml")):
        assert validate(f.read_bytes()), f  # -00:00 too: Atalaia writes UTC as +00:00


# --------------------------------------------------------------------------- property: any valid draft
LANGS = st.lists(st.sampled_from(["pt-PT", "en-GB", "es-ES", "fr-FR"]), min_size=1, max_size=3, unique=True)
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=40).filter(
    lambda s: s.strip()
)
TIMES = st.datetimes(datetime(2000, 1, 2), datetime(2090, 1, 1), timezones=st.timezones()).filter(
    lambda t: t.utcoffset() is not None
)


@st.composite
def simple_polygons(draw) -> list[list[float]]:
    """A polygon that does not cross itself and encloses an area: points around a centre at
    increasing angles (a star-shaped ring), at least 100 m from it."""
    import math

    lat, lon = draw(st.tuples(st.floats(37.5, 41.5), st.floats(-9.0, -6.8)))
    n = draw(st.integers(4, 12))
    step = 2 * math.pi / n
    out = []
    for k in range(n):
        a = k * step + draw(st.floats(0, step * 0.5))
        r = draw(st.floats(0.002, 0.2))
        out.append([round(lat + r * math.sin(a), 6), round(lon + r * math.cos(a), 6)])
    return out


SIMPLE_POLYGON = simple_polygons()


@st.composite
def drafts(draw) -> dict:
    langs = draw(LANGS)

    def lang_text():
        return draw(st.one_of(TEXT, st.fixed_dictionaries({lang: TEXT for lang in langs})))

    msg_type = draw(st.sampled_from(["Alert", "Update", "Cancel"]))
    d = {
        "sender": draw(st.sampled_from(["protecao.civil@cm-porto.pt", "pc@cm-porto.example", "atalaia"])),
        "status": draw(st.sampled_from(["Actual", "Exercise", "Test"])),
        "msgType": msg_type,
        "level": draw(st.sampled_from(["green", "yellow", "orange", "red", "Laranja"])),
        "event": {lang: draw(TEXT) for lang in langs},
    }
    if msg_type != "Alert":
        d["references"] = draw(
            st.lists(st.from_regex(r"[A-Z]{2}-[A-Za-z0-9.-]{1,20}", fullmatch=True), min_size=1, max_size=3)
        )
    for key in ("headline", "description", "instruction"):
        if draw(st.booleans()):
            d[key] = lang_text()
    for key in ("urgency", "certainty"):
        if draw(st.booleans()):
            d[key] = draw(
                st.sampled_from(
                    ["Immediate", "Expected", "Unknown"] if key == "urgency" else ["Likely", "Observed"]
                )
            )
    onset = draw(st.none() | TIMES)
    if onset is not None:
        d["onset"] = onset.isoformat()
    if draw(st.booleans()):
        base = onset or datetime(2026, 1, 1, tzinfo=UTC)
        d["expires"] = (base + draw(st.timedeltas(timedelta(seconds=1), timedelta(days=30)))).isoformat()
    areas = []
    for _ in range(draw(st.integers(1, 2))):
        area: dict = {}
        if draw(st.booleans()):
            area["geocodes"] = {
                "DICOFRE": draw(
                    st.lists(st.sampled_from(CAT.codes("DICOFRE")), min_size=1, max_size=3, unique=True)
                )
            }
        if not area or draw(st.booleans()):
            area["polygon"] = draw(SIMPLE_POLYGON)
        if "geocodes" not in area or draw(st.booleans()):
            area["desc"] = lang_text()
        areas.append(area)
    d["area"] = areas[0] if len(areas) == 1 and draw(st.booleans()) else areas
    return d


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drafts(), TIMES)
def test_every_valid_draft_renders_to_a_valid_document(data: dict, sent: datetime) -> None:
    buf = io.StringIO()
    YAML().dump(data, buf)
    try:
        draft = load_draft(buf.getvalue(), "gen.yaml")
    except DraftError as e:  # generated only valid drafts; a refusal is a bug
        raise AssertionError(f"{e}\n{buf.getvalue()}") from None
    doc = render(draft, CAT, sent)
    check_document(doc.xml, draft)
    assert doc.sent.endswith("+00:00")


def test_render_reads_the_configured_warnings_file(tmp_path, monkeypatch) -> None:
    """Without --config, `warnings render` read the repo's config/warnings.yaml whatever
    ATALAIA_WARNINGS_PATH said: a city's own levels or areas were never the ones checked."""
    from atalaia.streams.settings import get_settings

    mine = tmp_path / "warnings.yaml"
    mine.write_text("levels: no-such-levels.yaml\n")
    get_settings.cache_clear()
    monkeypatch.setenv("ATALAIA_WARNINGS_PATH", str(mine))
    try:
        code, out, err = render_text(tmp_path, DESIGN_DRAFT)
        assert code == 1 and "no-such-levels.yaml" in out + err, (code, out, err)
        monkeypatch.delenv("ATALAIA_WARNINGS_PATH")
        get_settings.cache_clear()
        code, out, err = render_text(tmp_path, DESIGN_DRAFT)
        assert code == 0 and out.startswith("<?xml"), (code, err)
    finally:
        get_settings.cache_clear()


def test_cli_is_registered() -> None:
    from atalaia.streams.cli import main

    r = CliRunner().invoke(main, ["warnings", "render", "--help"])
    assert r.exit_code == 0 and "--sent" in r.output


@pytest.mark.parametrize(
    "module",
    [
        "cap",
        "catalogue",
        "core",
        "draft",
        "feed",
        "from_incident",
        "loader",
        "records",
        "simplify",
        "stage",
        "territory",
    ],
)
def test_docstring_examples(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"atalaia.warnings.{module}"))
    assert result.failed == 0 and result.attempted > 0


def test_texts_given_in_fewer_languages_are_left_out_of_those_info_blocks(tmp_path: Path) -> None:
    """Only the event must be in every language; a description written in pt-PT only leaves the
    en-GB info without one (CAP's texts are optional) rather than refusing the draft."""
    text = DESIGN_DRAFT.replace(
        "description: {pt-PT: O Douro está a subir., en-GB: The Douro is rising.}",
        "description: {pt-PT: O Douro está a subir.}",
    )
    code, out, err = render_text(tmp_path, text)
    assert code == 0, err
    assert validate(out.encode()) == [] and shared_checks(out.encode()) == []
    root = etree.fromstring(out.encode())
    infos = {i.findtext(f"{Q}language"): i for i in root.iter(f"{Q}info")}
    assert infos["pt-PT"].findtext(f"{Q}description") == "O Douro está a subir."
    assert infos["en-GB"].find(f"{Q}description") is None
    assert infos["en-GB"].findtext(f"{Q}event")
    # ... and render says so, naming the field and the language
    assert "note: description has no en-GB text: the en-GB info block has no description" in err, err
    text = text.replace("desc: {pt-PT: Campanhã, en-GB: Campanhã}", "desc: {pt-PT: Campanhã (Porto)}")
    code, out, err = render_text(tmp_path, text)
    assert code == 0 and "note: area.0.desc has no en-GB text: the en-GB areaDesc is the pt-PT one" in err, (
        err
    )
    en = [i for i in etree.fromstring(out.encode()).iter(f"{Q}info") if i.findtext(f"{Q}language") == "en-GB"]
    assert en[0].findtext(f"{Q}area/{Q}areaDesc") == "Campanhã (Porto)"
    code, out, err = render_text(tmp_path, DESIGN_DRAFT)
    assert code == 0 and "has no" not in err, err
    code, _, err = render_text(
        tmp_path, text.replace("event: {pt-PT: Cheia, en-GB: Flood}", "event: {pt-PT: Cheia}")
    )
    assert code == 1 and "en-GB" in err


def test_a_dtd_is_refused_not_a_crash() -> None:
    """An internal DOCTYPE with an entity made lxml's validator fail with an internal error (a
    traceback from `atalaia warnings validate`); external entities were never resolved."""
    path = SHARED_CAP / "constructed" / "porto-rain-orange-alert.xml"
    if not path.is_file():
        pytest.skip("../shared/fixtures/cap is not beside this checkout")
    good = path.read_bytes()
    assert validate(good) == []
    for dtd in (b'<!DOCTYPE alert [<!ENTITY who "x">]>', b'<!DOCTYPE alert SYSTEM "file:///etc/passwd">'):
        hostile = good.replace(b"<alert", dtd + b"\n<alert", 1).replace(
            b"<sender>", b"<sender>&who;" if b"ENTITY" in dtd else b"<sender>", 1
        )
        assert validate(hostile) == ["a DOCTYPE (DTD, entity declarations) is not allowed in a CAP message"]


def test_a_warning_that_expires_before_it_is_sent_says_so_with_or_without_sent(tmp_path: Path) -> None:
    """`render` without --sent (now) and the console's preview said nothing about a draft that
    expired in 2020; only `issue` refused it. The note comes from the renderer, for both."""
    text = DESIGN_DRAFT.replace(
        "onset: 2026-12-04T18:00:00+00:00", "onset: 2020-01-01T18:00:00+00:00"
    ).replace("expires: 2026-12-05T06:00:00+00:00", "expires: 2020-01-02T06:00:00+00:00")
    f = tmp_path / "draft.yaml"
    f.write_text(text, encoding="utf-8")
    for args in ([], ["--sent", SENT]):
        code, out, err = run(["render", str(f), *args])
        assert code == 0 and out.startswith("<?xml")
        assert "note: this warning expires (2020-01-02T06:00:00+00:00) before it is sent" in err, err
    code, _, err = render_text(tmp_path, DESIGN_DRAFT)
    assert code == 0 and "expires" not in err


def test_every_missing_key_is_reported_even_at_the_same_position(tmp_path: Path) -> None:
    """Two missing keys both point at 1:1; only the first was printed."""
    code, out, err = render_text(tmp_path, "status: Actual\nmsgType: Update\n")
    assert code == 1 and out == ""
    assert "draft.yaml:1:1: missing required key 'event'" in err
    assert "draft.yaml:1:1: missing required key 'sender'" in err


def test_a_control_character_is_the_error_not_the_type(tmp_path: Path) -> None:
    """A bell in a text said "'event' must be a mapping, got 'Cheia\\x07'" (the other branch of
    text-or-mapping); the error is the character."""
    code, _, err = render_text(
        tmp_path, DESIGN_DRAFT.replace("event: {pt-PT: Cheia, en-GB: Flood}", 'event: "Cheia\\u0007"')
    )
    assert code == 1
    assert err.splitlines() == [
        f"{tmp_path / 'draft.yaml'}:8:8: 'event': control character U+0007 cannot be part of a CAP document"
    ]


def test_numbers_in_text_fields_are_published_exactly_as_written(tmp_path: Path) -> None:
    """YAML reads 00351222090000, 0289, 4.50, 0x1F, 1_000, .5 and 1.5e3 as numbers; a draft's texts
    (a phone number, an ANEPC event code, a river level, a headline) must reach the public exactly
    as the officer wrote them, never 351222090000, 289, 4.5, 31, 1000, 0.5 or 1500.0. Numbers are
    read as numbers only where the model wants one (polygon coordinates; geocodes)."""
    draft = """\
sender: protecao.civil@cm-porto.pt
level: orange
event: {pt-PT: Cheia, en-GB: Flood}
headline: 0x1F
description: {pt-PT: 1_000, en-GB: .5}
instruction: 1.5e3
contact: 00351222090000
audience: 0o17
note: 007
web: {pt-PT: https://cm-porto.pt/a, en-GB: https://cm-porto.pt/b}
eventCode: {ANEPC_EAE: 0289}
parameters: {cota_m: 4.50, codigo: 0755}
area:
  desc: 12
  geocodes: {DICOFRE: [131203]}
  polygon: [[41.15, -8.60], [41.16, -8.60], [41.16, -8.59]]
"""
    code, out, err = render_text(tmp_path, draft)
    assert code == 0, err
    root = etree.fromstring(out.encode())
    assert root.findtext(Q + "note") == "007"
    for info in root.iter(Q + "info"):
        text = {t: info.findtext(Q + t) for t in ("headline", "instruction", "contact", "audience")}
        assert text == {
            "headline": "0x1F",
            "instruction": "1.5e3",
            "contact": "00351222090000",
            "audience": "0o17",
        }
        assert info.findtext(Q + "description") in ("1_000", ".5")
        assert info.find(Q + "eventCode").findtext(Q + "value") == "0289"
        params = {p.findtext(Q + "valueName"): p.findtext(Q + "value") for p in info.iter(Q + "parameter")}
        assert params["cota_m"] == "4.50" and params["codigo"] == "0755"
        area = info.find(Q + "area")
        assert area.findtext(Q + "areaDesc") == "12"
        assert [g.findtext(Q + "value") for g in area.iter(Q + "geocode")] == ["131203"]
        assert area.findall(Q + "polygon")[-1].text == "41.15,-8.6 41.16,-8.6 41.16,-8.59 41.15,-8.6"
    assert [i.findtext(Q + "description") for i in root.iter(Q + "info")] == ["1_000", ".5"]


def test_language_tags_are_compared_ignoring_case_and_written_canonically(tmp_path: Path) -> None:
    """The README: tags are compared ignoring case (RFC 5646). ``headline: {PT-pt: ..., EN-gb: ...}``
    beside ``event: {pt-PT: ..., en-GB: ...}`` was refused ("language PT-pt is not one of the
    warning's"); each text now reaches its language's info block, and the document carries the
    canonical tag."""
    text = DESIGN_DRAFT.replace(
        "headline: {pt-PT: Aviso laranja de cheia, en-GB: Orange flood warning}",
        "headline: {PT-pt: Aviso laranja de cheia, EN-gb: Orange flood warning}",
    ).replace("event: {pt-PT: Cheia, en-GB: Flood}", "event: {pt-pt: Cheia, EN-GB: Flood}")
    text = text.replace(
        "desc: {pt-PT: Campanhã, en-GB: Campanhã}", "desc: {PT-PT: Campanhã, en-gb: Campanha}"
    )
    text += "web: {Pt-pT: https://cm-porto.pt/pt, EN-GB: https://cm-porto.pt/en}\n"
    code, out, err = render_text(tmp_path, text)
    assert code == 0, err
    infos = list(etree.fromstring(out.encode()).iter(Q + "info"))
    got = [
        (
            *(i.findtext(Q + t) for t in ("language", "event", "headline", "web")),
            i.findtext(f"{Q}area/{Q}areaDesc"),
        )
        for i in infos
    ]
    assert got == [
        ("pt-PT", "Cheia", "Aviso laranja de cheia", "https://cm-porto.pt/pt", "Campanhã"),
        ("en-GB", "Flood", "Orange flood warning", "https://cm-porto.pt/en", "Campanha"),
    ]
    # the same language twice in any text is refused, whatever its case
    twice = DESIGN_DRAFT.replace("en-GB: Orange flood warning}", "en-GB: Orange flood warning, PT-pt: Outro}")
    code, _, err = render_text(tmp_path, twice)
    assert code == 1 and "language PT-pt given twice" in err, err


def test_a_message_never_references_itself_nor_silently_another_senders_warning(tmp_path: Path) -> None:
    """An Update with identifier PT-SELF-1 referencing PT-SELF-1 was rendered (a message that
    replaces itself). A bare PT-CM-GAIA-... identifier (Atalaia's format: it names Gaia's
    sender) in a Porto draft was expanded with Porto's sender without a word: the reference then
    names a message nobody sent. Render says so; the workflow refuses it (write the triple)."""
    from atalaia.warnings.core import Workflow

    update = """\
sender: protecao.civil@cm-porto.pt
msgType: Update
identifier: PT-SELF-1
references: [PT-SELF-1]
level: orange
event: {pt-PT: Cheia, en-GB: Flood}
area: {geocodes: {DICOFRE: ["131203"]}}
"""
    code, _, err = render_text(tmp_path, update)
    assert code == 1 and "draft.yaml:4:14: a message cannot reference itself" in err, err
    full = "references: ['protecao.civil@cm-porto.pt,PT-SELF-1,2026-12-04T16:00:00+00:00']"
    code, _, err = render_text(tmp_path, update.replace("references: [PT-SELF-1]", full))
    assert code == 1 and "cannot reference itself" in err, err

    gaia = "PT-CM-GAIA-20261204170000-abcdef0123"
    other = update.replace("identifier: PT-SELF-1", "identifier: PT-OK-2").replace("PT-SELF-1", gaia)
    code, out, err = render_text(tmp_path, other)
    assert code == 0, err
    assert f"note: reference '{gaia}' looks made by another sender (PT-CM-GAIA" in err, err
    own = other.replace(gaia, "PT-CM-PORTO-20261204170000-abcdef0123")
    code, out, err = render_text(tmp_path, own)
    assert code == 0 and "another sender" not in err, err

    wf = Workflow()
    draft = YAML(typ="safe").load(other)
    draft.pop("identifier")
    st, out = wf.step(
        wf.initial_state(), {"action": "draft", "actor": "a", "role": "operator", "draft": draft}, SENT
    )
    assert not out[-1].ok and "references.0: reference 'PT-CM-GAIA-" in out[-1].error, out[-1]
    draft["references"] = [f"protecao.civil@cm-gaia.pt,{gaia},2026-12-04T17:00:00+00:00"]
    st, out = wf.step(st, {"action": "draft", "actor": "a", "role": "operator", "draft": draft}, SENT)
    assert out[-1].ok, out[-1]


def test_a_draft_written_by_json_dump_keeps_its_emoji(tmp_path: Path) -> None:
    """Python's json.dump (ensure_ascii) writes 🌊 as the escaped pair "\\ud83c\\udf0a"; such a
    draft was refused as "a lone UTF-16 surrogate escape"."""
    import json

    draft = {
        "sender": "protecao.civil@cm-porto.pt",
        "level": "orange",
        "event": {"pt-PT": "Cheia \U0001f30a", "en-GB": "Flood \U0001f30a"},
        "area": {"geocodes": {"DICOFRE": ["131203"]}},
    }
    text = json.dumps(draft)
    assert "\\ud83c\\udf0a" in text
    code, out, err = render_text(tmp_path, text)
    assert code == 0, err
    events = [e.text for e in etree.fromstring(out.encode()).iter(Q + "event")]
    assert events == ["Cheia \U0001f30a", "Flood \U0001f30a"]


def test_expires_before_effective_or_sent_shows_both_times(tmp_path: Path) -> None:
    """As "expires (...) must be after onset (...)" does: the officer sees which two times clash."""
    base = DESIGN_DRAFT.replace("onset: 2026-12-04T18:00:00+00:00\n", "")
    code, _, err = render_text(tmp_path, base + "effective: 2026-12-05T07:00:00+01:00\n")
    assert code == 1
    assert "expires (2026-12-05T06:00:00+00:00) must be after effective (2026-12-05T06:00:00+00:00)" in err, (
        err
    )
    code, _, err = render_text(tmp_path, base + "sent: 2026-12-05T08:00:00+00:00\n")
    assert "expires (2026-12-05T06:00:00+00:00) must be after sent (2026-12-05T08:00:00+00:00)" in err, err


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "incident: inc-0001\n",
            'identifier: "PT-1\\u200b"\n',
            "the identifier 'PT-1\\u200b' has an invisible character (U+200B)",
        ),
        (
            "incident: inc-0001\n",
            'references: ["PT-CM-PORTO-20261204170000-0123456789\\u2060"]\n',
            "invisible characters (U+2060)",
        ),
        ("incident: inc-0001\n", '  circle: "41.15,-8.60 0"\n', "has radius 0 km: a circle warns nobody"),
        ("incident: inc-0001\n", '  circle: "41.15,-8.60 0.000"\n', "has radius 0.000 km"),
        (
            "incident: inc-0001\n",
            "web: 'https://cm-porto.pt/a b<c>'\n",
            "is not a valid URL: ' ', '<', '>' cannot be in one (write ' ' as %20, '<' as %3C, '>' as %3E)",
        ),
        (
            "incident: inc-0001\n",
            "web: {pt-PT: 'https://cm-porto.pt/100%', en-GB: 'https://cm-porto.pt/en'}\n",
            "'%' cannot be in one",
        ),
    ],
)
def test_doubtful_identifiers_circles_and_links_are_refused(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    """An identifier with a zero-width space looks like another warning's; a circle of radius 0
    warns nobody; a link with a space or '<' is no URI (CAP: anyURI) and breaks in readers."""
    text = DESIGN_DRAFT.replace(old, new)
    if "references: [" in new:
        text = text.replace("msgType: Alert", "msgType: Update").replace("references: []\n", "")
    code, _, err = render_text(tmp_path, text)
    assert code == 1 and message in err, err
    assert re.search(r"draft\.yaml:\d+:\d+: ", err), err


def test_links_and_circles_that_are_fine_still_render(tmp_path: Path) -> None:
    extra = "web: 'https://cm-porto.pt/prote%C3%A7%C3%A3o-civil?a=1&b=2#x'\n"
    code, _, err = render_text(tmp_path, DESIGN_DRAFT + extra)
    assert code == 0, err
    code, _, err = render_text(
        tmp_path, DESIGN_DRAFT.replace("incident: inc-0001\n", '  circle: "41.15,-8.60 0.05"\n')
    )
    assert code == 0, err


@pytest.mark.parametrize(
    ("circle", "says"),
    [
        ("41.15,-8.61 20000", "reaches beyond the served region"),  # a typo of 2000 for 2 warned Europe
        ("41.15,-8.61 150", "with its radius of 150 km"),  # out into the Atlantic
        ("41.15,-8.61 0.0000001", "at least 0.01 km"),
    ],
)
def test_a_circle_must_lie_in_the_region_and_be_a_real_area(tmp_path: Path, circle: str, says: str) -> None:
    code, _, err = render_text(
        tmp_path, DESIGN_DRAFT.replace("incident: inc-0001\n", f'  circle: "{circle}"\n')
    )
    assert code == 1 and says in err, err


def test_a_hole_drawn_as_a_polygon_inside_another_is_refused(tmp_path: Path) -> None:
    """A GeoJSON-style outer ring and hole became two <polygon>s: CAP's polygons add up, so the
    people in the hole (the area meant to be spared) were warned too."""
    outer = "[[41.14, -8.62], [41.16, -8.62], [41.16, -8.58], [41.14, -8.58]]"
    hole = "[[41.145, -8.61], [41.155, -8.61], [41.155, -8.59], [41.145, -8.59]]"
    beside = "[[41.165, -8.61], [41.17, -8.61], [41.17, -8.59]]"
    area = f"area:\n  desc: Zona\n  polygon:\n    - {outer}\n    - {hole}\n"
    text = DESIGN_DRAFT.split("area:\n")[0] + area + "incident: inc-0001\n"
    code, _, err = render_text(tmp_path, text)
    assert code == 1, err
    assert "draft.yaml:18:7: CAP cannot express holes: polygon 1 lies inside polygon 0" in err, err
    code, _, err = render_text(
        tmp_path, text.replace(f"    - {outer}\n    - {hole}\n", f"    - {hole}\n    - {outer}\n")
    )
    assert code == 1 and "polygon 0 lies inside polygon 1" in err, err
    code, _, err = render_text(tmp_path, text.replace(hole, beside))
    assert code == 0, err


def test_anepc_blue_is_a_level_of_its_own() -> None:
    """ANEPC's Estado de Alerta Especial azul (level 1; levels.yaml: CAP severity Minor) was
    refused as an unknown level; IPMA has no blue, so it carries no MeteoAlarm awareness level."""
    from atalaia.warnings.short_text import sms_text

    draft = Draft.model_validate(
        {
            "sender": "protecao.civil@cm-porto.pt",
            "level": "Azul",
            "event": "Cheia",
            "area": {"geocodes": {"DICOFRE": ["131203"]}},
            "expires": "2026-12-05T06:00:00+00:00",
        }
    )
    info = etree.fromstring(render(draft, CAT, SENT).xml).find(Q + "info")
    assert info.findtext(Q + "severity") == "Minor"
    # no MeteoAlarm awareness_level (its 1 is green): ANEPC's level by its own name
    params = [(p.findtext(Q + "valueName"), p.findtext(Q + "value")) for p in info.findall(Q + "parameter")]
    assert params == [("ANEPC_EAE", "1; azul; Minor"), ("awareness_type", "12; flooding")]
    assert sms_text(draft, CAT, None).text.startswith("Aviso azul - Cheia.")
    assert CAT.level_for_severity("low").colour == "yellow"  # a proposal's colour stays IPMA's


#: every name a draft's level may have (IPMA's colours, ANEPC's EAE colours in Portuguese, "blue")
#: and the colour its SMS and email say, in pt-PT and in English
LEVEL_WORDS = {
    "green": ("verde", "Green"),
    "verde": ("verde", "Green"),
    "azul": ("azul", "Blue"),
    "blue": ("azul", "Blue"),
    "yellow": ("amarelo", "Yellow"),
    "amarelo": ("amarelo", "Yellow"),
    "orange": ("laranja", "Orange"),
    "laranja": ("laranja", "Orange"),
    "red": ("vermelho", "Red"),
    "Vermelho": ("vermelho", "Red"),
}


@pytest.mark.parametrize("level", sorted(LEVEL_WORDS))
@pytest.mark.parametrize("status", ["Actual", "Exercise"])
def test_every_level_says_its_colour_in_the_sms_and_email(level: str, status: str) -> None:
    """ANEPC's azul was the one level whose SMS named no colour ("Aviso - Cheia"): its CAP document
    carried none (MeteoAlarm has no blue), and the SMS is written from the document. Every level
    now says its colour, in each language, from the document alone; "blue" is azul's English name
    (as "red" is vermelho's)."""
    from zoneinfo import ZoneInfo

    from atalaia.notifiers.warning import email, parse_cap, sms_message

    pt, en = LEVEL_WORDS[level]
    d = Draft.model_validate(
        {
            "sender": "protecao.civil@cm-porto.pt",
            "status": status,
            "level": level,
            "event": {"pt-PT": "Cheia", "en-GB": "Flood"},
            "area": {"geocodes": {"DICOFRE": ["131203"]}},
            "expires": "2026-12-05T06:00:00+00:00",
        }
    )
    assert problems_of(d) == []
    xml = render(d, CAT, SENT).xml
    assert shared_checks(xml) == []
    w = parse_cap(xml)
    lisbon = ZoneInfo("Europe/Lisbon")
    mark = "EXERCICIO / EXERCISE: " if status == "Exercise" else ""
    assert sms_message(w, lisbon, "pt-PT").text.startswith(f"{mark}Aviso {pt} - Cheia. Campanha.")
    assert sms_message(w, lisbon, "en-GB").text.startswith(f"{mark}{en} warning - Flood. Campanha.")
    assert sms_message(w, lisbon, "es-ES").text.startswith(f"{mark}{en} warning - Cheia.")  # (no es-ES block)
    subject, _ = email(w, lisbon)
    assert f"Aviso {pt} - Cheia / {en} warning - Flood" in subject


def problems_of(d: Draft) -> list:
    from atalaia.warnings.draft import problems

    return problems(d, CAT)


def test_a_parameter_may_not_contradict_the_level_that_writes_it() -> None:
    base = DESIGN_DRAFT.replace(
        "incident: inc-0001", "incident: inc-0001\nparameters: {ANEPC_EAE: '3; laranja'}"
    )
    load_draft(base, "d.yaml")  # an orange level writes MeteoAlarm's awareness_level: no clash
    with pytest.raises(DraftError) as e:
        load_draft(base.replace("level: orange", "level: azul"), "d.yaml")
    assert "'ANEPC_EAE' comes from the draft's level" in str(e.value), str(e.value)


def test_render_refuses_what_issuing_would_refuse_of_a_tenant(tmp_path: Path) -> None:
    """``render`` prints what issuing would publish: a draft of tenant porto drawn over Lisbon, or
    sent as gaia's sender, rendered (exit 0) though the workflow refuses it (tenant_areas,
    senders)."""
    from atalaia.streams.settings import CONFIG_DIR

    config = tmp_path / "warnings.yaml"
    config.write_text(
        f"levels: {CONFIG_DIR / 'levels.yaml'}\nareas: [{CONFIG_DIR / 'geo' / 'porto.geojson'}]\n"
        "senders: {porto: [pc@cm-porto.pt], gaia: [pc@cm-gaia.pt]}\n"
        "tenant_areas: {porto: ['1312'], gaia: ['1317']}\n"
    )
    base = "sender: pc@cm-porto.pt\ntenant: porto\nlevel: red\nevent: Cheia\nexpires: '2026-12-05T06:00:00+00:00'\n"
    (tmp_path / "ok.yaml").write_text(base + "area: {geocodes: {DICOFRE: ['131203']}}\n")
    assert run(["render", str(tmp_path / "ok.yaml"), "--sent", SENT, "--config", str(config)])[0] == 0
    (tmp_path / "lisbon.yaml").write_text(base + "area: {desc: Lisboa, circle: '38.72,-9.14 2'}\n")
    code, _, err = run(["render", str(tmp_path / "lisbon.yaml"), "--sent", SENT, "--config", str(config)])
    assert code == 1 and "lisbon.yaml:6:30: 38.72,-9.14 is outside tenant 'porto'" in err, err
    (tmp_path / "gaia.yaml").write_text(
        base.replace("pc@cm-porto.pt", "pc@cm-gaia.pt") + "area: {geocodes: {DICOFRE: ['131203']}}\n"
    )
    code, _, err = run(["render", str(tmp_path / "gaia.yaml"), "--sent", SENT, "--config", str(config)])
    assert code == 1 and "gaia.yaml:1:9:" in err, err


def _oversize(kind: str) -> str:
    """A draft past one of the console's bounds on areas (warnings/draft.py ``MAX_*``)."""
    from atalaia.warnings.draft import MAX_AREA_GEOCODES, MAX_AREA_SHAPES, MAX_AREAS, MAX_GEOCODES

    head = "sender: protecao.civil@cm-porto.pt\nlevel: orange\nevent: Cheia\narea:\n"
    codes = [str(100000 + i) for i in range(MAX_GEOCODES + 1)]
    circles = [f"'41.15,-8.6 {0.1 + k / 1000:.3f}'" for k in range(MAX_AREA_SHAPES + 1)]
    polygon = "'41.14,-8.62 41.15,-8.62 41.15,-8.61 41.14,-8.62'"  # a polygon as CAP text: one shape
    if kind == "areas":
        return head + "".join(
            f"  - {{desc: a{i}, geocodes: {{DICOFRE: ['131203']}}}}\n" for i in range(MAX_AREAS + 1)
        )
    if kind == "area geocodes":
        return head + f"  geocodes: {{DICOFRE: [{', '.join(codes[: MAX_AREA_GEOCODES + 1])}]}}\n"
    if kind == "geocodes":
        half = (MAX_GEOCODES + 2) // 2
        return head + "".join(
            f"  - {{desc: a, geocodes: {{DICOFRE: [{', '.join(part)}]}}}}\n"
            for part in (codes[:half], codes[half : 2 * half])
        )
    if kind == "area shapes":
        return head + f"  desc: x\n  polygon: {polygon}\n  circle: [{', '.join(circles[:-1])}]\n"
    assert kind == "shapes"
    return (
        head
        + "".join(f"  - {{desc: a, circle: [{', '.join(circles[:-1])}]}}\n" for _ in range(2))
        + (f"  - {{desc: b, polygon: {polygon}}}\n")
    )


@pytest.mark.parametrize(
    ("kind", "where", "says"),
    [
        ("areas", "5:3", "area: at most 100 areas, got 101"),
        ("area geocodes", "5:13", "area.0.geocodes: at most 4000 distinct geocodes an area, got 4001"),
        ("geocodes", "5:3", "area: at most 4000 distinct geocodes in all areas, got 4001"),
        ("area shapes", "5:3", "area.0: at most 100 polygons and circles an area, got 101"),
        ("shapes", "5:3", "area: at most 200 polygons and circles in all areas, got 201"),
    ],
)
def test_render_refuses_a_draft_past_the_consoles_bounds(tmp_path: Path, kind, where, says) -> None:
    """The bounds on a draft's areas (``size_problems``) held in the console and the workflow, not
    in ``render``: 101 areas or 201 circles rendered (exit 0), 5000 codes were looked up one by one
    and each named as unknown. The file is refused before anything else is checked, as the API
    refuses the same draft, with its file:line:col."""
    from atalaia.warnings.loader import field_errors

    text = _oversize(kind)
    t0 = datetime.now(UTC)
    code, out, err = render_text(tmp_path, text)
    assert code == 1 and out == "", err
    assert err == f"{tmp_path / 'draft.yaml'}:{where}: {says}\n"
    assert datetime.now(UTC) - t0 < timedelta(seconds=5)
    api = field_errors(YAML(typ="safe").load(text), CAT)[1]
    assert [f"{e['field']}: {e['message']}" for e in api] == [says], "the console's own words"


LATER = "protecao.civil@cm-porto.pt,PT-EXT-7,2026-12-04T20:00:00-03:30"  # 23:00 UTC, after SENT
LATER_ID = "PT-CM-PORTO-20261205090000-0123456789"  # an Atalaia identifier sent 2026-12-05 09:00 UTC


@pytest.mark.parametrize("ref", [LATER, LATER_ID])
def test_a_reference_to_a_message_sent_after_this_one_is_refused_before_the_approval(
    tmp_path: Path, ref: str
) -> None:
    """An Update referencing a message sent after it (a typo in the date, an offset read the wrong
    way: 20:00-03:30 is 23:00 UTC) rendered (exit 0), was drafted, submitted and approved, and only
    issuing refused it ("the CAP document is invalid"); an Atalaia identifier carrying a later time
    was even issued. ``render`` now refuses it at the reference's file:line:col, drafting at once
    (``references.0``), and issuing (strict) whichever form it takes."""
    from atalaia.warnings.core import Workflow

    text = DESIGN_DRAFT.replace("msgType: Alert", "msgType: Update").replace(
        "references: []", f"references: ['{ref}']"
    )
    code, out, err = render_text(tmp_path, text)  # --sent 2026-12-04T17:00:00+00:00
    assert code == 1 and out == "", err
    assert err.startswith(
        f"{tmp_path / 'draft.yaml'}:4:14: '{ref}' was sent after this message (2026-12-04T17:00:00+00:00): "
        "at 2026-12-0"
    ), err
    assert render_text(tmp_path, text, sent="2026-12-05T10:00:00+00:00")[0] == 0  # sent after it: fine
    with pytest.raises(CapInvalid, match="after this message"):
        render(Draft.model_validate(YAML(typ="safe").load(text)), CAT, SENT, strict_references=True)
    wf = Workflow()
    data = YAML(typ="safe").load(text)
    data["expires"] = "2026-12-06T06:00:00+00:00"
    now = datetime(2026, 12, 4, 17, tzinfo=UTC)
    _, out = wf.step(
        wf.initial_state(), {"action": "draft", "actor": "a", "role": "operator", "draft": data}, now
    )
    assert not out[-1].ok and out[-1].error.startswith("bad draft: references.0: "), out[-1].error
    _, out = wf.step(
        wf.initial_state(),
        {"action": "draft", "actor": "a", "role": "operator", "draft": data},
        now + timedelta(days=1),
    )
    assert out[-1].ok, out[-1].error


def test_a_polygon_across_the_antimeridian_is_refused(tmp_path: Path) -> None:
    """With a region that reaches longitude 180 (a whole-world or Pacific warnings file), a strip
    drawn across the antimeridian (179.9 to -179.9) rendered as a valid document: every CAP reader
    joins -17,179.9 to -17,-179.9 the long way, so a 20 km strip warned a band round the globe. It
    is refused at the polygon, and the same strip drawn as one polygon each side of 180 renders."""
    from atalaia.streams.settings import CONFIG_DIR
    from atalaia.warnings.draft import polygon_problems

    config = tmp_path / "warnings.yaml"
    config.write_text(
        f"levels: {CONFIG_DIR / 'levels.yaml'}\nareas: [{CONFIG_DIR / 'geo' / 'porto.geojson'}]\n"
        "region: [-90, 90, -180, 180]\n"
    )
    base = "sender: pc@ocha.example\nlevel: red\nevent: Tsunami\nexpires: '2026-12-05T06:00:00+00:00'\n"
    across = "[[-17.0, 179.9], [-17.0, -179.9], [-17.2, -179.9], [-17.2, 179.9]]"
    (tmp_path / "across.yaml").write_text(base + f"area: {{desc: Fiji, polygon: {across}}}\n")
    code, out, err = run(["render", str(tmp_path / "across.yaml"), "--sent", SENT, "--config", str(config)])
    assert code == 1 and out == "", err
    assert err.startswith(
        f"{tmp_path / 'across.yaml'}:5:29: the edge -17,179.9 -> -17,-179.9 crosses the antimeridian"
    )
    halves = (
        "[[[-17.0, 179.9], [-17.0, 180], [-17.2, 180], [-17.2, 179.9]],"
        " [[-17.0, -180], [-17.0, -179.9], [-17.2, -179.9], [-17.2, -180]]]"
    )
    (tmp_path / "halves.yaml").write_text(base + f"area: {{desc: Fiji, polygon: {halves}}}\n")
    code, out, err = run(["render", str(tmp_path / "halves.yaml"), "--sent", SENT, "--config", str(config)])
    assert code == 0, err
    assert validate(out.encode(), bbox=None) == []
    # the closing edge counts too, and the check needs no region
    ring = [(-17.2, -179.9), (-17.0, -179.95), (-17.0, 179.9)]
    assert "crosses the antimeridian" in polygon_problems(ring, None)[0]
    assert polygon_problems([(-17.2, 170.0), (-17.0, 170.1), (-17.0, 179.9)], None) == []


@pytest.mark.parametrize(
    ("codes", "col", "says"),
    [
        ("{DICOFRE: [0131203]}", 29, "unknown DICOFRE geocode '0131203' (did you mean '131203'?)"),
        ("{DICOFRE: ['１３１２０３']}", 29, "unknown DICOFRE geocode"),
        ("{true: ['131203']}", 25, "unknown geocode type 'True'"),  # (at its codes, as any type's)
        ("{EMMA_ID: [pt009]}", 29, "'pt009' is not an EMMA_ID like PT009"),
        ("{EMMA_ID: [PT009]}", 7, "an area needs a desc unless it has DICOFRE or DICO geocodes"),
    ],
)
def test_a_mistyped_geocode_is_the_first_error_not_a_missing_desc(tmp_path: Path, codes, col, says) -> None:
    """An area whose only geocode was mistyped (a leading zero too many) was refused first with
    "an area without geocodes needs a desc", at the area: it has geocodes, and the unknown code,
    named on the next line, is what to fix (its name would have made the desc)."""
    text = f"sender: pc@cm-porto.pt\nlevel: red\nevent: Cheia\nexpires: '2026-12-05T06:00:00+00:00'\narea: {{geocodes: {codes}}}\n"
    code, _, err = render_text(tmp_path, text)
    assert code == 1 and len(err.splitlines()) == 1, err
    assert err.startswith(f"{tmp_path / 'draft.yaml'}:5:{col}: {says}"), err


def test_an_empty_area_is_said_once() -> None:
    with pytest.raises(DraftError) as e:
        load_draft(
            "sender: pc@cm-porto.pt\nlevel: red\nevent: Cheia\narea: {geocodes: {DICOFRE: []}}\n", "d.yaml"
        )
    assert str(e.value) == "d.yaml:4:7: an area needs geocodes, a polygon or a circle"


def _languages(n: int) -> str:
    import itertools
    import string

    tags = [f"en-{a}{b}" for a, b in itertools.islice(itertools.product(string.ascii_uppercase, repeat=2), n)]
    return "{" + ", ".join(f"{t}: Flood" for t in tags) + "}"


def test_a_draft_whose_document_would_be_huge_is_refused_before_it_is_built(tmp_path: Path) -> None:
    """A 12 KB draft (40 languages, 100 areas naming Porto's parishes, within every bound) rendered
    a 30 MB CAP document in 4.5 s and 190 MB (through the console's preview too); issued, its record
    is over the broker's message size (1 MiB by default) and the stage producer's 4 MiB, so the
    warnings stage would stop at it on every restart. A 1 MB description did the same in two
    languages. The document is bounded (MAX_CAP_BYTES), estimated before it is built, and the
    refusal names the part that makes it big; drafting refuses it too."""
    from atalaia.warnings.cap import MAX_CAP_BYTES
    from atalaia.warnings.core import Workflow

    codes = "['131202', '131203', '131210', '131211', '131216', '131217', '131218']"
    head = "sender: pc@cm-porto.pt\nlevel: red\nexpires: '2026-12-05T06:00:00+00:00'\n"
    areas = "area:\n" + "".join(
        f"  - {{desc: a{i}, geocodes: {{DICOFRE: {codes}, DICO: ['1312']}}}}\n" for i in range(100)
    )
    t0 = datetime.now(UTC)
    code, out, err = render_text(tmp_path, head + f"event: {_languages(40)}\n" + areas)
    assert datetime.now(UTC) - t0 < timedelta(seconds=3)
    assert code == 1 and out == "", err
    assert err.startswith(f"{tmp_path / 'draft.yaml'}:6:3: its CAP document would be about "), err
    assert f"over the {MAX_CAP_BYTES // 1024} KiB a warning may be (area: about" in err, err
    long = (
        head
        + "event: {pt-PT: Cheia, en-GB: Flood}\ndescription: "
        + "a" * 400_000
        + "\n"
        + areas[:5]
        + " {geocodes: {DICOFRE: ['131203']}}\n"
    )
    code, _, err = render_text(tmp_path, long.replace("area:\n {", "area: {"))
    assert code == 1 and err.startswith(f"{tmp_path / 'draft.yaml'}:5:14: its CAP document would be"), err
    assert "(description: about 781 KiB in 2 languages" in err, err
    # the workflow refuses it when drafted, not after the approval
    wf = Workflow()
    data = YAML(typ="safe").load(head + f"event: {_languages(40)}\n" + areas)
    _, outs = wf.step(
        wf.initial_state(), {"action": "draft", "actor": "a", "role": "operator", "draft": data}, SENT
    )
    assert not outs[-1].ok and outs[-1].error.startswith("bad draft: area: its CAP document would be"), outs[
        -1
    ]
    # a warning for the whole municipality, every parish, in pt-PT and en-GB: 17 KB, as before
    whole = (
        head
        + "event: {pt-PT: Cheia, en-GB: Flood}\n"
        + f"area: {{geocodes: {{DICOFRE: {codes}, DICO: ['1312']}}}}\n"
    )
    code, out, err = render_text(tmp_path, whole)
    assert code == 0 and 10_000 < len(out.encode()) < 30_000, err


def test_the_built_document_is_bounded_whatever_the_estimate(monkeypatch) -> None:
    from atalaia.warnings import cap

    draft = Draft.model_validate(YAML(typ="safe").load(DESIGN_DRAFT))
    size = len(render(draft, CAT, SENT).xml)
    monkeypatch.setattr(cap, "_size_problem", lambda *a: None)  # (an estimate that missed)
    monkeypatch.setattr(cap, "MAX_CAP_BYTES", size - 1)
    with pytest.raises(CapInvalid, match=f"the CAP document is {size // 1024} KiB, over the"):
        cap.build(draft, CAT, SENT)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.builds(lambda t, k: t * k, st.text(alphabet="a&<>\"'é🌊 ", max_size=200), st.integers(1, 60)),
    languages=st.integers(1, 4),
    areas=st.integers(1, 6),
    codes=st.lists(st.sampled_from(["131202", "131203", "131210", "1312"]), min_size=1, max_size=4),
)
def test_a_draft_the_estimate_lets_through_is_never_over_the_bound(
    monkeypatch, text, languages, areas, codes
) -> None:
    """The estimate is an upper bound: a draft it accepts is never refused by the built document's
    check, which would come only at issue, after the approval (texts full of '&' are written five
    times as long)."""
    from atalaia.warnings import cap

    monkeypatch.setattr(cap, "MAX_CAP_BYTES", 24 * 1024)
    langs = ["pt-PT", "en-GB", "es-ES", "fr-FR"][:languages]
    draft = Draft.model_validate(
        {
            "sender": "pc@cm-porto.pt",
            "level": "red",
            "event": {lang: "Cheia" for lang in langs},
            "description": text or "x",
            "parameters": {"nota&": text[:50] or "x"},
            "area": [
                {
                    "desc": text[:30] or "x",
                    "geocodes": {"DICOFRE": [c for c in codes if len(c) == 6], "DICO": ["1312"]},
                }
                for _ in range(areas)
            ],
        }
    )
    if cap.size_problem(draft, CAT) is None:
        assert len(cap.build(draft, CAT, SENT).xml) <= cap.MAX_CAP_BYTES
