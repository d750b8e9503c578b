"""Population warnings on the escalation channels (pure: no I/O).

An issued CAP document (a ``kind: "cap"`` record on ``atalaia.warnings``) becomes one
:class:`~atalaia.notifiers.model.Notification` per warnings target (``warnings:`` in the escalation
file), with ``kind: "warning"`` and the parsed document in ``notification.warning``. They travel on
``atalaia.notifications`` and go through the same delivery pipeline as escalations (dedup against
the delivery log, outbox, per-target lanes, retries, breaker). Ids are deterministic
(``warning_notification_id(identifier, version, target)``): a replay of ``atalaia.warnings`` or a
crash never sends a warning twice to the same target.

Exercise (and Test) warnings go only to targets marked ``exercise: true`` (or ``only``) unless the
file says ``exercises: all``; every text of theirs starts with "EXERCÍCIO / EXERCISE" ("TESTE /
TEST").

>>> from atalaia.warnings.catalogue import Catalogue
>>> from atalaia.warnings.cap import render
>>> from atalaia.warnings.draft import Draft
>>> doc = render(Draft.model_validate({"sender": "pc@cm-porto.pt", "status": "Exercise", "level": "orange",
...     "event": {"pt-PT": "Cheia", "en-GB": "Flood"}, "instruction": {"pt-PT": "Evite a zona ribeirinha.",
...     "en-GB": "Avoid the riverside."}, "area": {"geocodes": {"DICOFRE": ["131203"]}},
...     "expires": "2026-12-05T06:00:00+00:00"}), Catalogue.load(), sent="2026-12-04T17:00:00+00:00")
>>> w = parse_cap(doc.xml)
>>> sms_text(w, ZoneInfo("Europe/Lisbon"))
'EXERCÍCIO / EXERCISE: Aviso laranja - Cheia. Campanhã. Até 05/12 06:00. Evite a zona ribeirinha.'

What an SMS target sends (and what the console's preview shows for it) is :func:`sms_message`: that
text in GSM-7 (letters GSM-7 lacks, ã õ í, transliterated: 160 characters a segment, not 70) with the
link to the CAP document kept whole:

>>> m = sms_message(w, ZoneInfo("Europe/Lisbon"), link="https://atalaia.cm-porto.pt/cap/alerts/X.xml")
>>> m.text
'EXERCICIO / EXERCISE: Aviso laranja - Cheia. Campanha. Até 05/12 06:00. Evite a zona ribeirinha. https://atalaia.cm-porto.pt/cap/alerts/X.xml'
>>> (m.segments, m.encoding)
(1, 'gsm7')
"""

from __future__ import annotations

import hashlib
import math
import unicodedata
from dataclasses import asdict, dataclass
from typing import Any
from zoneinfo import ZoneInfo

from lxml import etree

from atalaia.notifiers.config import EscalationConfig
from atalaia.notifiers.model import IncidentSnapshot, Notification
from atalaia.notifiers.sms import fit, fit_keeping, segments
from atalaia.streams.clock import parse_time
from atalaia.warnings.catalogue import LEVEL_PARAMETER
from atalaia.warnings.records import CapRecord

