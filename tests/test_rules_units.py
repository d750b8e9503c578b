"""Rule units: observations converted from their UN/CEFACT unitCode with pint; incompatible units are
rejected with a reason, never compared; `rules check` refuses unknown units and units the type's
documented unit cannot be converted to."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atalaia.rules.engine import RuleEngine
from atalaia.rules.errors import RuleFileError
from atalaia.rules.loader import load_texts
from atalaia.rules.units import UNECE_CODES, convert_factor, unit_problem

RULE = """rules:
  - id: flow-high
    select: {{type: WaterObserved, attribute: flow}}
    unit: {unit}
    severities: [{{severity: high, above: {above}}}]
"""


def _obs(v: float, code: str | None, t: int = 0) -> dict:
    o = {
        "time": f"2024-03-01T00:{t:02d}:00Z",
        "entity": "urn:x",
        "type": "WaterObserved",
        "attributes": {"flow": v},
    }
    if code:
        o["units"] = {"flow": code}
    return o


def _errors(text: str) -> list[str]:
    with pytest.raises(RuleFileError) as exc:
        load_texts([("r.yaml", text)])
    return [str(e) for e in exc.value.errors]


@settings(deadline=None)  # the first example loads pint's registry
@given(st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_litres_per_second_compare_as_cubic_metres(v: float) -> None:
    engine = RuleEngine(load_texts([("r.yaml", RULE.format(unit="m3/s", above=1.0))]))
    out, rejected = engine.observe_batch([_obs(v, "G51")])
    assert not rejected
    assert bool(out) == (v / 1000 > 1.0)  # as promtool evaluates `flow / 1000 > 1`
    if out:
        assert out[0].value == v / 1000


LEVEL = """rules:
  - id: underpass-flooded
    select: {type: WaterObserved, attribute: height}
    unit: m
    severities: [{severity: high, above: 0.7}]
  - id: frost
    select: {type: WaterObserved, attribute: temperature}
    unit: degC
    severities: [{severity: high, below: 0}]
