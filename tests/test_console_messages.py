"""Messages people can act on: every template (pt-PT and en-GB, escalation and resolved; subject,
SMS and email) carries the value rounded with its unit, the local time with its zone and the link
to the incident page; the rule's summary and runbook annotations are used."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atalaia.notifiers.model import IncidentSnapshot, Notification
from atalaia.notifiers.render import TEMPLATES, format_value, render
from atalaia.notifiers.sms import fit_keeping, is_gsm7, segments, transliterate
from atalaia.notifiers.testing import incident_event
from atalaia.rules.info import rule_catalog

ROOT = Path(__file__).resolve().parents[1]
RULES = rule_catalog([ROOT / "config" / "rules"])
URL = "https://atalaia.example/"


def notification(kind: str, at: str, value: float, rule: str = "river-rising-fast") -> Notification:
    ev = incident_event(at=at, state="closed" if kind == "resolved" else "unacknowledged")
    ev["alarms"][0].update(rule=rule, value=value)
    ev["opened_at"] = at
    step = -1 if kind == "resolved" else 0
    return Notification(ev["incident"], "p", 0, step, 0, "ana", kind, at, IncidentSnapshot.from_event(ev))


@pytest.mark.parametrize("lang", ["pt-PT", "en-GB"])
@pytest.mark.parametrize("kind", ["escalation", "resolved"])
@pytest.mark.parametrize(
    ("at", "local"),
    [("2026-01-28T10:00:00Z", "28/01 10:00 WET"), ("2026-07-01T10:00:00Z", "01/07 11:00 WEST")],
)
def test_every_template_has_unit_local_time_and_link(lang, kind, at, local):
    n = notification(kind, at, 0.21199999999999974)
    m = render(n, lang, console_url=URL, rules=RULES)
    link = "https://atalaia.example/incidents/inc-douro-1"
    value = "0,21 m" if lang == "pt-PT" else "0.21 m"
    for part in ("short", "body"):
        text = getattr(m, part)
        # the SMS leads with the rule author's summary, verbatim (this one is written in English)
        shown = value if part == "body" else "0.21 m"
        assert shown in text, f"{lang} {kind} {part}: no rounded value with unit in {text!r}"
        assert local in text, f"{lang} {kind} {part}: no local time with zone in {text!r}"
        assert link in text, f"{lang} {kind} {part}: no link in {text!r}"
        assert "0.21199999" not in text
    assert "rose 0.21 m in 15 minutes" in m.short, "the rule's summary annotation leads"


def test_every_template_is_covered():
    assert {(lang, kind) for lang, kind, _ in TEMPLATES} == {
        (lang, kind) for lang in ("pt-PT", "en-GB") for kind in ("escalation", "resolved")
    }


def test_runbook_and_description_when_there_is_no_summary():
    n = notification("escalation", "2026-01-28T10:00:00Z", 3512.44, rule="river-flow-high")
    body = render(n, "pt-PT", console_url=URL, rules=RULES).body
    assert "3512 m³/s" in body
    n = notification("escalation", "2026-01-28T10:00:00Z", 4.7, rule="river-level-high")
    body = render(n, "en-GB", console_url=URL, rules=RULES).body
    assert "Runbook: https://protecaocivil.cm-porto.pt/runbooks/cheias-douro" in body
    assert "river level 4.70 m" in body, "the summary annotation, rendered with the alarm's value"


def test_values_are_rounded_for_reading():
    assert format_value(0.21199999999999974, "m", "pt-PT") == "0,21 m"
    assert format_value(12.349, "mm", "en-GB") == "12.3 mm"
    assert format_value(3512.5, "m³/s", "en-GB") == "3512 m³/s"  # banker's rounding of .5 at 0 digits
    assert format_value(3.0, None, "en-GB") == "3"
    assert format_value(-0.001, "m", "en-GB") == "0 m"
    assert format_value(None, "m", "en-GB") == "?"


@pytest.mark.parametrize("segments_allowed", [1, 2])
def test_a_shortened_sms_keeps_the_whole_link(segments_allowed):
    n = notification("escalation", "2026-01-28T10:00:00Z", 0.212)
    n.snapshot.title = "Cheia na Ribeira, Miragaia, São Nicolau e Vitória — " * 4
    m = render(n, "pt-PT", console_url=URL, rules=RULES)
    text = fit_keeping(m.short[: -len(m.link)], m.link, segments_allowed)
    assert segments(text)[0] <= segments_allowed
    assert text.endswith(" https://atalaia.example/incidents/inc-douro-1"), text
    assert "..." in text


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400), st.text(min_size=1, max_size=60).filter(str.strip), st.integers(1, 3))
def test_fit_keeping_never_cuts_the_tail_when_it_fits(head, tail, max_segments):
    out = fit_keeping(head, tail, max_segments)
    assert segments(out)[0] <= max_segments
    norm_tail = " ".join(tail.split())
    if segments("... " + transliterate(norm_tail))[0] <= max_segments and is_gsm7(transliterate(norm_tail)):
        assert out.endswith(transliterate(norm_tail)) or out.endswith(norm_tail)
