"""The short pt-PT text of a warning (SMS, previews): level, event, area, Lisbon times, the first
instruction, and the link to the CAP document, fitted into ``max_segments`` SMS segments whose
GSM-7 / UCS-2 cost is counted by :mod:`atalaia.notifiers.sms` (the link is never cut; letters
GSM-7 lacks, such as ã and õ, are transliterated so that a segment holds 160 characters, not 70).

>>> from atalaia.warnings.catalogue import Catalogue
>>> d = {"sender": "pc@cm-porto.pt", "level": "orange", "event": {"pt-PT": "Cheia", "en-GB": "Flood"},
...      "onset": "2026-12-04T18:00:00+00:00", "expires": "2026-12-05T06:00:00+00:00",
...      "area": {"geocodes": {"DICOFRE": ["131203"]}}}
>>> s = sms_text(d, Catalogue.load())
>>> s.text
'AVISO LARANJA: Cheia. Campanha. De 04/12 18:00 a 05/12 06:00 (hora de Lisboa).'
>>> (s.segments, s.encoding)
(1, 'gsm7')
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from atalaia.notifiers.sms import fit, fit_keeping, segments
from atalaia.warnings.cap import EXERCISE_MARK
from atalaia.warnings.catalogue import Catalogue
from atalaia.warnings.draft import Draft, local_time

LISBON = ZoneInfo("Europe/Lisbon")
LANG = "pt-PT"
COLOURS_PT = {"green": "VERDE", "azul": "AZUL", "yellow": "AMARELO", "orange": "LARANJA", "red": "VERMELHO"}
MSG_PT = {"Update": "ATUALIZAÇÃO", "Cancel": "CANCELADO"}


@dataclass(frozen=True, slots=True)
class ShortText:
    text: str
    segments: int
    encoding: str  # gsm7 | ucs2
    length: int  # characters

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pick(value: Any, lang: str = LANG) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):  # language tags compared ignoring case, as Draft.text does
        fold = lang.lower()
        own = value.get(lang) or next((t for k, t in value.items() if str(k).lower() == fold and t), None)
        return str(own or next(iter(value.values()), "") or "")
    return str(value)


def _local(t: datetime | None) -> str:
    return local_time(t, LISBON, "%d/%m %H:%M") if t else ""


def _areas(d: Draft, cat: Catalogue) -> str:
    names: list[str] = []
    for a in d.area:
        if a.desc:
            names.append(_pick(a.desc))
            continue
        for kind, codes in a.geocodes.items():
            for code in codes:
                found = cat.area(kind, str(code).zfill(6 if kind == "DICOFRE" else 4))
                names.append(found.name if found else str(code))
    return ", ".join(dict.fromkeys(n for n in names if n))


def sms_text(
    draft: Draft | dict[str, Any], cat: Catalogue, link: str | None = None, max_segments: int = 2
) -> ShortText:
    """The pt-PT short text of ``draft`` fitted into ``max_segments`` segments (``link`` kept whole)."""
    d = draft if isinstance(draft, Draft) else Draft.model_validate(draft)
    level = cat.level(d.level) if d.level else None
    colour = COLOURS_PT.get(level.colour, level.colour.upper()) if level else ""
    head = MSG_PT.get(d.msg_type, "AVISO")
    head = f"{head} {colour}".strip() if d.msg_type != "Cancel" else f"AVISO {MSG_PT['Cancel']}"
    parts = [f"{head}: {_pick(d.event)}."]  # the headline repeats the level; the event says it shorter
    if d.status == "Exercise":
        parts.insert(0, f"{EXERCISE_MARK}:")
    elif d.status == "Test":
        parts.insert(0, "TESTE:")
    where = _areas(d, cat)
    if where:
        parts.append(f"{where}.")
    if d.onset and d.expires:
        parts.append(f"De {_local(d.onset)} a {_local(d.expires)} (hora de Lisboa).")
    elif d.expires:
        parts.append(f"Até {_local(d.expires)} (hora de Lisboa).")
    instruction = _pick(d.instruction)
    if instruction:
        parts.append(instruction)
    body = " ".join(p for p in parts if p)
    text = fit_keeping(body, link, max_segments) if link else fit(body, max_segments)
    n, enc = segments(text)
    return ShortText(text, n, enc, len(text))
