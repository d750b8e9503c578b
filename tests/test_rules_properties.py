"""Property tests: for any observation stream the engine's transitions form valid alarm lifecycles, and
snapshots, reloads, compaction and batching never change the output."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from atalaia.rules.engine import RuleEngine
from atalaia.rules.loader import load_texts
from atalaia.rules.ruletest import expand_series

RULES = load_texts(
    [
        (
            "props.yaml",
            """
group: props
rules:
  - id: levels
    select: {type: WaterObserved, attribute: height}
    severities:
      - {severity: critical, above: 4, clear_below: 3, for: 2m}
      - {severity: high, above: 3, for: 1m}
      - {severity: low, below: 1, clear_above: 1.5}
    keep_firing_for: 2m
    annotations: {summary: "{{ entity }} {{ value }}"}
  - id: avg
    select: {type: WaterObserved, attribute: height}
    aggregate: {function: avg, window: 5m}
    severities: [{severity: high, above: 2.5}]
  - id: rate
    select: {type: WaterObserved, attribute: height}
    aggregate: {function: rate, window: 5m}
    severities: [{severity: medium, above: 0.005}, {severity: low, below: -0.005}]
  - id: parish-sum
    select: {type: WaterObserved, attribute: height, where: {parish: [Bonfim, Paranhos]}}
    key: [parish]
    aggregate: {function: sum, window: 3m}
    severities: [{severity: high, above: 6}]
  - id: silent
    select: {type: WaterObserved}
    absent_for: 3m
    severity: medium
  - id: stuck
    select: {type: WaterObserved, attribute: height}
    stuck_for: 4m
    severity: low
""",
        )
    ]
)

START = datetime(2024, 3, 1, tzinfo=UTC)
ENTITIES = ["urn:e:1", "urn:e:2", "urn:e:3"]
PARISH = {"urn:e:1": "Bonfim", "urn:e:2": "Paranhos", "urn:e:3": "Sé"}


@st.composite
def streams(draw: st.DrawFn) -> list[dict]:
    n = draw(st.integers(1, 60))
    t, out = 0, []
    for _ in range(n):
        t += draw(st.sampled_from([0, 10, 30, 60, 60, 90, 240]))
        back = draw(st.sampled_from([0, 0, 0, 0, 45, 200, 400]))  # out of order, sometimes beyond lateness
        entity = draw(st.sampled_from(ENTITIES))
        value = draw(st.sampled_from([0.5, 1.2, 2.0, 3.5, 3.5, 4.5, 5.0]))
        when = START + timedelta(seconds=max(t - back, 0))
        out.append(
            {
                "time": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "entity": entity,
                "type": "WaterObserved",
                "attributes": {"height": value},
                "labels": {"parish": PARISH[entity]},
            }
        )
    return out


def run(observations: list[dict], engine: RuleEngine | None = None) -> list[dict]:
    engine = engine or RuleEngine(RULES, allowed_lateness=300)
    out, _ = engine.observe_batch(observations)
    return [t.to_dict() for t in out + engine.finish()]


NEXT = {  # allowed state after the previous line of the same alarm (None = no open alarm)
    None: {"pending", "firing"},
    "pending": {"pending", "firing", "inactive", "resolved"},
    "firing": {"firing", "resolved"},
}


def assert_valid_lifecycles(transitions: list[dict]) -> None:
    open_state: dict[tuple[str, str], tuple[str, str, str] | None] = {}
    for tr in transitions:
        ak = (tr["rule"], tr["key"])
        prev = open_state.get(ak)
        state = tr["state"]
        assert state in NEXT[prev[0] if prev else None], (ak, prev, tr)
        if prev:
            assert datetime.fromisoformat(tr["at"]) >= datetime.fromisoformat(prev[2])  # time moves forward
            if state in ("pending", "firing") and prev[0] == state:
                assert tr["severity"] != prev[1]  # a repeated state is a severity change
            if state in ("inactive", "resolved"):
                assert tr["severity"] == prev[1]  # the severity the alarm had when it ended
        if state == "resolved" and prev and prev[0] == "pending":
            raise AssertionError(f"pending alarm resolved: {tr}")
        open_state[ak] = None if state in ("inactive", "resolved") else (state, tr["severity"], tr["at"])


@settings(max_examples=150, deadline=None)
@given(streams())
def test_transitions_form_valid_lifecycles(observations: list[dict]) -> None:
    assert_valid_lifecycles(run(observations))


LIMITS = st.sampled_from([0.8, 1.0, 2.0, 2.5, 3.0, 3.5, 4.0, 4.8])


@st.composite
def retuned_rules(draw: st.DrawFn) -> tuple[str, object]:
    """RULES with every threshold rule's limits moved (limits only: the state carries over)."""
    hi, crit = sorted(draw(st.lists(LIMITS, min_size=2, max_size=2)))
    low = draw(st.sampled_from([0.8, 1.0, 1.2]))
    text = f"""
group: props
rules:
  - id: levels
    select: {{type: WaterObserved, attribute: height}}
    severities:
      - {{severity: critical, above: {crit}, clear_below: {draw(st.sampled_from([crit, crit - 0.5]))}, for: {draw(st.sampled_from(["0s", "1m", "3m"]))}}}
      - {{severity: high, above: {hi}, for: {draw(st.sampled_from(["0s", "1m", "2m"]))}}}
      - {{severity: low, below: {low}, clear_above: {draw(st.sampled_from([low, low + 0.5]))}}}
    keep_firing_for: {draw(st.sampled_from(["0s", "1m", "2m", "5m"]))}
    annotations: {{summary: "{{{{ entity }}}} {{{{ value }}}}"}}
  - id: avg
    select: {{type: WaterObserved, attribute: height}}
    aggregate: {{function: avg, window: 5m}}
    severities: [{{severity: high, above: {draw(LIMITS)}}}]
  - id: rate
    select: {{type: WaterObserved, attribute: height}}
    aggregate: {{function: rate, window: 5m}}
    severities: [{{severity: medium, above: {draw(st.sampled_from([0.001, 0.005, 0.01]))}}}, {{severity: low, below: -0.005}}]
  - id: parish-sum
    select: {{type: WaterObserved, attribute: height, where: {{parish: [Bonfim, Paranhos]}}}}
    key: [parish]
    aggregate: {{function: sum, window: 3m}}
    severities: [{{severity: high, above: {draw(st.sampled_from([4, 6, 8]))}}}]
  - id: silent
    select: {{type: WaterObserved}}
    absent_for: 3m
    severity: medium
  - id: stuck
    select: {{type: WaterObserved, attribute: height}}
    stuck_for: 4m
    severity: low
"""
    return text, load_texts([("props.yaml", text)])