NS = {"cap": "urn:oasis:names:tc:emergency:cap:1.2"}
WARNINGS_POLICY = "warnings"  # the ``policy`` of warning notifications (delivery log, retry lookup)
MARKS = {"Exercise": "EXERCÍCIO / EXERCISE", "Test": "TESTE / TEST"}
COLOURS = {  # (IPMA's colours, as MeteoAlarm writes them; ANEPC's azul as levels.yaml does)
    "pt-PT": {"green": "verde", "azul": "azul", "yellow": "amarelo", "orange": "laranja", "red": "vermelho"},
    "en-GB": {"green": "green", "azul": "blue", "yellow": "yellow", "orange": "orange", "red": "red"},
}
KIND_WORDS = {
    "pt-PT": {"Alert": "Aviso", "Update": "Aviso atualizado", "Cancel": "Aviso cancelado"},
    "en-GB": {"Alert": "Warning", "Update": "Updated warning", "Cancel": "Warning cancelled"},
}
# CAP category -> Smart Data Models Alert category
SDM_CATEGORY = {
    "Met": "weather",
    "Geo": "naturalDisaster",
    "Env": "environment",
    "Health": "health",
    "Transport": "traffic",
    "Safety": "security",
    "Security": "security",
    "Rescue": "security",
    "Fire": "naturalDisaster",
    "CBRNE": "security",
    "Infra": "security",
}
# MeteoAlarm awareness type name -> Smart Data Models Alert subCategory (only certain matches)
SDM_SUBCATEGORY = {
    "flooding": "flood",
    "rain": "rainfall",
    "snow-ice": "snowfall",
    "fog": "fog",
    "high-temperature": "highTemperature",
    "low-temperature": "lowTemperature",
    "forest-fire": "forestFire",
}
# CAP severity -> Smart Data Models Alert severity
SDM_SEVERITY = {
    "Extreme": "critical",
    "Severe": "high",
    "Moderate": "medium",
    "Minor": "low",
    "Unknown": "informational",
}


def warning_notification_id(identifier: str, version: int, target: str) -> str:
    raw = f"warning|{identifier}|{version}|{target}"
    return hashlib.blake2b(raw.encode(), digest_size=12).hexdigest()


def alert_entity_id(identifier: str) -> str:
    return f"urn:ngsi-ld:Alert:warning:{identifier}"


def mark(status: str) -> str | None:
    return MARKS.get(status)


# --------------------------------------------------------------------------- the CAP document


def _text(el: Any, tag: str) -> str | None:
    found = el.find(f"cap:{tag}", NS)
    return found.text.strip() if found is not None and found.text else None


def parse_cap(xml: bytes | str) -> dict[str, Any]:
    """What the channels need of a CAP 1.2 document, as plain JSON data."""
    root = etree.fromstring(xml.encode() if isinstance(xml, str) else xml)
    infos = []
    for info in root.findall("cap:info", NS):
        params = {_text(p, "valueName"): _text(p, "value") for p in info.findall("cap:parameter", NS)}
        areas = []
        for area in info.findall("cap:area", NS):
            polygons = []
            for poly in area.findall("cap:polygon", NS):
                pts = [p.split(",") for p in (poly.text or "").split()]
                polygons.append([[float(lat), float(lon)] for lat, lon in pts])
            for circle in area.findall("cap:circle", NS):  # "lat,lon radius_km"
                centre, _, radius = (circle.text or "").strip().partition(" ")
                lat, _, lon = centre.partition(",")
                polygons.append(circle_ring(float(lat), float(lon), float(radius)))
            geocodes: dict[str, list[str]] = {}
            for g in area.findall("cap:geocode", NS):
                geocodes.setdefault(_text(g, "valueName") or "", []).append(_text(g, "value") or "")
            areas.append({"desc": _text(area, "areaDesc") or "", "polygons": polygons, "geocodes": geocodes})
        infos.append(
            {
                "lang": _text(info, "language") or "en-US",
                "category": [c.text for c in info.findall("cap:category", NS)],
                "event": _text(info, "event") or "",
                "urgency": _text(info, "urgency"),
                "severity": _text(info, "severity") or "Unknown",
                "certainty": _text(info, "certainty"),
                "effective": _text(info, "effective"),
                "onset": _text(info, "onset"),
                "expires": _text(info, "expires"),
                "senderName": _text(info, "senderName"),
                "headline": _text(info, "headline"),
                "description": _text(info, "description"),
                "instruction": _text(info, "instruction"),
                "web": _text(info, "web"),
                "awareness_level": params.get("awareness_level"),
                "level": params.get(LEVEL_PARAMETER),  # (a level MeteoAlarm has not: ANEPC's azul)
                "awareness_type": params.get("awareness_type"),
                "areas": areas,
            }
        )
    refs = (_text(root, "references") or "").split()
    return {
        "identifier": _text(root, "identifier") or "",
        "sender": _text(root, "sender") or "",
        "sent": _text(root, "sent") or "",
        "status": _text(root, "status") or "Actual",
        "msgType": _text(root, "msgType") or "Alert",
        "references": refs,
        "infos": infos,
    }


