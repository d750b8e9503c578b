"""``atalaia incidents``: check the configuration, replay alarms/commands through the manager,
load incident events into the SQL projection."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import orjson

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "config" / "incidents.yaml"


def _config(path: Path | None):
    from atalaia.incidents.config import ConfigError, IncidentConfig, load_config

    if path is None:
        return load_config(DEFAULT_CONFIG) if DEFAULT_CONFIG.exists() else IncidentConfig()
    try:
        return load_config(path)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None


@click.group()
def incidents() -> None:
    """Incidents: correlation, ISA-18.2 lifecycle, shelving, inhibition, alarm-load KPIs."""


@incidents.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=False)
def check(config: Path | None) -> None:
    """Validate an incidents configuration (default: the one the worker loads, ATALAIA_INCIDENTS_PATH,
    default config/incidents.yaml)."""
    from atalaia.streams.settings import get_settings

    config = config or get_settings().incidents_path
    if config.is_dir():
        raise click.ClickException(
            f"{config}: is a directory, not an incidents file (ATALAIA_INCIDENTS_PATH names it)"
        )
    if not config.is_file():
        raise click.ClickException(f"{config}: no such file (ATALAIA_INCIDENTS_PATH names it)")
    cfg = _config(config)
    click.echo(
        f"ok: window {cfg.correlation.window:g}s, {len(cfg.inhibit)} inhibit rule(s), "
        f"{len(cfg.maintenance)} maintenance window(s), {len(cfg.positions)} position(s)"
    )


def _rfc3339(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An option's RFC 3339 time, read as the manager reads it (refused before anything runs)."""
    from atalaia.incidents.model import in_range, to_us

    if value is None:
        return None
    try:
        in_range(to_us(value), param.name or "time")
    except (ValueError, OverflowError) as e:
        raise click.BadParameter(f"{value!r}: {e}; write e.g. 2026-03-01T06:00:00Z") from None
    return value


@incidents.command()
@click.argument("inputs", nargs=-1, required=True, type=click.File("rb"))
@click.option("--config", "config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--until", callback=_rfc3339, help="tick the timers up to this RFC 3339 time at the end")
@click.option("--kpis", is_flag=True, help="print the alarm-load KPIs as a last line")
def replay(inputs: tuple, config: Path | None, until: str | None, kpis: bool) -> None:
    """Replay JSON lines (alarm transitions, and commands: lines with "action") through the manager;
    print incident events and command replies as JSON lines. Time is the inputs' own time."""
    from atalaia.incidents.manager import IncidentManager

    mgr = IncidentManager(_config(config))
    state = mgr.initial_state()
    now = None
    out = sys.stdout.buffer
    for f in inputs:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = orjson.loads(line)
                t = item.get("at") if isinstance(item, dict) else None
                now = max(now, t) if now and t else (t or now)
                if now is None:
                    raise ValueError("the first input needs an 'at' time")
                state, outs = mgr.step(state, item, now)
            except ValueError as e:
                raise click.ClickException(f"{f.name}:{n}: {e}") from None
            for o in outs:
                out.write(o.to_json() + b"\n")
    if until:
        state, outs = mgr.tick(state, until)
        for o in outs:
            out.write(o.to_json() + b"\n")
    if kpis:
        out.write(orjson.dumps({"kind": "kpis", **mgr.kpis(state).to_dict()}) + b"\n")


@incidents.command()
@click.argument("events", type=click.File("rb"))
@click.option("--db", default=None, help="the projection to write: sqlite:///path.db or postgresql://...")
@click.option(
    "--live",
    is_flag=True,
    help="write into the live projection, the one the running system's projection stage writes and "
    "the console shows: ATALAIA_DATABASE_URL, else sqlite:///<ATALAIA_DATA_DIR>/atalaia.db",
)
@click.option("--schema", help="PostgreSQL schema (with --live, default: ATALAIA_DATABASE_SCHEMA)")
def project(events, db: str | None, live: bool, schema: str | None) -> None:
    """Apply incident events (JSON lines, e.g. from `replay`) to an SQL projection: --db names one;
    --live the one operators see (rebuilding it from the incident events). One of them is needed: a
    what-if replay projected into the live database would show phantom incidents in the console."""
    from atalaia.incidents.projection import Projection

    if (db is None) == (not live):
        raise click.UsageError(
            "name the projection: --db sqlite:///what-if.db (or postgresql://...), or --live for the one "
            "the running system writes and the console shows"
            if db is None
            else "--db and --live name two projections: give one"
        )
    if live:
        from atalaia.streams.settings import SettingsError, get_settings

        try:
            settings = get_settings()
        except SettingsError as e:
            raise click.ClickException(str(e)) from None
        db = settings.projection_url()
        schema = schema or settings.database_schema
    try:
        proj = Projection.connect(db, schema=schema)
    except ValueError as e:  # a URL of another kind (it was taken for an SQLite path)
        raise click.ClickException(f"--db {e}") from None
    items = [
        d for d in (orjson.loads(x) for x in events if x.strip()) if d.get("kind", "incident") == "incident"
    ]
    applied = proj.apply(items)
    click.echo(
        f"{applied} new of {len(items)} incident events; {len(proj.open_incidents())} open incidents "
        f"(schema version {proj.schema_version()})"
    )