"""


@settings(deadline=None)
@given(st.integers(min_value=-2000, max_value=2000), st.sampled_from(["CMT", "MMT"]))
def test_a_reading_exactly_at_the_threshold_in_another_unit_is_not_beyond_it(n: int, code: str) -> None:
    """70 cm under a rule `unit: m, above: 0.7` alarmed: 70 * 0.01 is 0.7000000000000001. The
    value is converted as an author writes it in PromQL (`height / 100 > 0.7`): exactly, for
    every reading that is a whole number of centimetres or millimetres."""
    from fractions import Fraction

    per_m = 100 if code == "CMT" else 1000
    engine = RuleEngine(load_texts([("r.yaml", LEVEL)]))
    reading = {**_obs(0, None), "attributes": {"height": float(n)}, "units": {"height": code}}
    out, rejected = engine.observe_batch([reading])
    assert not rejected
    assert bool(out) == (Fraction(n, per_m) > Fraction(7, 10)) == (n / per_m > 0.7)


@settings(deadline=None)
@given(
    st.integers(min_value=-(10**7), max_value=10**7),
    st.integers(min_value=0, max_value=4),
    st.sampled_from(
        [("MTR", "cm"), ("MTR", "mm"), ("CMT", "m"), ("MMT", "cm"), ("G51", "m3/s"), ("MQS", "l/s")]
    ),
)
def test_a_decimal_reading_converts_to_the_decimal_its_digits_give(n: int, places: int, codes) -> None:
    """1.10 m under a rule `unit: cm, above: 110` alarmed: 1.1 * 100 is 110.00000000000001. A
    reading written with a few decimals, multiplied or divided by a power of ten, is the decimal
    an author reads (110 cm, 0.731 m), so one exactly at a threshold is never beyond it."""
    from fractions import Fraction

    from atalaia.rules.units import convert_factor, converter

    text = f"{n / 10**places:.{places}f}"
    scale, _ = convert_factor(*codes)
    exact = Fraction(text) * Fraction(scale).limit_denominator(10_000)
    assert converter(*codes)(float(text)) == float(exact)


def test_a_gauge_in_metres_exactly_at_a_threshold_in_centimetres_does_not_alarm() -> None:
    rule = LEVEL.replace(
        "unit: m\n    severities: [{severity: high, above: 0.7}]",
        "unit: cm\n    severities: [{severity: high, above: 110}]",
    )
    assert "above: 110" in rule
    engine = RuleEngine(load_texts([("r.yaml", rule)]))
    at = {**_obs(0, None), "attributes": {"height": 1.1}, "units": {"height": "MTR"}}
    out, rejected = engine.observe_batch([at])
    assert not rejected and out == [], out
    above = {**_obs(0, None, 1), "attributes": {"height": 1.11}, "units": {"height": "MTR"}}
    (fired,) = engine.observe_batch([above])[0]
    assert fired.value == 111.0


@settings(deadline=None)
@given(st.integers(min_value=-400, max_value=400))
def test_fahrenheit_converts_exactly_where_the_celsius_value_is_exact(f: int) -> None:
    """32 °F under a frost rule `unit: degC, below: 0` alarmed: it was −8e-12 °C."""
    from fractions import Fraction

    from atalaia.rules.units import converter

    exact = (Fraction(f) - 32) * Fraction(5, 9)
    got = converter("FAH", "degC")(float(f))
    assert got == float(exact) or abs(Fraction(got) - exact) <= abs(exact) * Fraction(1, 2**52)
    engine = RuleEngine(load_texts([("r.yaml", LEVEL)]))
    reading = {**_obs(0, None), "attributes": {"temperature": float(f)}, "units": {"temperature": "FAH"}}
    out, _ = engine.observe_batch([reading])
    assert bool(out) == (exact < 0)


def test_every_code_parses() -> None:
    for code in UNECE_CODES:
        assert unit_problem(code) is None, code
    assert convert_factor("CMT", "m") == (0.01, 0.0)
    assert convert_factor("KMH", "m/s")[0] == pytest.approx(1 / 3.6)  # type: ignore[index]
    assert convert_factor("CEL", "degF") == pytest.approx((1.8, 32.0))
    assert convert_factor("A97", "Pa") == (100.0, 0.0)
    assert convert_factor("GQ", "mg/m3") == (0.001, 0.0)


def test_incompatible_or_unknown_code_is_rejected_with_a_reason_never_compared() -> None:
    engine = RuleEngine(load_texts([("r.yaml", RULE.format(unit="m3/s", above=1.0))]))
    out, rejected = engine.observe_batch([_obs(900.0, "MTR", 0), _obs(900.0, "XYZ", 1)])
    assert out == []
    assert [r.reason for r in rejected] == [
        "rule 'flow-high': attribute 'flow' in 'MTR': unit MTR (meter) cannot be converted to m3/s: "
        "[length] is not [length] ** 3 / [time]",
        "rule 'flow-high': attribute 'flow' in 'XYZ': unknown unit code 'XYZ': not a UN/CEFACT common "
        "code Atalaia knows",
    ]
    assert engine.stats["rejected_unit"] == 2


def test_without_a_code_the_documented_unit_of_the_type_is_assumed() -> None:
    # WaterObserved documents flow in m³/s (MQS): 2 (m³/s) is 2000 l/s
    engine = RuleEngine(load_texts([("r.yaml", RULE.format(unit="l/s", above=1500))]))
    out, _ = engine.observe_batch([_obs(2.0, None)])
    assert [(t.state, t.value) for t in out] == [("firing", 2000.0)]


def test_rules_without_unit_do_not_convert() -> None:
    text = "rules:\n  - id: f\n    select: {type: WaterObserved, attribute: flow}\n    severities: [{severity: high, above: 1}]\n"
    out, rejected = RuleEngine(load_texts([("r.yaml", text)])).observe_batch([_obs(40.0, "G51")])
    assert [t.value for t in out] == [40.0] and not rejected


def test_check_refuses_an_unknown_unit_at_its_place() -> None:
    errors = _errors(RULE.format(unit="m3/sx", above=1))
    assert len(errors) == 1 and errors[0].startswith("r.yaml:4:11: unknown unit 'm3/sx': write it as pint")


def test_check_refuses_a_unit_the_type_documents_otherwise() -> None:
    assert _errors(RULE.format(unit="mm", above=1)) == [
        "r.yaml:4:11: WaterObserved documents 'flow' in MQS: unit MQS (meter ** 3 / second) cannot be "
        "converted to mm: [length] ** 3 / [time] is not [length]"
    ]


def test_unit_on_a_detector_rule_is_refused() -> None:
    text = """rules:
  - id: a
    select: {type: WaterObserved, attribute: flow}
    detector: record-novelty
    unit: m3/s
    severities: [{severity: high, above: 0.5}]
