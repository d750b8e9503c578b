"""``atalaia check``: every configuration file the running system would load, checked as it would
load it, in one command (as ``promtool check config`` or ``amtool check-config``): run it before a
restart, or in a CI job of the configuration repository.

Each part prints its own lines (``file:line:col: message`` for errors) under a ``== part (source)``
header; the last line says ``ok`` or names the parts that failed, and the exit status is 1 when one
did (``--strict``: warnings too)."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def _rules(ctx: click.Context, settings: Any, strict: bool) -> None:
    from atalaia.rules.cli import check

    ctx.invoke(check, paths=tuple(str(p) for p in settings.rules_paths), strict=strict, detectors=None)


def _detectors(ctx: click.Context, settings: Any, strict: bool) -> None:
    from atalaia.detectors.config import ConfigError, load_config

    try:
        config = load_config(settings.detectors_path)
    except (ConfigError, OSError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"ok: {len(config.known)} detector name(s)")


def _incidents(ctx: click.Context, settings: Any, strict: bool) -> None:
    from atalaia.incidents.cli import check

    ctx.invoke(check, config=settings.incidents_path)


def _escalation(ctx: click.Context, settings: Any, strict: bool) -> None:
    from atalaia.notifiers.cli import check

    ctx.invoke(check, policy=str(settings.escalation_path), strict=strict)


def _warnings(ctx: click.Context, settings: Any, strict: bool) -> None:
    from atalaia.warnings.config import load_config

    try:
        config = load_config(settings.warnings_path, settings.public_url())
        catalogue = config.catalogue()
    except Exception as e:  # whatever the loader says, as it says it
        raise click.ClickException(str(e)) from None
    areas = getattr(catalogue, "areas", None)
    click.echo("ok" + (f": {len(areas)} area(s)" if areas is not None else ""))


def _optional_file(
    path: Path | None, load: Callable[[Path], list], errors: tuple, unset: str, what: str
) -> None:
    """An optional file's part: what its absence means, its error, or how many entries it has."""
    if path is None:
        click.echo(f"not configured: {unset}")
        return
    try:
        entries = load(path)
    except (*errors, OSError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"ok: {len(entries)} {what}(s)")


def _users(ctx: click.Context, settings: Any, strict: bool) -> None:
    from atalaia.console.auth import UsersFileError, load_users

    unset = "the console has no users (ATALAIA_CONSOLE_USERS)"
    _optional_file(settings.console_users, load_users, (UsersFileError,), unset, "user")


def _tokens(ctx: click.Context, settings: Any, strict: bool) -> None:
    from atalaia.streams.config_yaml import YamlError
    from atalaia.streams.ingest.auth import load_token_file

    unset = (
        "atalaia up makes one token in its data directory; a worker or console serving ingest on "
        "127.0.0.1 accepts anyone there, and refuses to listen elsewhere"
    )
    _optional_file(settings.ingest_tokens, load_token_file, (YamlError,), unset, "token")


def _exposure(ctx: click.Context, settings: Any, strict: bool) -> None:
    from atalaia.console.problem import is_loopback
    from atalaia.streams.connections import exposure_problem

    problem = exposure_problem(settings, True)
    if problem:
        raise click.ClickException(problem)
    click.echo(
        "ok: loopback only"
        if is_loopback(settings.http_host)
        else "ok: console users and ingest tokens are set for a non-loopback address"
    )


