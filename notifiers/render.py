"""Message texts, pt-PT and en-GB, rendered from Jinja2 templates (plain text, no I/O).

``render(notification, lang, tz, console_url, rules)`` gives a :class:`Message` with a subject, a long
body (email) and a short text (SMS, before length fitting by :func:`atalaia.notifiers.sms.fit`).

Every text carries the leading alarm in words a person acts on: the rule's ``summary`` annotation
when it has one (else its description and the station), the value rounded with its unit, local time
with the zone (``04/12 19:32 WET``) and the link to the incident page. ``rules`` maps rule id to
:class:`atalaia.rules.info.RuleInfo` (unit, summary, runbook); without it values have no unit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, StrictUndefined

from atalaia.notifiers.model import Notification
from atalaia.rules.alarm import severity_rank
from atalaia.streams.clock import parse_time

SEVERITY = {
    "pt-PT": {
        "informational": "informativo",
        "low": "baixo",
        "medium": "médio",
        "high": "alto",
        "critical": "crítico",
    },
    "en-GB": {
        "informational": "informational",
        "low": "low",
        "medium": "medium",
        "high": "high",
        "critical": "critical",
    },
}
STATE = {
    "pt-PT": {
        "unacknowledged": "por reconhecer",
        "acknowledged": "reconhecido",
        "returned-unacknowledged": "normalizado, por reconhecer",
        "normal": "normal",
        "shelved": "arquivado temporariamente",
        "suppressed": "suprimido",
        "out-of-service": "fora de serviço",
        "closed": "encerrado",
    },
    "en-GB": {
        "unacknowledged": "unacknowledged",
        "acknowledged": "acknowledged",
        "returned-unacknowledged": "returned to normal, unacknowledged",
        "normal": "normal",
        "shelved": "shelved",
        "suppressed": "suppressed",
        "out-of-service": "out of service",
        "closed": "closed",
    },
}

TEMPLATES: dict[tuple[str, str, str], str] = {
    # (lang, kind, part)
    ("pt-PT", "escalation", "subject"): "[Atalaia {{ sev|upper }}] {{ s.title }}",
    (
        "pt-PT",
        "escalation",
        "short",
    ): "ATALAIA {{ sev|upper }}: {{ s.title }}. {{ lead }}. {{ state|capitalize }} desde {{ opened }}."
    "{% if n.step > 0 or n.repeat > 0 %} Escalão {{ n.step + 1 }}{% if n.repeat %}, aviso {{ n.repeat + 1 }}{% endif %}.{% endif %}"
    " Reconheça: {{ link }}",
    ("pt-PT", "escalation", "body"): "Incidente: {{ s.title }}\n"
    "Gravidade: {{ sev }}\nEstado: {{ state }}\nAberto: {{ opened }} (hora de Lisboa)\n"
    "Escalão: {{ n.step + 1 }}{% if n.repeat %} (aviso {{ n.repeat + 1 }}){% endif %}\n"
    "{% for k, v in s.labels|dictsort %}{{ k }}: {{ v }}\n{% endfor %}"
    "{% if s.alarms %}\nAlarmes ({{ s.alarms|length }}):\n{% for a in s.alarms %}"
    "- {{ line(a) }}: {{ sev_of(a.severity) }}"
    "{% if a.value is not none %}, valor {{ value(a) }}{% endif %}\n"
    "{% if runbook(a) %}  Procedimento: {{ runbook(a) }}\n{% endif %}{% endfor %}{% endif %}"
    "\nReconheça o incidente na consola: {{ link }}\nRef.: {{ s.incident }} / {{ n.id }}\n",
    ("pt-PT", "resolved", "subject"): "[Atalaia] Encerrado: {{ s.title }}",
    (
        "pt-PT",
        "resolved",
        "short",
    ): "ATALAIA: encerrado {{ s.title }} ({{ at }}). {{ lead }}."
    "{% if s.acknowledged_by %} Reconhecido por {{ s.acknowledged_by }}.{% endif %} {{ link }}",
    ("pt-PT", "resolved", "body"): "O incidente {{ s.title }} foi encerrado às {{ at }} (hora de Lisboa).\n"
    "{% if lead_value %}Último valor: {{ lead_value }} — {{ lead }}\n{% endif %}"
    "{% if s.acknowledged_by %}Reconhecido por: {{ s.acknowledged_by }}\n{% endif %}"
    "Ref.: {{ s.incident }}\n{{ link }}\n",
    ("en-GB", "escalation", "subject"): "[Atalaia {{ sev|upper }}] {{ s.title }}",
    (
        "en-GB",
        "escalation",
        "short",
    ): "ATALAIA {{ sev|upper }}: {{ s.title }}. {{ lead }}. {{ state|capitalize }} since {{ opened }}."
    "{% if n.step > 0 or n.repeat > 0 %} Tier {{ n.step + 1 }}{% if n.repeat %}, reminder {{ n.repeat }}{% endif %}.{% endif %}"
    " Acknowledge: {{ link }}",
    ("en-GB", "escalation", "body"): "Incident: {{ s.title }}\n"
    "Severity: {{ sev }}\nState: {{ state }}\nOpened: {{ opened }} (Lisbon time)\n"
    "Escalation tier: {{ n.step + 1 }}{% if n.repeat %} (reminder {{ n.repeat }}){% endif %}\n"
    "{% for k, v in s.labels|dictsort %}{{ k }}: {{ v }}\n{% endfor %}"
    "{% if s.alarms %}\nAlarms ({{ s.alarms|length }}):\n{% for a in s.alarms %}"
    "- {{ line(a) }}: {{ sev_of(a.severity) }}"
    "{% if a.value is not none %}, value {{ value(a) }}{% endif %}\n"
    "{% if runbook(a) %}  Runbook: {{ runbook(a) }}\n{% endif %}{% endfor %}{% endif %}"
    "\nAcknowledge the incident in the console: {{ link }}\nRef: {{ s.incident }} / {{ n.id }}\n",
    ("en-GB", "resolved", "subject"): "[Atalaia] Closed: {{ s.title }}",
    (
        "en-GB",
        "resolved",
        "short",
    ): "ATALAIA: closed {{ s.title }} ({{ at }}). {{ lead }}."
    "{% if s.acknowledged_by %} Acknowledged by {{ s.acknowledged_by }}.{% endif %} {{ link }}",
    ("en-GB", "resolved", "body"): "Incident {{ s.title }} was closed at {{ at }} (Lisbon time).\n"
    "{% if lead_value %}Last value: {{ lead_value }} — {{ lead }}\n{% endif %}"
    "{% if s.acknowledged_by %}Acknowledged by: {{ s.acknowledged_by }}\n{% endif %}"
    "Ref: {{ s.incident }}\n{{ link }}\n",
}

_env = Environment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_compiled = {k: _env.from_string(v) for k, v in TEMPLATES.items()}


@dataclass(slots=True, frozen=True)
class Message:
    subject: str
    body: str
    short: str
    link: str = ""  # the incident page (the SMS keeps it whole when it shortens the text)


def _local(ts: str | None, tz: ZoneInfo) -> str:
    if not ts:
        return "?"
    return parse_time(ts).astimezone(tz).strftime("%d/%m %H:%M %Z")


def format_value(value: Any, unit: str | None, lang: str) -> str:
    """Rounded for reading (2 decimals under 10, 1 under 100, none above), decimal comma in
    Portuguese, with the unit: ``0,21 m``, ``3512 m³/s``."""
    if value is None:
        return "?"
    v = float(value)
    digits = 0 if abs(v) >= 100 else 1 if abs(v) >= 10 else 2
    text = f"{v:.{digits}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    if lang == "pt-PT":
        text = text.replace(".", ",")
    return f"{text} {unit}" if unit else text


#: ``incidents.emit.title``'s count of the incident's other rules, written in English
_MORE = re.compile(r" \+(\d+) more(?= — |$)")
_OTHERS = {"pt-PT": "outras", "en-GB": "more"}


#: control characters (C0, DEL, C1) and the Unicode line and paragraph separators
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def one_line(text: str) -> str:
    """``text`` on one line: a run of control characters (a CR LF in a sensor's attribute, which
    reaches titles, places and rule summaries) becomes one space, so a reading cannot add lines
    to an SMS or an email, or make one look like the system's own."""
    return _CONTROL.sub(" ", text)