"""
    assert _errors(text) == ["r.yaml:5:5: 'unit' does not apply to a detector score"]


CASES = Path(__file__).resolve().parent / "data" / "rules_cases"


@pytest.mark.parametrize("case", sorted(p.parent.parent.name for p in CASES.glob("*/prom/test.yml")))
def test_promtool_truth_still_holds(case: str) -> None:
    """Where a case's prom/ folder holds a promtool test, promtool passes it (skipped without promtool)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed")
    got = subprocess.run(
        [promtool, "test", "rules", "prom/test.yml"], cwd=CASES / case, capture_output=True, text=True
    )
    assert "SUCCESS" in got.stdout, got.stdout + got.stderr


AIR = """rules:
  - id: no2-high
    select: {{type: AirQualityObserved, attribute: {attribute}}}
    unit: {unit}
    severities: [{{severity: high, above: {above}}}]
"""


def _air(attribute: str, v: float, code: str, t: int = 0) -> dict:
    return {
        "time": f"2024-03-01T00:{t:02d}:00Z",
        "entity": "urn:ngsi-ld:AirQualityObserved:porto-1",
        "type": "AirQualityObserved",
        "attributes": {attribute: v},
        "units": {attribute: code},
    }


def test_a_gas_in_ppb_or_ppm_is_compared_as_micrograms_per_cubic_metre() -> None:
    # EU hourly limit for NO2: 200 µg/m³. At 20 °C and 101.325 kPa 1 ppb of NO2 is 1.9125 µg/m³,
    # so 100 ppb (191 µg/m³) is under it and 110 ppb (210 µg/m³) over it
    engine = RuleEngine(load_texts([("r.yaml", AIR.format(attribute="no2", unit="ug/m3", above=200))]))
    out, rejected = engine.observe_batch([_air("no2", 100.0, "61", 0), _air("no2", 110.0, "61", 1)])
    assert not rejected
    assert [(t.state, round(t.value, 2)) for t in out] == [("firing", 210.38)]
    engine = RuleEngine(load_texts([("r.yaml", AIR.format(attribute="no2", unit="ug/m3", above=200))]))
    out, rejected = engine.observe_batch([_air("no2", 0.11, "59", 0), _air("no2", 0.11, "ppm", 1)])
    assert not rejected and [round(t.value, 2) for t in out] == [210.38]
    # a rule in ppb on readings in µg/m³ (GQ), the other way round; NO2 written in capitals
    engine = RuleEngine(load_texts([("r.yaml", AIR.format(attribute="NO2", unit="ppb", above=100))]))
    out, rejected = engine.observe_batch([_air("NO2", 210.38, "GQ", 0)])
    assert not rejected and [round(t.value, 1) for t in out] == [110.0]


def test_a_mixing_ratio_of_no_known_gas_or_a_bare_number_is_rejected_with_the_reason() -> None:
    engine = RuleEngine(load_texts([("r.yaml", AIR.format(attribute="pm10", unit="ug/m3", above=50))]))
    out, rejected = engine.observe_batch([_air("pm10", 900.0, "61")])
    assert out == [] and len(rejected) == 1
    assert "attribute 'pm10' names none" in rejected[0].reason
    # "one" (C62) is how a vendor writes "no unit": never read as a mole fraction of ozone
    engine = RuleEngine(load_texts([("r.yaml", AIR.format(attribute="o3", unit="ug/m3", above=180))]))
    out, rejected = engine.observe_batch([_air("o3", 120.0, "C62")])
    assert out == [] and "written as ppm, ppb or %" in rejected[0].reason


