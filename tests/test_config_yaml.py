"""Safe configuration loading (streams/config_yaml): every YAML Atalaia reads refuses a YAML bomb,
a huge file, deep nesting and too many values with a ``file:line:col`` error, and the live rule
reload parses off the event loop, in a child process with a time and memory limit, keeping the
running rules when a file is refused.

The hostile files are loaded through ``run_isolated`` (a child process with a 1 GiB address-space
limit): if a protection were removed, the child would run out of memory or time and the test
would fail on the error type, without taking the test process (or the machine) down."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atalaia.console.auth import UsersFileError, load_users
from atalaia.detectors.config import ConfigError as DetectorsError
from atalaia.detectors.config import load_config as load_detectors
from atalaia.incidents.config import ConfigError as IncidentsError
from atalaia.incidents.config import load_config as load_incidents
from atalaia.notifiers.config import ConfigError as EscalationError
from atalaia.notifiers.config import load_config as load_escalation
from atalaia.rules.errors import RuleFileError
from atalaia.rules.loader import load_rules, load_texts
from atalaia.rules.stage import RuleFiles
from atalaia.streams.config_yaml import (
    IsolatedLoadError,
    YamlError,
    YamlLimits,
    parse,
    plain,
    read_text,
    run_isolated,
)

GOOD_RULES = (
    "group: hydro\nrules:\n  - {id: lvl, select: {type: WaterObserved, attribute: height},"
    " severities: [{severity: high, above: 4.0}]}\n"
)


def billion_laughs(top: str = "") -> str:
    """The classic: 9 levels of 10 aliases, 10^9 strings once expanded (a few hundred bytes)."""
    lines = ['lol0: &lol0 "lol"']
    lines += [f"lol{i}: &lol{i} [{', '.join([f'*lol{i - 1}'] * 10)}]" for i in range(1, 10)]
    return top + "\n".join(lines) + "\n"


# (loader, its error type, the top of a file of that kind, so that the bomb sits inside a valid shape)
LOADERS = {
    "rules": (lambda p: load_rules([p]), RuleFileError),
    "incidents": (load_incidents, IncidentsError),
    "escalation": (load_escalation, EscalationError),
    "detectors": (load_detectors, DetectorsError),
    "users": (load_users, UsersFileError),
}


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0]


def _isolated_load(kind: str, path: Path) -> BaseException | object:
    """The loader of ``kind`` run in a memory- and time-limited child: its result or its error."""
    func = {
        "rules": ("atalaia.rules.loader:load_rules", [path]),
        "incidents": ("atalaia.incidents.config:load_config", path),
        "escalation": ("atalaia.notifiers.config:load_config", path),
        "detectors": ("atalaia.detectors.config:load_config", path),
        "users": ("atalaia.console.auth:load_users", path),
    }[kind]
    try:
        return run_isolated(func[0], func[1], limits=YamlLimits(timeout_s=20))
    except BaseException as exc:
        return exc


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_billion_laughs_is_refused_by_every_loader(kind: str, tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(billion_laughs())
    err = _isolated_load(kind, bomb)
    assert isinstance(err, LOADERS[kind][1]), repr(err)
    first = _first_line(err)
    assert first.startswith(f"{bomb}:6:63:"), first  # the 10th alias of lol5 would pass 100 000 values
    assert "alias *lol4 expands to 11111 values: alias expansion exceeds the limit of 100000" in first


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_a_sparse_1gb_file_is_refused_without_reading_it(kind: str, tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    subprocess.run(["truncate", "-s", "1G", str(big)], check=True)
    err = _isolated_load(kind, big)
    assert isinstance(err, LOADERS[kind][1]), repr(err)
    assert _first_line(err) == (
        f"{big}:1:1: file is 1 GiB, over the 4 MiB limit for configuration files"
        " (ATALAIA_YAML_MAX_BYTES); not read"
    )


def test_the_size_is_checked_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No read at all for a file over the limit (and in the loaders' own process)."""
    big = tmp_path / "big.yaml"
    subprocess.run(["truncate", "-s", "1G", str(big)], check=True)
    reads: list[int] = []

    class Spy:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

        def fileno(self):
            return self.f.fileno()

        def read(self, n=-1):
            reads.append(n)
            return self.f.read(n)

    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, mode="r", *a, **k: Spy(real_open(p, mode, *a, **k)))
    with pytest.raises(YamlError, match=r"big.yaml:1:1: file is 1 GiB"):
        read_text(big)
    assert reads == []


