"""`atalaia warnings render` as a civil-protection author meets it: drafts written to DESIGN.md's
contract ("Warning draft → CAP") in the ways people write YAML, each either rendered to CAP that
the shared OASIS XSD and ../shared/fixtures/cap/validate_cap.py accept, or refused with
``file:line:col`` errors and exit 1 (never a traceback, never a document); the console's path
(``field_errors`` + ``render``) agrees with the file's."""

from __future__ import annotations

import io
import json
import math
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st
from lxml import etree
from ruamel.yaml import YAML

from atalaia.rules.loader import load_texts
from atalaia.warnings.cap import render
from atalaia.warnings.catalogue import Catalogue
from atalaia.warnings.cli import warnings as warnings_cli
from atalaia.warnings.loader import field_errors
from tests.test_warnings_cap import shared_checks

SHARED = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
CONFIG = Path(__file__).resolve().parents[1] / "config"
CAT = Catalogue.load()
SENT = "2026-12-04T17:00:00+00:00"
ERROR_LINE = re.compile(r"^.+:(\d+):(\d+): .+$")
CAP_TIME = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00")

BASE = """\
sender: protecao.civil@cm-porto.pt
level: orange
event: {pt-PT: Cheia, en-GB: Flood}
onset: 2026-12-04T18:00:00+00:00
expires: 2026-12-05T06:00:00+00:00
area:
  desc: {pt-PT: Campanhã, en-GB: Campanhã}
  geocodes: {DICOFRE: ["131203"]}
"""


def shared_problems(xml: bytes) -> list[str]:
    """What the shared XSD and validate_cap.py say of a document ([] when both accept it), and
    the CAP time format of each of its times."""
    return shared_checks(xml) + [
        t.decode()
        for t in re.findall(rb"<(?:sent|onset|expires|effective)>([^<]+)<", xml)
        if not CAP_TIME.fullmatch(t)
    ]


def render_file(tmp_path: Path, text: str | bytes, *args: str) -> tuple[int, bytes, str]:
    f = tmp_path / "draft.yaml"
    f.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    r = CliRunner().invoke(warnings_cli, ["render", str(f), *args])
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception  # a traceback is never an answer
    return r.exit_code, r.stdout_bytes, r.stderr


def refused(tmp_path: Path, text: str, *args: str) -> list[tuple[int, int, str]]:
    """The ``(line, col, line text)`` of each error of a refused draft (exit 1, nothing on stdout)."""
    code, out, err = render_file(tmp_path, text, *args)
    assert code == 1, (code, out[:300], err)
    assert out == b""
    found = []
    for line in err.splitlines():
        m = ERROR_LINE.match(line)
        assert m, f"not file:line:col: {line!r}"
        found.append((int(m[1]), int(m[2]), line))
    assert found
    return found


def rendered(tmp_path: Path, text: str, sent: str = SENT) -> bytes:
    code, out, err = render_file(tmp_path, text, "--sent", sent)
    assert code == 0, err
    assert shared_problems(out) == []
    return out


# --------------------------------------------------------------------------- YAML tags
@pytest.mark.parametrize(
    ("old", "new", "want"),
    [
        ('["131203"]', "[!!str 131203]", b"<value>131203</value>"),  # the YAML way to say "text"
        ('["131203"]', "[!<tag:yaml.org,2002:str> 131203]", b"<value>131203</value>"),
        ("level: orange", "level: !!str orange", b"<severity>Severe</severity>"),
        (
            "onset: 2026-12-04T18:00:00+00:00",
            "onset: !!timestamp 2026-12-04T18:00:00+01:00",
            b"<onset>2026-12-04T17:00:00+00:00<",
        ),
        (
            "expires: 2026-12-05T06:00:00+00:00",
            "expires: !!str 2026-12-05T06:00:00Z",
            b"<expires>2026-12-05T06:00:00+00:00<",
        ),
    ],
)
def test_a_value_tagged_with_a_core_yaml_tag_is_read_as_written(
    tmp_path: Path, old: str, new: str, want: bytes
) -> None:
    """An author who tags a code ``!!str 131203`` (as YAML guides teach, so it is not a number) had
    the draft refused: "'DICOFRE' must be text, got TaggedScalar(value='131203', style=None,
    tag=Tag('tag:yaml.org,2002:str'))" (ruamel's round-trip reader kept the tag); every other
    Atalaia YAML file (rules, settings) said the same of any ``!!str``."""
    assert old in BASE
    xml = rendered(tmp_path, BASE.replace(old, new) + "eventCode: {ANEPC_EAE: !!str 0289}\n")
    assert want in xml
    assert b"<value>0289</value>" in xml