@given(
    st.sampled_from(["no2", "NOx", "o3", "so2", "co", "c6h6", "nh3", "sh2", "carbonMonoxide", "ozone"]),
    st.sampled_from(["59", "61", "ppm", "ppb", "%"]),
    st.sampled_from(["GQ", "GP", "ug/m3", "mg/m3", "g/m3"]),
)
def test_gas_conversions_invert_each_other(gas: str, ratio: str, mass: str) -> None:
    there, back = convert_factor(ratio, mass, gas), convert_factor(mass, ratio, gas)
    assert isinstance(there, tuple) and isinstance(back, tuple), (there, back)
    assert there[1] == back[1] == 0.0
    assert there[0] * back[0] == pytest.approx(1.0, rel=1e-9)
    assert isinstance(convert_factor(ratio, mass, "temperature"), str)  # no gas: a reason
    assert isinstance(convert_factor(ratio, mass), str)


def test_the_module_examples_hold() -> None:
    import doctest

    import atalaia.rules.units as units

    result = doctest.testmod(units)
    assert result.attempted >= 6 and result.failed == 0, result


def test_a_dissolved_gas_in_ppm_is_not_converted_as_air() -> None:
    # in water, ppm is a mass ratio (about mg/l): converting it with air's molar volume was 1 400
    # times off for ammonia
    for source, target in (("59", "mg/l"), ("mg/l", "ppm")):
        reason = convert_factor(source, target, "nh3")
        assert isinstance(reason, str) and "per cubic metre of air" in reason


def test_a_ppb_rule_on_a_gas_documented_in_micrograms_warns_that_readings_without_a_code_are_converted() -> (
    None
):
    text = AIR.format(attribute="no2", unit="ppb", above=100)
    ruleset = load_texts([("r.yaml", text)])
    warnings = [str(w) for w in ruleset.warnings]
    assert any("r.yaml:4:" in w and "without a unit code are taken in GQ" in w for w in warnings), warnings
    engine = RuleEngine(ruleset)
    out, rejected = engine.observe_batch([{**_air("no2", 210.38, "GQ"), "units": {}}])
    assert not rejected and [round(t.value, 1) for t in out] == [110.0]  # as documented: µg/m³
    quiet = load_texts([("r.yaml", AIR.format(attribute="no2", unit="ug/m3", above=200))])
    assert not [w for w in quiet.warnings if "unit code" in str(w)]


FRACTIONS = [  # (type, attribute): the Smart Data Models schema bounds it to [0, 1]
    ("AirQualityObserved", "relativeHumidity"),
    ("AirQualityObserved", "reliability"),
    ("TrafficFlowObserved", "occupancy"),
    ("Device", "batteryLevel"),
]


def _percent_rule(typ: str, attribute: str, above: float = 90) -> str:
    return (
        f"rules:\n  - id: high\n    select: {{type: {typ}, attribute: {attribute}}}\n"
        f'    unit: "%"\n    severities: [{{severity: high, above: {above}}}]\n'
    )


def _one(typ: str, attribute: str, v: float, code: str | None = None) -> dict:
    o = {"time": "2024-03-01T00:00:00Z", "entity": "urn:x", "type": typ, "attributes": {attribute: v}}
    if code:
        o["units"] = {attribute: code}
    return o


@pytest.mark.parametrize(("typ", "attribute"), FRACTIONS)
def test_a_fraction_the_schema_documents_is_read_as_one_not_percent(typ: str, attribute: str) -> None:
    """Smart Data Models send these as a number between 0 and 1: 0.95 without a unit code is 95 %
    for a rule in %, not 0.95 %."""
    from atalaia.rules.sdm import documented_unit

    assert documented_unit(typ, attribute) == "C62"
    engine = RuleEngine(load_texts([("r.yaml", _percent_rule(typ, attribute))]))
    out, rejected = engine.observe_batch([_one(typ, attribute, 0.95)])
    assert not rejected
    assert [(t.state, t.value) for t in out] == [("firing", pytest.approx(95.0))]