def test_special_files_are_refused(tmp_path: Path) -> None:
    """A FIFO (which would block the reader) or a device (endless) is never opened for reading."""
    os.mkfifo(tmp_path / "fifo.yaml")
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    for name in ("fifo.yaml", "zero.yaml"):
        with pytest.raises(YamlError, match=rf"{name}:1:1: not a regular file"):
            read_text(tmp_path / name)
    with pytest.raises(IncidentsError, match=r"fifo.yaml:1:1: not a regular file"):
        load_incidents(tmp_path / "fifo.yaml")


def test_each_limit_reads_as_a_positioned_error() -> None:
    small = YamlLimits(max_bytes=200, max_depth=3, max_nodes=10, max_aliases=2)
    cases = {
        "a: [[[[1]]]]\n": "d.yaml:1:6: nesting deeper than 3 levels (ATALAIA_YAML_MAX_DEPTH)",
        "a: [1, 2, 3, 4, 5, 6, 7, 8, 9]\n": "d.yaml:1:26: more than 10 values in one file (ATALAIA_YAML_MAX_NODES)",
        "a: &x 1\nb: [*x, *x, *x]\n": "d.yaml:2:13: more than 2 aliases in one file (ATALAIA_YAML_MAX_ALIASES)",
        "a: &x [1, *x]\n": "d.yaml:1:11: alias *x refers to the value that contains it (a recursive structure cannot be loaded)",
        "a: " + "x" * 300: "d.yaml:1:1: file is 303 bytes, over the 200 bytes limit for configuration files"
        " (ATALAIA_YAML_MAX_BYTES); not read",
        "a: 2026-13-01\n": "d.yaml:1:4: cannot read this value: month must be in 1..12",
        "a: " + "9" * 5000: None,  # over max_bytes: refused before the integer
    }
    for text, want in cases.items():
        with pytest.raises(YamlError) as err:
            parse(text, "d.yaml", small)
        if want:
            assert str(err.value) == want
    with pytest.raises(YamlError, match=r"^d.yaml:1:4: cannot read this value: Exceeds the limit"):
        parse("a: " + "9" * 5000, "d.yaml")


def test_aliases_within_the_limits_still_work() -> None:
    tree = parse("base: &b {team: hydro}\nx: {labels: *b}\ny: {<<: *b, extra: 1}\n", "a.yaml")
    assert plain(tree) == {
        "base": {"team": "hydro"},
        "x": {"labels": {"team": "hydro"}},
        "y": {"team": "hydro", "extra": 1},
    }


def test_the_parse_time_limit_is_a_positioned_error() -> None:
    text = "x:\n" + "".join(f"  - {i}\n" for i in range(50_000))
    with pytest.raises(YamlError, match=r"^t.yaml:\d+:5: parsing took longer than 0.01 s"):
        parse(text, "t.yaml", YamlLimits(timeout_s=0.01))


def test_rule_errors_keep_their_wording() -> None:
    with pytest.raises(RuleFileError) as err:
        load_texts([("r.yaml", "rules: [a\n")])
    assert str(err.value).startswith("r.yaml:1:8: YAML syntax error: a '[' here is never closed")
    with pytest.raises(RuleFileError) as err:
        load_texts([("r.yaml", billion_laughs())])
    assert str(err.value).startswith("r.yaml:6:63: alias *lol4 expands")
    assert "YAML syntax error" not in str(err.value)  # a refusal, not a typo


def test_run_isolated_stops_a_child_at_the_time_limit() -> None:
    t0 = time.monotonic()
    with pytest.raises(IsolatedLoadError, match=r"took longer than 5\.5 s"):
        run_isolated("time:sleep", 60, limits=YamlLimits(timeout_s=0.5))
    assert time.monotonic() - t0 < 30


def test_run_isolated_caps_the_childs_memory() -> None:
    with pytest.raises(MemoryError):
        run_isolated("builtins:bytearray", 3 * 1024**3, limits=YamlLimits(max_memory_mb=512))


# --- the live reload ------------------------------------------------------------------------------


