"""Escalation YAML validation (file:line:col errors), SMS length rules, templates, signatures
and the ``atalaia notify`` CLI."""

from __future__ import annotations

import subprocess
import sys
import unicodedata
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from atalaia.notifiers.config import (
    ConfigError,
    format_duration,
    load_config,
    load_config_text,
    parse_duration,
)
from atalaia.notifiers.model import IncidentSnapshot, Notification
from atalaia.notifiers.render import render
from atalaia.notifiers.signing import sign_headers, verify_signature
from atalaia.notifiers.sms import fit, is_gsm7, segments, transliterate
from atalaia.notifiers.testing import incident_event

REPO = Path(__file__).resolve().parents[1]
ATALAIA = [sys.executable, "-m", "atalaia.streams.cli"]

GOOD = """\
targets:
  a: {channel: sms, url: "smseagle://t@127.0.0.1/+351912000001"}
routes:
  - {match: {min_severity: high}, policy: p}
policies:
  p:
    steps:
      - {targets: [a], wait: 5m}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_config_text(text, "esc.yaml")
    return e.value.problems


def test_example_config_is_valid():
    cfg = load_config(REPO / "config" / "escalation.yaml")
    assert cfg.timezone == "Europe/Lisbon" and {"cheia", "grave", "informar"} <= set(cfg.policies)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            GOOD.replace("wait: 5m", "wait: 5x"),
            "esc.yaml:8:30: policies.p.steps.0.wait: invalid duration '5x'",
        ),
        (GOOD.replace("policy: p}", "policy: q}"), "esc.yaml:4:43: unknown policy 'q' (known: p)"),
        (GOOD.replace("[a]", "[a, b]"), "esc.yaml:8:23: unknown target or rotation 'b'"),
        (GOOD.replace("channel: sms", "channel: fax"), "esc.yaml:2:16: targets.a.channel: Input should be"),
        (
            GOOD.replace("min_severity: high", "min_severity: severe"),
            "esc.yaml:4:28: routes.0.match.min_severity",
        ),
        (GOOD + "  extra: 1\n", "esc.yaml:9:10: policies.extra"),
        (
            GOOD.replace("{targets: [a], wait: 5m}", "{targets: [a], wait: 5m, repet: 2}"),
            "esc.yaml:8:41: policies.p.steps.0.repet: Extra inputs are not permitted",
        ),
        ("targets: [a\n", "esc.yaml:1:10:"),
        ("timezone: Europe/Porto\n", "esc.yaml:1:11: unknown time zone 'Europe/Porto'"),
        (
            GOOD + "schedules:\n  r: {type: rotation, members: [zz], start: 2026-01-05T09:00, shift: 7d}\n",
            "esc.yaml:10:33: unknown target 'zz'",
        ),
        (GOOD.replace("[a]", "[{target: a, during: office}]"), "unknown hours schedule 'office'"),
        (
            "targets:\n  w: {channel: webhook, url: http://x}\n",
            "esc.yaml:2:3: targets.w: a webhook target needs a secret",
        ),
    ],
)
def test_errors_point_at_file_line_col(text, expected):
    found = problems(text)
    assert any(p.startswith(expected) or expected in p for p in found), found


@given(st.integers(0, 10**7))
def test_duration_round_trip(seconds):
    td = timedelta(seconds=seconds)
    assert parse_duration(format_duration(td)) == td


@given(st.text(max_size=600), st.integers(1, 4))
def test_sms_fit_respects_segments_and_keeps_a_prefix(text, max_segments):
    out = fit(text, max_segments)
    n, _ = segments(out)
    assert n <= max_segments
    norm = " ".join(text.split())
    norm = transliterate(norm) if not is_gsm7(norm) else norm
    if segments(norm)[0] <= max_segments:
        assert out == norm
    else:
        stem = out.removesuffix("...").removesuffix("…")
        assert norm.startswith(stem) and len(out) < len(norm) + 3


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=400), st.integers(1, 3))
def test_sms_fit_without_transliteration_is_segment_exact(text, max_segments):
    out = fit(text, max_segments, translit=False)
    assert segments(out)[0] <= max_segments
    assert not (out and "\ud800" <= out[-1] <= "\udbff")


PORTUGUESE = "aáàâãeéêiíoóôõuúüçAÁÀÂÃEÉÊIÍOÓÔÕUÚÇ ,.-ºª"


@given(st.text(alphabet=st.sampled_from(PORTUGUESE), max_size=200), st.integers(1, 3))
def test_portuguese_text_decomposed_is_sent_as_composed(text, max_segments):
    """Text in NFD (a letter, then its accent: what a PDF or a Mac may paste) was transliterated one
    code point at a time: every combining accent became "?", "Campanhã" was sent as "Campanha?"
    and "Chéia" as "Che?ia". Decomposed or composed, the SMS is the same and has no "?"."""
    nfd = unicodedata.normalize("NFD", text)
    assert transliterate(nfd) == transliterate(text) and "?" not in transliterate(nfd)
    assert fit(nfd, max_segments) == fit(text, max_segments)


def test_sms_segment_boundaries():
    assert segments("a" * 160) == (1, "gsm7") and segments("a" * 161) == (2, "gsm7")
    assert segments("a" * 306) == (2, "gsm7") and segments("a" * 307) == (3, "gsm7")
    assert segments("€" * 80) == (1, "gsm7") and segments("€" * 81) == (2, "gsm7")  # two septets each
    assert segments("a" * 159 + "€") == (2, "gsm7")
    # 306 septets fit 2×153, but the escape pair may not straddle the segment boundary: 3 segments
    assert segments("a" * 152 + "€" + "a" * 152) == (3, "gsm7")
    assert segments("ã" * 70) == (1, "ucs2") and segments("ã" * 71) == (2, "ucs2")
    assert segments("🌊" * 35) == (1, "ucs2") and segments("🌊" * 36) == (2, "ucs2")  # surrogate pairs
    assert transliterate("Nível crítico — inundação em Campanhã") == "Nivel critico - inundacao em Campanha"
    assert fit("Atenção " * 40, 1).endswith("...") and segments(fit("Atenção " * 40, 1)) == (1, "gsm7")


def test_templates_in_both_languages():
    snap = IncidentSnapshot.from_event(incident_event(severity="critical"))
    n = Notification("inc-douro-1", "p", 0, 1, 2, "ana", "escalation", "2026-03-01T10:30:00Z", snap)
    pt, en = render(n, "pt-PT"), render(n, "en-GB")
    assert pt.subject == "[Atalaia CRÍTICO] Nível do Douro elevado na Ribeira"
    assert "Escalão 2, aviso 3" in pt.short and "Tier 2, reminder 2" in en.short
    assert "Aberto: 01/03 09:58 WET (hora de Lisboa)" in pt.body  # winter: Lisbon = UTC
    summer = Notification(
        "i",
        "p",
        0,
        0,
        0,
        "a",
        "resolved",
        "2026-07-01T10:00:00Z",
        IncidentSnapshot.from_event(
            incident_event(at="2026-07-01T10:00:00Z", state="closed", acknowledged_by="op.maria")
        ),
    )
    assert "encerrado às 01/07 11:00" in render(summer, "pt-PT").body  # WEST = UTC+1
    assert "Acknowledged by op.maria" in render(summer, "en-GB").short
    with pytest.raises(ValueError):
        render(n, "fr-FR")


def test_an_incident_of_several_rules_is_titled_in_the_message_language():
    """An incident of three rules is titled "flood-level +2 more — Campanhã"; a pt-PT SMS or
    email said "+2 more" in the middle of Portuguese (digests too)."""
    from dataclasses import replace

    snap = IncidentSnapshot.from_event(incident_event(severity="critical"))
    snap = replace(snap, title="flood-level +2 more — Campanhã")
    n = Notification("inc-douro-1", "p", 0, 1, 2, "ana", "escalation", "2026-03-01T10:30:00Z", snap)
    pt, en = render(n, "pt-PT"), render(n, "en-GB")
    assert "flood-level +2 outras — Campanhã" in pt.body and "more" not in pt.body + pt.short
    assert "flood-level +2 more — Campanhã" in en.body
    digest = Notification(
        "d", "p", 0, 1, 0, "ana", "digest", "2026-03-01T10:30:00Z", snap, digest=[snap, snap]
    )
    assert "flood-level +2 outras — Campanhã" in render(digest, "pt-PT").body
    plain = replace(snap, title="a rule named more — Campanhã")
    assert "a rule named more — Campanhã" in render(replace(n, snapshot=plain), "pt-PT").body


@given(st.binary(max_size=200), st.text(min_size=1, max_size=20), st.integers(1_600_000_000, 2_000_000_000))
def test_signature_verifies_only_the_exact_body_and_fresh_timestamps(body, secret, ts):
    h = sign_headers(secret, body, ts)
    t, sig = h["X-Atalaia-Timestamp"], h["X-Atalaia-Signature"]
    assert verify_signature(secret, body, t, sig, now=ts + 10)
    assert not verify_signature(secret, body + b"x", t, sig, now=ts + 10)
    assert not verify_signature(secret, body, str(ts + 1), sig, now=ts + 10)
    assert not verify_signature(secret, body, t, sig, now=ts + 301)  # too old: replay
    assert verify_signature(secret, body, t, "v1=00, " + sig, now=ts)  # key rotation: any listed one


def test_cli_check_ok_and_errors(tmp_path):
    ok = subprocess.run(
        [*ATALAIA, "notify", "check", str(REPO / "config/escalation.yaml")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stderr
    assert "ok: 9 targets" in ok.stdout and "not set" in ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("wait: 5m", "wait: soon"))
    r = subprocess.run([*ATALAIA, "notify", "check", str(bad)], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.startswith(f"{bad}:8:30: policies.p.steps.0.wait: invalid duration")


def test_cli_simulate_and_log(tmp_path):
    cfg = tmp_path / "esc.yaml"
    cfg.write_text(GOOD.replace("{targets: [a], wait: 5m}", "{targets: [a], wait: 5m, repeat: 2}"))
    events = tmp_path / "ev.jsonl"
    events.write_bytes(
        orjson.dumps(incident_event())
        + b"\n"
        + orjson.dumps(
            incident_event(version=2, at="2026-03-01T10:07:00Z", state="acknowledged", change="acknowledged")
        )
        + b"\n"
    )
    r = subprocess.run(
        [*ATALAIA, "notify", "simulate", str(cfg), str(events)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    lines = [orjson.loads(x) for x in r.stdout.splitlines()]
    assert [(x["due"], x["repeat"]) for x in lines] == [
        ("2026-03-01T10:00:00Z", 0),
        ("2026-03-01T10:05:00Z", 1),
    ]
    r = subprocess.run(
        [*ATALAIA, "notify", "log", "--db", str(tmp_path / "none.sqlite")], capture_output=True, text=True
    )
    assert r.returncode == 1 and "no delivery log" in r.stderr


def test_cli_log_per_incident(tmp_path):
    from atalaia.notifiers.log import SQLiteDeliveryLog
    from atalaia.notifiers.model import DeliveryResult

    log = SQLiteDeliveryLog(tmp_path / "d.sqlite")
    snap = IncidentSnapshot.from_event(incident_event())
    notes = [
        Notification(i, "p", 0, 0, 0, "ana", "escalation", "2026-03-01T10:00:00Z", snap) for i in ("a", "b")
    ]
    log.enqueue([(n, "sms") for n in notes], 1.0)
    for n in notes:
        log.begin(n, "sms", 1, 2.0)
        log.finish(n, 1, DeliveryResult("retryable", error="HTTP 503"), "waiting", 2.5, 12.0, next_at=3.0)
        log.begin(n, "sms", 2, 3.0)
        log.finish(n, 2, DeliveryResult("delivered", detail="1 segment(s) gsm7"), "delivered", 3.2, 8.0)
    log.close()
    r = subprocess.run(
        [*ATALAIA, "notify", "log", "--db", str(tmp_path / "d.sqlite"), "--incident", "b", "--json"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    (row,) = [orjson.loads(x) for x in r.stdout.splitlines()]
    assert (row["incident"], row["status"], row["attempts"], row["last_error"]) == ("b", "delivered", 2, None)
    r = subprocess.run(
        [*ATALAIA, "notify", "log", "--db", str(tmp_path / "d.sqlite"), "--incident", "a", "--attempts"],
        capture_output=True,
        text=True,
    )
    lines = r.stdout.splitlines()
    assert (
        len(lines) == 2
        and "#1 retryable" in lines[0]
        and "HTTP 503" in lines[0]
        and "#2 delivered" in lines[1]
    )


@pytest.mark.parametrize(
    "edit",
    [
        ("wait: 5m", "wait: 1180591620717411303424"),  # a number of seconds no timedelta holds
        ("wait: 5m", "wait: 99999999999999999d"),
        ("routes:", "timezone: " + "x" * 5000 + "\nroutes:"),  # a zone name no file can have
    ],
)
def test_a_hostile_value_is_a_positioned_error_not_a_crash(edit) -> None:
    found = problems(GOOD.replace(*edit))
    assert found and all(p.startswith("esc.yaml:") for p in found), found


@given(st.text(alphabet=st.sampled_from("ab \r\n\t\x00\x1b\x85\u2028"), max_size=30))
def test_text_from_the_data_never_adds_lines_to_a_message(evil):
    """A sensor's attribute with a CR LF reaches titles, places and summaries; it could add lines
    to an SMS or an email ("\\r\\nURGENTE: ligue ...") or make one look like the system's own.
    Subjects and SMS texts are one line, and the body has exactly the template's lines."""
    from dataclasses import replace

    snap = IncidentSnapshot.from_event(incident_event(severity="critical"))
    snap = replace(snap, labels={**snap.labels, "parish": "Ribeira"})
    clean = Notification("i", "p", 0, 1, 0, "ana", "escalation", "2026-03-01T10:30:00Z", snap)
    snap = replace(snap, title=f"Douro {evil} — Ribeira", labels={**snap.labels, "parish": f"Ri{evil}beira"})
    n = replace(clean, snapshot=snap)
    for lang in ("pt-PT", "en-GB"):
        m = render(n, lang)
        for text in (m.subject, m.short):
            assert not any(c in text for c in "\r\n\x00\x1b\x85\u2028"), repr(text)
        assert m.body.count("\n") == render(clean, lang).body.count("\n"), repr(m.body)
        assert "\r" not in m.body and "\x1b" not in m.body
