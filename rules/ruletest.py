"""Rule unit tests in a promtool-like format: input series in shorthand, expected alarms at given times.

```yaml
rule_files: [../config/rules/hydro.yaml]       # relative to this file
tests:
  - name: river level fires after 2 minutes
    start: "2024-03-01T00:00:00Z"               # time of the first value
    interval: 1m                                # spacing of the values; also the absence clock
    input_series:
      - {entity: "urn:ngsi-ld:WaterObserved:porto-01", type: WaterObserved, attribute: height,
         labels: {district: "13"}, values: "4 4.6+0.1x3 _ 4.1"}
    alarm_tests:                                # open alarms (pending/firing) at eval_time
      - eval_time: 3m
        rule: river-level-high                  # optional: only this rule's alarms
        exp_alarms: [{key: "urn:ngsi-ld:WaterObserved:porto-01", state: firing, severity: critical,
                      labels: {district: "13", team: hydro},            # optional: the exact set
                      annotations: {summary: "porto-01 at 4.90 m"}}]    # optional: the exact set
    exp_transitions:                            # optional: the exact transitions of the whole run
      - {at: 1m, rule: river-level-high, key: "urn:ngsi-ld:WaterObserved:porto-01", state: pending,
         severity: critical}
```

Values: ``a`` a number, ``_`` no observation, ``a+bxn`` / ``a-bxn`` = n+1 values a, a±b, ... a±n·b,
``axn`` = n+1 times a, ``_xn`` = n steps without an observation.

``start`` is an ISO 8601 time with a UTC offset (``Z``, ``+01:00``); one without is refused, as the
engine refuses observation times without one (promtool's tests have no start: their series begin
at time 0, UTC). ``interval`` must be longer than 0. A test runs at most :data:`MAX_STEPS`
evaluation steps (series values, and ``eval_time`` / ``at`` ÷ ``interval``): a longer one is refused.
"""

from __future__ import annotations

import difflib
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from atalaia.rules.durations import format_duration
from atalaia.rules.engine import RuleEngine, ScorerMissing
from atalaia.rules.errors import RuleError, RuleFileError
from atalaia.rules.loader import load_model, load_rules
from atalaia.rules.schema import Duration, Severity, Strict
from atalaia.streams.clock import format_time
from atalaia.streams.config_yaml import YamlError, read_text

MAX_STEPS = 100_000  # evaluation steps (and series values) of one test: 69 days at 1m
_EXPANDING = re.compile(
    r"^(?P<a>[-+]?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)(?:(?P<op>[-+])(?P<b>[0-9]+(?:\.[0-9]+)?))?"
    r"x(?P<n>[0-9]+)$"
)
_GAPS = re.compile(r"^_x(?P<n>[0-9]+)$")
# ASCII decimals, and promtool's Inf / NaN (an observation the engine then refuses, as before)
_NUMBER = re.compile(r"^[-+]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|Inf|NaN)$")


def _repeat(digits: str, token: str, total: int) -> int:
    """The ``n`` of an ``…xn`` token, refused when the series would pass MAX_STEPS values."""
    n = int(digits) if len(digits) <= 7 else MAX_STEPS + 1
    if total + n > MAX_STEPS:
        raise ValueError(
            f"{token[:40]!r} makes the series longer than {MAX_STEPS} values (the limit of a test)"
        )
    return n


def expand_series(text: str) -> list[float | None]:
    """``"1+1x3 _ 4"`` -> [1.0, 2.0, 3.0, 4.0, None, 4.0]. Raises ValueError on a bad token or a series
    of more than MAX_STEPS values (checked before expanding)."""
    out: list[float | None] = []
    for token in str(text).split():
        if len(out) >= MAX_STEPS:
            raise ValueError(f"the series is longer than {MAX_STEPS} values (the limit of a test)")
        if token == "_":
            out.append(None)
            continue
        g = _GAPS.match(token)
        if g:
            out += [None] * _repeat(g.group("n"), token, len(out))
            continue
        m = _EXPANDING.match(token)
        if m:
            a, n = float(m.group("a")), _repeat(m.group("n"), token, len(out) + 1)
            b = float(m.group("b") or 0) * (-1 if m.group("op") == "-" else 1)
            out += [a + i * b for i in range(n + 1)]
            continue
        if not _NUMBER.match(token):  # float() would also read '٥', '1_0', 'infinity'
            raise ValueError(f"bad series value {token[:40]!r}: use a number, '_', 'a+bxn', 'a-bxn' or '_xn'")
        out.append(float(token))
    return out


class Series(Strict):
    entity: str = Field(min_length=1)  # the engine takes the observations built from it unchecked
    type: str
    attribute: str
    unit: str | None = Field(
        None,
        min_length=1,
        description="the unit code the readings are sent with (NGSI-LD unitCode: CMT, MTR, G51...; "
        "a pint unit also reads); none: as a sensor that sends none (the type's documented unit)",
    )
    labels: dict[str, str] = Field(default_factory=dict)
    values: str

    @field_validator("values")
    @classmethod
    def _values(cls, text: str) -> str:
        expand_series(text)  # a bad token or a too long series is the file's error, at 'values'
        return text