def _wait_for(cond, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _settle(files: RuleFiles) -> None:
    """Tick (call ``changed()``) until the running reload has been picked up."""
    _wait_for(lambda: (files.changed(), files.pending is None)[1])


def test_reload_never_blocks_the_caller(tmp_path: Path) -> None:
    """``changed()`` (called on the event loop by every tick) only starts the reload; the load
    runs in the reload thread and its result is picked up by a later call."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "a.yaml").write_text(GOOD_RULES)
    release, started = threading.Event(), threading.Event()

    def slow_load(paths, limits):
        started.set()
        assert release.wait(30)
        return load_rules(paths, limits)

    files = RuleFiles([rules], load=slow_load)
    running = files.ruleset
    (rules / "b.yaml").write_text(GOOD_RULES.replace("lvl", "lvl2").replace("hydro", "h2"))
    assert files.changed() is False
    assert started.wait(10)
    for _ in range(5):  # the load is stuck: every call returns at once, the running rules stay
        assert files.changed() is False and files.ruleset is running
    release.set()
    _wait_for(lambda: files.changed())
    assert sorted(r.rule.id for r in files.ruleset.rules) == ["lvl", "lvl2"]


def test_a_bomb_and_a_huge_file_dropped_in_keep_the_running_rules(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "a.yaml").write_text(GOOD_RULES)
    files = RuleFiles([rules])  # the real reload: a child process
    running = files.ruleset
    (rules / "bomb.yaml").write_text(billion_laughs())
    subprocess.run(["truncate", "-s", "1G", str(rules / "big.yaml")], check=True)
    caplog.set_level(logging.ERROR, logger="atalaia")
    t0 = time.monotonic()
    files.changed()
    assert time.monotonic() - t0 < 1.0, "changed() must only start the reload"
    _settle(files)
    assert files.ruleset is running
    log = caplog.text
    assert "keeping the running rules" in log
    assert f"{rules / 'big.yaml'}:1:1: file is 1 GiB, over the 4 MiB limit" in log
    assert f"{rules / 'bomb.yaml'}:6:63:" in log and "alias expansion exceeds" in log
    # the operator removes them: the next reload works again
    (rules / "bomb.yaml").unlink()
    (rules / "big.yaml").unlink()
    (rules / "a.yaml").write_text(GOOD_RULES.replace("4.0", "5.0"))
    files.changed()
    _settle(files)
    assert files.ruleset.rules[0].rule.severities[0].above == 5.0


def test_a_reload_that_times_out_is_blamed_on_the_edited_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "a.yaml").write_text(GOOD_RULES)

    def stuck(paths, limits):
        raise IsolatedLoadError("took longer than 15 s (ATALAIA_YAML_TIMEOUT_S); stopped")

    files = RuleFiles([rules], load=stuck)
    running = files.ruleset
    (rules / "slow.yaml").write_text(GOOD_RULES)
    caplog.set_level(logging.ERROR, logger="atalaia")
    files.changed()
    _settle(files)
    assert files.ruleset is running
    assert f"{rules / 'slow.yaml'}:1:1: loading refused: took longer than 15 s" in caplog.text


def test_validate_positions_every_problem_for_a_new_config_kind(tmp_path: Path) -> None:
    """The helper a new configuration file (e.g. warnings/) uses: one line per problem."""
    users = tmp_path / "users.yaml"
    users.write_text("users:\n  - {actor: ana, role: boss, token_sha256: x}\n  - {actor: rui}\n")
    with pytest.raises(UsersFileError) as err:
        load_users(users)
    lines = str(err.value).splitlines()
    assert lines[0].startswith(f"{users}:2:24: users.0.role: Input should be 'operator'")
    assert lines[1:] == [  # no token_sha256 is no field error: a user may have a password instead
        f"{users}:3:5: users.1.role: Field required",
    ]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('labels: {team: "\\ud800"}\n', "1:16"),
        ('"\\udfff key": 1\n', "1:1"),
        ('a:\n  - "ok"\n  - "x \\ud83d y"\n', "3:5"),
    ],
)
def test_a_lone_surrogate_escape_is_refused_where_it_is_written(text: str, where: str) -> None:
    """ "\\ud800" is no character: it passed `rules check`, then the alarm's JSON encoding (or a CAP
    document's) failed in the running system. A pair written as \\U escape or as itself is fine."""
    with pytest.raises(YamlError) as exc:
        parse(text, "f.yaml")
    assert str(exc.value).startswith(f"f.yaml:{where}: a lone UTF-16 surrogate escape"), str(exc.value)
    assert plain(parse('a: "\\U0001F30A 🌊"\n', "f.yaml")) == {"a": "\U0001f30a \U0001f30a"}


def test_a_surrogate_pair_escape_is_the_character_it_encodes() -> None:
    """JSON (RFC 8259 §7) writes a character beyond U+FFFF as a pair of escapes, and so does
    Python's json.dump: "\\ud83c\\udf0a" is 🌊, not two lone surrogates. A pair in the wrong
    order, or a half, is still refused."""
    assert plain(parse('{"a": "x \\ud83c\\udf0a y", "\\ud83c\\udf0a": 1}', "f.json")) == {
        "a": "x \U0001f30a y",
        "\U0001f30a": 1,
    }
    for bad in ('a: "\\udf0a\\ud83c"\n', 'a: "\\ud83c\\ud83c"\n', 'a: "\\ud83c\\udf0a\\udf0a"\n'):
        with pytest.raises(YamlError, match="lone UTF-16 surrogate"):
            parse(bad, "f.yaml")


def test_a_rule_label_with_a_surrogate_is_a_rule_file_error(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(GOOD_RULES.replace("attribute: height}", 'attribute: height, labels: {team: "\\ud800"}}'))
    with pytest.raises(RuleFileError, match=r"r\.yaml:3:\d+: a lone UTF-16 surrogate"):
        load_rules([path])


def test_a_duplicate_key_error_never_shows_the_values() -> None:
    """ruamel quotes both values of a key written twice: a password hash, an HMAC secret."""
    with pytest.raises(YamlError) as exc:
        parse('a: 1\nsecret: "Old-HMAC-Key"\nsecret: "New-HMAC-Key"\n', "f.yaml")
    assert str(exc.value) == 'f.yaml:3:1: found duplicate key "secret" (values not shown)'


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        # a key indented one space short of its siblings
        ("rules:\n  - id: x\n    select: {}\n   attribute: h\n", "4:4", "does not line up with the list"),
        ("rules:\n  - id: x\n - id: y\n", "3:2", "does not line up with the mapping"),
        ("rules:\n  -id: x\n  - id: y\n", "3:3", "a list item is '- ' with a space"),
        ("rules:\n  - id: x\n\tselect: {}\n", "3:1", "a tab: YAML indents with spaces only"),
        # the mistake is where the string or bracket opens, not at the end of the file
        ('rules:\n  - id: "x\n    above: 3\n', "2:9", 'a string opened with " here is never closed'),
        ("rules:\n  - id: 'x\n    above: 3\n", "2:9", "a string opened with ' here is never closed"),
        ("rules:\n  - select: {type: W, attribute: h\n", "2:13", "a '{' here is never closed with '}'"),
        ("rules:\n  - tags: [a, b\n", "2:11", "a '[' here is never closed with ']'"),
        ("a: {b: 1 c: 2}\n", "1:11", "is the '{' opened at line 1, column 4 closed?"),
        ("rules:\n  - summary: level: high\n", "2:19", "a ': ' inside a value"),
        ("rules:\n  - id: x\n    just words\n    above: 3\n", "3:5", "this line is not 'key: value'"),
        # old Mac line ends (a lone CR) and a byte-order mark: the same place, the right quote
        ('rules:\r  - id: "x\r    above: 3\r', "2:9", 'a string opened with " here is never closed'),
        ('\ufeffrules:\n  - id: "x\n', "2:9", 'a string opened with " here is never closed'),
        ('\r"x', "2:1", 'a string opened with " here is never closed'),
    ],
)
def test_hand_made_yaml_mistakes_are_named_where_they_are_in_plain_words(text, where, words) -> None:
    """A rule author's typical slips got the parser's own words ("expected <block end>, but found
    '<block mapping start>'") and, for a string or bracket never closed, the end of the file as
    the place. Each is now said in words one can act on, at the mistake; the parser's words follow
    in parentheses."""
    with pytest.raises(YamlError) as err:
        parse(text, "r.yaml")
    message = str(err.value)
    assert message.startswith(f"r.yaml:{where}: "), message
    assert words in message and message.rstrip().endswith(")"), message