def readable(s: Any, lang: str) -> Any:
    """The snapshot as a message shows it: every text from the data on one line (``one_line``),
    and the title in ``lang``: an incident of several rules is titled ``flood-level +2 more —
    Campanhã`` (rule ids are names, not words), and a pt-PT text read "+2 more" in the middle of
    Portuguese."""
    title = one_line(_MORE.sub(lambda m: f" +{m.group(1)} {_OTHERS[lang]}", s.title, count=1))
    labels = {k: one_line(v) for k, v in s.labels.items()}
    correlation = {k: one_line(v) if isinstance(v, str) else v for k, v in s.correlation.items()}
    if (title, labels, correlation) == (s.title, s.labels, s.correlation):
        return s
    return replace(s, title=title, labels=labels, correlation=correlation)


def _station(a: Mapping[str, Any]) -> str:
    return str(a.get("entity") or a.get("key") or "?").rsplit(":", 1)[-1]


def render(
    n: Notification,
    lang: str = "pt-PT",
    tz: ZoneInfo | None = None,
    console_url: str | None = None,
    rules: Mapping[str, Any] | None = None,
) -> Message:
    if lang not in SEVERITY:
        raise ValueError(f"unsupported language {lang!r} (pt-PT, en-GB)")
    tz = tz or ZoneInfo("Europe/Lisbon")
    rules = rules or {}
    s = readable(n.snapshot, lang)
    base = (console_url or "").rstrip("/")
    at_word = " em " if lang == "pt-PT" else " at "

    def value(a: Mapping[str, Any]) -> str:
        info = rules.get(a.get("rule"))
        return format_value(a.get("value"), info.unit if info else None, lang)

    def line(a: Mapping[str, Any]) -> str:
        info = rules.get(a.get("rule"))
        summary = info.summary_for(dict(a), s.labels) if info else None
        if summary:
            return one_line(summary)
        return one_line(f"{(info.description if info else None) or a.get('rule')}{at_word}{_station(a)}")

    def runbook(a: Mapping[str, Any]) -> str | None:
        info = rules.get(a.get("rule"))
        return info.runbook if info else None

    ranked = sorted(s.alarms, key=lambda a: -severity_rank(a.get("severity")))
    lead_alarm = next((a for a in ranked if a.get("value") is not None), ranked[0] if ranked else None)
    lead = ""
    if lead_alarm is not None:
        info = rules.get(lead_alarm.get("rule"))
        summary = info.summary_for(dict(lead_alarm), s.labels) if info else None
        lead = line(lead_alarm)
        if lead_alarm.get("value") is not None and not summary:  # a summary carries its value
            lead += f": {value(lead_alarm)}"
    ctx = {
        "n": n,
        "s": s,
        "sev": SEVERITY[lang].get(s.severity, s.severity),
        "sev_of": lambda v: SEVERITY[lang].get(v, v),
        "state": STATE[lang].get(s.state, s.state),
        "opened": _local(s.opened_at or s.at, tz),
        "at": _local(s.at, tz),
        "link": f"{base}/incidents/{s.incident}" if base else s.incident,
        "lead": lead or s.title,
        "lead_value": value(lead_alarm) if lead_alarm and lead_alarm.get("value") is not None else "",
        "line": line,
        "value": value,
        "runbook": runbook,
    }
    if n.kind == "digest":
        return _digest(n, lang, tz, base, rules)
    part = {p: _compiled[(lang, n.kind, p)].render(ctx) for p in ("subject", "body", "short")}
    return Message(
        subject=one_line(part["subject"]).strip(),
        body=part["body"],
        short=one_line(part["short"]).strip(),
        link=ctx["link"],
    )


