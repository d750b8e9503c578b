"""``atalaia warnings``: render a draft to the CAP 1.2 that issuing it would publish; validate CAP
files."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click


def _config(path: Path | None):
    """``--config FILE``, else the file the worker loads (``ATALAIA_WARNINGS_PATH``; the repo's
    ``config/warnings.yaml`` by default): before, the repo's whatever the setting said."""
    from atalaia.rules.errors import RuleFileError
    from atalaia.streams.settings import SettingsError, get_settings
    from atalaia.warnings.config import DEFAULT_PATH, load_config

    if path is None:
        try:
            configured = get_settings().warnings_path
        except SettingsError as e:
            raise click.ClickException(str(e)) from None
        path = None if configured == DEFAULT_PATH else configured
    try:
        return load_config(path)
    except (RuleFileError, ValueError, OSError) as e:
        raise click.ClickException(str(e)) from None


def _catalogue(cfg):
    """The levels and areas the warnings file names, or exit 1 with the file's error (a levels
    file that is missing or broken was a traceback)."""
    from atalaia.rules.errors import RuleFileError
    from atalaia.streams.config_yaml import YamlError

    try:
        return cfg.catalogue()
    except (YamlError, RuleFileError, ValueError, OSError) as e:
        raise click.ClickException(str(e)) from None


MAX_VALID_FOR = timedelta(days=30)  # `warnings drill --valid-for`: expires = onset + at most this


def incident_problem(ev: dict[str, Any]) -> str | None:
    """What in an incident event (``atalaia.incidents``) a drill cannot read, or None."""
    version = ev.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        return f'"version" is an integer, not {version!r}'
    labelled = [("correlation", ev.get("correlation")), ("labels", ev.get("labels"))]
    alarms = ev.get("alarms")
    if alarms is not None and not isinstance(alarms, list):
        return f'"alarms" is a list, not {type(alarms).__name__}'
    for i, a in enumerate(alarms or []):
        if not isinstance(a, dict):
            return f'"alarms"[{i}] is a mapping, not {type(a).__name__}'
        labelled.append((f"alarms[{i}].labels", a.get("labels")))
    for name, labels in labelled:
        if labels is None:
            continue
        if not isinstance(labels, dict):
            return f'"{name}" is a mapping of labels, not {type(labels).__name__}'
        for k, v in labels.items():
            if not isinstance(v, str | int) or isinstance(v, bool):
                return f'"{name}".{k} is a text, not {v!r}'
    return None


@click.group()
def warnings() -> None:
    """Population warnings: CAP 1.2 documents, approval workflow, Atom feed."""


@warnings.command()
@click.argument("draft", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--sent", help="the sent time (RFC 3339 with an offset; default: now)")
@click.option(
    "--config",
    "config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="the warnings settings (levels, areas, feed); default: ATALAIA_WARNINGS_PATH",
)
def render(draft: Path, sent: str | None, config: Path | None) -> None:
    """Print the CAP 1.2 XML that issuing DRAFT.yaml would publish (exit 1 with file:line:col errors)."""
    from atalaia.warnings.cap import CapInvalid
    from atalaia.warnings.cap import render as render_cap
    from atalaia.warnings.draft import cap_time
    from atalaia.warnings.loader import DraftError, load_draft

    cfg = _config(config)
    cat = _catalogue(cfg)
    from atalaia.streams.config_yaml import YamlError, read_text

    try:
        text = read_text(draft)  # within the size limit, checked before reading
    except YamlError as e:
        click.echo(str(e), err=True)
        sys.exit(1)
    try:
        when = cap_time(sent) if sent is not None else None  # (--sent '': an error, not now)
    except ValueError as e:
        click.echo(f"--sent: {e}", err=True)
        sys.exit(2)

    def tenancy(d: Any) -> list[tuple[tuple[Any, ...], str]]:  # what issuing would refuse
        from atalaia.warnings.cap import DRAFTING_SKEW, reference_after

        sent_at = when or d.sent
        slack = timedelta(0) if sent_at else DRAFTING_SKEW  # (now: it is sent later, by our clock)
        sent_at = sent_at or datetime.now(UTC).replace(microsecond=0)
        later = [
            (("references", i), m)
            for i, r in enumerate(d.references)
            if (m := reference_after(r, sent_at, slack))
        ]
        return later + cfg.tenancy_problems(d, d.sender, d.tenant, cat)

    try:
        d = load_draft(text, str(draft), cat, cfg.region, more=tenancy)
        doc = render_cap(d, cat, when, bbox=cfg.region)  # (its notes say if it expires before it is sent)
    except DraftError as e:
        for err in e.errors:
            click.echo(str(err), err=True)
        sys.exit(1)
    except CapInvalid as e:
        for p in e.problems:
            click.echo(f"{draft}:1:1: the CAP document is invalid: {p}", err=True)
        sys.exit(1)
    for n in doc.notes:
        click.echo(f"note: {n}", err=True)
    sys.stdout.buffer.write(doc.xml)
    sys.stdout.buffer.flush()


@warnings.command()
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--in-region",
    is_flag=True,
    help="every polygon and circle must lie in the configured region (for Atalaia's own warnings)",
)
@click.option("--anywhere", is_flag=True, help="no region check at all")
@click.option(
    "--config",
    "config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="the warnings settings (levels, areas, feed); default: ATALAIA_WARNINGS_PATH",
)
def validate(files: tuple[Path, ...], in_region: bool, anywhere: bool, config: Path | None) -> None:
    """Check CAP 1.2 files against the OASIS XSD and the CAP text rules. A polygon or circle
    that would lie in the configured region with lat and lon exchanged is refused (the usual
    GeoJSON lon,lat mistake); a document about any other place passes (give --anywhere for one
    about the region's mirror image, e.g. the Tanzanian coast for Portugal), unless --in-region."""
    from atalaia.warnings.cap import validate as validate_cap

    if in_region and anywhere:
        raise click.UsageError("--in-region and --anywhere contradict each other")
    region = None if anywhere else _config(config).region
    bad = 0
    for f in files:
        problems = validate_cap(
            f.read_bytes(),
            bbox=region if in_region else None,
            strict=False,
            swapped=None if in_region else region,
        )
        if problems:
            bad += 1
            for p in problems:
                click.echo(f"{f}: {p}", err=True)
        else:
            click.echo(f"{f}: ok")
    if bad:
        sys.exit(1)


