"""``atalaia users``: console users (``ATALAIA_CONSOLE_USERS``): set a password, list users."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

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
    from atalaia.console.auth import actor_problem, hash_password, password_problem

    problem = actor_problem(name)
    if problem:
        raise click.ClickException(f"{problem}: {name[:80]!r}")
    target = _users_file(path)
    data = _load_for_update(target) if target is not None else None  # a bad file: before the prompt
    if password_stdin:
        password = _stdin_line()
    else:
        password = click.prompt(f"Password for {name}", hide_input=True, confirmation_prompt=True)
    problem = password_problem(password)
    if problem:
        raise click.ClickException(problem)
    digest = hash_password(password)
    if target is None:
        click.echo(digest)
        return
    if data is None:
        data = {"users": []}
    entries = data.setdefault("users", [])
    entry = next((u for u in entries if isinstance(u, dict) and u.get("actor") == name), None)
    if entry is None:
        if role is None:
            raise click.ClickException(f"{target}: no user {name!r}; add them with --role ROLE")
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
    _write(target, data)
    click.echo(f"{target}: {'added' if added else 'updated'} {name}; restart the console to apply")


def _stdin_line() -> str:
    """The first line of stdin, without its line end; text that is not UTF-8 is refused."""
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:
        line = sys.stdin.readline()
    else:
        try:
            line = stream.readline().decode("utf-8")
        except UnicodeDecodeError:
            raise click.ClickException("the password on stdin is not UTF-8 text") from None
    return line.rstrip("\r\n")


def _yaml() -> Any:
    from ruamel.yaml import YAML

    yaml = YAML()  # round trip: comments and layout stay
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096
    return yaml


def _load_for_update(target: Path) -> Any:
    """The users file as an editable (round-trip) tree, None when it is absent or empty; a file
    that does not load as the console would load it (syntax, limits, a FIFO, a bad entry, a name
    listed twice) is a ClickException ``file:line:col: ...``, and the file is left alone."""
    from atalaia.console.auth import UsersFileError, load_users
    from atalaia.streams.config_yaml import YamlError, YamlLimits, parse, read_text

    if not target.exists() and not target.is_symlink():
        return None
    limits = YamlLimits.from_env()
    try:
        text = read_text(target, limits)  # safe: size limit, regular files only, UTF-8
        if parse(text, str(target), limits) is None:
            return None
        load_users(target, limits)
    except (YamlError, UsersFileError) as e:
        raise click.ClickException(f"{e}\n(the users file was not changed)") from None
    return _yaml().load(text)


def _write(target: Path, data: Any) -> None:
    """Replace ``target`` with ``data``: written to a private (0600) temporary file beside it,
    which must load before it replaces the file, and which is removed on any failure."""
    from atalaia.console.auth import UsersFileError, load_users

    try:
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as e:
        raise click.ClickException(f"{target}: cannot write beside it: {e.strerror or e}") from None
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            _yaml().dump(data, f)
        load_users(tmp)  # the file must still load before it replaces the old one
        os.replace(tmp, target)
    except UsersFileError as e:
        tmp.unlink(missing_ok=True)
        message = str(e).replace(str(tmp), str(target))
        raise click.ClickException(f"{message}\n(the users file was not changed)") from None
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise click.ClickException(f"{target}: cannot write: {e.strerror or e}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