def circle_ring(lat: float, lon: float, radius_km: float, points: int = 32) -> list[list[float]]:
    """A CAP circle as a closed ring of ``points`` [lat, lon] vertices (a spherical earth): what
    a map or a broker that knows polygons only (the urban platform's ``Alert``) can draw."""
    r = max(radius_km, 0.001) / 6371.0088
    la, lo = math.radians(lat), math.radians(lon)
    ring = []
    for k in range(points):
        b = 2 * math.pi * k / points
        plat = math.asin(math.sin(la) * math.cos(r) + math.cos(la) * math.sin(r) * math.cos(b))
        plon = lo + math.atan2(
            math.sin(b) * math.sin(r) * math.cos(la), math.cos(r) - math.sin(la) * math.sin(plat)
        )
        ring.append([round(math.degrees(plat), 6), round((math.degrees(plon) + 540) % 360 - 180, 6)])
    ring.reverse()  # counter-clockwise, as RFC 7946 wants an outer ring (the bearings turn clockwise)
    return [*ring, ring[0]]


def info_for(w: dict[str, Any], lang: str) -> dict[str, Any]:
    """The ``info`` block in ``lang`` (ignoring case), else in its language (``pt`` for
    ``pt-PT``), else the first."""
    want = lang.lower()
    infos = w["infos"]
    return next(
        (i for i in infos if i["lang"].lower() == want),
        next((i for i in infos if _primary(i["lang"]) == _primary(lang)), infos[0]),
    )


def one_line(text: str | None) -> str:
    """``text`` on one line: control characters (CR, LF, tab, C1) and runs of spaces made one space.
    A short text (an SMS, a subject) is one line; a newline in an event or an area's name must not
    start another header or another message part."""
    if not text:
        return ""
    return " ".join("".join(" " if unicodedata.category(c) == "Cc" else c for c in text).split())


def _primary(lang: str) -> str:
    return lang.split("-", 1)[0].lower()


def _words(lang: str) -> str:
    """The language of the fixed words for an info block in ``lang``: Portuguese for any ``pt``,
    else English (a third language's block, ``es-ES``, gets English words around its own text)."""
    return "pt-PT" if _primary(lang) == "pt" else "en-GB"


def colour(info: dict[str, Any]) -> str | None:
    """The level's colour: IPMA's from the MeteoAlarm ``awareness_level`` parameter ("3; orange;
    Severe"), else ANEPC's from the ``ANEPC_EAE`` one ("1; azul; Minor"), else None."""
    for name in ("awareness_level", "level"):
        parts = [p.strip() for p in (info.get(name) or "").split(";")]
        if len(parts) > 1 and parts[1]:
            return parts[1].lower()
    return None


def _local(t: str | None, tz: ZoneInfo) -> str | None:
    from atalaia.warnings.draft import local_time

    return local_time(parse_time(t), tz, "%d/%m %H:%M") if t else None


def _unmarked(text: str | None, status: str) -> str | None:
    m = mark(status)
    if text and m and text.startswith(m):
        return text[len(m) :].lstrip(" :")
    return text


def _lead(w: dict[str, Any], info: dict[str, Any], lang: str) -> str:
    """'Aviso laranja - Cheia' / 'Orange warning - Flood' (the kind of message, level, event)."""
    lang = _words(lang)
    kind = KIND_WORDS[lang].get(w["msgType"], KIND_WORDS[lang]["Alert"])
    c = colour(info)
    word = COLOURS[lang].get(c, c) if c else None
    if word and w["msgType"] != "Cancel":
        kind = f"{kind} {word}" if lang == "pt-PT" else f"{word.capitalize()} {kind.lower()}"
    return f"{kind} - {info['event']}"