@settings(deadline=None)
@given(st.floats(0, 1, allow_nan=False), st.sampled_from([None, "C62", "P1"]))
def test_percent_and_fraction_convert_into_each_other(fraction: float, code: str | None) -> None:
    """Property: a relative humidity sent as a fraction (no code, or C62) or in percent (P1) is the
    same percentage for a rule in %."""
    v = fraction * 100 if code == "P1" else fraction
    engine = RuleEngine(load_texts([("r.yaml", _percent_rule("AirQualityObserved", "relativeHumidity", 50))]))
    out, rejected = engine.observe_batch([_one("AirQualityObserved", "relativeHumidity", v, code)])
    assert not rejected
    percent = v * (1.0 if code == "P1" else 100.0)
    assert bool(out) == (percent > 50)
    if out:
        assert out[0].value == pytest.approx(fraction * 100)
    assert convert_factor("C62", "%") == (100.0, 0.0) and convert_factor("P1", "C62") == (0.01, 0.0)


def test_the_attribute_catalogue_is_what_the_generator_builds() -> None:
    """rules/sdm/attributes.json is generated (rules/sdm/build.py) from the bundled schemas: the
    committed table is the generator's output, so a unit changed in one is changed in the other."""
    import json

    from atalaia.rules.sdm import build

    root = Path(__file__).resolve().parents[1]
    schemas = root.parent / "shared" / "fixtures" / "sdm"
    if not schemas.is_dir():
        pytest.skip("the Smart Data Models schemas (../shared/fixtures/sdm) are not beside the checkout")
    committed = json.loads((root / "rules" / "sdm" / "attributes.json").read_text(encoding="utf-8"))
    assert build.build(schemas) == committed


#: UN/CEFACT Rec. 20 codes city sensors report beyond the first table, with the SI value of one unit
#: as Rec. 20 (rev. 14, Annex II) states it: (code, SI unit, factor)
REC20_SI = [
    ("M1", "kg/m3", 1e-3),  # milligram per litre (WaterQualityObserved O2, tss, NH4 ...)
    ("H29", "kg/m3", 1e-6),  # microgram per litre
    ("GL", "kg/m3", 1.0),  # gram per litre (pint read it as a gigalitre)
    ("KMQ", "kg/m3", 1.0),
    ("M33", "mol/m3", 1.0),  # millimole per litre
    ("C34", "mol", 1.0),
    ("D10", "S/m", 1.0),  # conductivity
    ("SIE", "S", 1.0),
    ("H61", "S/m", 0.1),  # millisiemens per centimetre
    ("G42", "S/m", 1e-4),  # microsiemens per centimetre
    ("2Z", "V", 1e-3),  # millivolt (orp)
    ("KVT", "V", 1e3),
    ("HTZ", "Hz", 1.0),
    ("WHR", "J", 3.6e3),
    ("KWH", "J", 3.6e6),
    ("MWH", "J", 3.6e9),
    ("MAW", "W", 1e6),
    ("KVA", "V*A", 1e3),
    ("NX", "dimensionless", 1e-3),  # per mille (salinity)
    ("D54", "W/m2", 1.0),  # solar radiation
    ("LUX", "lx", 1.0),
    ("CDL", "cd", 1.0),
    ("A24", "cd/m2", 1.0),
    ("H67", "m/s", 0.277777778e-6),  # millimetre per hour (precipitation)
    ("2M", "m/s", 1e-2),
    ("HM", "m/s", 0.44704),
    ("4H", "m", 1e-6),
    ("DMT", "m", 0.1),
    ("FOT", "m", 0.3048),
    ("INH", "m", 25.4e-3),
    ("SMI", "m", 1609.344),
    ("CMK", "m2", 1e-4),
    ("KMK", "m2", 1e6),
    ("HAR", "m2", 1e4),
    ("MLT", "m3", 1e-6),
    ("CMQ", "m3", 1e-6),
    ("E32", "m3/s", 2.77778e-7),  # litre per hour
    ("G52", "m3/s", 1.15741e-5),  # cubic metre per day
    ("MGM", "kg", 1e-6),
    ("MC", "kg", 1e-9),  # microgram (pint read it as a megacoulomb)
    ("TNE", "kg", 1e3),
    ("MPA", "Pa", 1e6),
    ("DAY", "s", 86400.0),
]