def _security(ctx: click.Context, settings: Any, strict: bool) -> None:
    """The Kafka (with ATALAIA_KAFKA; the embedded broker is plain text) and MQTT (with
    ATALAIA_MQTT_URL) credentials and TLS files, built as the clients build them."""
    from atalaia.streams.ingest.mqtt import MqttSecurity, parse_mqtt_url
    from atalaia.streams.kafka_config import KafkaConfigError, KafkaSecurity

    said = []
    try:
        if settings.kafka:
            said.append(f"kafka {KafkaSecurity.from_settings(settings).protocol}")
        if settings.mqtt_url:
            parse_mqtt_url(settings.mqtt_url)
            tls = MqttSecurity.from_settings(settings).tls_context is not None
            said.append("mqtt " + ("TLS" if tls else "plain"))
    except (KafkaConfigError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo("ok: " + ", ".join(said) if said else "ok: embedded broker, no MQTT")


class _Warned(Exception):
    pass


def _environment(ctx: click.Context, settings: Any, strict: bool) -> None:
    from atalaia.streams.settings import unknown_variables

    lines = unknown_variables(os.environ, settings)
    for line in lines:
        click.echo(f"warning: {line}", err=True)
    if lines and strict:
        raise _Warned
    click.echo("ok" + (f", {len(lines)} warning(s)" if lines else ""))


# (part, the setting that names its file, check)
PARTS: list[tuple[str, str, Callable[[click.Context, Any, bool], None]]] = [
    ("rules", "rules_paths", _rules),
    ("detectors", "detectors_path", _detectors),
    ("incidents", "incidents_path", _incidents),
    ("escalation", "escalation_path", _escalation),
    ("warnings", "warnings_path", _warnings),
    ("console users", "console_users", _users),
    ("ingest tokens", "ingest_tokens", _tokens),
    ("kafka and mqtt security", "kafka", _security),
    ("exposure", "http_host", _exposure),
    ("environment", "", _environment),
]


#: the parts ``atalaia up`` checks before it starts anything: the files the running system loads
#: (exposure and the environment it checks itself)
STARTUP_PARTS = tuple(name for name, _, _ in PARTS if name not in ("exposure", "environment"))


def _run_part(ctx: click.Context, settings: Any, run: Any, strict: bool) -> bool:
    """Run one part of the check; True when it passed (its lines are printed already)."""
    try:
        run(ctx, settings, strict)
    except click.ClickException as e:
        click.echo(e.format_message(), err=True)
        return False
    except _Warned:
        return False
    except SystemExit as e:  # the part's own command said failed (its lines are out already)
        return not e.code
    return True


def startup_problems(settings: Any, quiet: bool = True) -> dict[str, list[str]]:
    """The parts of ``atalaia check`` for the files the running system loads that fail, each with
    the lines ``atalaia check`` prints for it (``file:line:col: message``); ``quiet=False``
    writes those lines to stderr as well. A part that passes prints nothing (its warnings are
    the worker's to log)."""
    ctx = click.Context(check, info_name="check")
    failed = {}
    for name, _setting, run in PARTS:
        if name not in STARTUP_PARTS:
            continue
        out, err = io.StringIO(), io.StringIO()
        with ctx, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            ok = _run_part(ctx, settings, run, False)
        if not ok:
            failed[name] = [line for line in err.getvalue().splitlines() if line.strip()] or ["does not load"]
            if not quiet:
                sys.stderr.write(err.getvalue())
                sys.stderr.flush()
    return failed


def startup_check(settings: Any) -> list[str]:
    """The parts of ``atalaia check`` for the files the running system loads, run quietly before
    ``atalaia up`` starts anything: a failed part's lines (``file:line:col: message``) go to
    stderr as ``atalaia check`` prints them. Returns the names of the parts that failed."""
    return list(startup_problems(settings, quiet=False))


def part_problems(settings: Any, name: str) -> list[str]:
    """The lines ``atalaia check`` prints for its part ``name`` when it fails (``file:line:col:
    message``), or ``[]`` when it passes; nothing is printed."""
    run = next(r for n, _, r in PARTS if n == name)
    ctx = click.Context(check, info_name="check")
    out, err = io.StringIO(), io.StringIO()
    with ctx, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        ok = _run_part(ctx, settings, run, False)
    return [] if ok else [line for line in err.getvalue().splitlines() if line.strip()] or ["does not load"]


@click.command("check")
@click.option("--strict", is_flag=True, help="warnings fail too")
@click.pass_context
def check(ctx: click.Context, strict: bool) -> None:
    """Check every configuration file the running system loads, as it loads them: settings, rules
    (against the detectors), detectors, incidents, escalation (targets, unset variables), warnings
    (levels and areas), console users, ingest tokens, and ATALAIA_* variables nothing reads. Exit 1
    when one part fails; the files are named by the same settings as the worker's."""
    from atalaia.streams.settings import SettingsError, load_settings

    click.echo(
        "== settings (environment"
        + (f", ATALAIA_CONFIG={os.environ['ATALAIA_CONFIG']})" if os.environ.get("ATALAIA_CONFIG") else ")")
    )
    try:
        settings = load_settings()
    except SettingsError as e:
        click.echo(str(e), err=True)
        click.echo("failed: settings (nothing else checked: the files are named by the settings)", err=True)
        sys.exit(1)
    click.echo("ok")
    failed = []
    for name, setting, run in PARTS:
        value = getattr(settings, setting) if setting else None
        shown = (
            ", ".join(str(p) for p in value)
            if isinstance(value, list)
            else (str(value) if isinstance(value, Path | str) else "ATALAIA_*" if not setting else "not set")
        )
        click.echo(f"== {name} ({shown})")
        sys.stdout.flush()
        if not _run_part(ctx, settings, run, strict):
            failed.append(name)
    if failed:
        click.echo(f"failed: {', '.join(failed)}", err=True)
        sys.exit(1)
    click.echo("ok: every part")