def _area(info: dict[str, Any]) -> str:
    return "; ".join(a["desc"] for a in info["areas"] if a["desc"])


def _validity(info: dict[str, Any], lang: str, tz: ZoneInfo) -> str | None:
    start, end = _local(info.get("onset"), tz), _local(info.get("expires"), tz)
    if _words(lang) == "pt-PT":
        if start and end:
            return f"De {start} a {end}"
        return f"Até {end}" if end else (f"A partir de {start}" if start else None)
    if start and end:
        return f"From {start} to {end}"
    return f"Until {end}" if end else (f"From {start}" if start else None)


def sms_text(w: dict[str, Any], tz: ZoneInfo, lang: str = "pt-PT") -> str:
    """The short text (before fitting to segments): mark, kind + level + event, area, validity,
    instruction, description — most important first, so a cut loses the least."""
    info = info_for(w, lang)
    parts = [_lead(w, info, lang), _area(info), _validity(info, lang, tz)]
    parts += [
        _unmarked(info.get("instruction"), w["status"]),
        _unmarked(info.get("description"), w["status"]),
    ]
    parts = [one_line(p) for p in parts]
    text = " ".join(p.rstrip(".") + "." for p in parts if p)
    m = mark(w["status"])
    return f"{m}: {text}" if m else text


@dataclass(frozen=True, slots=True)
class ShortText:
    """An SMS as it is sent: its text, segments and encoding (counted as a gateway counts them)."""

    text: str
    segments: int
    encoding: str  # gsm7 | ucs2
    length: int  # characters

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def warning_link(console_url: str | None, identifier: str) -> str | None:
    """The public link to a warning's CAP document (``/cap/alerts/<identifier>.xml``)."""
    from atalaia.warnings.feed import alert_path

    return console_url.rstrip("/") + alert_path(identifier) if console_url else None


def sms_message(
    w: dict[str, Any], tz: ZoneInfo, lang: str = "pt-PT", link: str | None = None, max_segments: int = 3
) -> ShortText:
    """The SMS of a warning to a target of channel ``sms`` (and the console's preview of it): the
    short text in ``lang``, transliterated to GSM-7 (a Portuguese text keeps 160 characters a
    segment instead of 70), cut to ``max_segments`` with an ellipsis, the ``link`` never cut."""
    text = sms_text(w, tz, lang)
    body = fit_keeping(text, link, max_segments) if link else fit(text, max_segments)
    n, enc = segments(body)
    return ShortText(body, n, enc, len(body))


def sms_previews(w: dict[str, Any], config: EscalationConfig) -> list[dict[str, Any]]:
    """What each warnings target of channel ``sms`` sends for the CAP document ``w`` (those that
    receive its status only), in the order of ``warnings.targets``: ``target``, ``lang``,
    ``max_segments`` and the :class:`ShortText`. ``config.console_url`` is the link's base, as the
    delivery stage has it."""
    if config.warnings is None:
        return []
    out = []
    link = warning_link(config.console_url, w["identifier"])
    for wt in config.warnings.targets:
        target = config.targets.get(wt.target)
        if target is None or target.channel != "sms":
            continue
        if not receives(w["status"], wt.exercise, config.warnings.exercises):
            continue
        lang = target.lang or config.lang
        msg = sms_message(w, ZoneInfo(config.timezone), lang, link, target.max_sms_segments)
        out.append(
            {"target": wt.target, "lang": lang, "max_segments": target.max_sms_segments, **msg.to_dict()}
        )
    return out


#: the time zones of Portugal as people say them ("hora de Lisboa", not "hora de Europe/Lisbon")
ZONE_WORDS = {
    "Europe/Lisbon": ("hora de Lisboa", "Lisbon time"),
    "Atlantic/Madeira": ("hora da Madeira", "Madeira time"),
    "Atlantic/Azores": ("hora dos Açores", "Azores time"),
}


