"""Durations as rule authors write them (Prometheus style): ``30s``, ``10m``, ``1h30m``, ``2d``: ASCII
digits, finite, at most :data:`MAX_DURATION` (3650d, ten years)."""

from __future__ import annotations

import math
import re

_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d|w)")  # ASCII digits only (not '٥m')
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
DURATION_PATTERN = r"^(0|([0-9]+(\.[0-9]+)?(ms|s|m|h|d|w))+)$"
MAX_DURATION = 3650 * 86400.0  # ten years: longer windows, for, absent_for... mean nothing for alarms


def parse_duration(text: object) -> float:
    """``"1h30m"`` -> 5400.0 seconds. Raises ValueError with a message for rule authors."""
    if isinstance(text, bool):
        raise ValueError(f"bad duration {text!r}: use a number and a unit, e.g. 30s, 10m, 1h30m")
    if isinstance(text, int | float):
        if text == 0:
            return 0.0
        if text < 0:
            raise ValueError(f"duration must not be negative (got {text})")
        if not math.isfinite(text):
            raise ValueError(f"bad duration {text}: use a number and a unit, e.g. 30s, 10m, 1h30m")
        raise ValueError(f"duration {text} has no unit: write e.g. {text}s or {text}m")
    if not isinstance(text, str):
        raise ValueError(f"bad duration {text!r}: use a number and a unit, e.g. 30s, 10m, 1h30m")
    s = text.strip()
    if s.startswith("-"):
        raise ValueError(f"duration must not be negative (got {s!r})")
    if s == "0":
        return 0.0
    pos, total = 0, 0.0
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if pos != len(s) or not s:
        raise ValueError(
            f"bad duration {_short(text)}: use a number and a unit (ms, s, m, h, d, w), e.g. 30s, 10m, 1h30m"
        )
    if not total <= MAX_DURATION:  # also inf (400 nines) and nan
        raise ValueError(f"duration {_short(text)} is longer than the limit of 3650d (ten years)")
    return total


def _short(text: str) -> str:
    return repr(text) if len(text) <= 40 else repr(text[:40]) + f"… ({len(text)} characters)"


def format_duration(seconds: float) -> str:
    """5400.0 -> ``"1h30m"`` (inverse of :func:`parse_duration` for whole seconds)."""
    if seconds == 0:
        return "0s"
    out, rest = [], seconds
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        n = int(rest // size)
        if n:
            out.append(f"{n}{unit}")
            rest -= n * size
    if rest:
        out.append(f"{rest:g}s")
    return "".join(out)