@pytest.mark.parametrize(
    ("tagged", "shows"),
    [
        ("headline: !foo bar", "!foo"),
        ("headline: !!python/object/apply:os.system ['echo pwned']", "!!python/object/apply:os.system"),
        ("parameters: !Ref {a: b}", "!Ref"),
    ],
)
def test_an_unknown_yaml_tag_is_an_error_where_it_is_written(tmp_path: Path, tagged: str, shows: str) -> None:
    """Before: "'headline' must be text, got TaggedScalar(value='bar', style=None, tag=Tag('!foo'))"."""
    [(line, col, message)] = refused(tmp_path, BASE + tagged + "\n", "--sent", SENT)
    assert (line, col) == (9, len(tagged.split(":")[0]) + 3)
    assert f"unknown YAML tag {shows}" in message
    assert "TaggedScalar" not in message


def test_a_rule_file_reads_a_str_tag_as_text_too() -> None:
    rules = (CONFIG / "rules" / "hydro.yaml").read_text(encoding="utf-8")
    assert "id: river-level-high" in rules
    loaded = load_texts([("f.yaml", rules.replace("id: river-level-high", "id: !!str river-level-high", 1))])
    assert "river-level-high" in [r.rule.id for r in loaded.rules]


# --------------------------------------------------------------------------- --sent
@pytest.mark.parametrize("sent", ["", " ", "\t"])
def test_an_empty_sent_option_is_refused_not_read_as_now(tmp_path: Path, sent: str) -> None:
    """``render --sent "$SENT"`` with the variable unset rendered with the time now (another
    ``sent`` and identifier at every run, exit 0): a script that pins ``sent`` to get the same
    document twice silently got a different one."""
    code, out, err = render_file(tmp_path, BASE, "--sent", sent)
    assert (code, out) == (2, b"")
    assert err.startswith("--sent: ") and "is not a date-time" in err


@pytest.mark.parametrize(
    ("sent", "utc"),
    [
        ("2026-03-29T00:59:59Z", "2026-03-29T00:59:59+00:00"),  # the last second of WET
        ("2026-03-29T02:00:00+01:00", "2026-03-29T01:00:00+00:00"),  # the first of WEST
        ("2026-10-25T01:30:00+01:00", "2026-10-25T00:30:00+00:00"),  # 01:30 WEST ...
        ("2026-10-25T01:30:00+00:00", "2026-10-25T01:30:00+00:00"),  # ... and 01:30 WET, an hour apart
        ("2026-10-25T01:30:00-00:00", "2026-10-25T01:30:00+00:00"),
        ("2026-10-25T01:30:00.999999+05:45", "2026-10-24T19:45:00+00:00"),
        ("2026-10-25 01:30:00 -03:30", "2026-10-25T05:00:00+00:00"),
    ],
)
def test_sent_at_any_offset_and_dst_edge_is_written_in_utc(tmp_path: Path, sent: str, utc: str) -> None:
    xml = rendered(tmp_path, BASE, sent)
    assert f"<sent>{utc}</sent>".encode() in xml
    stamp = utc[:19].replace("-", "").replace(":", "").replace("T", "")
    assert f"<identifier>PT-CM-PORTO-{stamp}-".encode() in xml
    assert rendered(tmp_path, BASE, sent) == xml  # the same draft and sent: the same document