def zone_words(tz: ZoneInfo, lang: str) -> str:
    """'hora de Lisboa' / 'Lisbon time' (another zone: 'hora de Europe/Madrid' / 'time in ...')."""
    pt = _words(lang) == "pt-PT"
    known = ZONE_WORDS.get(tz.key)
    if known:
        return known[0] if pt else known[1]
    return f"hora de {tz.key}" if pt else f"time in {tz.key}"


def _langs(w: dict[str, Any], first: str) -> list[str]:
    langs = [i["lang"] for i in w["infos"]]
    return sorted(langs, key=lambda x: x != first)


def email(w: dict[str, Any], tz: ZoneInfo, first: str = "pt-PT", link: str | None = None) -> tuple[str, str]:
    """Subject and plain-text body in every language of the document (``first`` first)."""
    langs = _langs(w, first)
    leads = [_lead(w, info_for(w, lg), lg) for lg in langs]
    subject = one_line(" / ".join(dict.fromkeys(leads)) + f" — {_area(info_for(w, langs[0]))}")
    m = mark(w["status"])
    if m:
        subject = f"{m}: {subject}"
    blocks = []
    labels = {
        "pt-PT": ("Área", "Validade", "Descrição", "Instruções", "Mais informação"),
        "en-GB": ("Area", "Valid", "Description", "Instructions", "More information"),
    }
    for lg in langs:
        info = info_for(w, lg)
        la = labels[_words(lg)]
        lines = [_unmarked(info.get("headline"), w["status"]) or _lead(w, info, lg), ""]
        lines.append(_lead(w, info, lg))
        lines.append(f"{la[0]}: {_area(info)}")
        valid = _validity(info, lg, tz)
        if valid:
            lines.append(f"{la[1]}: {valid} ({zone_words(tz, lg)})")
        if info.get("description"):
            lines.append(f"{la[2]}: {_unmarked(info['description'], w['status'])}")
        if info.get("instruction"):
            lines.append(f"{la[3]}: {_unmarked(info['instruction'], w['status'])}")
        if info.get("web"):
            lines.append(f"{la[4]}: {info['web']}")
        blocks.append("\n".join(lines))
    tail = f"CAP: {w['identifier']} ({w['sender']}, {w['sent']}, {w['status']}, {w['msgType']})"
    if w["references"]:
        tail += "\nReferences: " + " ".join(w["references"])
    if link:
        tail += f"\n{link}"
    body = "\n\n---\n\n".join(blocks) + "\n\n" + tail + "\n"
    return subject, (f"{m}\n\n{body}" if m else body)


# --------------------------------------------------------------------------- NGSI-LD Alert


def _dt(value: str) -> dict[str, Any]:
    return {"type": "Property", "value": {"@type": "DateTime", "@value": value}}


def _prop(value: Any) -> dict[str, Any]:
    return {"type": "Property", "value": value}


def _geometry(info: dict[str, Any]) -> dict[str, Any] | None:
    rings = [[[lon, lat] for lat, lon in poly] for a in info["areas"] for poly in a["polygons"]]
    if not rings:
        return None
    if len(rings) == 1:
        return {"type": "Polygon", "coordinates": [rings[0]]}
    return {"type": "MultiPolygon", "coordinates": [[r] for r in rings]}