@settings(max_examples=400)
@given(st.text(alphabet=st.sampled_from(list(" \t\r\n-:'\"[]{},#&*!|>ax1\ufeff")), max_size=40))
def test_any_text_is_a_tree_or_a_positioned_error(text) -> None:
    """Whatever a hand-edited file holds (odd line ends included), parsing gives a tree or one
    YamlError at a line of the file, never another exception."""
    try:
        parse(text, "r.yaml")
    except YamlError as e:
        assert 1 <= e.line <= len(text.splitlines()) + 2, (text, str(e))


@settings(max_examples=200)
@given(
    major=st.integers(0, 20),
    minor=st.integers(0, 99),
    before=st.sampled_from(["", "# a comment\n", "%TAG ! tag:example.com,2000:\n"]),
    body=st.sampled_from(["---\na: 1\n", "--- {a: 1}\n", "---\n", "a: 1\n"]),
)
def test_any_yaml_directive_is_a_tree_or_a_positioned_error(major, minor, before, body) -> None:
    """``%YAML 1.3`` (any minor version but 1 and 2) was an AssertionError traceback out of ruamel:
    from ``atalaia warnings render``, ``rules check``, every loader. It is an error at the
    directive's line."""
    text = f"{before}%YAML {major}.{minor}\n{body}"
    try:
        parse(text, "r.yaml")
    except YamlError as e:
        assert str(e).startswith("r.yaml:"), str(e)
        if major == 1 and minor not in (1, 2):
            assert e.line == before.count("\n") + 1 and "unsupported %YAML version" in str(e), str(e)
    else:
        assert major == 1 and minor in (1, 2), text