@pytest.mark.parametrize(("code", "si", "factor"), REC20_SI)
def test_the_codes_city_sensors_report_convert_as_rec_20_defines_them(
    code: str, si: str, factor: float
) -> None:
    """A WaterQualityObserved's O2 in M1 (mg/l) under a rule `unit: mg/l` went to the DLQ as "unknown
    unit code 'M1'" with every reading, and the rule never fired; GL and MC were read by pint as a
    gigalitre and a megacoulomb."""
    scale, offset = convert_factor(code, si)  # type: ignore[misc]
    assert offset == 0.0 and scale == pytest.approx(factor, rel=1e-5)


WATER_QUALITY = """rules:
  - id: low-oxygen
    select: {type: WaterQualityObserved, attribute: O2}
    unit: ug/l
    severities: [{severity: high, below: 4000}]
  - id: heavy-rain
    select: {type: WeatherObserved, attribute: precipitation}
    unit: m/s
    severities: [{severity: high, above: 1e-5}]
"""


@settings(deadline=None)
@given(
    st.floats(min_value=0, max_value=100, allow_nan=False),
    st.floats(min_value=0, max_value=100, allow_nan=False),
)
def test_readings_in_milligrams_per_litre_and_millimetres_per_hour_fire_their_rules(
    o2: float, rain: float
) -> None:
    engine = RuleEngine(load_texts([("r.yaml", WATER_QUALITY)]))
    readings = [
        {
            "time": "2024-03-01T00:00:00Z",
            "entity": "urn:ngsi-ld:WaterQualityObserved:douro",
            "type": "WaterQualityObserved",
            "attributes": {"O2": o2},
            "units": {"O2": "M1"},
        },
        {
            "time": "2024-03-01T00:00:00Z",
            "entity": "urn:ngsi-ld:WeatherObserved:porto",
            "type": "WeatherObserved",
            "attributes": {"precipitation": rain},
            "units": {"precipitation": "H67"},
        },
    ]
    out, rejected = engine.observe_batch(readings)
    assert not rejected
    fired = {t.rule: t.value for t in out}
    assert ("low-oxygen" in fired) == (o2 * 1000 < 4000)
    assert ("heavy-rain" in fired) == (rain / 3_600_000 > 1e-5)
    if "low-oxygen" in fired:
        assert fired["low-oxygen"] == pytest.approx(o2 * 1000)


@settings(deadline=None)
@given(
    st.from_regex(r"[A-Za-z0-9_-]{1,12}(:[A-Za-z0-9_-]{1,8})?", fullmatch=True),
    st.sampled_from(["61", "59", "GQ", None]),
    st.floats(min_value=0, max_value=1000, allow_nan=False),
)
def test_an_instance_with_a_dataset_id_converts_as_its_attribute(
    dataset: str, code: str | None, v: float
) -> None:
    """Ingest names the instance of a multi-attribute with a datasetId ``no2:<dataset>``. A rule on it
    refused every reading in ppb or ppm ("attribute 'no2:sensorA' names none" of the gases), and
    readings without a unit code were taken in the rule's unit, not in the µg/m³ AirQualityObserved
    documents for no2; ``rules check`` warned that the name is not in the schema."""
    instance = f"no2:{dataset}"
    engine = RuleEngine(
        load_texts([("r.yaml", AIR.format(attribute=f'"{instance}"', unit="ug/m3", above=200))])
    )
    reference = RuleEngine(load_texts([("r.yaml", AIR.format(attribute="no2", unit="ug/m3", above=200))]))
    reading = _air(instance, v, code)  # type: ignore[arg-type]
    if code is None:
        del reading["units"]
    out, rejected = engine.observe_batch([reading])
    assert not rejected
    same = {**reading, "attributes": {"no2": v}, **({"units": {"no2": code}} if code else {})}
    expected, _ = reference.observe_batch([same])
    assert [(t.state, t.value) for t in out] == [(t.state, t.value) for t in expected]
    assert not load_texts([("r.yaml", AIR.format(attribute=f'"{instance}"', unit="ug/m3", above=1))]).warnings