def alert_entity(
    w: dict[str, Any], link: str | None = None, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The warning as a normalized NGSI-LD Smart Data Models ``Alert`` (pt-PT texts; the en-GB ones
    in ``data``)."""
    from atalaia.notifiers.channels.http import NGSI_LD_CORE, SDM_ALERT_CONTEXT

    info = info_for(w, "pt-PT")
    status = w["status"]
    m = mark(status)
    description = " ".join(
        p
        for p in (_unmarked(info.get("headline"), status) or _lead(w, info, "pt-PT"), info.get("description"))
        if p
    )
    ent: dict[str, Any] = {
        "id": alert_entity_id(w["identifier"]),
        "type": "Alert",
        "category": _prop(
            next((SDM_CATEGORY[c] for c in info["category"] if c in SDM_CATEGORY), "environment")
        ),
        "severity": _prop(SDM_SEVERITY.get(info["severity"], "informational")),
        "name": _prop(f"{m}: {info['event']}" if m else info["event"]),
        "description": _prop(f"{m}: {description}" if m else description),
        "alertSource": _prop(w["sender"]),
        "dateIssued": _dt(w["sent"]),
        "validFrom": _dt(info.get("onset") or info.get("effective") or w["sent"]),
        "address": _prop({"addressLocality": _area(info), "addressCountry": "PT"}),
        "data": _prop(
            {
                "identifier": w["identifier"],
                "sender": w["sender"],
                "sent": w["sent"],
                "status": status,
                "msgType": w["msgType"],
                "references": w["references"],
                "level": colour(info),
                "awarenessType": info.get("awareness_type"),
                "geocodes": {k: v for a in info["areas"] for k, v in a["geocodes"].items()},
                "texts": {
                    i["lang"]: {k: i.get(k) for k in ("event", "headline", "description", "instruction")}
                    for i in w["infos"]
                },
                **({"cap": link} if link else {}),
                **(extra or {}),
            }
        ),
        "@context": [NGSI_LD_CORE, SDM_ALERT_CONTEXT],
    }
    kind = (info.get("awareness_type") or "").split(";")[-1].strip()
    if kind in SDM_SUBCATEGORY:
        ent["subCategory"] = _prop(SDM_SUBCATEGORY[kind])
    valid_to = w["sent"] if w["msgType"] == "Cancel" else info.get("expires")
    if valid_to:
        ent["validTo"] = _dt(valid_to)
    geometry = _geometry(info)
    if geometry:
        ent["location"] = {"type": "GeoProperty", "value": geometry}
    return ent


def superseded_entities(w: dict[str, Any]) -> list[dict[str, Any]]:
    """An Update or Cancel ends the Alerts it replaces: ``validTo`` = its ``sent`` (an NGSI-LD
    partial update of the referenced entities)."""
    if w["msgType"] not in ("Update", "Cancel"):
        return []
    out = []
    for ref in w["references"]:
        parts = ref.split(",")
        identifier = parts[1] if len(parts) == 3 else parts[0]
        out.append({"id": alert_entity_id(identifier), "type": "Alert", "validTo": _dt(w["sent"])})
    return out


# --------------------------------------------------------------------------- routing


def receives(status: str, exercise: bool | str, exercises: str) -> bool:
    """Does a target marked ``exercise`` get a warning of ``status``?"""
    if status == "Actual":
        return exercise != "only"
    if exercises == "none":
        return False
    return exercises == "all" or bool(exercise)


def warning_notifications(record: CapRecord, config: EscalationConfig) -> list[Notification]:
    """The notifications of one CAP record of ``atalaia.warnings`` (decoded by
    :func:`~atalaia.warnings.records.decode_warning_record`)."""
    if config.warnings is None:
        return []
    w = parse_cap(record.xml)
    if not w["infos"]:
        return []
    version = record.version
    w["warning"] = record.warning
    w["version"] = version
    w["xml"] = record.xml
    info = info_for(w, "pt-PT")
    snap = IncidentSnapshot(
        incident=w["identifier"],
        version=version,
        at=w["sent"],
        change=w["msgType"],
        state=w["status"],
        active=w["msgType"] != "Cancel",
        severity=SDM_SEVERITY.get(info["severity"], "informational"),
        title=one_line(f"{_lead(w, info, 'pt-PT')} — {_area(info)}"),
        labels={"warning": record.warning, "status": w["status"]},
        opened_at=w["sent"],
        tenant=record.tenant or None,
    )
    out = []
    for wt in config.warnings.targets:
        if not receives(w["status"], wt.exercise, config.warnings.exercises):
            continue
        out.append(
            Notification(
                incident=w["identifier"],
                policy=WARNINGS_POLICY,
                episode=version,
                step=0,
                repeat=0,
                target=wt.target,
                kind="warning",
                due=w["sent"],
                snapshot=snap,
                id=warning_notification_id(w["identifier"], version, wt.target),
                warning=w,
            )
        )
    return out