# --------------------------------------------------------------------------- several drawn polygons
RIBEIRA = [(41.1405, -8.6155), (41.1425, -8.6105), (41.1395, -8.6085)]
FREIXO = [(41.1455, -8.5705), (41.1475, -8.5655), (41.1445, -8.5635), (41.1455, -8.5705)]
POLYGONS_AS_WRITTEN = {
    "lists of [lat, lon]": [[list(p) for p in RIBEIRA], [list(p) for p in FREIXO]],
    "CAP texts (copied from <polygon>s)": [
        " ".join(f"{a},{b}" for a, b in ring) for ring in (RIBEIRA, FREIXO)
    ],
    "lists of 'lat,lon'": [[f"{a},{b}" for a, b in ring] for ring in (RIBEIRA, FREIXO)],
    "CAP texts with a space after each comma": [
        " ".join(f"{a}, {b}" for a, b in ring) for ring in (RIBEIRA, FREIXO)
    ],
    "mixed": [[list(p) for p in RIBEIRA], " ".join(f"{a},{b}" for a, b in FREIXO)],
}
WANT_POLYGONS = [
    b"<polygon>41.1405,-8.6155 41.1425,-8.6105 41.1395,-8.6085 41.1405,-8.6155</polygon>",
    b"<polygon>41.1455,-8.5705 41.1475,-8.5655 41.1445,-8.5635 41.1455,-8.5705</polygon>",
]


@pytest.mark.parametrize("form", sorted(POLYGONS_AS_WRITTEN))
def test_several_polygons_in_any_form_one_polygon_takes(tmp_path: Path, form: str) -> None:
    """A polygon may be written ``[[lat, lon], ...]``, ``["lat,lon", ...]`` or as CAP text, but
    several polygons only as lists of ``[lat, lon]``: two CAP texts copied from an earlier
    warning's ``<polygon>`` elements were refused as one polygon ("'polygon': ['41.1405',
    '-8.6155 41.1425', ...] is not a [lat, lon] pair"), by render and by the console alike."""
    draft = {
        "sender": "protecao.civil@cm-porto.pt",
        "level": "yellow",
        "event": {"pt-PT": "Cheia", "en-GB": "Flood"},
        "area": {
            "desc": {"pt-PT": "Margem do Douro", "en-GB": "Douro bank"},
            "polygon": POLYGONS_AS_WRITTEN[form],
        },
    }
    buf = io.StringIO()
    YAML().dump(draft, buf)
    xml = rendered(tmp_path, buf.getvalue())
    for want in WANT_POLYGONS:
        assert xml.count(want) == 2  # (once in each language)
    # the console's path: the same draft as JSON
    checked, errors = field_errors(json.loads(json.dumps(draft)), CAT)
    assert errors == []
    assert render(checked, CAT, SENT).xml == xml


def test_a_polygon_of_lat_lon_texts_is_still_one_polygon(tmp_path: Path) -> None:
    one = BASE + "  polygon: ['41.1405,-8.6155', '41.1425, -8.6105', '41.1395,-8.6085']\n"
    assert rendered(tmp_path, one).count(WANT_POLYGONS[0]) == 2
    pairs = BASE + "  polygon: [[41.1405, -8.6155], ['41.1425', '-8.6105'], [41.1395, -8.6085]]\n"
    assert rendered(tmp_path, pairs).count(WANT_POLYGONS[0]) == 2


# --------------------------------------------------------------------------- drafts from the contract
# Levels, hazards and parishes come from the shared fixtures themselves (levels.yaml, porto.geojson),
# not from Atalaia's catalogue, so that a level or code the catalogue lost would show.
def _shared_levels() -> dict:
    y = YAML(typ="safe").load((SHARED / "levels.yaml").read_text(encoding="utf-8"))
    severity = {}
    for row in y["scale"]:
        if row["ipma_awarenessLevelID"]:
            severity[row["ipma_awarenessLevelID"]] = row["cap_severity"]
        severity[row["anepc"]["colour_pt"]] = row["cap_severity"]  # verde, azul, amarelo, ...
    severity["blue"] = severity["azul"]
    hazards = [
        h[k] for h in y["hazard_types"] for k in ("ipma", "meteoalarm_awareness_type", "sdm_subCategory")
    ]
    return {"severity": severity, "hazards": [h for h in hazards if h]}


