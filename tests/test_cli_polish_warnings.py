"""``atalaia warnings``: a drill's Portuguese texts are Portuguese, and an Exercise carries the
bilingual mark exactly once in each language, whatever mark its author already typed."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from lxml import etree
from ruamel.yaml import YAML

from atalaia.warnings.cli import warnings as warnings_cli

CAP = "{urn:oasis:names:tc:emergency:cap:1.2}"
MARK = "EXERCÍCIO / EXERCISE"
SENT = "2026-12-04T17:00:00+00:00"


def run(*args: str):
    return CliRunner().invoke(warnings_cli, list(args))


def infos(xml: bytes) -> dict[str, etree._Element]:
    root = etree.fromstring(xml)
    return {i.findtext(f"{CAP}language"): i for i in root.iter(f"{CAP}info")}


# --- 4. warnings drill: pt-PT text in Portuguese, en text in English -----------------------------

# an incident as the incidents stage emits it: its title is made of rule ids and English words
INCIDENT = {
    "id": "e1", "incident": "inc-42", "version": 3, "at": "2026-12-04T18:20:00Z", "change": "updated",
    "changes": ["updated"], "state": "unacknowledged", "active": True, "severity": "high",
    "title": "river-level-high +2 more — Campanhã",
    "correlation": {"parish": "Campanhã"}, "labels": {"parish": "Campanhã", "hazard": "vento"},
    "location": None, "alarms": [], "alarm_count": 3, "actor": "alarm:river-level-high",
    "reason": "", "opened_at": "2026-12-04T18:00:05Z", "acknowledged_by": None, "shelved_until": None,
}  # fmt: skip
ENGLISH = re.compile(r"\b(more|incident|alarms?|severity|since|time|wind|strong|warning|flood)\b", re.I)


def drill(tmp_path: Path) -> dict:
    rec = tmp_path / "incidents.jsonl"
    rec.write_bytes(orjson.dumps(INCIDENT) + b"\n")
    r = run("drill", str(rec))
    assert r.exit_code == 0, r.output
    return YAML(typ="safe").load(r.stdout)


def test_drill_writes_the_portuguese_texts_in_portuguese(tmp_path) -> None:
    d = drill(tmp_path)
    pt, en = d["description"]["pt-PT"], d["description"]["en-GB"]
    assert pt == (
        "Vento forte em Campanhã. Gravidade do incidente: alta; "
        "3 alarmes desde 04/12/2026 18:00 (hora de Lisboa)."
    )
    assert en == (
        "Strong wind in Campanhã. Incident severity: high; 3 alarms since 04/12/2026 18:00 (Lisbon time)."
    )
    for field in ("event", "headline", "description"):
        assert not ENGLISH.search(d[field]["pt-PT"]), (field, d[field]["pt-PT"])
    assert d["event"] == {"pt-PT": "Vento forte", "en-GB": "Strong wind"}  # not MeteoAlarm's "Wind"
    assert d["headline"]["pt-PT"] == "Aviso laranja: Vento forte"


def test_a_public_text_never_carries_the_tenant_or_an_entity_urn(tmp_path) -> None:
    """An incident correlated by the fallback (tenant, entity) and with no parish: the text leaves
    the place out instead of publishing 'porto; urn:ngsi-ld:...' to the population."""
    rec = tmp_path / "incidents.jsonl"
    incident = {
        **INCIDENT,
        "correlation": {"tenant": "porto", "entity": "urn:ngsi-ld:WaterObserved:porto:ribeira-07"},
        "labels": {"hazard": "vento"},
        "title": "river-level-high",
    }
    rec.write_bytes(orjson.dumps(incident) + b"\n")
    r = run("drill", str(rec))
    assert r.exit_code == 0, r.output
    d = YAML(typ="safe").load(r.stdout)
    for lang in ("pt-PT", "en-GB"):
        text = d["description"][lang]
        assert "urn:" not in text and "porto" not in text.lower(), text
    assert d["description"]["pt-PT"].startswith("Vento forte. Gravidade do incidente: alta")


def test_drill_texts_reach_the_cap_document_in_their_language(tmp_path) -> None:
    (tmp_path / "drill.yaml").write_text(yaml_dump(drill(tmp_path)), encoding="utf-8")
    r = run("render", str(tmp_path / "drill.yaml"), "--sent", SENT)
    assert r.exit_code == 0, r.output
    by_lang = infos(r.stdout_bytes)
    assert not ENGLISH.search(by_lang["pt-PT"].findtext(f"{CAP}description"))
    assert "alarms since" in by_lang["en-GB"].findtext(f"{CAP}description")


def yaml_dump(data: dict) -> str:
    import io

    out = io.StringIO()
    YAML().dump(data, out)
    return out.getvalue()


# --- 5. the exercise mark: once per language, whatever the author wrote --------------------------

DRAFT = """\
sender: protecao.civil@cm-porto.pt
status: Exercise
msgType: Alert
level: orange
category: Met
event: {{pt-PT: Cheia, en-GB: Flood}}
headline: {{pt-PT: "{pt}", en-GB: "{en}"}}
description: {{pt-PT: O Douro está a subir., en-GB: The Douro is rising.}}
note: "{note}"
onset: 2026-12-04T18:00:00+00:00
expires: 2026-12-05T06:00:00+00:00
area:
  desc: {{pt-PT: Campanhã, en-GB: Campanhã}}
  geocodes: {{DICOFRE: ["131203"]}}
