"""Hostile warning drafts, CAP files and incident events (the offline CLI probe's findings): each is
refused with a ``file:line:col`` error (or a clean CLI error), never emitted as CAP that breaks CAP 1.2
rules and never a traceback; and every document that is emitted passes the shared validator."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from atalaia.warnings.cap import CapInvalid, identifier_for, render, sent_of_identifier, validate
from atalaia.warnings.catalogue import Catalogue
from atalaia.warnings.cli import warnings as warnings_cli
from atalaia.warnings.draft import Draft, polygon_problems, problems
from atalaia.warnings.from_incident import draft_from_incident
from atalaia.warnings.loader import DraftError, field_errors, load_draft
from tests.test_warnings_cap import shared_checks

SHARED_CAP = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "cap"
CAT = Catalogue.load()
SENT = "2026-12-04T17:00:00+00:00"

BASE = """\
sender: protecao.civil@cm-porto.pt
status: Actual
msgType: Alert
level: orange
category: Met
event: {pt-PT: Cheia, en-GB: Flood}
headline: {pt-PT: Cheia no Douro, en-GB: Douro flood}
onset: 2026-12-04T18:00:00+00:00
expires: 2026-12-05T06:00:00+00:00
area:
  desc: {pt-PT: Campanhã, en-GB: Campanhã}
  geocodes: {DICOFRE: ["131203"]}
