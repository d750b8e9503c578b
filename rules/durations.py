"""Durations as rule authors write them (Prometheus style): ``30s``, ``10m``, ``1h30m``, ``2d``."""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
DURATION_PATTERN = r"^(0|(\d+(\.\d+)?(ms|s|m|h|d|w))+)$"


def parse_duration(text: object) -> float:
    """``"1h30m"`` -> 5400.0 seconds. Raises ValueError with a message for rule authors."""
    if isinstance(text, bool):
        raise ValueError(f"bad duration {text!r}: use a number and a unit, e.g. 30s, 10m, 1h30m")
    if isinstance(text, int | float):
        if text == 0:
            return 0.0
        if text < 0:
            raise ValueError(f"duration must not be negative (got {text})")
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
            f"bad duration {text!r}: use a number and a unit (ms, s, m, h, d, w), e.g. 30s, 10m, 1h30m"
        )
    return total


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
