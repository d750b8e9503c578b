"""`atalaia warnings render` as a civil-protection author meets it: drafts written to DESIGN.md's
contract ("Warning draft → CAP") in the ways people write YAML, each either rendered to CAP that
the shared OASIS XSD and ../shared/fixtures/cap/validate_cap.py accept, or refused with
``file:line:col`` errors and exit 1 (never a traceback, never a document); the console's path
(``field_errors`` + ``render``) agrees with the file's."""

from __future__ import annotations

import importlib.util
import io
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from lxml import etree
from ruamel.yaml import YAML

from atalaia.rules.loader import load_texts
from atalaia.warnings.cap import render
from atalaia.warnings.catalogue import Catalogue
from atalaia.warnings.cli import warnings as warnings_cli
from atalaia.warnings.loader import field_errors

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
    """What the shared XSD and validate_cap.py say of a document ([] when both accept it)."""
    script = SHARED / "cap" / "validate_cap.py"
    if not script.exists():
        pytest.skip("../shared/fixtures/cap is absent")
    spec = importlib.util.spec_from_file_location("shared_validate_cap", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    doc = etree.parse(io.BytesIO(xml))
    schema = etree.XMLSchema(etree.parse(str(SHARED / "cap" / "CAP-v1.2.xsd")))
    out = [] if schema.validate(doc) else [str(schema.error_log)]
    out += mod.extra_checks(doc)
    out += [
        t.decode()
        for t in re.findall(rb"<(?:sent|onset|expires|effective)>([^<]+)<", xml)
        if not CAP_TIME.fullmatch(t)
    ]
    return out


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
