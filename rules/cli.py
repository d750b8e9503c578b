"""``atalaia rules check|schema|replay|test|backtest``."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import orjson

from atalaia.rules.durations import parse_duration
from atalaia.rules.errors import RuleFileError


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _lateness_default() -> float:
    try:
        from atalaia.streams.settings import get_settings

        return float(get_settings().allowed_lateness_s)
    except Exception:
        return 300.0


def _detectors_config(detectors: str | None):
    """The detectors configuration rules are checked and scored against: ``--detectors``, else
    the configured one (ATALAIA_DETECTORS_PATH, config/detectors.yaml) when it exists; None
    when there is none."""
    from atalaia.detectors.config import ConfigError, load_config

    if detectors is None:
        try:
            from atalaia.streams.settings import get_settings

            path = get_settings().detectors_path
        except Exception:
            return None
        if not path.is_file():
            return None
        detectors = str(path)
    try:
        return load_config(detectors)
    except ConfigError as exc:
        raise click.ClickException(f"the detectors configuration does not load: {exc}") from None


def _scorer(config):
    from atalaia.detectors.bank import DetectorBank

    return None if config is None else DetectorBank(config).score_learn


def _load(paths: tuple[str, ...], config=None):
    """The rule set, or exit 1 with every error (a ``detector:`` the detectors ``config``
    lacks among them)."""
    from atalaia.rules.loader import load_rules

    try:
        return load_rules(paths, detectors=None if config is None else config.known)
    except RuleFileError as exc:
        for e in exc.errors:
            click.echo(str(e), err=True)
        sys.exit(1)


def _run_replay(rules: tuple[str, ...], observations: str, lateness: float | None, detectors: str | None):
    from atalaia.rules.engine import ScorerMissing
    from atalaia.rules.replay import read_jsonl, replay

    if Path(observations).is_dir():
        raise click.BadParameter(
            f"{observations!r} is a directory: the last argument is the observations file (JSON lines)",
            param_hint="'FILE.jsonl'",
        )
    config = _detectors_config(detectors)
    ruleset = _load(rules, config)
    try:
        result = replay(
            ruleset,
            read_jsonl(observations),
            scorer=_scorer(config),
            allowed_lateness=_lateness_default() if lateness is None else lateness,
        )
    except ScorerMissing as exc:
        raise click.ClickException(f"{exc} (use --detectors config/detectors.yaml)") from None
    for line, reason in result.rejected:
        click.echo(f"{observations}:{line}: rejected: {reason}", err=True)
    for message in result.quality:
        click.echo(f"{observations}: warning: {message}", err=True)
    return ruleset, result


@click.group()
def rules() -> None:
    """Alarm rules: validate, unit-test, replay and backtest YAML rule files."""


@rules.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--strict", is_flag=True, help="exit 1 on warnings too")
@click.option(
    "--detectors",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="detectors config the rules' 'detector:' names must be in (default: ATALAIA_DETECTORS_PATH, config/detectors.yaml)",
)
def check(paths: tuple[str, ...], strict: bool, detectors: str | None) -> None:
    """Validate rule files and directories; print every error as file:line:col: message, and
    warnings (attribute names the Smart Data Models schema of the type lacks...) as
    file:line:col: warning: message. A rule's detector must be one the detectors
    configuration has. Without PATHS: the rules the worker loads (ATALAIA_RULES_PATHS, default
    config/rules)."""
    from atalaia.rules.loader import check_paths, load_rules
    from atalaia.streams.settings import get_settings

    paths = paths or tuple(str(p) for p in get_settings().rules_paths)

    config = _detectors_config(detectors)
    known = None if config is None else config.known
    errors = check_paths(paths, detectors=known)
    for e in errors:
        click.echo(str(e), err=True)
    if errors:
        click.echo(f"{len(errors)} error(s)", err=True)
        sys.exit(1)
    ruleset = load_rules(paths, detectors=known)
    for w in ruleset.warnings:
        click.echo(str(w), err=True)
    files = len({lr.file for lr in ruleset.rules})
    warned = f", {len(ruleset.warnings)} warning(s)" if ruleset.warnings else ""
    if strict and ruleset.warnings:
        click.echo(f"failed (--strict): {len(ruleset)} rule(s) in {files} file(s){warned}", err=True)
        sys.exit(1)
    click.echo(f"ok: {len(ruleset)} rule(s) in {files} file(s){warned}")


@rules.command()
def schema() -> None:
    """Print the JSON Schema of rule files (for editor completion and validation)."""
    from atalaia.rules.schema import json_schema

    click.echo(orjson.dumps(json_schema(), option=orjson.OPT_INDENT_2).decode())


_LATENESS = click.option(
    "--allowed-lateness",
    "lateness",
    callback=_duration,
    default=None,
    help="accept observations this far behind the latest event time (default: settings, 5m)",
)
_DETECTORS = click.option(
    "--detectors",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="detectors config for rules with 'detector:' (default: ATALAIA_DETECTORS_PATH, config/detectors.yaml)",
)


@rules.command("replay")
@click.argument("args", nargs=-1, required=True, type=click.Path(exists=True), metavar="RULES... FILE.jsonl")
@_LATENESS
@_DETECTORS
@click.option(
    "--labels",
    "with_labels",
    is_flag=True,
    help="add each transition's labels and annotations (input for `atalaia incidents replay`)",
)
def replay_cmd(
    args: tuple[str, ...], lateness: float | None, detectors: str | None, with_labels: bool
) -> None:
    """Replay observations through rules; print the alarm transitions as JSON lines, in order.

    ARGS are RULES... (files or directories) then OBSERVATIONS.jsonl."""
    if len(args) < 2:
        raise click.UsageError("give rule files/directories and then the observations file")
    _, result = _run_replay(args[:-1], args[-1], lateness, detectors)
    out = sys.stdout.buffer
    for tr in result.transitions:
        out.write(orjson.dumps(tr.replay_line(with_labels)) + b"\n")
    out.flush()


@rules.command("backtest")
@click.argument("args", nargs=-1, required=True, type=click.Path(exists=True), metavar="RULES... FILE.jsonl")
@_LATENESS
@_DETECTORS
@click.option("--json", "as_json", is_flag=True, help="one JSON line per rule instead of a table")
def backtest_cmd(args: tuple[str, ...], lateness: float | None, detectors: str | None, as_json: bool) -> None:
    """Backtest rules on a history: per rule, how many alarms, how long firing, how chatty.

    ARGS are RULES... (files or directories) then HISTORY.jsonl."""
    from atalaia.rules.replay import backtest

    if len(args) < 2:
        raise click.UsageError("give rule files/directories and then the history file")
    ruleset, result = _run_replay(args[:-1], args[-1], lateness, detectors)
    rows = [s.row() for s in backtest(ruleset, result)]
    if as_json:
        for row in rows:
            click.echo(orjson.dumps(row).decode())
        return
    cols = [
        "rule",
        "alarms",
        "pending_only",
        "firing_hours",
        "transitions",
        "transitions_per_hour",
        "keys",
        "chattering_keys",
    ]
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) if rows else len(c) for c in cols]
    click.echo("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        click.echo("  ".join(str(r[c]).ljust(w) for c, w in zip(cols, widths, strict=True)))
    assert result.engine is not None
    st = result.engine.stats
    click.echo(
        f"observations: {st['observations']}  evaluations: {st['evaluations']}  "
        f"rejected: {len(result.rejected)}  late (merged, not evaluated): {st['late_not_evaluated']}"
    )


@rules.command("test")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
def test_cmd(files: tuple[str, ...]) -> None:
    """Run rule unit tests (promtool-like YAML); exit 1 when any fails."""
    from atalaia.rules.ruletest import run_test_file

    total_failed = total = 0
    for f in files:
        try:
            passed, failed, report = run_test_file(Path(f))
        except RuleFileError as exc:
            for e in exc.errors:
                click.echo(str(e), err=True)
            sys.exit(1)
        for line in report:
            click.echo(line)
        total += passed + failed
        total_failed += failed
    click.echo(f"{total - total_failed} passed, {total_failed} failed")
    if total_failed:
        sys.exit(1)
