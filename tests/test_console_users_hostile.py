"""Hostile users files, ingest token files and their CLIs (`atalaia users passwd`,
`atalaia tokens new`): a name or a token listed twice is refused at file:line:col (sign-in and
`users passwd` would take different entries; a token would act for the last tenant listed), bad
files and arguments are one clean error (no traceback), and a failed `users passwd` leaves neither
a changed file nor a temporary file with the password hashes."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from atalaia.console.auth import Authenticator, UsersFileError, hash_password, load_users
from atalaia.console.users_cli import users as users_cli
from atalaia.streams.config_yaml import YamlError
from atalaia.streams.ingest.auth import Caller, IngestAuth, hash_token, new_token
from atalaia.streams.tokens import tokens as tokens_cli

HASH = hash_password("correct horse")
TOK = hashlib.sha256(b"t0k").hexdigest()


def _passwd(path: Path, *args: str, stdin: bytes | str = b"s3cret-pass\n"):
    return CliRunner().invoke(
        users_cli, ["passwd", *args, "--password-stdin", "--file", str(path)], input=stdin
    )


def _clean_failure(result, *needles: str) -> None:
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), f"a traceback: {result.exception!r}"
    for n in needles:
        assert n in result.output, result.output


def _others(tmp_path: Path, keep: Path) -> list[Path]:
    return [p for p in tmp_path.iterdir() if p != keep]


# ---------------------------------------------------------------- users file: duplicates, names


def test_a_user_listed_twice_is_refused_at_file_line_col(tmp_path: Path) -> None:
    p = tmp_path / "users.yaml"
    p.write_text(
        "users:\n"
        f'  - {{actor: ana, role: operator, password_argon2: "{HASH}"}}\n'
        f"  - {{actor: rui, role: viewer, token_sha256: {TOK}}}\n"
        f"  - {{actor: ana, role: supervisor, token_sha256: {hashlib.sha256(b'x').hexdigest()}}}\n"
    )
    with pytest.raises(
        UsersFileError, match=rf"{p}:4:13: users.2.actor: user 'ana' is listed twice \(first at line 2\)"
    ):
        load_users(p)
    with pytest.raises(UsersFileError):
        Authenticator.from_file(p)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("ana", "Ana"),
        ("ana", "ANA"),
        ("ana", "\u0430na"),  # a Cyrillic a
        ("pedro", "\u03c1edro"),  # a Greek rho
        ("jo\u00e3o", "joa\u0303o"),  # the same letters, composed and decomposed
        ("joao", "\uff4a\uff4f\uff41\uff4f"),  # fullwidth
        ("Tiago", "\u03a4iago"),  # a Greek capital Tau (it folds to a small tau, drawn otherwise)
        ("Tiago", "\u0422iago"),  # a Cyrillic capital Te
        ("Marta", "\u039carta"),  # a Greek capital Mu
        ("Helena", "\u041delena"),  # a Cyrillic capital En
        (
            "\u0412\u0435\u0440\u0430",
            "\u0432\u0435\u0440\u0430",
        ),  # Вера, вера: one Cyrillic name in two cases
    ],
)
def test_names_that_look_alike_are_refused(tmp_path: Path, first: str, second: str) -> None:
    """An approver account "Ana" approved the Actual warning "ana" drafted: four eyes counted two
    people where the audit trail shows one name."""
    p = tmp_path / "users.yaml"
    p.write_text(
        "users:\n"
        f"  - {{actor: {first}, role: operator, token_sha256: {TOK}}}\n"
        f'  - {{actor: "{second}", role: approver, token_sha256: {hashlib.sha256(b"z").hexdigest()}}}\n',
        encoding="utf-8",
    )
    with pytest.raises(UsersFileError, match=rf"{p}:3:\d+: users.1.actor: user .* looks like .*\(line 2\)"):
        load_users(p)


def test_different_names_stay_different(tmp_path: Path) -> None:
    p = tmp_path / "users.yaml"
    names = ["ana", "anna", "joão", "joao2", "maria", "mário"]
    p.write_text(
        "users:\n"
        + "".join(
            f"  - {{actor: {n}, role: operator, token_sha256: {hashlib.sha256(n.encode()).hexdigest()}}}\n"
            for n in names
        ),
        encoding="utf-8",
    )
    assert [u.actor for u in load_users(p)] == names


def test_one_token_for_two_users_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "users.yaml"
    p.write_text(
        f"users:\n  - {{actor: ana, role: operator, token_sha256: {TOK}}}\n"
        f"  - {{actor: rui, role: supervisor, token_sha256: {TOK.upper()}}}\n"
    )
    with pytest.raises(UsersFileError, match=rf"{p}:3:\d+: users.1.token_sha256: the same token as 'ana'"):
        load_users(p)


@pytest.mark.parametrize(
    ("actor", "why"),
    [
        ("''", "must not be empty"),
        ("'   '", "must not be empty"),
        ('"eve\\nrole: supervisor"', "control characters"),
        ('"a\\tb"', "control characters"),
        ("' ana'", "begin or end with spaces"),
        ("x" * 129, "at most 128"),
        ('"ana\u034f"', "invisible characters"),
        ('"ana\ufe0f"', "invisible characters"),
    ],
)
def test_bad_user_names_are_refused_by_the_loader(tmp_path: Path, actor: str, why: str) -> None:
    p = tmp_path / "users.yaml"
    p.write_text(f"users:\n  - {{actor: {actor}, role: operator, token_sha256: {TOK}}}\n")
    with pytest.raises(UsersFileError, match=rf"{p}:2:\d+: users.0.actor: .*{why}"):
        load_users(p)


# ---------------------------------------------------------------- users passwd


def test_passwd_refuses_a_file_with_a_user_listed_twice_and_leaves_it_alone(tmp_path: Path) -> None:
    p = tmp_path / "users.yaml"
    text = (
        "users:\n"
        f"  - {{actor: ana, role: operator, token_sha256: {TOK}}}\n"
        f"  - {{actor: ana, role: supervisor, token_sha256: {hashlib.sha256(b'y').hexdigest()}}}\n"
    )
    p.write_text(text)
    _clean_failure(_passwd(p, "ana"), "users.yaml:3:13", "listed twice", "not changed")
    assert p.read_text() == text and not _others(tmp_path, p)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("- a\n- b\n", "users.yaml:1:1: a users file must be a mapping"),
        ("users: {a: 1}\n", "users.yaml:1:1: users: Input should be a valid list"),
        ("users: [\n", "users.yaml:2:1: "),
        ("users:\n  - {actor: ana, role: admin, token_sha256: abc}\n", "users.yaml:2:24: users.0.role"),
        ("users:\n  - {actor: '', role: operator, token_sha256: abc}\n", "must not be empty"),
    ],
)
def test_passwd_on_a_malformed_file_is_one_clean_error(tmp_path: Path, text: str, where: str) -> None:
    p = tmp_path / "users.yaml"
    p.write_text(text)
    p.chmod(0o644)
    _clean_failure(_passwd(p, "ana", "--role", "operator"), where)
    assert p.read_text() == text, "the file is not changed"
    assert not _others(tmp_path, p), "no temporary file (with argon2 hashes) is left behind"


def test_passwd_on_a_fifo_or_a_directory_is_a_clean_error(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    _clean_failure(_passwd(fifo, "ana", "--role", "operator"), "not a regular file")
    _clean_failure(
        _passwd(tmp_path / "missing-dir" / "users.yaml", "ana", "--role", "operator"), "cannot write"
    )


@pytest.mark.parametrize(
    ("name", "stdin", "why"),
    [
        ("", b"s3cret-pass\n", "a user name must not be empty"),
        ("eve\nrole: supervisor", b"s3cret-pass\n", "control characters"),
        ("ana", b"        \n", "a password must not be only spaces"),
        ("ana", b"short\n", "at least 8 characters"),
        ("ana", b"\xff\xfepassword\n", "not UTF-8"),
    ],
)
def test_passwd_refuses_bad_names_and_passwords(tmp_path: Path, name: str, stdin: bytes, why: str) -> None:
    p = tmp_path / "users.yaml"
    _clean_failure(_passwd(p, name, "--role", "operator", stdin=stdin), why)
    assert not p.exists() and not _others(tmp_path, p)


def test_passwd_writes_a_private_file_whose_password_signs_in(tmp_path: Path) -> None:
    p = tmp_path / "users.yaml"
    p.write_text(f"users:\n  # duty officers\n  - {{actor: ana, role: operator, token_sha256: {TOK}}}\n")
    p.chmod(0o644)
    r = _passwd(p, "ana")
    assert r.exit_code == 0, r.output
    r = _passwd(p, "rui", "--role", "supervisor", stdin="other-pass\n")
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE(p.stat().st_mode) == 0o600 and "# duty officers" in p.read_text()
    assert not _others(tmp_path, p)
    auth = Authenticator.from_file(p)
    assert auth.login("ana", "s3cret-pass", "x")[1].identity.role == "operator"
    assert auth.login("rui", "other-pass", "x")[1].identity.role == "supervisor"


# ---------------------------------------------------------------- ingest tokens


def test_one_token_for_two_tenants_is_refused_at_file_line_col(tmp_path: Path) -> None:
    token = new_token()
    p = tmp_path / "tokens.yaml"
    p.write_text(
        "tokens:\n"
        f"  - {{source: orion-porto, tenant: porto, token_sha256: {hash_token(token)}}}\n"
        f"  - {{source: orion-gaia, tenant: gaia, token_sha256: {hash_token(token).upper()}}}\n"
    )
    with pytest.raises(YamlError, match=rf"{p}:3:\d+: tokens.1.token_sha256: the same token as line 2"):
        IngestAuth.from_file(p)


def test_a_token_file_problem_points_at_file_line_col(tmp_path: Path) -> None:
    p = tmp_path / "tokens.yaml"
    p.write_text("tokens:\n  - {source: a, token_sha256: zz}\n")
    with pytest.raises(YamlError, match=rf"{p}:2:\d+: tokens.0.token_sha256"):
        IngestAuth.from_file(p)
    p.write_text("- a\n")
    with pytest.raises(YamlError, match=rf"{p}:1:1: a token file must be a mapping"):
        IngestAuth.from_file(p)
    p.write_text("")
    assert IngestAuth.from_file(p).check({}).status == 401, "an empty file: fails closed"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("tokens:\n  - {source: a, token_sha256: zz}\n", "tokens.yaml:2:"),
        ("tokens: [\n", "tokens.yaml:2:1: "),
        (
            f"tokens:\n  - {{source: a, token_sha256: {TOK}}}\n  - {{source: b, token_sha256: {TOK}}}\n",
            "the same token as line 2",
        ),
    ],
)
def test_tokens_new_with_a_bad_file_is_one_clean_error(tmp_path: Path, text: str, where: str) -> None:
    p = tmp_path / "tokens.yaml"
    p.write_text(text)
    r = CliRunner().invoke(tokens_cli, ["new", "--source", "x", "--file", str(p)])
    _clean_failure(r, where, "not changed")
    assert p.read_text() == text and not _others(tmp_path, p)


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--source", ""], "--source"),
        (["--source", "x" * 200], "--source"),
        (["--source", "   "], "--source"),
        (["--source", "a\nb"], "--source"),
        (["--source", "a", "--tenant", ""], "--tenant"),
    ],
)
def test_tokens_new_with_a_bad_source_or_tenant_is_one_clean_error(
    tmp_path: Path, args: list[str], why: str
) -> None:
    r = CliRunner().invoke(tokens_cli, ["new", *args, "--file", str(tmp_path / "t.yaml")])
    _clean_failure(r, why)
    assert not any(tmp_path.iterdir())


def test_tokens_new_still_appends_a_working_entry(tmp_path: Path) -> None:
    p = tmp_path / "tokens.yaml"
    r = CliRunner().invoke(tokens_cli, ["new", "--source", "orion", "--tenant", "porto", "--file", str(p)])
    assert r.exit_code == 0, r.output
    token = r.stdout.strip().splitlines()[-1]
    assert IngestAuth.from_file(p).check({"X-Auth-Token": token}) == Caller("orion", "porto")
    assert not _others(tmp_path, p)