def _digest(n: Notification, lang: str, tz: ZoneInfo, base: str, rules: Mapping[str, Any]) -> Message:
    """A storm digest: one message that sums up the incidents held for one target (most severe first),
    each with its place, lead value with unit and local time; the link is the board."""
    pt = lang == "pt-PT"
    snaps = [readable(s, lang) for s in (n.digest or [n.snapshot])]
    counts: dict[str, int] = dict(n.digest_more)  # those not listed one by one
    for s in snaps:
        counts[s.severity] = counts.get(s.severity, 0) + 1
    total, unlisted = sum(counts.values()), sum(n.digest_more.values())
    by_sev = ", ".join(
        f"{SEVERITY[lang].get(sev, sev)}: {c}"
        for sev, c in sorted(counts.items(), key=lambda kv: -severity_rank(kv[0]))
    )
    link = f"{base}/?state=unacknowledged" if base else ""
    word = "incidentes novos" if pt else "new incidents"
    subject = f"[Atalaia] {total} {word} ({by_sev})"

    def one(s: Any) -> tuple[str, str]:
        place = s.correlation.get("parish") or s.labels.get("parish") or s.title
        ranked = sorted(s.alarms, key=lambda a: -severity_rank(a.get("severity")))
        a = next((x for x in ranked if x.get("value") is not None), None)
        value = ""
        if a is not None:
            info = rules.get(a.get("rule"))
            value = " " + format_value(a.get("value"), info.unit if info else None, lang)
        sev = SEVERITY[lang].get(s.severity, s.severity)
        when = _local(s.opened_at or s.at, tz)
        inc_link = f"{base}/incidents/{s.incident}" if base else s.incident
        return f"{sev}: {place}{value}", f"- {sev}: {s.title} · {place}{value} · {when}\n  {inc_link}"

    lines = [one(s) for s in snaps]
    at = _local(n.due, tz)
    intro = (
        f"{total} {word} às {at} (hora de Lisboa), numa só mensagem para não o inundar:"
        if pt
        else f"{total} {word} at {at} (Lisbon time), in one message instead of {total}:"
    )
    rest = ""
    if unlisted:
        rest = (
            f"\n… e mais {unlisted} (os menos graves), no painel."
            if pt
            else f"\n… and {unlisted} more (the least severe), on the board."
        )
    body = intro + "\n\n" + "\n".join(x[1] for x in lines) + rest + (f"\n\n{link}\n" if link else "\n")
    short = f"Atalaia {at}: {total} {word}: " + "; ".join(x[0] for x in lines[:4])
    if total > 4:
        short += f" (+{total - min(4, len(lines))})"
    if link:
        short += f" {link}"
    return Message(subject=subject, body=body, short=short, link=link)