@settings(max_examples=100, deadline=None)
@given(streams(), retuned_rules(), st.data())
def test_moving_limits_mid_stream_keeps_valid_lifecycles(
    observations: list[dict], retuned: tuple[str, object], data: st.DataObject
) -> None:
    """A reload that moves thresholds keeps the open alarms and evaluates them again: the whole output
    (before, at and after the reload) still forms valid lifecycles: no alarm ends twice or without
    being open, no time goes backwards, and only the retuned rules speak at the reload."""
    _, new_rules = retuned
    cut = data.draw(st.integers(0, len(observations)))
    engine = RuleEngine(RULES, allowed_lateness=300)
    head, _ = engine.observe_batch(observations[:cut])
    at_reload = engine.reload(new_rules)  # type: ignore[arg-type]
    assert all(t.annotations.get("reason") == "rule changed" for t in at_reload)
    assert all(t.rule in ("levels", "avg", "rate", "parish-sum") for t in at_reload)  # limits only: kept
    tail, _ = engine.observe_batch(observations[cut:])
    assert_valid_lifecycles([t.to_dict() for t in head + at_reload + tail + engine.finish()])


@settings(max_examples=100, deadline=None)
@given(streams(), st.data())
def test_snapshot_restore_mid_stream_is_invisible(observations: list[dict], data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(observations)))
    whole = run(observations)
    first = RuleEngine(RULES, allowed_lateness=300)
    head, _ = first.observe_batch(observations[:cut])
    second = RuleEngine.restore(RULES, first.snapshot())
    assert [t.to_dict() for t in head] + run(observations[cut:], second) == whole


@settings(max_examples=60, deadline=None)
@given(streams(), st.data())
def test_reload_unchanged_and_compaction_keep_output(observations: list[dict], data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(observations)), max_size=4)))
    engine = RuleEngine(RULES, allowed_lateness=300)
    got, start = [], 0
    for i, cut in enumerate([*cuts, len(observations)]):
        out, _ = engine.observe_batch(observations[start:cut])  # also: any batching
        got += out
        start = cut
        if i % 2:
            assert engine.reload(RULES) == []  # same rules: every state kept, nothing ends
        engine.compact()
    got += engine.finish()
    assert [t.to_dict() for t in got] == run(observations)


@given(st.lists(st.tuples(st.integers(-50, 50), st.integers(-5, 5), st.integers(0, 6)), max_size=6))
def test_series_shorthand_expands_like_promtool(parts: list[tuple[int, int, int]]) -> None:
    text = " ".join(f"{a}{'+' if b >= 0 else '-'}{abs(b)}x{n}" for a, b, n in parts)
    expected = [float(a + i * b) for a, b, n in parts for i in range(n + 1)]
    assert expand_series(text) == expected
    assert expand_series("1 _ _x2 3x1") == [1.0, None, None, None, 3.0, 3.0]


