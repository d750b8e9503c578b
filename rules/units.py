"""Units of measurement: a rule's ``unit:`` and the UN/CEFACT common codes (NGSI-LD ``unitCode``)
observations carry, converted with pint.

>>> convert_factor("G51", "m3/s")          # litre per second -> cubic metre per second
(0.001, 0.0)
>>> convert_factor("CEL", "K")             # offset units convert too: v * scale + offset
(1.0, 273.15)
>>> convert_factor("MTR", "m3/s")
'unit MTR (meter) cannot be converted to m3/s: [length] is not [length] ** 3 / [time]'
>>> unit_problem("m3/s") is None, unit_problem("MQS") is None
(True, True)

Codes from UN/CEFACT Recommendation 20 (the codes NGSI-LD and Smart Data Models use); a rule may
write a code too (``unit: MQS``). The registry is loaded once, on first use (≈ 0.5 s): rule files
without ``unit:`` never load it, and the hot path only looks conversions up in a per-rule dict.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from fractions import Fraction
from functools import cache, lru_cache
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
    "61": "ppb",
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
    # what city sensors in Smart Data Models also report (WaterQualityObserved, WeatherObserved,
    # Streetlight, energy meters): without these a rule with a `unit:` refused every such reading,
    # and pint read some codes as other units (GL: gigalitre, MC: megacoulomb)
    "M1": "milligram/litre",
    "H29": "microgram/litre",
    "GL": "gram/litre",
    "KMQ": "kilogram/metre**3",
    "M33": "millimole/litre",
    "C34": "mole",
    "D10": "siemens/metre",
    "SIE": "siemens",
    "H61": "millisiemens/centimetre",
    "G42": "microsiemens/centimetre",
    "2Z": "millivolt",
    "KVT": "kilovolt",
    "HTZ": "hertz",
    "WHR": "watt_hour",
    "KWH": "kilowatt_hour",
    "MWH": "megawatt_hour",
    "MAW": "megawatt",
    "KVA": "kilovolt_ampere",
    "NX": "permille",
    "D54": "watt/metre**2",
    "LUX": "lux",
    "CDL": "candela",
    "A24": "candela/metre**2",
    "H67": "millimetre/hour",
    "2M": "centimetre/second",
    "HM": "mile/hour",
    "4H": "micrometre",
    "DMT": "decimetre",
    "FOT": "foot",
    "INH": "inch",
    "SMI": "mile",
    "CMK": "centimetre**2",
    "KMK": "kilometre**2",
    "HAR": "hectare",
    "MLT": "millilitre",
    "CMQ": "centimetre**3",
    "E32": "litre/hour",
    "G52": "metre**3/day",
    "MGM": "milligram",
    "MC": "microgram",
    "TNE": "tonne",
    "MPA": "megapascal",
    "DAY": "day",
}

_POWER = re.compile(r"(?<=[A-Za-zµμ])([23])(?![0-9])")  # m3 -> m**3, cm2 -> cm**2
_SPELLING = {"%": "percent", "°C": "degC", "ºC": "degC", "°F": "degF", "l": "litre"}


# Molar masses (g/mol) of the gases air-quality stations report, under the attribute names Smart
# Data Models' AirQualityObserved uses (and their names in words): a volume mixing ratio (ppm, ppb)
# and a mass concentration (µg/m³, mg/m³) of one of these convert into each other. NOx is counted
# as NO2, as the EU air-quality directives and EEA reporting count it.
GASES: dict[str, float] = {
    "no2": 46.0055,
    "nitrogendioxide": 46.0055,
    "nox": 46.0055,
    "no": 30.0061,
    "nitrogenmonoxide": 30.0061,
    "nitricoxide": 30.0061,
    "o3": 47.9982,
    "ozone": 47.9982,
    "so2": 64.064,
    "sulfurdioxide": 64.064,
    "sulphurdioxide": 64.064,
    "co": 28.0101,
    "carbonmonoxide": 28.0101,
    "co2": 44.0095,
    "carbondioxide": 44.0095,
    "nh3": 17.0305,
    "ammonia": 17.0305,
    "h2s": 34.081,
    "sh2": 34.081,
    "hydrogensulfide": 34.081,
    "hydrogensulphide": 34.081,
    "c6h6": 78.1118,
    "benzene": 78.1118,
    "ch4": 16.0425,
    "methane": 16.0425,
}
# The reference conditions of EU air-quality law for gases (Directive 2008/50/EC, Annex VI;
# 2024/2881): 293.15 K and 101.325 kPa, i.e. R·T/p = 0.024055 m³ per mole.
MOLAR_VOLUME_M3 = 8.314462618 * 293.15 / 101_325
MIXING_RATIOS = frozenset({"ppm", "parts_per_billion", "percent"})  # pint's names of 59, 61, P1


def gas_of(attribute: str | None) -> str | None:
    """The gas an attribute name stands for (``no2``, ``NO2``, ``nitrogenDioxide``; ``no2:sensorA``,
    an instance of the multi-attribute with a ``datasetId``), if known."""
    if not attribute:
        return None
    name = "".join(c for c in attribute.lower() if c.isalnum())
    if name not in GASES and ":" in attribute:
        return gas_of(attribute.partition(":")[0])
    return name if name in GASES else None


@cache
def registry() -> Any:
    import pint

    reg = pint.UnitRegistry(autoconvert_offset_to_baseunit=True)
    if "ppb" not in reg:
        reg.define("parts_per_billion = 1e-9 = ppb")
    return reg


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


def _mixing_factor(reg: Any, src: Any, dst: Any, attribute: str | None) -> float | str | None:
    """The factor between a volume mixing ratio and a mass concentration of the gas ``attribute``
    names (at the reference conditions of :data:`MOLAR_VOLUME_M3`); None if the two units are not
    that pair, a reason if they are but the gas is not known."""
    ratio = reg.get_dimensionality(reg.Unit("percent"))  # dimensionless
    mass = reg.get_dimensionality(reg.Unit("g/m**3"))
    dims = (reg.get_dimensionality(src), reg.get_dimensionality(dst))
    if dims not in ((ratio, mass), (mass, ratio)):
        return None
    if str(src if dims[0] == ratio else dst) not in MIXING_RATIOS:  # "one" (C62) may mean "no unit"
        return "a mass concentration converts to a mixing ratio written as ppm, ppb or %, not another dimensionless unit"
    if "meter ** 3" not in str(dst if dims[0] == ratio else src):  # mg/l: a gas dissolved in water,
        # whose ppm is a mass ratio (about mg/l), not a volume ratio in air
        return "a mixing ratio converts to a gas's mass concentration per cubic metre of air (ug/m3, mg/m3), not per litre"
    gas = gas_of(attribute)
    if gas is None:
        known = ", ".join(sorted({k for k in GASES if len(k) <= 4}))
        return (
            "a mixing ratio and a mass concentration convert into each other only for a gas of known "
            f"molar mass, named by the attribute ({known}); attribute {str(attribute)[:60]!r} names none"
        )
    per_ratio = reg.Quantity(GASES[gas] / MOLAR_VOLUME_M3, "g/m**3")  # the mass concentration of a ratio of 1
    one = reg.Quantity(1.0, src)
    return float((one * per_ratio if dims[0] == ratio else one / per_ratio).to(dst).magnitude)


#: the largest denominator of a factor (or offset) read as a ratio of integers: cm -> m is 1/100,
#: °F -> °C is 5/9 with an offset of -160/9, km/h -> m/s 5/18, knot -> m/s 463/900
_MAX_DENOMINATOR = 10_000


def _ratio(x: float) -> Fraction | None:
    """``x`` as a ratio of small integers when that is what it is (to its 12 significant digits)."""
    f = Fraction(x).limit_denominator(_MAX_DENOMINATOR)
    return f if abs(float(f) - x) <= 5e-12 * max(abs(x), 1e-300) or (x == 0 and f == 0) else None


@lru_cache(maxsize=1024)  # (unit codes come from the senders: bounded)
def converter(source: str, target: str, attribute: str | None = None) -> Callable[[float], float] | str:
    """A function converting a value in ``source`` to ``target``, or the reason it cannot
    (:func:`convert_factor`'s). Where the factor and offset are ratios of small integers (a metric
    prefix, °F and °C, km/h) it computes ``(v * p + r) / q`` in integers ``p``, ``r``, ``q``, as a
    rule author writes it (``height / 100``): 70 cm is exactly 0.7 m, 32 °F exactly 0 °C, so a
    reading at the threshold is not above it (``v * 0.01`` gave 0.7000000000000001, and
    ``32 * 0.555555555556 - 17.7777777778`` −8e-12). Where ``q`` is a power of ten (2^a·5^b) a
    reading's decimal digits give a decimal result, and that is the one returned: 1.1 m is 110 cm
    (``1.1 * 100`` is 110.00000000000001, above a threshold of 110), 73.1 cm is 0.731 m. Other
    factors (a gas's mixing ratio) multiply.

    >>> converter("CMT", "m")(70.0), converter("FAH", "degC")(32.0), converter("FAH", "degC")(212.0)
    (0.7, 0.0, 100.0)
    >>> converter("MTR", "cm")(1.1), converter("CMT", "m")(73.1), converter("G51", "m3/s")(2.3)
    (110.0, 0.731, 0.0023)
    >>> converter("CEL", "degF")(0.0), converter("KMH", "m/s")(36.0), converter("MTR", "m")(0.7)
    (32.0, 10.0, 0.7)
    """
    conv = convert_factor(source, target, attribute)
    if isinstance(conv, str):
        return conv
    scale, offset = conv
    ps, po = _ratio(scale), _ratio(offset)
    if ps is None or po is None:
        return lambda v: v * scale + offset
    q = math.lcm(ps.denominator, po.denominator)
    p, r = int(ps * q), int(po * q)
    if q == 1 and r == 0 and p == 1:
        return lambda v: v
    if _terminating(p) and _terminating(q):  # a decimal reading gives a decimal (1.1 m is 110 cm)
        if r == 0:
            return (lambda v: _decimal(v, v * p)) if q == 1 else (lambda v: _decimal(v, v * p / q))
        return lambda v: _decimal(v, (v * p + r) / q)
    return lambda v: (v * p + r) / q


def _terminating(q: int) -> bool:
    """Whether ``q`` is 2^a·5^b (a metric prefix; not the 9 of °F nor the 3600 of an hour)."""
    for f in (2, 5):
        while q % f == 0:
            q //= f
    return q == 1


def _decimal(v: float, x: float) -> float:
    """``x``, the reading ``v`` multiplied or divided by a power of ten (or 2^a·5^b), as the
    decimal that the reading's digits give when it has at most 12 significant digits (what a
    sensor or a person writes): 1.1 m × 100 is 110.00000000000001 in binary, 110 cm here, so a
    reading exactly at a threshold in another unit is not beyond it. Only a difference of one unit
    in the last place is taken back; a reading of more digits is converted as it is."""
    if float(f"{v:.12g}") != v:
        return x
    d = float(f"{x:.15g}")
    return d if abs(d - x) <= math.ulp(x) else x


def value_in_unit(
    obs: dict[str, Any], entity_type: str, attribute: str, value: float, unit: str
) -> float | str:
    """The value of ``attribute`` in an observation, in ``unit``: converted from the observation's
    unit code for it, else the unit its Smart Data Models type documents, else taken as it is; the
    reason instead when the code does not convert (or the result is not a finite number). What a
    per-entity threshold read off an attribute goes through (a rule's, a compound part's)."""
    units = obs.get("units")
    code = units.get(attribute) if units else None
    if code is None:
        from atalaia.rules.sdm import documented_unit

        code = documented_unit(entity_type, attribute)
        if code is None:
            return float(value)
    conv = converter(code, unit, attribute) if code.__class__ is str else "not text"
    if isinstance(conv, str):
        return f"attribute '{attribute}' in {str(code)[:40]!r}: {conv}"
    out = conv(float(value))
    return (
        out
        if math.isfinite(out)
        else f"attribute '{attribute}' in {str(code)[:40]!r}: not a finite number in {unit}"
    )


def _digits(x: float) -> float:
    """``x`` to 12 significant digits (0.001, not 0.0010000000000000002; a factor of 1.9e-9, the
    micrograms of a ppb, keeps its digits where rounding to 12 decimals kept one)."""
    return float(f"{x:.12g}") if x else 0.0


@lru_cache(maxsize=1024)  # (unit codes come from the senders: bounded)
def convert_factor(source: str, target: str, attribute: str | None = None) -> tuple[float, float] | str:
    """``(scale, offset)`` with ``value_in_target = value * scale + offset``, or the reason the
    source unit cannot be converted (unknown, or another dimension). ``attribute``, the observed
    attribute's name, lets a mixing ratio of a known gas convert to a mass concentration and back:

    >>> round(convert_factor("61", "ug/m3", "no2")[0], 4)   # 1 ppb of NO2 at 20 °C, 1 atm
    1.9125
    >>> round(convert_factor("GP", "ppm", "CO")[0], 4)      # 1 mg/m³ of CO
    0.8588
    """
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
        mixing = _mixing_factor(reg, src, dst, attribute)
        if isinstance(mixing, float) and math.isfinite(mixing) and mixing > 0:
            return (_digits(mixing), 0.0)
        return (
            f"unit {_describe(source)} cannot be converted to {target}: "
            f"{reg.get_dimensionality(src)} is not {reg.get_dimensionality(dst)}"
            + (f"; {mixing}" if isinstance(mixing, str) else "")
        )
    except (ArithmeticError, ValueError, TypeError) as exc:  # never stops a rule: the reading is rejected
        return f"unit {_describe(source)} cannot be converted to {target}: {str(exc)[:200]}"
    scale = float(one - zero)
    offset = float(zero)
    if not (math.isfinite(scale) and math.isfinite(offset)):
        return f"unit {_describe(source)} cannot be converted to {target}: the factor is not a finite number"
    return (_digits(scale), _digits(offset))