@warnings.command()
@click.argument("incidents", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--incident", "incident_id", help="the incident to drill (default: the first in the file)")
@click.option("--sender", default="protecao.civil@cm-porto.pt", show_default=True, help="the CAP sender")
@click.option("--valid-for", default="12h", show_default=True, help="expires = onset + this (e.g. 6h)")
@click.option(
    "--command", "as_command", is_flag=True, help="print a draft command for atalaia.commands (JSON)"
)
@click.option(
    "--config",
    "config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="the warnings settings (levels, areas, feed); default: ATALAIA_WARNINGS_PATH",
)
def drill(
    incidents: Path,
    incident_id: str | None,
    sender: str,
    valid_for: str,
    as_command: bool,
    config: Path | None,
) -> None:
    """Draft an Exercise warning from a recorded incident (INCIDENTS.jsonl: events as on
    atalaia.incidents). Prints the draft (YAML, for `atalaia warnings render` or the console) or,
    with --command, the draft command to publish on atalaia.commands. The drill then runs through
    the real chain: approval, issue, and the channels of the targets marked for exercises."""
    import io

    import orjson
    from ruamel.yaml import YAML

    from atalaia.notifiers.config import parse_duration
    from atalaia.warnings.from_incident import draft_from_incident

    latest: dict[str, dict] = {}
    try:
        text = incidents.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise click.ClickException(
            f"{incidents}: not UTF-8 text (byte {e.start}): not incident events"
        ) from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            ev = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            raise click.ClickException(f"{incidents}:{n}:1: not JSON: {e}") from None
        if isinstance(ev, dict) and isinstance(ev.get("incident"), str):
            if (problem := incident_problem(ev)) is not None:
                raise click.ClickException(f"{incidents}:{n}:1: incident {ev['incident']!r}: {problem}")
            latest.setdefault(ev["incident"], ev)
            if ev.get("version", 0) >= latest[ev["incident"]].get("version", 0):
                latest[ev["incident"]] = ev
    if not latest:
        raise click.ClickException(f"{incidents}: no incident events")
    key = incident_id or next(iter(latest))
    if key not in latest:
        raise click.ClickException(f"no incident {key!r} in {incidents} (found: {', '.join(latest)})")
    ev = latest[key]
    try:
        if not valid_for.isascii():
            raise ValueError(f"invalid duration {valid_for!r}: use e.g. 90s, 5m, 1h30m, 2d")
        duration = parse_duration(valid_for)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--valid-for") from None
    if not timedelta(0) < duration <= MAX_VALID_FOR:
        raise click.BadParameter(
            f"{valid_for!r}: a warning is valid for more than 0s and at most {MAX_VALID_FOR.days}d",
            param_hint="--valid-for",
        )
    cfg = _config(config)
    draft = draft_from_incident(
        ev, _catalogue(cfg), sender, datetime.now(UTC).replace(microsecond=0), duration
    )
    draft["status"] = "Exercise"
    if as_command:
        cmd = {"kind": "warning", "action": "draft", "actor": "drill", "role": "operator", "incident": key}
        click.echo(orjson.dumps({**cmd, "draft": draft}).decode())
        return
    out = io.StringIO()
    y = YAML()
    y.default_flow_style = False
    y.dump(draft, out)
    click.echo(f"# Exercise drafted from incident {key} ({incidents})\n" + out.getvalue(), nl=False)