"""


def render(tmp_path: Path, pt: str, en: str, note: str = "Simulacro anual") -> etree._Element:
    f = tmp_path / "draft.yaml"
    f.write_text(DRAFT.format(pt=pt, en=en, note=note), encoding="utf-8")
    r = run("render", str(f), "--sent", SENT)
    assert r.exit_code == 0, r.output
    return etree.fromstring(r.stdout_bytes)


def headlines(root: etree._Element) -> dict[str, str]:
    return {i.findtext(f"{CAP}language"): i.findtext(f"{CAP}headline") for i in root.iter(f"{CAP}info")}


@pytest.mark.parametrize(
    ("pt", "en"),
    [
        ("Cheia em Campanhã", "Flood in Campanhã"),  # no mark: the mark is added
        ("Exercício: Cheia em Campanhã", "Exercise: Flood in Campanhã"),  # each its own language's
        ("EXERCÍCIO: Cheia em Campanhã", "EXERCISE - Flood in Campanhã"),
        ("exercicio: Cheia em Campanhã", "[Exercise] Flood in Campanhã"),
        ("Exercise: Cheia em Campanhã", "Exercício: Flood in Campanhã"),  # the other language's
        (f"{MARK}: Cheia em Campanhã", f"{MARK}: Flood in Campanhã"),  # already ours
        (f"{MARK}: Exercício: Cheia em Campanhã", f"Exercise: {MARK}: Flood in Campanhã"),
        ("Exercício / Exercise: Cheia em Campanhã", "(Exercise): Flood in Campanhã"),
    ],
)
def test_an_exercise_headline_carries_the_bilingual_mark_exactly_once(tmp_path, pt, en) -> None:
    got = headlines(render(tmp_path, pt, en))
    assert got == {"pt-PT": f"{MARK}: Cheia em Campanhã", "en-GB": f"{MARK}: Flood in Campanhã"}
    for text in got.values():
        assert len(re.findall(r"exerc[ií]cio|exercise", text, re.I)) == 2  # the mark's two words


def test_a_headline_that_only_begins_with_the_word_keeps_it(tmp_path) -> None:
    got = headlines(render(tmp_path, "Exercício de evacuação na Campanhã", "Exercise caution by the river"))
    assert got == {
        "pt-PT": f"{MARK}: Exercício de evacuação na Campanhã",
        "en-GB": f"{MARK}: Exercise caution by the river",
    }


def test_a_headline_that_is_only_a_mark_gives_way_to_the_event(tmp_path) -> None:
    got = headlines(render(tmp_path, "Exercício:", "EXERCISE"))
    assert got == {"pt-PT": f"{MARK}: Cheia", "en-GB": f"{MARK}: Flood"}


@pytest.mark.parametrize(
    ("note", "expected"),
    [("Simulacro anual", f"{MARK}: Simulacro anual"), ("Exercício: simulacro anual", f"{MARK}: simulacro anual"),
     (MARK, MARK), ("Exercise:", MARK)],
)  # fmt: skip
def test_the_exercise_note_carries_the_mark_exactly_once(tmp_path, note, expected) -> None:
    root = render(tmp_path, "Cheia", "Flood", note=note)
    assert root.findtext(f"{CAP}note") == expected


def test_a_drill_on_the_autumn_dst_day_tells_the_two_0145s_apart(tmp_path) -> None:
    """On 25/10/2026 Lisbon's clocks go from 02:00 WEST back to 01:00 WET: incidents opened at
    00:45Z and 01:45Z both read "desde 25/10/2026 01:45 (hora de Lisboa)", an hour apart. An
    ambiguous local time now carries its zone; any other time reads as before."""
    said = {}
    for opened in ("2026-10-25T00:45:00Z", "2026-10-25T01:45:00Z", "2026-10-25T02:45:00Z"):
        rec = tmp_path / "incidents.jsonl"
        rec.write_bytes(orjson.dumps({**INCIDENT, "opened_at": opened}) + b"\n")
        r = run("drill", str(rec))
        assert r.exit_code == 0, r.output
        d = YAML(typ="safe").load(r.stdout)
        said[opened] = (d["description"]["pt-PT"], d["description"]["en-GB"])
    assert "desde 25/10/2026 01:45 WEST (hora de Lisboa)" in said["2026-10-25T00:45:00Z"][0]
    assert "desde 25/10/2026 01:45 WET (hora de Lisboa)" in said["2026-10-25T01:45:00Z"][0]
    assert "since 25/10/2026 01:45 WET (Lisbon time)" in said["2026-10-25T01:45:00Z"][1]
    assert "desde 25/10/2026 02:45 (hora de Lisboa)" in said["2026-10-25T02:45:00Z"][0]


def test_the_sms_text_of_a_warning_tells_ambiguous_times_apart() -> None:
    from atalaia.warnings.catalogue import Catalogue
    from atalaia.warnings.draft import Draft
    from atalaia.warnings.short_text import sms_text

    d = Draft.model_validate(
        {
            "sender": "pc@cm-porto.pt",
            "level": "orange",
            "event": "Cheia",
            "onset": "2026-10-25T00:30:00Z",
            "expires": "2026-10-25T01:30:00Z",
            "area": {"geocodes": {"DICOFRE": ["131203"]}},
        }
    )
    assert "De 25/10 01:30 WEST a 25/10 01:30 WET." in sms_text(d, Catalogue.load(), max_segments=4).text


def test_the_sms_text_takes_the_portuguese_text_whatever_the_case_of_its_language_tag() -> None:
    from atalaia.warnings.catalogue import Catalogue
    from atalaia.warnings.draft import Draft
    from atalaia.warnings.short_text import sms_text

    d = Draft.model_validate(
        {
            "sender": "pc@cm-porto.pt",
            "level": "orange",
            "event": {"en-GB": "Flood", "PT-pt": "Cheia"},
            "instruction": {"en-GB": "Avoid the riverside", "PT-pt": "Evite a zona ribeirinha"},
            "expires": "2026-10-25T01:30:00Z",
            "area": {"geocodes": {"DICOFRE": ["131203"]}},
        }
    )
    text = sms_text(d, Catalogue.load()).text
    assert "Cheia" in text and "Evite a zona ribeirinha" in text and "Flood" not in text, text


def test_drill_on_a_file_that_is_not_text_says_so_in_one_line(tmp_path: Path) -> None:
    """A binary file (a wrong path, a compressed export) was a UnicodeDecodeError traceback."""
    (tmp_path / "incidents.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00\xd0\xff" * 10)
    r = CliRunner().invoke(warnings_cli, ["drill", str(tmp_path / "incidents.jsonl.gz")])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), (r.output, r.exception)
    assert "not UTF-8 text" in r.output, r.output
