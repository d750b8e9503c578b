"""SMS length rules: GSM 03.38 7-bit (160 per single SMS, 153 per concatenated segment; the
extension-table characters take two septets) or UCS-2 (70 / 67 UTF-16 units). Segment-aware
truncation never splits an escape pair or a surrogate pair.

>>> segments("Rio Douro acima de 4,5 m")
(1, 'gsm7')
>>> text = fit("Nível do rio: alerta crítico " * 20, max_segments=1)
>>> segments(text)
(1, 'gsm7')
"""

from __future__ import annotations

import unicodedata
from typing import Literal

Encoding = Literal["gsm7", "ucs2"]

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXT = frozenset("^{}\\[~]|€\f")
LIMITS = {"gsm7": (160, 153), "ucs2": (70, 67)}
ELLIPSIS = {"gsm7": "...", "ucs2": "…"}


def is_gsm7(text: str) -> bool:
    return all(c in GSM7_BASIC or c in GSM7_EXT for c in text)


def _cost(c: str, enc: Encoding) -> int:
    if enc == "gsm7":
        return 2 if c in GSM7_EXT else 1
    return 2 if ord(c) > 0xFFFF else 1


def segments(text: str) -> tuple[int, Encoding]:
    """Number of SMS segments ``text`` needs, and the encoding a gateway would use."""
    enc: Encoding = "gsm7" if is_gsm7(text) else "ucs2"
    return _segments(text, enc), enc


def _segments(text: str, enc: Encoding) -> int:
    single, multi = LIMITS[enc]
    if sum(_cost(c, enc) for c in text) <= single:
        return 1
    count, room = 1, multi
    for c in text:
        k = _cost(c, enc)
        if k > room:
            count, room = count + 1, multi
        room -= k
    return count


def transliterate(text: str) -> str:
    """Replace characters outside GSM-7 by their unaccented form (ã→a, ç→c, õ→o, “→"),
    keeping the accented letters GSM-7 has (é, à, Ç...). Portuguese text then fits 160 a segment.
    Text is composed first (NFC): "Campanha\u0303", as a PDF or a Mac may give it, is "Campanha",
    not "Campanha?"; a combining mark that composes with nothing is dropped."""
    out = []
    for c in unicodedata.normalize("NFC", text):
        if c in GSM7_BASIC or c in GSM7_EXT:
            out.append(c)
            continue
        c2 = {
            "“": '"',
            "”": '"',
            "‘": "'",
            "’": "'",
            "–": "-",
            "—": "-",
            "…": "...",
            "º": "o",
            "ª": "a",
            "\t": " ",
        }.get(c)
        if c2 is None:
            base = unicodedata.normalize("NFKD", c)
            c2 = "".join(ch for ch in base if ch in GSM7_BASIC or ch in GSM7_EXT)
            c2 = c2 or ("" if unicodedata.combining(c) else "?")
        out.append(c2)
    return "".join(out)


def fit(text: str, max_segments: int = 1, translit: bool = True) -> str:
    """``text`` made to fit ``max_segments``: transliterated to GSM-7 if asked (and needed),
    then truncated at a character boundary with an ellipsis."""
    if max_segments < 1:
        raise ValueError("max_segments must be at least 1")
    text = " ".join(text.split())  # newlines and runs of spaces cost segments
    if translit and not is_gsm7(text):
        text = transliterate(text)
    n, enc = segments(text)
    if n <= max_segments:
        return text
    ell = ELLIPSIS[enc]
    lo, hi = 0, len(text)  # longest prefix that fits with the ellipsis (monotone in length)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _segments(text[:mid].rstrip() + ell, enc) <= max_segments:
            lo = mid
        else:
            hi = mid - 1
    prefix = text[:lo]
    if prefix and "\ud800" <= prefix[-1] <= "\udbff":  # never end on half a surrogate pair
        prefix = prefix[:-1]
    return prefix.rstrip() + ell


def fit_keeping(head: str, tail: str, max_segments: int = 1, translit: bool = True) -> str:
    """``head`` shortened (with an ellipsis) so that ``head + " " + tail`` fits ``max_segments``;
    ``tail`` (the incident link) is never cut. If even the tail alone does not fit, plain
    :func:`fit` of the whole."""
    tail = " ".join(tail.split())
    whole = fit(f"{head} {tail}", max_segments, translit)
    if whole.endswith(tail):
        return whole
    head = " ".join(head.split())
    if translit and not is_gsm7(head + tail):
        head, tail = transliterate(head), transliterate(tail)
    enc = segments(head + " " + tail)[1]
    ell = ELLIPSIS[enc]
    if _segments(ell + " " + tail, enc) > max_segments:
        return whole
    lo, hi = 0, len(head)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _segments(head[:mid].rstrip() + ell + " " + tail, enc) <= max_segments:
            lo = mid
        else:
            hi = mid - 1
    prefix = head[:lo]
    if prefix and "\ud800" <= prefix[-1] <= "\udbff":
        prefix = prefix[:-1]
    return prefix.rstrip() + ell + " " + tail
