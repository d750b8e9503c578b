"""`atalaia incidents check|replay|project`, and property tests of the small parsers (durations,
matchers)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from atalaia.incidents.cli import incidents
from atalaia.incidents.config import parse_duration
from atalaia.incidents.projection import Projection
from atalaia.incidents.scenarios import porto_storm
from atalaia.rules.matchers import Matcher


def test_replay_then_project(tmp_path: Path) -> None:
    alarms = tmp_path / "alarms.jsonl"
    alarms.write_bytes(b"".join(orjson.dumps(t) + b"\n" for t in porto_storm()))
    runner = CliRunner()
    r = runner.invoke(incidents, ["replay", str(alarms), "--until", "2026-01-01T03:00:00Z", "--kpis"])
    assert r.exit_code == 0, r.output
    lines = [orjson.loads(x) for x in r.output.splitlines()]
    assert lines[-1]["kind"] == "kpis" and lines[-1]["stats"]["duplicates"] > 0
    opened = [x for x in lines if x.get("change") == "opened"]
    assert len(opened) == 4
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(x for x in r.output.splitlines()))
    db = f"sqlite:///{tmp_path / 'p.db'}"
    r = runner.invoke(incidents, ["project", str(events), "--db", db])
    assert r.exit_code == 0 and r.output.startswith(f"{len(lines) - 1} new of {len(lines) - 1}")
    proj = Projection.connect(db)
    assert len(proj.open_incidents()) == 4


def test_check_reports_file_line_col(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("flood:\n  threshold: many\n")
    r = CliRunner().invoke(incidents, ["check", str(bad)])
    assert r.exit_code == 1 and f"{bad}:2:3: flood.threshold:" in r.output
    assert CliRunner().invoke(incidents, ["check"]).output.startswith("ok:")


def test_replay_points_at_the_bad_line(tmp_path: Path) -> None:
    f = tmp_path / "a.jsonl"
    f.write_text(
        '{"at": "2026-01-01T00:00:00Z", "rule": "r", "key": "k", "state": "firing", "severity": "high"}\n'
        '{"at": "2026-01-01T00:00:01Z", "rule": "r", "key": "k", "state": "burning"}\n'
    )
    r = CliRunner().invoke(incidents, ["replay", str(f)])
    assert r.exit_code == 1 and "a.jsonl:2: alarm transition state 'burning'" in r.output


def test_matcher_values_keep_their_accents_and_escapes() -> None:
    assert Matcher.parse('parish="Campanhã"').matches({"parish": "Campanhã"})
    assert Matcher.parse(r'name="say \"hi\""').value == 'say "hi"'
    assert Matcher.parse("parish=~Bonfim|Campanhã").matches({"parish": "Campanhã"})


UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@given(st.lists(st.tuples(st.integers(0, 999), st.sampled_from(list(UNITS))), min_size=1, max_size=4))
def test_duration_text_is_the_sum_of_its_parts(parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{n}{u}" for n, u in parts)
    total = sum(n * UNITS[u] for n, u in parts)
    if total <= 366 * 86400:
        assert parse_duration(text) == total
    else:  # longer than a year and a day: refused (an overflow stopped the incidents stage)
        with pytest.raises(ValueError, match="longer than a year and a day"):
            parse_duration(text)


@pytest.mark.parametrize("v", [1e308, float("inf"), float("nan"), "99999999999d", 366 * 86400 + 1])
def test_a_duration_beyond_a_year_and_a_day_or_not_finite_is_refused(v) -> None:
    with pytest.raises(ValueError, match="longer than a year and a day"):
        parse_duration(v)


@given(st.text(max_size=12))
def test_a_duration_is_parsed_or_refused_with_a_clear_error(text: str) -> None:
    try:
        assert parse_duration(text) >= 0
    except ValueError as e:
        assert "bad duration" in str(e) or "longer than a year and a day" in str(e)


@given(
    st.sampled_from(["=", "!=", "=~", "!~"]),
    st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True),
    st.text(alphabet="abcxyz-_ .", max_size=10),
    st.text(alphabet="abcxyz-_ .", max_size=10),
)
def test_matchers_follow_alertmanager_semantics(op: str, name: str, value: str, actual: str) -> None:
    import re

    m = Matcher.parse(f'{name}{op}"{value}"')
    labels = {name: actual}
    expected = {
        "=": actual == value,
        "!=": actual != value,
        "=~": re.fullmatch(value, actual) is not None if _valid(value) else None,
        "!~": re.fullmatch(value, actual) is None if _valid(value) else None,
    }[op]
    assert m.matches(labels) == expected
    assert Matcher.parse(str(m)) == m


def _valid(pattern: str) -> bool:
    import re

    try:
        re.compile(pattern)
        return True
    except re.error:
        return False


@pytest.mark.parametrize("until", ["tomorrow", "2026-03-01T06:00:00", "99999-01-01T00:00:00Z"])
def test_replay_refuses_an_until_it_cannot_read_before_replaying(tmp_path: Path, until: str) -> None:
    """`--until tomorrow` printed every incident event, then a traceback (ValueError: Invalid
    isoformat string); a time without an offset did the same."""
    alarm = {"at": "2024-03-01T00:00:00Z", "rule": "r", "key": "k", "state": "firing", "severity": "high"}
    (tmp_path / "a.jsonl").write_bytes(orjson.dumps(alarm) + b"\n")
    r = CliRunner().invoke(incidents, ["replay", str(tmp_path / "a.jsonl"), "--until", until])
    assert r.exit_code == 2, r.output
    assert "Invalid value for '--until'" in r.output, r.output
    assert isinstance(r.exception, SystemExit), r.exception  # a usage error, not a traceback
    assert '"kind":"incident"' not in r.output, "nothing replayed before the refusal"


def test_a_database_url_of_another_kind_is_refused_not_made_a_local_sqlite_file(
    tmp_path: Path, monkeypatch
) -> None:
    """`--db mysql://x` (or ATALAIA_DATABASE_URL=postgresql+psycopg://..., SQLAlchemy's spelling)
    made a directory `mysql:` holding an SQLite file `x` in the working directory, and the
    projection went there without a word."""
    import subprocess
    import sys

    monkeypatch.chdir(tmp_path)
    (tmp_path / "ev.jsonl").write_bytes(b"")
    for url in ("mysql://x", "postgresql+psycopg://u@h/db"):
        r = CliRunner().invoke(incidents, ["project", "ev.jsonl", "--db", url])
        assert r.exit_code == 1, r.output
        assert "sqlite:///" in r.output and "postgresql://" in r.output, r.output
        assert list(tmp_path.iterdir()) == [tmp_path / "ev.jsonl"], list(tmp_path.iterdir())
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("ATALAIA_")}
    r = subprocess.run(
        [str(Path(sys.executable).parent / "atalaia"), "check"],
        env={**env, "ATALAIA_DATABASE_URL": "mysql://x", "ATALAIA_DATA_DIR": str(tmp_path / "d")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1 and "ATALAIA_DATABASE_URL" in r.stderr, r.stdout + r.stderr
    # a plain path and the two kinds it takes still work
    for url in ("what-if.db", "sqlite:///w2.db"):
        r = CliRunner().invoke(incidents, ["project", "ev.jsonl", "--db", url])
        assert r.exit_code == 0, r.output
