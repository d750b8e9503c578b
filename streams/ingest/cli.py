"""``atalaia ingest parse FILE``: print the Observations a payload yields, as the live ingest would."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from atalaia.streams.clock import parse_time
from atalaia.streams.ingest.encode import encode_observation
from atalaia.streams.ingest.options import IngestOptions
from atalaia.streams.ingest.payload import parse_payload

_SUFFIX_TYPES = {".jsonld": "application/ld+json", ".geojson": "application/geo+json"}


@click.group()
def ingest() -> None:
    """Ingest normaliser: FIWARE NGSI-LD / NGSI-v2 / Smart Data Models payloads -> Observations."""


@ingest.command("parse")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--content-type", "content_type", help="Content-Type the payload arrives with (default from suffix)."
)
@click.option(
    "--link", help='Link header, e.g. <https://...context.jsonld>; rel="http://www.w3.org/ns/json-ld#context"'
)
@click.option("--source", default="cli", show_default=True, help="Observation source to record.")
@click.option("--lines", is_flag=True, help="Each line is one payload (default for .jsonl/.ndjson files).")
@click.option(
    "--received",
    metavar="TIME",
    help="Reception time (RFC 3339 with offset), for entities without observedAt/dateObserved/TimeInstant "
    "in a payload without notifiedAt (time_source 'received'). Default: now.",
)
@click.option(
    "--tenant", help="Tenant the payload arrives for (as the NGSILD-Tenant / Fiware-Service header)."
)
@click.option("--service-path", "service_path", help="Fiware-ServicePath header, e.g. /porto/hydro.")
@click.option(
    "--header",
    "-H",
    "header",
    multiple=True,
    metavar="NAME:VALUE",
    help="A request header as the broker sends it (repeatable), e.g. -H 'Fiware-Service: porto'.",
)
def parse(
    file: str,
    content_type: str | None,
    link: str | None,
    source: str,
    lines: bool,
    received: str | None,
    tenant: str | None,
    service_path: str | None,
    header: tuple[str, ...],
) -> None:
    """Print each Observation FILE yields as a JSON line (stdout); warnings and rejected entities go to
    stderr. Exits 1 when a payload is refused as a whole, printing the reason."""
    headers: dict[str, str] = {}
    for h in header:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter(f"{h!r} is not NAME:VALUE", param_hint="--header")
        headers[name.strip().lower()] = value.strip()
    if tenant is not None:
        headers["ngsild-tenant"] = tenant
    if service_path is not None:
        headers["fiware-servicepath"] = service_path
    if received is None:
        now = datetime.now(UTC)
    else:
        try:
            now = parse_time(received)
        except ValueError as exc:
            raise click.BadParameter(f"{received!r}: {exc}", param_hint="--received") from None
    try:
        from atalaia.streams.settings import get_settings

        options = IngestOptions.from_settings(get_settings())
    except Exception as exc:  # settings are optional for a local check
        click.echo(f"warning: settings not loaded ({exc}); using defaults", err=True)
        options = IngestOptions()
    if file == "-":
        body, suffix = sys.stdin.buffer.read(), ""
    else:
        try:
            body = Path(file).read_bytes()
        except OSError as exc:
            raise click.ClickException(f"{file}: {exc.strerror}") from None
        suffix = Path(file).suffix.lower()
    if content_type is None:
        content_type = _SUFFIX_TYPES.get(suffix, "application/json")
    payloads = body.splitlines() if (lines or suffix in (".jsonl", ".ndjson")) else [body]
    refused = 0
    for n, payload in enumerate(payloads, 1):
        if len(payloads) > 1 and not payload.strip():
            continue
        where = f"{file}:{n}" if len(payloads) > 1 else file
        result = parse_payload(
            payload,
            content_type=content_type,
            link=link,
            headers=headers,
            source=source,
            received_at=now,
            options=options,
        )
        for obs in result.observations:
            click.echo(encode_observation(obs).decode())
        for warning in result.warnings:
            click.echo(f"{where}: warning: {warning}", err=True)
        for note in result.ignored:
            click.echo(f"{where}: ignored: {note}", err=True)
        for r in result.rejections:
            scope = "rejected" if r.scope == "payload" else f"rejected {r.scope}"
            who = f" {r.entity}" if r.entity else ""
            click.echo(f"{where}: {scope}{who}: {r} [{r.code}]", err=True)
        refused += not result.ok
    if refused:
        sys.exit(1)