"""
NO_GEOCODES = BASE.replace('  geocodes: {DICOFRE: ["131203"]}\n', "")


def render_text(tmp_path: Path, text: str, sent: str = SENT) -> tuple[int, str, str]:
    f = tmp_path / "draft.yaml"
    f.write_text(text, encoding="utf-8")
    r = CliRunner().invoke(warnings_cli, ["render", str(f), "--sent", sent])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    if r.exit_code == 0:
        assert validate(r.stdout.encode()) == []
        assert shared_checks(r.stdout.encode()) == []
    return r.exit_code, r.stdout, r.stderr


def refused(tmp_path: Path, text: str, line: int, col: int, message: str) -> None:
    code, out, err = render_text(tmp_path, text)
    assert code == 1 and out == "", (out, err)
    assert "Traceback" not in err
    assert any(
        f"draft.yaml:{line}:{col}: " in e and message in e.split(f"draft.yaml:{line}:{col}: ", 1)[1]
        for e in err.splitlines()
    ), err


def test_the_base_draft_renders(tmp_path: Path) -> None:
    code, _, err = render_text(tmp_path, BASE)
    assert code == 0, err


# --------------------------------------------------------------------------- a. ASCII digits only
def test_non_ascii_digits_in_a_circle_or_an_emma_id_are_refused(tmp_path: Path) -> None:
    circle = NO_GEOCODES + '  circle: "٤١.١٥,-٨.٦ ٥"\n'
    refused(tmp_path, circle, 12, 11, "'٤١.١٥,-٨.٦ ٥' is not a circle 'lat,lon radius_km'")
    emma = BASE.replace('geocodes: {DICOFRE: ["131203"]}', 'geocodes: {EMMA_ID: ["PT٠٠٩"]}')
    refused(tmp_path, emma, 12, 24, "'PT٠٠٩' is not an EMMA_ID like PT009")
    ok = NO_GEOCODES + '  circle: "41.15,-8.6 5"\n'
    assert render_text(tmp_path, ok)[0] == 0


@pytest.mark.parametrize("pair", ["1_0", "nan", "inf", "٤١.١٥"])
def test_a_polygon_coordinate_is_an_ascii_decimal(tmp_path: Path, pair: str) -> None:
    text = NO_GEOCODES + f'  polygon: ["{pair},-8.6", "41.16,-8.59", "41.15,-8.58"]\n'
    code, _, err = render_text(tmp_path, text)
    assert code == 1 and "draft.yaml:12:12: " in err and "is not a pair of numbers" in err, err


def test_validate_refuses_non_ascii_numbers_in_cap_files(tmp_path: Path) -> None:
    good = render(load_draft(NO_GEOCODES + '  circle: "41.15,-8.6 5"\n', "d.yaml"), CAT, SENT).xml
    assert validate(good) == []
    circle = good.replace(b"41.15,-8.6 5", "٤١.١٥,-٨.٦ ٥".encode())
    assert any("circle: bad format" in p for p in validate(circle, bbox=None, strict=False))
    poly = good.replace(b"<circle>41.15,-8.6 5</circle>", b"<polygon>1_0,1 2,2 3,3 1_0,1</polygon>")
    assert any("polygon: non-numeric pair" in p for p in validate(poly, bbox=None, strict=False))
    f = tmp_path / "u.xml"
    f.write_bytes(circle)
    r = CliRunner().invoke(warnings_cli, ["validate", str(f)])
    assert r.exit_code == 1 and "circle: bad format" in r.stderr


# --------------------------------------------------------------------------- b. scope
def test_scope_private_needs_addresses_and_restricted_needs_a_restriction(tmp_path: Path) -> None:
    private = BASE.replace("msgType: Alert\n", "msgType: Alert\nscope: Private\n")
    refused(tmp_path, private, 4, 8, "scope Private needs 'addresses'")
    restricted = BASE.replace("msgType: Alert\n", "msgType: Alert\nscope: Restricted\n")
    refused(tmp_path, restricted, 4, 8, "scope Restricted needs 'restriction'")
    code, out, err = render_text(tmp_path, private + "addresses: ana@cm-porto.pt rui@cm-porto.pt\n")
    assert code == 0, err
    assert "<addresses>ana@cm-porto.pt rui@cm-porto.pt</addresses>" in out
    code, out, err = render_text(tmp_path, restricted + "restriction: serviços municipais\n")
    assert code == 0, err
    assert "<restriction>serviços municipais</restriction>" in out


def test_validate_refuses_a_private_document_without_addresses() -> None:
    good = render(load_draft(BASE, "d.yaml"), CAT, SENT).xml
    private = good.replace(b"<scope>Public</scope>", b"<scope>Private</scope>")
    assert "scope Private without addresses" in validate(private, strict=False)
    restricted = good.replace(b"<scope>Public</scope>", b"<scope>Restricted</scope>")
    assert "scope Restricted without restriction" in validate(restricted, strict=False)


# --------------------------------------------------------------------------- c. an area with no geography
def test_an_area_whose_geocode_lists_are_empty_is_refused(tmp_path: Path) -> None:
    text = BASE.replace('geocodes: {DICOFRE: ["131203"]}', "geocodes: {DICOFRE: []}")
    refused(tmp_path, text, 11, 3, "an area needs geocodes, a polygon or a circle")


# --------------------------------------------------------------------------- d. degenerate polygons
@pytest.mark.parametrize(
    ("polygon", "message"),
    [
        (
            "[[41.1500001,-8.60],[41.1500002,-8.60],[41.1500003,-8.60]]",
            "got 1 distinct once rounded to 6 decimals as CAP writes them",
        ),
        (
            "[[41.15,-8.6],[41.16,-8.6],[41.17,-8.6]]",
            "the polygon encloses no area: its points lie on one line",
        ),
        ("[[41.15,-8.6],[41.15001,-8.6],[41.15,-8.59999]]", "the polygon encloses almost no area"),
        (
            "[[41.15,-8.6],[41.16,-8.59],[41.16,-8.6],[41.15,-8.59]]",
            "the polygon crosses itself: its edges 41.15,-8.6 -> 41.16,-8.59 and 41.16,-8.6 -> 41.15,-8.59 meet",
        ),
        (  # a figure of eight through one point
            "[[41.15,-8.6],[41.16,-8.6],[41.16,-8.59],[41.15,-8.6],[41.14,-8.61],[41.14,-8.6]]",
            "the polygon crosses itself",
        ),
        (  # a spike: the ring runs back along its own edge
            "[[41.15,-8.6],[41.16,-8.6],[41.16,-8.59],[41.16,-8.62]]",
            "the polygon crosses itself",
        ),
    ],
)
def test_degenerate_polygons_are_refused(tmp_path: Path, polygon: str, message: str) -> None:
    refused(tmp_path, NO_GEOCODES + f"  polygon: {polygon}\n", 12, 12, message)


def test_simple_polygons_given_either_way_round_and_closed_render(tmp_path: Path) -> None:
    for poly in (
        "[[41.15,-8.60],[41.16,-8.59],[41.15,-8.58]]",
        "[[41.15,-8.58],[41.16,-8.59],[41.15,-8.60],[41.15,-8.58]]",
        "[[41.14,-8.62],[41.145,-8.60],[41.14,-8.59],[41.135,-8.61]]",  # concave
        "[[41.15,-8.60],[41.15,-8.60],[41.16,-8.59],[41.15,-8.58]]",  # a point repeated in a row
    ):
        code, _, err = render_text(tmp_path, NO_GEOCODES + f"  polygon: {poly}\n")
        assert code == 0, (poly, err)


def test_the_crossing_check_has_a_bounded_input() -> None:
    ring = [(41.0 + i * 1e-4, -8.6 + (i % 2) * 1e-3) for i in range(1001)]
    assert polygon_problems(ring) == ["a drawn polygon has at most 1000 points, got 1001"]


# --------------------------------------------------------------------------- e. blank texts
def test_blank_plain_texts_are_refused_as_the_mapping_form_is(tmp_path: Path) -> None:
    text = """\