def _shared_parishes() -> list[str]:
    geo = json.loads((SHARED / "geo" / "porto.geojson").read_text(encoding="utf-8"))
    codes = {str(f["properties"].get("dicofre") or "") for f in geo["features"]}
    return sorted(c for c in codes if len(c) == 6)


LEVELS = _shared_levels() if (SHARED / "levels.yaml").exists() else {"severity": {}, "hazards": []}
PARISHES = _shared_parishes() if (SHARED / "geo" / "porto.geojson").exists() else []
NEEDS_SHARED = pytest.mark.skipif(
    not LEVELS["severity"] or not PARISHES, reason="../shared/fixtures is absent"
)

CHARS = st.characters(
    codec="utf-8", exclude_categories=("Cs", "Cc", "Co", "Cn"), exclude_characters="\ufffe\uffff"
)
CHARS = CHARS | st.sampled_from(
    ["<", ">", "&", '"', "'", "\n", "\t", "]", "\u202e", "\u200f", "\u200d", "🌊"]
)
SEEN = st.text(CHARS, min_size=1, max_size=40).filter(
    lambda s: any(not c.isspace() and c.isprintable() for c in s)
)
TEXT = st.one_of(
    SEEN,
    st.sampled_from(
        [
            *("<![CDATA[x]]>", "a & b < c", "# no comment", "key: value", "- dash", "~", "null"),
            *("yes", "0x1F", "0289", "1e3", ".inf", "2026-12-04", "*star", "&anchor", "!tag"),
            *("|pipe", "{brace}", "[list]", "👨\u200d👩\u200d👧 família"),
        ]
    ),
    st.text(CHARS, min_size=300, max_size=2000).filter(lambda s: any(c.isalnum() for c in s)),
)
LANGS = st.lists(
    st.sampled_from(["pt-PT", "en-GB", "es-ES", "fr-FR", "ar", "he-IL", "zh-Hant-TW", "uk", "pt-BR"]),
    min_size=1,
    max_size=4,
    unique_by=str.lower,
)
OFFSETS = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
LISBON_EDGES = [
    datetime(2026, 3, 29, 0, 59, 59, tzinfo=UTC),
    datetime(2026, 3, 29, 1, 0, tzinfo=UTC),
    datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
    datetime(2026, 10, 25, 1, 30, tzinfo=UTC),
]


@st.composite
def instants(draw) -> datetime:
    t = draw(st.datetimes(datetime(2024, 1, 1), datetime(2034, 1, 1)).map(lambda t: t.replace(tzinfo=UTC)))
    t = draw(st.sampled_from([t, t, t, *LISBON_EDGES]))
    return t.astimezone(draw(OFFSETS))


def written(draw, t: datetime) -> str:
    """A time as an author writes it: an offset, Z or -00:00, 'T' or a space, fractional seconds."""
    how = draw(st.integers(0, 3))
    if how == 0 and t.utcoffset() == timedelta(0):
        return t.strftime("%Y-%m-%dT%H:%M:%S") + draw(st.sampled_from(["Z", "z", "+00:00", "-00:00"]))
    if how == 1:
        return t.isoformat(sep=" ")
    return t.isoformat() if how == 2 else t.replace(microsecond=0).isoformat()


