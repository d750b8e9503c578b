"""Units of measurement: a rule's ``unit:`` and the UN/CEFACT common codes (NGSI-LD ``unitCode``)
observations carry, converted with pint.

>>> convert_factor("G51", "m3/s")          # litre per second -> cubic metre per second
(0.001, 0.0)
>>> convert_factor("CEL", "K")             # offset units convert too: v * scale + offset
(1.0, 273.15)
>>> convert_factor("MTR", "m3/s")
"unit MTR (meter) cannot be converted to m3/s: [length] is not [length] ** 3 / [time]"
>>> unit_problem("m3/s") is None, unit_problem("MQS") is None
(True, True)

Codes from UN/CEFACT Recommendation 20 (the codes NGSI-LD and Smart Data Models use); a rule may
write a code too (``unit: MQS``). The registry is loaded once, on first use (≈ 0.5 s): rule files
without ``unit:`` never load it, and the hot path only looks conversions up in a per-rule dict.
"""

from __future__ import annotations

import math
import re
from functools import cache
from typing import Any

# UN/CEFACT Recommendation 20 common code -> pint unit
UNECE_CODES: dict[str, str] = {
    "MTR": "metre",
    "CMT": "centimetre",
    "MMT": "millimetre",
    "KMT": "kilometre",
    "MTK": "metre**2",
    "MTQ": "metre**3",
    "LTR": "litre",
    "MQS": "metre**3/second",
    "MQH": "metre**3/hour",
    "G51": "litre/second",
    "L2": "litre/minute",
    "CEL": "degC",
    "KEL": "kelvin",
    "FAH": "degF",
    "KMH": "kilometre/hour",
    "MTS": "metre/second",
    "KNT": "knot",
    "A97": "hectopascal",
    "PAL": "pascal",
    "KPA": "kilopascal",
    "MBR": "millibar",
    "BAR": "bar",
    "P1": "percent",
    "GQ": "microgram/metre**3",
    "GP": "milligram/metre**3",
    "59": "ppm",
    "KGM": "kilogram",
    "GRM": "gram",
    "SEC": "second",
    "MIN": "minute",
    "HUR": "hour",
    "WTT": "watt",
    "KWT": "kilowatt",
    "VLT": "volt",
    "AMP": "ampere",
    "DD": "degree",
    "2N": "decibel",
    "C62": "dimensionless",
}

_POWER = re.compile(r"(?<=[A-Za-zµμ])([23])(?![0-9])")  # m3 -> m**3, cm2 -> cm**2
_SPELLING = {"%": "percent", "°C": "degC", "ºC": "degC", "°F": "degF", "l": "litre"}


@cache
def registry() -> Any:
    import pint

    return pint.UnitRegistry(autoconvert_offset_to_baseunit=True)


def _pint_text(unit: str) -> str:
    text = unit.strip()
    if text in UNECE_CODES:
        return UNECE_CODES[text]
    if text in _SPELLING:
        return _SPELLING[text]
    return _POWER.sub(r"**\1", text.replace("%", "percent"))


@cache
def parse_unit(unit: str) -> Any:
    """The pint unit of a rule unit or UN/CEFACT code; raises ValueError with a reason."""
    import pint

    try:
        return registry().parse_units(_pint_text(unit))
    except (
        pint.errors.PintError,
        AttributeError,
        TypeError,
        ValueError,
        SyntaxError,
        AssertionError,
        ArithmeticError,  # 'm3/s / 0': ZeroDivisionError; OverflowError
        RecursionError,  # a deeply parenthesised expression
    ) as exc:
        raise ValueError(f"unknown unit {unit[:40]!r} ({str(exc)[:200]})") from None


def unit_problem(unit: str) -> str | None:
    """A message for a unit pint cannot read (a rule author's wording), else None."""
    try:
        parse_unit(unit)
    except ValueError:
        return (
            f"unknown unit {unit!r}: write it as pint reads units (m3/s, l/s, m, cm, mm, degC or °C, km/h, "
            "m/s, hPa, %, ug/m3) or as a UN/CEFACT common code (MQS, G51, MTR, CMT, MMT, CEL, KMH, MTS, "
            "A97, P1, GQ)"
        )
    return None


def _describe(unit: str) -> str:
    try:
        name = str(parse_unit(unit))
    except ValueError:
        return unit
    return f"{unit} ({name})" if unit in UNECE_CODES else unit


@cache
def convert_factor(source: str, target: str) -> tuple[float, float] | str:
    """``(scale, offset)`` with ``value_in_target = value * scale + offset``, or the reason the
    source unit cannot be converted (unknown, or another dimension)."""
    import pint

    try:
        src = parse_unit(source)
    except ValueError:
        return f"unknown unit code {source!r}: not a UN/CEFACT common code Atalaia knows"
    dst = parse_unit(target)
    reg = registry()
    try:
        zero = reg.Quantity(0.0, src).to(dst).magnitude
        one = reg.Quantity(1.0, src).to(dst).magnitude
    except pint.errors.DimensionalityError:
        return (
            f"unit {_describe(source)} cannot be converted to {target}: "
            f"{reg.get_dimensionality(src)} is not {reg.get_dimensionality(dst)}"
        )
    except (ArithmeticError, ValueError, TypeError) as exc:  # never stops a rule: the reading is rejected
        return f"unit {_describe(source)} cannot be converted to {target}: {str(exc)[:200]}"
    scale = float(one - zero)
    offset = float(zero)
    if not (math.isfinite(scale) and math.isfinite(offset)):
        return f"unit {_describe(source)} cannot be converted to {target}: the factor is not a finite number"
    return (round(scale, 12) if scale else scale, round(offset, 12) if offset else 0.0)
