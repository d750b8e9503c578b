"""Legitimate drafts as a Porto operator writes them, which were refused or rendered wrongly (found
by rendering some sixty realistic drafts): each renders valid CAP 1.2 with the right content."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from atalaia.warnings.catalogue import Catalogue
from tests.test_warnings_hostile import BASE, NO_GEOCODES, render_text

NS = {"c": "urn:oasis:names:tc:emergency:cap:1.2"}


def _xml(out: str):
    return etree.fromstring(out.encode())


@pytest.mark.parametrize(
    ("event", "awareness", "category"),
    [
        ("{pt-PT: Vento muito forte, en-GB: Very strong wind}", "1; Wind", "Met"),
        ("{pt-PT: Onda de calor, en-GB: Heat wave}", "5; high-temperature", "Met"),
        ("{pt-PT: Chuva intensa, en-GB: Intense rain}", "10; Rain", "Met"),
        ("{pt-PT: Inundações urbanas, en-GB: Urban flooding}", "12; flooding", None),
        ("{pt-PT: Nevoeiro denso, en-GB: Dense fog}", "4; Fog", "Met"),
        ("{pt-PT: Agitação marítima forte, en-GB: Rough sea}", "7; coastalevent", None),
    ],
)
def test_an_everyday_event_name_gets_its_hazard(tmp_path: Path, event: str, awareness: str, category) -> None:
    """Only a name equal to a hazard's was recognised: "Vento muito forte" went out as category
    Other without the MeteoAlarm awareness_type its readers need."""
    text = BASE.replace("category: Met\n", "").replace(
        "event: {pt-PT: Cheia, en-GB: Flood}", f"event: {event}"
    )
    code, out, err = render_text(tmp_path, text)
    assert code == 0, err
    doc = _xml(out)
    values = {
        p.findtext("c:valueName", namespaces=NS): p.findtext("c:value", namespaces=NS)
        for p in doc.iterfind(".//c:parameter", NS)
    }
    assert values["awareness_type"] == awareness
    expected = category or Catalogue.load().hazard(awareness).category
    assert doc.findtext(".//c:category", namespaces=NS) == expected != "Other"


def test_a_word_inside_another_is_no_hazard() -> None:
    cat = Catalogue.load()
    assert cat.hazard_in("Window cleaning at the hotel") is None
    assert cat.hazard_in("Chuva e vento forte").awareness_type == "10; Rain"  # the first one named


def test_a_circle_with_a_space_after_the_comma_is_written_the_cap_way(tmp_path: Path) -> None:
    text = NO_GEOCODES + '  circle: "41.1487, -8.5853 3"\n'
    code, out, err = render_text(tmp_path, text)
    assert code == 0, err
    assert _xml(out).findtext(".//c:circle", namespaces=NS) == "41.1487,-8.5853 3"


def test_a_web_link_without_a_scheme_is_refused(tmp_path: Path) -> None:
    code, _, err = render_text(tmp_path, BASE + "web: www.cm-porto.pt/protecao-civil\n")
    assert code == 1 and "not a full URL: write it with https://" in err
    code, out, _ = render_text(tmp_path, BASE + "web: https://www.cm-porto.pt/protecao-civil\n")
    assert (
        code == 0
        and _xml(out).findtext(".//c:web", namespaces=NS) == "https://www.cm-porto.pt/protecao-civil"
    )


def test_a_web_link_per_language_goes_into_each_info(tmp_path: Path) -> None:
    """A Porto page in Portuguese and its English version: each language's info carries its own
    link (a single text went into both)."""
    web = "web: {pt-PT: 'https://www.cm-porto.pt/protecao-civil', en-GB: 'https://www.cm-porto.pt/en/civil-protection'}\n"
    code, out, err = render_text(tmp_path, BASE + web)
    assert code == 0, err
    links = {
        info.findtext("c:language", namespaces=NS): info.findtext("c:web", namespaces=NS)
        for info in _xml(out).iterfind("c:info", NS)
    }
    assert links == {
        "pt-PT": "https://www.cm-porto.pt/protecao-civil",
        "en-GB": "https://www.cm-porto.pt/en/civil-protection",
    }
    code, _, err = render_text(tmp_path, BASE + "web: {pt-PT: 'https://x.pt/a', en-GB: x.pt/en}\n")
    assert code == 1 and "'x.pt/en' is not a full URL" in err
    code, _, err = render_text(tmp_path, BASE + "web: {pt-PT: 'https://x.pt/a', fr-FR: 'https://x.pt/fr'}\n")
    assert code == 1 and "language fr-FR is not one of the warning's" in err


def test_a_repeated_point_is_written_once(tmp_path: Path) -> None:
    """A double click, or the closing point clicked again next to the first: zero-length edges
    that some map clients refuse."""
    ring = "[[41.150, -8.620], [41.150, -8.620], [41.152, -8.610], [41.146, -8.605], [41.150, -8.6200001]]"
    code, out, err = render_text(tmp_path, NO_GEOCODES + f"  polygon: {ring}\n")
    assert code == 0, err
    pairs = _xml(out).findtext(".//c:polygon", namespaces=NS).split()
    assert pairs == ["41.15,-8.62", "41.152,-8.61", "41.146,-8.605", "41.15,-8.62"]


def test_event_codes_are_published(tmp_path: Path) -> None:
    """CAP's eventCode (the shared Porto fixture carries ANEPC_EAE: laranja) was refused as an
    unknown key."""
    code, out, err = render_text(tmp_path, BASE + "eventCode: {ANEPC_EAE: laranja, SAME: [FLW, FFW]}\n")
    assert code == 0, err
    info = _xml(out).find("c:info", NS)
    codes = [
        (e.findtext("c:valueName", namespaces=NS), e.findtext("c:value", namespaces=NS))
        for e in info.iterfind("c:eventCode", NS)
    ]
    assert codes == [("ANEPC_EAE", "laranja"), ("SAME", "FLW"), ("SAME", "FFW")]
    code, _, err = render_text(tmp_path, BASE + "eventCode: {ANEPC_EAE: ''}\n")
    assert code == 1 and "empty text" in err