@st.composite
def drafts(draw) -> tuple[dict, datetime]:
    """A draft valid by DESIGN.md's contract, and the time it is sent."""
    langs = draw(LANGS)

    def lang_text() -> str | dict:
        if langs == ["pt-PT"] and draw(st.booleans()):
            return draw(TEXT)
        keys = [x for x in langs if draw(st.booleans())] or langs[:1]
        return {draw(st.sampled_from([k, k.lower(), k.upper()])): draw(TEXT) for k in keys}

    sent = draw(instants())
    msg = draw(st.sampled_from(["Alert", "Update", "Cancel"]))
    sender = draw(
        st.sampled_from(["protecao.civil@cm-porto.pt", "pc@cm-porto.example", "Aviso@Prociv.gov.pt"])
    )
    d: dict = {"sender": sender, "status": draw(st.sampled_from(["Actual", "Exercise", "Test", "exercise"]))}
    d["msgType"] = draw(st.sampled_from([msg, msg.lower()]))
    if msg != "Cancel" or draw(st.booleans()):
        level = draw(st.sampled_from(sorted(LEVELS["severity"])))
        d["level"] = draw(st.sampled_from([level, level.capitalize(), level.upper()]))
    if msg != "Alert":
        refs = []
        for _ in range(draw(st.integers(1, 3))):
            before = sent - draw(st.timedeltas(timedelta(0), timedelta(days=20)))
            ident = draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,30}", fullmatch=True))
            refs.append(
                draw(
                    st.sampled_from(
                        [
                            f"{sender},{ident},{written(draw, before).replace(' ', 'T')}",
                            f"PT-CM-PORTO-{before.astimezone(UTC):%Y%m%d%H%M%S}-0123456789",
                            ident,
                        ]
                    )
                )
            )
        d["references"] = refs if len(refs) > 1 or draw(st.booleans()) else refs[0]
    if draw(st.booleans()):
        d["identifier"] = draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,40}", fullmatch=True))
        assume(d["identifier"] not in str(d.get("references")))
    if draw(st.booleans()):
        d["hazard"] = draw(st.sampled_from(LEVELS["hazards"]))
    for key, values in (
        ("urgency", ["Immediate", "Expected", "Future", "Past", "Unknown"]),
        ("certainty", ["Observed", "Likely", "Possible", "Unlikely", "Unknown"]),
        ("category", ["Geo", "Met", "Safety", "Rescue", "Fire", "Health", "Env", "Infra", "CBRNE", "Other"]),
        ("responseType", ["Shelter", "Evacuate", "Prepare", "Avoid", "Monitor", "AllClear", "None"]),
    ):
        if draw(st.booleans()):
            many = key in ("category", "responseType") and draw(st.booleans())
            d[key] = draw(
                st.lists(st.sampled_from(values), min_size=1, max_size=3) if many else st.sampled_from(values)
            )
    d["event"] = draw(TEXT) if langs == ["pt-PT"] and draw(st.booleans()) else {x: draw(TEXT) for x in langs}
    for key in ("headline", "description", "instruction", "senderName", "contact", "audience"):
        if draw(st.booleans()):
            d[key] = lang_text()
    if draw(st.booleans()):
        d["web"] = draw(
            st.sampled_from(["https://www.cm-porto.pt/protecao-civil", "https://prociv.gov.pt/a?x=1&y=%20"])
        )
    if draw(st.booleans()):
        names = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,10}", fullmatch=True)
        names = names.filter(lambda k: k not in ("awareness_level", "awareness_type", "ANEPC_EAE"))
        d["parameters"] = draw(st.dictionaries(names, TEXT, max_size=3))
    onset = draw(st.none() | instants())
    if onset is not None:
        d["onset"] = written(draw, onset)
        if draw(st.booleans()):
            d["effective"] = written(draw, onset - draw(st.timedeltas(timedelta(0), timedelta(days=2))))
    if draw(st.booleans()):  # after onset (and effective): before or after sent, both allowed
        d["expires"] = written(
            draw, (onset or sent) + draw(st.timedeltas(timedelta(seconds=1), timedelta(days=10)))
        )
    areas = []
    for _ in range(draw(st.integers(0 if msg == "Cancel" else 1, 3))):
        a: dict = {}
        kinds = draw(
            st.sets(st.sampled_from(["DICOFRE", "DICO", "EMMA_ID", "polygon", "circle", "desc"]), min_size=1)
        )
        if "DICOFRE" in kinds:
            codes = draw(st.lists(st.sampled_from(PARISHES), min_size=1, max_size=4))
            codes = [int(c) if draw(st.booleans()) else c for c in codes]
            a["geocodes"] = {
                draw(st.sampled_from(["DICOFRE", "dicofre"])): codes if len(codes) > 1 else codes[0]
            }
        if "DICO" in kinds:
            a.setdefault("geocodes", {})["DICO"] = draw(st.sampled_from(["1312", 1312, ["1312"]]))
        if "EMMA_ID" in kinds:
            a.setdefault("geocodes", {})["EMMA_ID"] = "PT009"
        if "polygon" in kinds:  # star-shaped around a point of Porto: simple, with an area
            lat, lon = draw(st.floats(41.0, 41.3)), draw(st.floats(-8.8, -8.4))
            n = draw(st.integers(3, 16))
            ring = []
            for k in range(n):
                angle = (k + draw(st.floats(0, 0.5))) * 2 * math.pi / n
                r = draw(st.floats(0.002, 0.05))
                ring.append((round(lat + r * math.sin(angle), 6), round(lon + r * math.cos(angle), 6)))
            ring += [ring[0]] if draw(st.booleans()) else []
            a["polygon"] = draw(
                st.sampled_from(
                    [
                        [list(p) for p in ring],
                        [f"{x},{y}" for x, y in ring],
                        " ".join(f"{x},{y}" for x, y in ring),
                    ]
                )
            )
        if "circle" in kinds:
            a["circle"] = (
                f"{draw(st.floats(41.0, 41.3)):.5f},{draw(st.floats(-8.8, -8.4)):.5f} {draw(st.floats(0.01, 20)):.3f}"
            )
        if "desc" in kinds or not kinds & {"DICOFRE", "DICO"}:
            a["desc"] = lang_text()
        if not kinds & {"DICOFRE", "DICO", "EMMA_ID", "polygon", "circle"}:
            a["circle"] = "41.15,-8.61 1"
        areas.append(a)
    if areas:
        d["area"] = areas[0] if len(areas) == 1 and draw(st.booleans()) else areas
    return d, sent


