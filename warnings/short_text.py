"""The SMS of a warning draft, exactly as an SMS target will send it once the draft is issued.

There is one generator, :func:`atalaia.notifiers.warning.sms_message`: it writes the SMS from the CAP
document (the delivery stage's SMS targets send it, the console's preview shows it): mark, kind and
level, event, area, Lisbon times, instruction, description, transliterated to GSM-7 (ã → a: 160
characters a segment, not 70) and cut to the target's ``max_sms_segments`` with the link to the CAP
document kept whole. :func:`sms_text` renders a draft and gives that SMS, for previews and tests.

>>> from atalaia.warnings.catalogue import Catalogue
>>> d = {"sender": "pc@cm-porto.pt", "level": "orange", "event": {"pt-PT": "Cheia", "en-GB": "Flood"},
...      "onset": "2026-12-04T18:00:00+00:00", "expires": "2026-12-05T06:00:00+00:00",
...      "area": {"geocodes": {"DICOFRE": ["131203"]}}}
>>> s = sms_text(d, Catalogue.load())
>>> s.text
'Aviso laranja - Cheia. Campanha. De 04/12 18:00 a 05/12 06:00.'
>>> (s.segments, s.encoding)
(1, 'gsm7')
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from atalaia.notifiers.warning import ShortText, parse_cap, sms_message
from atalaia.warnings.catalogue import Catalogue
from atalaia.warnings.draft import Draft

LISBON = ZoneInfo("Europe/Lisbon")
LANG = "pt-PT"

__all__ = ["LISBON", "ShortText", "sms_text"]


def _sent_for(d: Draft) -> datetime:
    """A ``sent`` the draft's times allow (the text does not show it): now, or before its times."""
    now = datetime.now(UTC).replace(microsecond=0)
    first = min((t for t in (d.effective, d.onset, d.expires) if t is not None), default=None)
    return min(now, first - timedelta(minutes=1)) if first is not None else now


def sms_text(
    draft: Draft | dict[str, Any],
    cat: Catalogue,
    link: str | None = None,
    max_segments: int = 3,
    *,
    lang: str = LANG,
    tz: ZoneInfo = LISBON,
) -> ShortText:
    """The SMS (in ``lang``, fitted into ``max_segments``, ``link`` kept whole) an SMS target sends
    for ``draft`` once issued: its CAP document rendered, then :func:`sms_message` of it."""
    from atalaia.warnings.cap import render

    d = draft if isinstance(draft, Draft) else Draft.model_validate(draft)
    doc = render(d, cat, _sent_for(d))
    return sms_message(parse_cap(doc.xml), tz, lang, link, max_segments)