class ExpectedAlarm(Strict):
    rule: str | None = None
    key: str
    state: str = "firing"
    severity: Severity
    labels: dict[str, str] | None = Field(
        None,
        alias="exp_labels",
        description="the alarm's full label set (observation labels + the rule's), as promtool's exp_labels",
    )
    annotations: dict[str, str] | None = Field(
        None, alias="exp_annotations", description="the alarm's annotations, as promtool's exp_annotations"
    )


class AlarmTest(Strict):
    eval_time: Duration
    rule: str | None = None
    exp_alarms: list[ExpectedAlarm] = Field(default_factory=list)

    @model_validator(mode="after")
    def _rule_named(self) -> AlarmTest:
        """An expected alarm names its rule, here or in the alarm test (it could never match)."""
        if self.rule is None:
            for e in self.exp_alarms:
                if e.rule is None:
                    raise ValueError(
                        f"the expected alarm {e.key!r} names no rule: add 'rule:' to it or to this "
                        "alarm test (an alarm test without 'rule' checks the alarms of every rule)"
                    )
        return self


class ExpectedTransition(Strict):
    at: Duration
    rule: str
    key: str
    state: str
    severity: Severity


class RuleTest(Strict):
    name: str
    start: str = Field(
        "2024-01-01T00:00:00Z", description="time of the first value: ISO 8601 with a UTC offset"
    )
    interval: Duration = 60.0
    input_series: list[Series]
    alarm_tests: list[AlarmTest] = Field(default_factory=list)
    exp_transitions: list[ExpectedTransition] | None = None

    @field_validator("start", mode="before")
    @classmethod
    def _start(cls, value: Any) -> Any:
        if isinstance(value, datetime):  # an unquoted YAML timestamp
            value = value.isoformat()
        if not isinstance(value, str):
            return value  # pydantic says it must be text
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"bad time {value[:40]!r}: write an ISO 8601 time with a UTC offset, e.g. 2024-03-01T00:00:00Z"
            ) from None
        if when.utcoffset() is None:
            raise ValueError(
                f"time {value[:40]!r} has no UTC offset: add Z (UTC) or the offset, e.g. {value}Z or {value}+01:00"
            )
        return value

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be longer than 0 (the spacing of the values)")
        return value

    @model_validator(mode="after")
    def _steps(self) -> RuleTest:
        """Refuse a test that would run more than MAX_STEPS evaluations (each step evaluates the
        absence clock) or end past the calendar, before running it."""
        times = [a.eval_time for a in self.alarm_tests] + [t.at for t in self.exp_transitions or []]
        lengths = [len(expand_series(s.values)) - 1 for s in self.input_series]
        steps = max([*lengths, *(t / self.interval for t in times)], default=0)
        if steps > MAX_STEPS:
            raise ValueError(
                f"test '{self.name}' would run {steps:.0f} evaluation steps (up to "
                f"{format_duration(max(times, default=0))} every {format_duration(self.interval)}): over the "
                f"limit of {MAX_STEPS}; use a longer interval or an earlier eval_time"
            )
        try:
            datetime.fromisoformat(self.start) + timedelta(seconds=(steps + 1) * self.interval)
        except OverflowError:
            raise ValueError(
                f"test '{self.name}' would run past the year 9999: use an earlier start"
            ) from None
        return self


class RuleTestFile(Strict):
    rule_files: list[str]
    detectors: str | None = Field(
        None, description="detectors config for rules with 'detector:' (relative path)"
    )
    allowed_lateness: Duration = 300.0
    tests: list[RuleTest]


def _alarm_line(a: dict[str, Any]) -> str:
    return f"{a['rule']} {a['key']} {a['state']} {a['severity']}"


def run_test_file(path: str | Path) -> tuple[int, int, list[str]]:
    """Run every test of a file: (passed, failed, report lines). Raises RuleFileError on bad files."""
    path = Path(path)
    try:
        text = read_text(path)  # the size limit of every configuration file, checked before reading
    except YamlError as exc:
        raise RuleFileError([RuleError(exc.file, exc.line, exc.col, exc.message)]) from None
    spec = load_model(text, str(path), RuleTestFile)
    detectors = None
    if spec.detectors:
        from atalaia.detectors.config import load_config

        detectors = load_config(path.parent / spec.detectors)
    # a rule naming a detector the test's detectors file lacks is a file:line:col error
    ruleset = load_rules(
        [(path.parent / f) for f in spec.rule_files], detectors=detectors and detectors.known
    )
    passed = failed = 0
    report: list[str] = []
    for test in spec.tests:
        scorer = None
        if detectors is not None:  # a fresh bank per test: tests are independent
            from atalaia.detectors.bank import DetectorBank

            scorer = DetectorBank(detectors).score_learn
        problems = _run_one(test, ruleset, spec.allowed_lateness, scorer)
        if problems:
            failed += 1
            report.append(f"FAILED {path}: {test.name}")
            report += [f"  {p}" for p in problems]
        else:
            passed += 1
            report.append(f"ok     {path}: {test.name}")
    return passed, failed, report