def as_yaml(d: dict, flow: bool, bom: bool, crlf: bool) -> str:
    y = YAML()
    y.default_flow_style = flow
    y.allow_unicode = True
    y.width = 4096
    buf = io.StringIO()
    y.dump(d, buf)
    text = buf.getvalue()
    # (ruamel writes some texts in flow style that it cannot read back, "?0": not our concern)
    try:
        back = YAML(typ="safe").load(text)
    except Exception:
        back = None
    assume(json.dumps(back, sort_keys=True) == json.dumps(d, sort_keys=True))
    return ("\ufeff" if bom else "") + (text.replace("\n", "\r\n") if crlf else text)


@NEEDS_SHARED
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(drafts(), st.booleans(), st.booleans(), st.booleans())
def test_every_draft_the_contract_allows_renders_the_same_valid_cap_both_ways(
    tmp_path_factory: pytest.TempPathFactory,
    generated: tuple[dict, datetime],
    flow: bool,
    bom: bool,
    crlf: bool,
) -> None:
    d, sent = generated
    text = as_yaml(d, flow, bom, crlf)
    note(text)
    tmp = tmp_path_factory.mktemp("draft")
    xml = rendered(tmp, text, sent.isoformat())
    root = etree.fromstring(xml)
    q = "{urn:oasis:names:tc:emergency:cap:1.2}"
    severity = LEVELS["severity"][d["level"].lower()] if "level" in d else "Unknown"
    assert {i.findtext(q + "severity") for i in root.iter(q + "info")} == {severity}
    assert root.findtext(q + "sent") == sent.astimezone(UTC).replace(microsecond=0).isoformat()
    assert root.findtext(q + "sender") == d["sender"]
    if "identifier" in d:
        assert root.findtext(q + "identifier") == d["identifier"]
    if d["msgType"].lower() != "alert":
        assert len(root.findtext(q + "references").split()) >= 1
    assert rendered(tmp, text, sent.isoformat()) == xml  # deterministic
    draft, errors = field_errors(json.loads(json.dumps(d)), CAT)  # the console's path
    assert errors == []
    assert render(draft, CAT, sent.isoformat()).xml == xml