def test_a_draft_with_a_yaml_1_3_directive_is_a_draft_error(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from atalaia.warnings.cli import warnings as warnings_cli

    f = tmp_path / "d.yaml"
    f.write_text("%YAML 1.3\n---\nsender: pc@cm-porto.pt\nlevel: red\nevent: Cheia\n")
    r = CliRunner().invoke(warnings_cli, ["render", str(f)])
    assert r.exit_code == 1 and r.stderr.startswith(f"{f}:1:1: unsupported %YAML version"), r.stderr


@settings(max_examples=150)
@given(
    merged=st.dictionaries(
        st.sampled_from(["a", "name", "b c", "n"]), st.sampled_from(["1", "x", "[1]", "{}"]), max_size=3
    ),
    style=st.sampled_from(["flow", "block", "list", "anchor"]),
    own=st.sampled_from(["", "name: ok\n", "zz: 1\n"]),
)
def test_a_merged_key_the_model_refuses_is_a_positioned_error(merged, style, own) -> None:
    """``<<: {a: b}`` (a key merged from a mapping written in place) carries no position in
    ruamel's tree: the error about it was a TypeError traceback out of ``atalaia warnings render``
    and every loader. It is an error at its parent's position."""
    from pydantic import BaseModel, ConfigDict

    from atalaia.streams.config_yaml import YamlErrors, validate

    class Model(BaseModel):
        model_config = ConfigDict(extra="forbid")
        name: str

    flow = "{" + ", ".join(f"{k}: {v}" for k, v in merged.items()) + "}"
    text = {
        "flow": f"<<: {flow}\n",
        "block": "<<:\n" + "".join(f"  {k}: {v}\n" for k, v in merged.items()) if merged else "<<: {}\n",
        "list": f"<<: [{flow}]\n",
        "anchor": f"base: &b {flow}\n<<: *b\n",
    }[style] + own
    try:
        tree = parse(text, "m.yaml")
    except YamlError:
        return
    try:
        validate(tree, Model, "m.yaml")
    except YamlErrors as e:
        for err in e.errors:
            assert 1 <= err.line <= text.count("\n") + 1, (text, str(e))


def test_a_draft_merging_an_unknown_key_is_a_draft_error() -> None:
    from atalaia.warnings.loader import DraftError, load_draft

    text = "<<: {sender: pc@cm-porto.pt, colour: red}\nlevel: red\nevent: Cheia\narea: {geocodes: {DICOFRE: ['131203']}}\n"
    with pytest.raises(DraftError) as e:
        load_draft(text, "d.yaml")
    assert str(e.value) == "d.yaml:1:1: unknown key 'colour'", str(e.value)