VALID_FILE = """group: hydro
rules:
  - id: river-level-high
    select: {type: WaterObserved, attribute: height, where: {district: "13"}}
    aggregate: {function: avg, window: 10m}
    severities:
      - {severity: critical, above: 4.5, clear_below: 4.2, for: 2m}
      - {severity: high, above: 3.5}
    keep_firing_for: 5m
    annotations: {summary: "{{ entity }} at {{ value }} m"}
  - {id: station-silent, select: {type: WaterObserved}, absent_for: 15m, severity: medium}
"""


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, len(VALID_FILE)),
            st.integers(0, 3),
            st.sampled_from(
                [
                    "",
                    ":",
                    "-",
                    "{",
                    "}",
                    "[",
                    "x",
                    " ",
                    "\n",
                    "'",
                    "10x",
                    "-1m",
                    "9",
                    "\x07",
                    "\t",
                    "&a",
                    "*b",
                ]
            ),
        ),
        max_size=4,
    )
)
def test_loader_reports_any_broken_file_as_positioned_errors(edits: list[tuple[int, int, str]]) -> None:
    from atalaia.rules.errors import RuleFileError

    text = VALID_FILE
    for pos, cut, insert in edits:
        text = text[:pos] + insert + text[pos + cut :]
    try:
        load_texts([("f.yaml", text)])
    except RuleFileError as exc:
        n_lines = text.count("\n") + 2
        assert exc.errors
        for e in exc.errors:
            assert e.file == "f.yaml" and 1 <= e.line <= n_lines and e.col >= 1 and e.message
            assert str(e).startswith(f"f.yaml:{e.line}:{e.col}: ")


def _prometheus_alert(
    series: list[tuple[int, float]], above: int, clear: int | None, hold: int, keep: int
) -> list[str]:
    """A Prometheus alerting rule (rules/alerting.go) evaluated at each sample: ``x > above``, with
    hysteresis the idiom ``or (x >= clear and ALERTS{alertstate="firing"})`` (the state after the
    previous evaluation, kept firing included), ``for: hold`` and ``keep_firing_for: keep`` (seconds)."""
    state, active_at, keep_since, out = "inactive", 0, None, []
    for t, v in series:
        if v > above or (state == "firing" and clear is not None and v >= clear):
            keep_since = None
            if state == "inactive":
                state, active_at = "pending", t
            if state == "pending" and t - active_at >= hold:
                state = "firing"
        else:
            if state == "firing" and keep > 0:
                keep_since = t if keep_since is None else keep_since
                if t - keep_since < keep:
                    out.append(state)
                    continue
            state, keep_since = "inactive", None
        out.append(state)
    return out


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 4), st.integers(-3, 3)), min_size=1, max_size=25),
    st.integers(3, 7),
    st.one_of(st.none(), st.integers(-2, 0)),
    st.integers(0, 4),
    st.integers(0, 4),
)
def test_one_severity_is_a_prometheus_alert(
    steps: list[tuple[int, int]], above: int, below_above: int | None, hold_m: int, keep_m: int
) -> None:
    """Property: a one-severity threshold rule with any of ``for``, ``keep_firing_for`` and
    ``clear_below`` (also equal to ``above``: before, that hysteresis was ignored and a firing alarm
    at exactly the threshold resolved, unlike PromQL and compound parts) is promtool's alert.
    Values and the clear level are drawn around the threshold, where the cases differ."""
    clear = None if below_above is None else above + below_above
    series, t = [], 0
    for gap, delta in steps:
        t += gap * 60
        series.append((t, above + delta))
    level = f"{{severity: high, above: {above}" + (f", clear_below: {clear}" if clear is not None else "")
    level += f", for: {hold_m}m}}" if hold_m else "}"
    text = f"rules:\n  - id: r\n    select: {{type: T, attribute: x}}\n    severities: [{level}]\n"
    text += f"    keep_firing_for: {keep_m}m\n" if keep_m else ""
    engine = RuleEngine(load_texts([("r.yaml", text)]))
    got = []
    for t, v in series:
        time = (datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=t)).isoformat()
        _, rejected = engine.observe_batch(
            [{"time": time, "entity": "e", "type": "T", "attributes": {"x": v}}]
        )
        assert not rejected
        got.append(next((a["state"] for a in engine.active_alarms()), "inactive"))
    assert got == _prometheus_alert(series, above, clear, hold_m * 60, keep_m * 60), (text, series)


def test_a_clear_level_equal_to_the_threshold_keeps_a_firing_alarm_at_it() -> None:
    text = "rules:\n  - {id: r, select: {type: T, attribute: x}, severities: [{severity: high, above: 2, clear_below: 2}]}\n"
    engine = RuleEngine(load_texts([("r.yaml", text)]))
    states = []
    for minute, v in enumerate([3.0, 2.0, 1.9]):
        obs = {"time": f"2024-01-01T00:0{minute}:00Z", "entity": "e", "type": "T", "attributes": {"x": v}}
        states.append([t.state for t in engine.observe_batch([obs])[0]])
    assert states == [["firing"], [], ["resolved"]]