BREAKS = {  # (how the contract is broken, the text the error's line holds)
    "level": (lambda d: d.update(level="púrpura"), "púrpura"),
    "status": (lambda d: d.update(status="Draft"), "Draft"),
    "time without offset": (
        lambda d: d.update(onset="2026-12-04T18:00:00", expires=None),
        "2026-12-04T18:00:00",
    ),
    "date only": (lambda d: d.update(expires="2026-12-05"), "2026-12-05"),
    "expires at onset": (
        lambda d: d.update(onset="2026-12-04T18:00:00Z", expires="2026-12-04T19:00:00+01:00", effective=None),
        "19:00:00+01:00",
    ),
    "unknown key": (lambda d: d.update(headlin="x"), "headlin"),
    "sender with a comma": (lambda d: d.update(sender="pc,x@cm-porto.pt"), "pc,x@"),
    "identifier with a space": (lambda d: d.update(identifier="PT 1"), "PT 1"),
    "control character": (lambda d: d.update(description="sirene\x07"), "sirene"),
    "language of no info": (lambda d: d.update(event={"pt-PT": "Cheia"}, headline={"xx-ZZ": "x"}), "xx-ZZ"),
    "update without references": (
        lambda d: d.update(msgType="Update", references=None, level="red"),
        "Update",
    ),
    "reference not a triple": (lambda d: d.update(msgType="Cancel", references=["a,b"]), "a,b"),
    "unknown parish": (lambda d: d.update(area={"geocodes": {"DICOFRE": ["131299"]}}), "131299"),
    "lon,lat polygon": (
        lambda d: d.update(
            area={"desc": "Ribeira", "polygon": [[-8.61, 41.14], [-8.60, 41.15], [-8.59, 41.14]]}
        ),
        "-8.61",
    ),
    "circle lon,lat": (
        lambda d: d.update(area={"desc": "Ribeira", "circle": "-8.61,41.14 2"}),
        "-8.61,41.14",
    ),
    "no area": (lambda d: d.update(area=[], msgType="Alert", references=None, level="red"), None),
    "text where a list": (lambda d: d.update(category={"a": "Met"}), "Met"),
}


@NEEDS_SHARED
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(drafts(), st.sampled_from(sorted(BREAKS)))
def test_a_draft_that_breaks_the_contract_is_refused_where_it_breaks_it_both_ways(
    tmp_path_factory: pytest.TempPathFactory, generated: tuple[dict, datetime], how: str
) -> None:
    d, sent = generated
    change, shown = BREAKS[how]
    change(d)
    d = {k: v for k, v in d.items() if v is not None}
    text = as_yaml(d, False, False, False)
    note(text)
    errors = refused(tmp_path_factory.mktemp("draft"), text, "--sent", sent.isoformat())
    if shown is not None:
        lines = text.splitlines()
        assert any(shown in lines[line - 1] for line, _, _ in errors), (shown, errors)
    _, problems = field_errors(json.loads(json.dumps(d)), CAT)  # the console refuses it too
    assert problems, how


# --------------------------------------------------------------------------- YAML oddities, placed
def test_a_second_document_in_the_file_is_said_in_words_at_its_start(tmp_path: Path) -> None:
    """Before: 'draft.yaml:9:1: but found another document' (ruamel's words alone)."""
    [(line, col, message)] = refused(tmp_path, BASE + "---\n" + BASE)
    assert (line, col) == (9, 1)
    assert "a second YAML document starts here" in message


@pytest.mark.parametrize(
    ("extra", "line", "col", "key"),
    [
        ("~: x\n", 9, 1, "None"),
        ("true: x\n", 9, 1, "True"),
        ("? [a, b]\n: c\n", 9, 3, "('a', 'b')"),
        ("incident: inc-1\narea2: {null: 3}\n", 10, 1, "area2"),
    ],
)
def test_a_key_that_is_no_text_is_refused_where_it_is_written(
    tmp_path: Path, extra: str, line: int, col: int, key: str
) -> None:
    """An unknown key written ``~:``, ``true:`` or as a list was refused at 1:1 (the file's start),
    not at the key."""
    errors = refused(tmp_path, BASE + extra)
    assert [(x, y) for x, y, _ in errors] == [(line, col)]
    assert f"unknown key '{key}'" in errors[0][2]
