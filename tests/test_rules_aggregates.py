"""Window aggregates kept incrementally give exactly what the naive computation over the window gives
(same value, same type, the same one of equal values), on irregular series with the left-open edge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from atalaia.rules.aggregates import Extreme
from atalaia.rules.engine import RuleEngine
from atalaia.rules.loader import load_texts

VALUES = st.sampled_from([0.0, -0.0, 0, 1, 1.0, 2.5, -2.5, 3, 3.0, 7.25, -1])
STEPS = st.sampled_from([0, 0, 1, 2, 5, 10, 10, 30])  # repeated times, gaps of exactly the window (10)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(STEPS, VALUES), max_size=80), st.sampled_from([0.0, 1.0, 10.0, 25.0]), st.booleans()
)
def test_running_extreme_is_the_naive_min_max_of_the_left_open_window(
    series: list[tuple[int, float]], window: float, is_max: bool
) -> None:
    naive = max if is_max else min
    ext = Extreme(is_max, [], [])
    seen: list[tuple[float, float]] = []
    t = 0.0
    for step, v in series:
        t += step
        seen.append((t, v))
        got = ext.push(t, v, t - window)
        inside = [x for (tx, x) in seen if t - window < tx <= t]  # (t - window, t]
        expected = naive(inside) if inside else None
        assert repr(got) == repr(expected) and type(got) is type(expected)
        if inside:  # the earliest of equal extremes, as the builtins pick
            assert got is expected
        rebuilt = Extreme(is_max, [tx for tx, _ in seen if tx > t - window], inside)
        assert rebuilt.times == ext.times and [repr(x) for x in rebuilt.values] == [
            repr(x) for x in ext.values
        ]


RULES = """
rules:
  - id: wmax
    select: {type: T, attribute: x}
    aggregate: {function: max, window: 3m}
    severities: [{severity: high, above: 3, clear_below: 1}, {severity: low, above: 0.5}]
  - id: wmin
    select: {type: T, attribute: x}
    aggregate: {function: min, window: 2m}
    severities: [{severity: medium, below: 1}]
  - id: wmax1m
    select: {type: T, attribute: x}
    aggregate: {function: max, window: 1m}
    severities: [{severity: low, above: 2}]
"""


@st.composite
def streams(draw: st.DrawFn) -> list[dict]:
    start = datetime(2024, 3, 1, tzinfo=UTC)
    t, out = 0, []
    for _ in range(draw(st.integers(1, 70))):
        t += draw(st.sampled_from([0, 10, 30, 60, 60, 120, 180]))
        back = draw(st.sampled_from([0, 0, 0, 0, 30, 60, 180, 400]))  # late within and beyond lateness
        out.append(
            {
                "time": (start + timedelta(seconds=max(t - back, 0))).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "entity": draw(st.sampled_from(["a", "b"])),
                "type": "T",
                "attributes": {"x": draw(VALUES)},
            }
        )
    return out


RULESET = load_texts([("w.yaml", RULES)])


def naive_engine() -> RuleEngine:
    engine = RuleEngine(RULESET, allowed_lateness=300)
    for rule in engine.rules:
        rule.extreme_is_max = None  # type: ignore[attr-defined]  # back to max()/min() over the window
    return engine


def values(engine: RuleEngine) -> list:
    return [(r.id, k, repr(s.value)) for r in engine.rules for k, s in sorted(r.states.items())]


@settings(max_examples=150, deadline=None)
@given(streams(), st.data())
def test_engine_min_max_windows_match_the_naive_aggregate(
    observations: list[dict], data: st.DataObject
) -> None:
    cut = data.draw(st.integers(0, len(observations)))
    naive = naive_engine()
    expected = [(t.to_dict(), repr(t.value)) for t in naive.observe_batch(observations)[0]]
    fast = RuleEngine(RULESET, allowed_lateness=300)
    got = fast.observe_batch(observations[:cut])[0]
    fast = RuleEngine.restore(RULESET, fast.snapshot())  # derived state rebuilt
    got += fast.observe_batch(observations[cut:])[0]
    assert [(t.to_dict(), repr(t.value)) for t in got] == expected
    assert values(fast) == values(naive)