def _run_one(test: RuleTest, ruleset: Any, lateness: float, scorer: Any = None) -> list[str]:
    start = datetime.fromisoformat(test.start).astimezone(UTC)
    step = test.interval
    # observations per tick; same entity/type/labels at one tick -> one observation with several attributes
    ticks: dict[int, dict[tuple[str, str, tuple[tuple[str, str], ...]], dict[str, Any]]] = {}
    for series in test.input_series:
        try:
            values = expand_series(series.values)
        except ValueError as exc:
            return [f"input series {series.entity} {series.attribute}: {exc}"]
        for i, v in enumerate(values):
            if v is None:
                continue
            ident = (series.entity, series.type, tuple(sorted(series.labels.items())))
            obs = ticks.setdefault(i, {}).setdefault(
                ident,
                {
                    "time": format_time(start + timedelta(seconds=i * step)),
                    "entity": series.entity,
                    "type": series.type,
                    "attributes": {},
                    "labels": dict(series.labels),
                },
            )
            obs["attributes"][series.attribute] = v
            if series.unit is not None:
                obs.setdefault("units", {})[series.attribute] = series.unit
    last_tick = max([*ticks, *(int(a.eval_time // step) for a in test.alarm_tests)], default=0)
    wanted = list(test.alarm_tests)  # every one is checked, several may share an eval_time
    try:
        engine = RuleEngine(ruleset, scorer=scorer, allowed_lateness=lateness)
    except ScorerMissing as exc:
        return [f"{exc} (add 'detectors: path/to/detectors.yaml' to the test file)"]
    transitions = []
    problems: list[str] = []
    for i in range(last_tick + 1):
        offset = i * step
        got, rejected = engine.observe_batch(list(ticks.get(i, {}).values()))
        transitions += got
        transitions += engine.advance(start + timedelta(seconds=offset))
        problems += [f"at {format_duration(offset)}: observation rejected: {r.reason}" for r in rejected]
        due = [a for a in wanted if offset <= a.eval_time < offset + step]
        for at in due:
            problems += _check_alarms(at, engine.active_alarms(), transitions)
        wanted = [a for a in wanted if not offset <= a.eval_time < offset + step]
    if test.exp_transitions is not None:
        exp = [
            f"{format_duration(e.at):>8} {e.rule} {e.key} {e.state} {e.severity}"
            for e in test.exp_transitions
        ]
        got_lines = [
            f"{format_duration((datetime.fromisoformat(t.at) - start).total_seconds()):>8} "
            f"{t.rule} {t.key} {t.state} {t.severity}"
            for t in transitions
        ]
        if exp != got_lines:
            problems.append("transitions differ (- expected, + got):")
            problems += ["  " + d for d in difflib.unified_diff(exp, got_lines, lineterm="", n=1)][2:]
    return problems


def _check_alarms(test: AlarmTest, active: list[dict[str, Any]], transitions: list[Any]) -> list[str]:
    """Open alarms against the expected ones; labels/annotations (when expected) are those of the
    alarm's latest transition, i.e. what ``atalaia.alarms`` carries for it."""
    latest = {(t.rule, t.key): t for t in transitions}
    got_alarms = [a for a in active if test.rule is None or a["rule"] == test.rule]
    got = sorted(_alarm_line(a) for a in got_alarms)
    exp = sorted(
        _alarm_line(
            {"rule": e.rule or test.rule or "?", "key": e.key, "state": e.state, "severity": e.severity}
        )
        for e in test.exp_alarms
    )
    if got == exp:
        lines = []
        for e in test.exp_alarms:
            tr = latest.get((e.rule or test.rule or "?", e.key))
            for what, want in (("labels", e.labels), ("annotations", e.annotations)):
                have = getattr(tr, what, {}) if tr is not None else {}
                if want is not None and want != have:
                    lines.append(
                        f"{what} of {e.rule or test.rule} {e.key} at {format_duration(test.eval_time)} differ "
                        "(- expected, + got):"
                    )
                    lines += [f"  - {k}: {v}" for k, v in sorted(want.items()) if have.get(k) != v]
                    lines += [f"  + {k}: {v}" for k, v in sorted(have.items()) if want.get(k) != v]
        return lines
    lines = [
        f"alarms at {format_duration(test.eval_time)}"
        + (f" for rule {test.rule}" if test.rule else "")
        + " differ (- expected, + got):"
    ]
    lines += [f"  - {x}" for x in exp if x not in got] + [f"  + {x}" for x in got if x not in exp]
    return lines
