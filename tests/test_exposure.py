"""Listening beyond localhost needs authentication: a console without users or an ingest without
tokens on 0.0.0.0 let anyone who reached the port act as any operator (issuing public warnings
included) or feed observations that open incidents; the shipped docker-compose console was such a
service. Refused at start now, with what to set."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from atalaia.streams.connections import exposure_problem
from atalaia.streams.settings import Settings

ATALAIA = str(Path(sys.executable).parent / "atalaia")


@pytest.mark.parametrize(
    ("host", "http", "users", "tokens", "refused"),
    [
        ("127.0.0.1", True, None, None, None),  # the demo: loopback
        ("::1", "all", None, None, None),
        ("localhost", True, None, None, None),
        ("0.0.0.0", True, None, None, {"ATALAIA_CONSOLE_USERS", "ATALAIA_INGEST_TOKENS"}),
        ("0.0.0.0", True, "u.yaml", None, {"ATALAIA_INGEST_TOKENS"}),
        ("0.0.0.0", True, None, "t.yaml", {"ATALAIA_CONSOLE_USERS"}),
        ("0.0.0.0", True, "u.yaml", "t.yaml", None),
        ("10.0.0.5", "console", None, "t.yaml", {"ATALAIA_CONSOLE_USERS"}),
        ("10.0.0.5", "ingest", "u.yaml", None, {"ATALAIA_INGEST_TOKENS"}),
        ("10.0.0.5", "ingest", None, "t.yaml", None),  # an ingest-only process has no console
        ("0.0.0.0", "health", None, None, None),  # metrics and health only
        ("0.0.0.0", False, None, None, None),
    ],
)
def test_who_may_listen_where(host, http, users, tokens, refused) -> None:
    settings = Settings(http_host=host, console_users=users, ingest_tokens=tokens)
    problem = exposure_problem(settings, http)
    if refused is None:
        assert problem is None
    else:
        assert problem is not None and problem.startswith(f"refusing to listen on ATALAIA_HTTP_HOST={host}")
        named = {
            v
            for v in ("ATALAIA_CONSOLE_USERS", "ATALAIA_INGEST_TOKENS")
            if f"set {v}" in problem or f"and {v}" in problem
        }
        assert named == refused, problem


@pytest.mark.parametrize("command", [["console"], ["up"], ["worker", "--http", "--stages", "ingest"]])
def test_the_commands_refuse_before_starting_anything(command: list[str], tmp_path: Path) -> None:
    """Refused before a broker or a port is touched: exit 1, the reason, no traceback."""
    env = {
        "PATH": "/usr/bin:/bin",
        "ATALAIA_HTTP_HOST": "0.0.0.0",
        "ATALAIA_HTTP_PORT": "1",  # nothing may listen: a start would fail differently
        "ATALAIA_DATA_DIR": str(tmp_path),
        "ATALAIA_KAFKA": "127.0.0.1:1",  # no broker: a start would hang on it
    }
    res = subprocess.run([ATALAIA, *command], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 1, res.stderr
    assert "refusing to listen on ATALAIA_HTTP_HOST=0.0.0.0" in res.stderr
    assert "ATALAIA_CONSOLE_USERS" in res.stderr and "Traceback" not in res.stderr


def test_the_shipped_compose_console_is_authenticated() -> None:
    import yaml

    compose = yaml.safe_load((Path(__file__).resolve().parents[1] / "docker-compose.yml").read_text())
    env = compose["services"]["console"]["environment"]
    assert env["ATALAIA_HTTP_HOST"] == "0.0.0.0"
    assert env["ATALAIA_CONSOLE_USERS"] and env["ATALAIA_INGEST_TOKENS"]


def test_an_ingest_front_that_forwards_the_console_needs_console_users() -> None:
    """The alarm-path process of up listens publicly as 'ingest' and forwards console paths to the
    ops process: it serves the console too."""
    settings = Settings(http_host="0.0.0.0", ingest_tokens="t.yaml", console_upstream="http://127.0.0.1:9")
    problem = exposure_problem(settings, "ingest")
    assert problem is not None and "set ATALAIA_CONSOLE_USERS" in problem
    assert exposure_problem(Settings(http_host="0.0.0.0", ingest_tokens="t.yaml"), "ingest") is None


def test_a_port_another_program_holds_is_named_before_anything_starts(tmp_path: Path) -> None:
    """`atalaia up` printed 'Atalaia is up', then died with the web server's traceback when
    ATALAIA_HTTP_PORT was taken. It now says so first, and starts nothing."""
    import socket

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        env = {
            "PATH": "/usr/bin:/bin",
            "ATALAIA_HTTP_PORT": str(port),
            "ATALAIA_DATA_DIR": str(tmp_path),
            "ATALAIA_KAFKA": "127.0.0.1:1",  # no broker: a start would hang on it
        }
        for command in (["console"], ["up"]):
            res = subprocess.run([ATALAIA, *command], env=env, capture_output=True, text=True, timeout=60)
            assert res.returncode == 1, res.stderr
            assert f"port {port} on 127.0.0.1 is in use by another program" in res.stderr
            assert "Atalaia is up" not in res.stdout and "Traceback" not in res.stderr
    finally:
        holder.close()
    env["ATALAIA_HTTP_HOST"] = "192.0.2.1"  # TEST-NET: no machine's address
    env["ATALAIA_CONSOLE_USERS"] = env["ATALAIA_INGEST_TOKENS"] = "/dev/null"
    res = subprocess.run([ATALAIA, "console"], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "ATALAIA_HTTP_HOST=192.0.2.1: not an address of this machine" in res.stderr