sender: protecao.civil@cm-porto.pt
level: orange
event: Cheia
headline: "   "
description: ""
area: [{geocodes: {DICOFRE: ["131203"]}, desc: "  "}, {circle: "41.15,-8.6 2", desc: ""}]
"""
    code, _, err = render_text(tmp_path, text)
    assert code == 1
    for where in ("4:11", "5:14", "6:48", "6:86"):
        assert f"draft.yaml:{where}: empty text" in err, err
    mapping = BASE.replace("headline: {pt-PT: Cheia no Douro, en-GB: Douro flood}", 'headline: {pt-PT: " "}')
    refused(tmp_path, mapping, 7, 19, "empty text")


def test_invisible_texts_offsets_with_seconds_and_urls_with_bad_ports_are_refused(
    tmp_path: Path,
) -> None:
    """A headline of zero-width spaces (or Hangul fillers) reached every phone as an empty line;
    an offset with seconds (+01:00:30, which Python reads) is no CAP offset; a web page at port
    99999 is no URL."""
    for invisible in ("\\u200b\\u200b", "\\u2060 \\u200e", "\\u3164"):
        headline = f'headline: {{pt-PT: "{invisible}", en-GB: Douro flood}}'
        text = BASE.replace("headline: {pt-PT: Cheia no Douro, en-GB: Douro flood}", headline)
        refused(tmp_path, text, 7, 19, "empty text")
    seconds = BASE.replace("onset: 2026-12-04T18:00:00+00:00", "onset: 2026-12-04T18:00:00+01:00:30")
    refused(tmp_path, seconds, 8, 8, "hours and minutes")
    for web, why in (("https://[::1]:99999/", "Port out of range"), ("https://[::1/avisos", "Invalid IPv6")):
        refused(tmp_path, BASE + f'web: "{web}"\n', 13, 6, why)


# --------------------------------------------------------------------------- f. references
def test_a_reference_with_a_forbidden_identifier_or_sender_is_refused_at_its_line(tmp_path: Path) -> None:
    update = BASE.replace("msgType: Alert\n", "msgType: Update\nreferences:\n  - {}\n")
    refused(
        tmp_path,
        update.replace("{}", '"pc@cm-porto.pt,ID<1,2026-12-04T17:00:00Z"'),
        5,
        5,
        "its identifier 'ID<1' may not contain spaces, commas, '<' or '&'",
    )
    refused(
        tmp_path,
        update.replace("{}", '"pc@cm-porto.pt,ID&1,2026-12-04T17:00:00Z"'),
        5,
        5,
        "its identifier 'ID&1' may not contain",
    )
    refused(
        tmp_path,
        update.replace("{}", '"a b,ID-1,2026-12-04T17:00:00Z"'),
        5,
        5,
        "its sender 'a b' may not contain spaces",
    )
    code, out, err = render_text(tmp_path, update.replace("{}", '"pc@cm-porto.pt,ID-1,2026-12-04T17:00:00Z"'))
    assert code == 0, err
    assert "<references>pc@cm-porto.pt,ID-1,2026-12-04T17:00:00+00:00</references>" in out


def test_validate_refuses_a_reference_holding_a_restricted_character() -> None:
    d = load_draft(
        BASE.replace(
            "msgType: Alert\n", "msgType: Update\nreferences: ['pc@x.pt,ID-1,2026-12-04T16:00:00Z']\n"
        )
    )
    xml = render(d, CAT, SENT).xml
    bad = xml.replace(b"pc@x.pt,ID-1,", b"pc@x.pt,ID&amp;1,")
    assert any("references: entry" in p for p in validate(bad, strict=False))


# --------------------------------------------------------------------------- g. lone surrogates
def test_a_lone_surrogate_is_a_field_error_not_a_crash() -> None:
    data = {
        "sender": "pc@cm-porto.pt",
        "level": "orange",
        "event": "Cheia",
        "headline": "\ud800 x",
        "area": {"geocodes": {"DICOFRE": ["131203"]}},
    }
    draft, errors = field_errors(data, CAT)
    assert draft is None
    assert any(
        e["field"].startswith("headline")
        and e["message"] == "surrogate U+D800 cannot be part of a CAP document"
        for e in errors
    ), errors
    for field in ("note", "sender", "identifier", "incident"):  # every text of the draft
        draft, errors = field_errors({**data, "headline": "ok", field: "x\udc00"}, CAT)
        assert draft is None and [e["field"] for e in errors] == [field], errors
    data["headline"] = "ok"
    data["parameters"] = {"\udfff": "x"}
    draft, errors = field_errors(data, CAT)
    assert draft is not None and errors == [
        {
            "field": "parameters.\udfff",
            "message": "a parameter name is a non-empty text without control characters",
        }
    ]
    with pytest.raises(CapInvalid):
        render(draft, CAT, SENT)


# --------------------------------------------------------------------------- h. drill on malformed events
@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"version": "x"}, "\"version\" is an integer, not 'x'"),
        ({"version": None}, '"version" is an integer, not None'),
        ({"version": True}, '"version" is an integer, not True'),
        ({"correlation": ["porto"]}, '"correlation" is a mapping of labels, not list'),
        ({"labels": "flood"}, '"labels" is a mapping of labels, not str'),
        ({"labels": {"hazard": [5]}}, '"labels".hazard is a text, not [5]'),
        ({"alarms": "a"}, '"alarms" is a list, not str'),
        ({"alarms": [{"labels": ["x"]}]}, '"alarms[0].labels" is a mapping of labels, not list'),
    ],
)
def test_drill_refuses_malformed_incident_events(tmp_path: Path, event: dict, message: str) -> None:
    f = tmp_path / "inc.jsonl"
    f.write_bytes(
        b'{"incident":"i0","version":1}\n' + orjson.dumps({"incident": "i1", "severity": "high", **event})
    )
    r = CliRunner().invoke(warnings_cli, ["drill", str(f)])
    assert r.exit_code == 1, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert f"{f}:2:1: incident 'i1': {message}" in r.output, r.output


@pytest.mark.parametrize("valid_for", ["0s", "100000000d", "31d", "٥h", "-1s"])
def test_drill_valid_for_is_positive_and_bounded(tmp_path: Path, valid_for: str) -> None:
    f = tmp_path / "inc.jsonl"
    f.write_text(
        '{"incident":"i1","severity":"high","correlation":{"parish":"Campanhã"}}\n', encoding="utf-8"
    )
    r = CliRunner().invoke(warnings_cli, ["drill", str(f), f"--valid-for={valid_for}"])
    assert r.exit_code == 2 and "--valid-for" in r.output, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)


def test_a_drill_draft_renders_and_a_numeric_hazard_label_is_no_crash(tmp_path: Path) -> None:
    f = tmp_path / "inc.jsonl"
    f.write_text(
        '{"incident":"i1","severity":"high","labels":{"hazard":5},"correlation":{"parish":"Campanhã"}}\n',
        encoding="utf-8",
    )
    r = CliRunner().invoke(warnings_cli, ["drill", str(f), "--valid-for", "30d"])
    assert r.exit_code == 0, r.output
    code, _, err = render_text(tmp_path, r.stdout.split("\n", 1)[1])
    assert code == 0, err


def test_draft_from_incident_skips_labels_it_cannot_read() -> None:
    """The live path (escalation's propose_warning, the console) gets a draft, never a crash."""
    for bad in (
        {"correlation": ["porto"]},
        {"labels": "flood"},
        {"labels": {"hazard": 5}},
        {"labels": {"hazard": ["flood"]}, "alarms": "x"},
        {"alarms": [{"labels": "x", "location": "y"}, 3]},
    ):
        d = draft_from_incident({"incident": "i1", "severity": "high", **bad}, CAT, "pc@cm-porto.pt", SENT)
        assert d["incident"] == "i1" and "area" not in d
    d = draft_from_incident(
        {"incident": "i1", "severity": "high", "correlation": {"dicofre": 131203}},
        CAT,
        "pc@cm-porto.pt",
        SENT,
    )
    assert d["area"] == {"geocodes": {"DICOFRE": ["131203"]}}


# --------------------------------------------------------------------------- i. lower severity
def test_validate_refuses_lat_lon_swapped_and_passes_other_places(tmp_path: Path) -> None:
    """A polygon that lies in the served region once lat and lon are exchanged is the GeoJSON
    mistake (validate_cap.py's "lat,lon swapped?"); a document about another place is valid CAP
    and passes, unless --in-region asks for Atalaia's own rule."""
    swapped = SHARED_CAP / "invalid" / "polygon-lon-lat-swapped.xml"
    if not swapped.exists():
        pytest.skip("../shared/fixtures/cap is absent")
    r = CliRunner().invoke(warnings_cli, ["validate", str(swapped)])
    assert r.exit_code == 1 and "lat,lon swapped?" in r.stderr
    assert CliRunner().invoke(warnings_cli, ["validate", "--anywhere", str(swapped)]).exit_code == 0
    for example in sorted((SHARED_CAP / "examples").glob("*.xml")) + sorted(
        (SHARED_CAP / "constructed").glob("*.xml")
    ):
        r = CliRunner().invoke(warnings_cli, ["validate", str(example)])
        assert r.exit_code == 0, (example.name, r.output)
    elsewhere = SHARED_CAP / "examples" / "oasis-a2-severe-thunderstorm.xml"
    r = CliRunner().invoke(warnings_cli, ["validate", "--in-region", str(elsewhere)])
    assert r.exit_code == 1 and "outside the served region" in r.stderr
    porto = SHARED_CAP / "constructed" / "porto-rain-orange-alert.xml"
    assert CliRunner().invoke(warnings_cli, ["validate", "--in-region", str(porto)]).exit_code == 0


def test_an_identifier_before_year_1000_keeps_four_digits() -> None:
    d = load_draft(BASE, "d.yaml")
    ident = identifier_for(d, "0999-01-01T05:00:00+00:00")
    assert "-09990101050000-" in ident
    assert sent_of_identifier(ident) == "0999-01-01T05:00:00+00:00"


def test_parameter_names_are_texts(tmp_path: Path) -> None:
    refused(tmp_path, BASE + "parameters: {? [a, b] : c}\n", 13, 16, "a parameter name is a text, not")
    code, _, err = render_text(tmp_path, BASE + "parameters: {01: 2, null: x}\n")
    assert code == 1
    assert "draft.yaml:13:21: a parameter name is a text, not None" in err
    # a name written as digits is the text written (it was refused while YAML read it as the
    # number 1, which would have published "1" for "01"): kept exactly, never changed
    assert "not 1" not in err and "01" not in err
    code, out, err = render_text(tmp_path, BASE + "parameters: {01: 2}\n")
    assert code == 0 and "<valueName>01</valueName>" in out, err
    code, out, err = render_text(tmp_path, BASE + 'parameters: {"1": "2", EMMA_ID: PT009}\n')
    assert code == 0, err
    assert "<valueName>1</valueName>" in out
    refused(tmp_path, BASE + 'parameters: {x: " "}\n', 13, 17, "empty text")


def test_languages_equal_ignoring_case_are_one_language(tmp_path: Path) -> None:
    text = BASE.replace("event: {pt-PT: Cheia, en-GB: Flood}", "event: {pt-PT: A, PT-pt: B}").replace(
        "headline: {pt-PT: Cheia no Douro, en-GB: Douro flood}\n", ""
    )
    text = text.replace("desc: {pt-PT: Campanhã, en-GB: Campanhã}", "desc: Campanhã")
    refused(tmp_path, text, 6, 26, "language PT-pt given twice")


def test_problems_agree_for_the_api() -> None:
    """The console checks drafts with the same problems() as render."""
    d = Draft.model_validate(
        {
            "sender": "pc@cm-porto.pt",
            "level": "orange",
            "event": "Cheia",
            "scope": "Private",
            "headline": " ",
            "area": {"desc": "x", "geocodes": {"DICOFRE": []}},
        }
    )
    found = {(".".join(map(str, loc)), msg) for loc, msg in problems(d, CAT)}
    assert ("headline", "empty text") in found
    assert ("area.0", "an area needs geocodes, a polygon or a circle") in found
    assert any(loc == "scope" for loc, _ in found)
    with pytest.raises(CapInvalid):
        render(d, CAT, SENT)


def test_a_refused_draft_never_reaches_the_builder() -> None:
    with pytest.raises(DraftError):
        load_draft(NO_GEOCODES + "  polygon: [[41.15,-8.6],[41.16,-8.6],[41.17,-8.6]]\n", "d.yaml")
