"""``atalaia users``: console users (``ATALAIA_CONSOLE_USERS``): set a password, list users."""

from __future__ import annotations

import sys
from pathlib import Path

import click


def _users_file(path: str | None) -> Path | None:
    if path:
        return Path(path)
    from atalaia.streams.settings import get_settings

    return get_settings().console_users


@click.group()
def users() -> None:
    """Console users: passwords (argon2id) and API tokens (sha256) in the users file."""


@users.command()
@click.argument("name")
@click.option(
    "--file",
    "path",
    type=click.Path(dir_okay=False),
    default=None,
    help="users file to update (default: $ATALAIA_CONSOLE_USERS); without one the hash is printed",
)
@click.option(
    "--role",
    type=click.Choice(["operator", "supervisor", "engineer", "approver", "viewer"]),
    default=None,
    help="add NAME with this role when the file does not have it yet",
)
@click.option("--password-stdin", is_flag=True, help="read the password from the first line of stdin")
def passwd(name: str, path: str | None, role: str | None, password_stdin: bool) -> None:
    """Set NAME's password: its argon2id hash is written as ``password_argon2`` in the users file
    (comments and the other users are kept), or printed when there is no file. The console reads
    the file when it starts."""
    from atalaia.console.auth import hash_password, load_users

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt(f"Password for {name}", hide_input=True, confirmation_prompt=True)
    if len(password) < 8:
        click.echo("a password needs at least 8 characters", err=True)
        sys.exit(1)
    digest = hash_password(password)
    target = _users_file(path)
    if target is None:
        click.echo(digest)
        return
    from ruamel.yaml import YAML

    yaml = YAML()  # round trip: comments and layout stay
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096
    data = yaml.load(target.read_text(encoding="utf-8")) if target.exists() else None
    if data is None:
        data = {"users": []}
    entries = data.setdefault("users", [])
    entry = next((u for u in entries if isinstance(u, dict) and u.get("actor") == name), None)
    if entry is None:
        if role is None:
            click.echo(f"{target}: no user {name!r}; add them with --role ROLE", err=True)
            sys.exit(1)
        from ruamel.yaml.comments import CommentedMap

        entry = CommentedMap(actor=name, role=role)
        entries.append(entry)
        added = True
    else:
        added = False
        if role is not None and role != entry.get("role"):
            entry["role"] = role
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString

    entry["password_argon2"] = DoubleQuotedScalarString(digest)
    tmp = target.with_suffix(target.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        yaml.dump(data, f)
    load_users(tmp)  # the file must still load before it replaces the old one
    tmp.replace(target)
    target.chmod(0o600)
    click.echo(f"{target}: {'added' if added else 'updated'} {name}; restart the console to apply")
