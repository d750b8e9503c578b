"""``atalaia tokens``: make ingest and monitoring tokens (only their SHA-256 is stored)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import click

from atalaia.streams.ingest.auth import IngestAuth, TokenEntry, hash_token, load_token_file, new_token

DEMO_SOURCE = "demo"


def _append_entry(path: Path, entry: TokenEntry) -> None:
    """Add one entry to a token file (created if absent), refusing a file that does not load."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe")
    yaml.default_flow_style = None
    yaml.width = 4096
    entries: list[TokenEntry] = []
    umask = os.umask(0)
    os.umask(umask)
    mode = 0o644 & ~umask  # only hashes: readable by the worker's user as before
    if path.exists() or path.is_symlink():
        entries = load_token_file(path)  # within the safe-loading limits; YamlError file:line:col
        mode = path.stat().st_mode & 0o777
    entries.append(entry)
    doc = {"tokens": [e.model_dump(exclude_none=True) for e in entries]}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yaml.dump(doc, f)
        os.chmod(name, mode)
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def ensure_demo_token(data_dir: Path) -> tuple[Path, str]:
    """The demo's ingest token file and token, kept in the data directory so that ``atalaia up``
    prints the same token after a restart: ``<data_dir>/ingest-tokens.yaml`` (the hash) and
    ``<data_dir>/ingest-token`` (the token itself, mode 0600, for the demo feed and for you)."""
    tokens, plain = data_dir / "ingest-tokens.yaml", data_dir / "ingest-token"
    if plain.exists() and tokens.exists():
        token = plain.read_text(encoding="ascii").strip()
        if IngestAuth.from_file(tokens)._by_hash.get(hash_token(token)):
            return tokens, token
    token = new_token()
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(plain.with_name(plain.name + ".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(token + "\n")
    os.replace(plain.with_name(plain.name + ".tmp"), plain)
    tokens.unlink(missing_ok=True)
    _append_entry(tokens, TokenEntry(source=DEMO_SOURCE, token_sha256=hash_token(token)))
    return tokens, token


@click.group()
def tokens() -> None:
    """Ingest tokens (ATALAIA_INGEST_TOKENS) and the /health + /metrics token."""


@tokens.command("new")
@click.option("--source", required=True, help="who sends with it (orion-porto, iot-agent, ...)")
@click.option("--tenant", default=None, help="the tenant it may post for (NGSILD-Tenant / Fiware-Service)")
@click.option(
    "--file",
    "path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="append the entry to this token file (created if absent); else print it",
)
def new(source: str, tenant: str | None, path: Path | None) -> None:
    """Make an ingest token: prints the token once (stdout) and stores or prints only its hash."""
    from pydantic import ValidationError

    from atalaia.streams.config_yaml import YamlError

    token = new_token()
    try:
        entry = TokenEntry(source=source, tenant=tenant, token_sha256=hash_token(token))
    except ValidationError as e:
        raise click.ClickException(
            "; ".join(f"--{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        ) from None
    if path is not None:
        try:
            _append_entry(path, entry)
        except YamlError as e:
            raise click.ClickException(f"{e}\n(the token file was not changed)") from None
        except OSError as e:
            raise click.ClickException(f"{path}: cannot write: {e.strerror or e}") from None
        whose = f"tenant {tenant}" if tenant else "no tenant: requests naming none"
        click.echo(f"added {source!r} ({whose}) to {path}", err=True)
    else:
        import orjson

        click.echo("add to the token file under `tokens:`", err=True)
        click.echo("  - " + orjson.dumps(entry.model_dump(exclude_none=True)).decode(), err=True)
    click.echo(token)


@tokens.command("hash")
def hash_() -> None:
    """Print the SHA-256 of a token read from stdin (e.g. for ATALAIA_METRICS_TOKEN_SHA256)."""
    token = sys.stdin.readline().strip()
    if not token:
        raise click.ClickException("no token on stdin")
    try:
        click.echo(hash_token(token))
    except UnicodeEncodeError as e:
        raise click.ClickException("a token is ASCII (token68 characters)") from e


@tokens.command("metrics")
def metrics() -> None:
    """Make a token for /health and /metrics: prints it (stdout) and the setting that stores its hash."""
    token = new_token()
    click.echo(f"ATALAIA_METRICS_TOKEN_SHA256={hash_token(token)}", err=True)
    click.echo(token)
