"""Message texts, pt-PT and en-GB, rendered from Jinja2 templates (plain text, no I/O).

``render(notification, lang, tz, console_url)`` gives a :class:`Message` with a subject, a long
body (email) and a short text (SMS, before length fitting by :func:`atalaia.notifiers.sms.fit`).
"""

from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo

from jinja2 import Environment, StrictUndefined

from atalaia.notifiers.model import Notification, parse_time

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
    ): "ATALAIA {{ sev|upper }}: {{ s.title }}. {{ state|capitalize }} desde {{ opened }}."
    "{% if n.step > 0 or n.repeat > 0 %} Escalão {{ n.step + 1 }}{% if n.repeat %}, aviso {{ n.repeat + 1 }}{% endif %}.{% endif %}"
    " Reconheça: {{ link }}",
    ("pt-PT", "escalation", "body"): "Incidente: {{ s.title }}\n"
    "Gravidade: {{ sev }}\nEstado: {{ state }}\nAberto: {{ opened }} (hora de Lisboa)\n"
    "Escalão: {{ n.step + 1 }}{% if n.repeat %} (aviso {{ n.repeat + 1 }}){% endif %}\n"
    "{% for k, v in s.labels|dictsort %}{{ k }}: {{ v }}\n{% endfor %}"
    "{% if s.alarms %}\nAlarmes ({{ s.alarms|length }}):\n{% for a in s.alarms %}"
    "- {{ a.rule }} em {{ a.entity or a.key }}: {{ sev_of(a.severity) }}"
    "{% if a.value is not none %}, valor {{ a.value }}{% endif %}\n{% endfor %}{% endif %}"
    "\nReconheça o incidente na consola: {{ link }}\nRef.: {{ s.incident }} / {{ n.id }}\n",
    ("pt-PT", "resolved", "subject"): "[Atalaia] Encerrado: {{ s.title }}",
    (
        "pt-PT",
        "resolved",
        "short",
    ): "ATALAIA: encerrado {{ s.title }} ({{ at }}).{% if s.acknowledged_by %} Reconhecido por {{ s.acknowledged_by }}.{% endif %}",
    ("pt-PT", "resolved", "body"): "O incidente {{ s.title }} foi encerrado às {{ at }} (hora de Lisboa).\n"
    "{% if s.acknowledged_by %}Reconhecido por: {{ s.acknowledged_by }}\n{% endif %}"
    "Ref.: {{ s.incident }}\n{{ link }}\n",
    ("en-GB", "escalation", "subject"): "[Atalaia {{ sev|upper }}] {{ s.title }}",
    (
        "en-GB",
        "escalation",
        "short",
    ): "ATALAIA {{ sev|upper }}: {{ s.title }}. {{ state|capitalize }} since {{ opened }}."
    "{% if n.step > 0 or n.repeat > 0 %} Tier {{ n.step + 1 }}{% if n.repeat %}, reminder {{ n.repeat }}{% endif %}.{% endif %}"
    " Acknowledge: {{ link }}",
    ("en-GB", "escalation", "body"): "Incident: {{ s.title }}\n"
    "Severity: {{ sev }}\nState: {{ state }}\nOpened: {{ opened }} (Lisbon time)\n"
    "Escalation tier: {{ n.step + 1 }}{% if n.repeat %} (reminder {{ n.repeat }}){% endif %}\n"
    "{% for k, v in s.labels|dictsort %}{{ k }}: {{ v }}\n{% endfor %}"
    "{% if s.alarms %}\nAlarms ({{ s.alarms|length }}):\n{% for a in s.alarms %}"
    "- {{ a.rule }} at {{ a.entity or a.key }}: {{ sev_of(a.severity) }}"
    "{% if a.value is not none %}, value {{ a.value }}{% endif %}\n{% endfor %}{% endif %}"
    "\nAcknowledge the incident in the console: {{ link }}\nRef: {{ s.incident }} / {{ n.id }}\n",
    ("en-GB", "resolved", "subject"): "[Atalaia] Closed: {{ s.title }}",
    (
        "en-GB",
        "resolved",
        "short",
    ): "ATALAIA: closed {{ s.title }} ({{ at }}).{% if s.acknowledged_by %} Acknowledged by {{ s.acknowledged_by }}.{% endif %}",
    ("en-GB", "resolved", "body"): "Incident {{ s.title }} was closed at {{ at }} (Lisbon time).\n"
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


def _local(ts: str | None, tz: ZoneInfo) -> str:
    if not ts:
        return "?"
    return parse_time(ts).astimezone(tz).strftime("%d/%m %H:%M")


def render(
    n: Notification, lang: str = "pt-PT", tz: ZoneInfo | None = None, console_url: str | None = None
) -> Message:
    if lang not in SEVERITY:
        raise ValueError(f"unsupported language {lang!r} (pt-PT, en-GB)")
    tz = tz or ZoneInfo("Europe/Lisbon")
    s = n.snapshot
    base = (console_url or "").rstrip("/")
    ctx = {
        "n": n,
        "s": s,
        "sev": SEVERITY[lang].get(s.severity, s.severity),
        "sev_of": lambda v: SEVERITY[lang].get(v, v),
        "state": STATE[lang].get(s.state, s.state),
        "opened": _local(s.opened_at or s.at, tz),
        "at": _local(s.at, tz),
        "link": f"{base}/incidents/{s.incident}" if base else s.incident,
    }
    part = {p: _compiled[(lang, n.kind, p)].render(ctx) for p in ("subject", "body", "short")}
    return Message(subject=part["subject"].strip(), body=part["body"], short=part["short"].strip())
