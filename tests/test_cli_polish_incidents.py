"""``atalaia incidents project`` writes where it is told: ``--db``, or ``--live``, the projection the
running system writes and the console reads (``Settings.projection_url()``: ATALAIA_DATABASE_URL,
else <data_dir>/atalaia.db), never a default file of its own (it wrote ``incidents.db`` beside the
live ``atalaia.db``) and never the live one unasked (a what-if replay would show phantom incidents)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from atalaia.incidents.manager import IncidentManager
from atalaia.incidents.projection import Projection
from atalaia.incidents.scenarios import porto_storm
from atalaia.streams.cli import main
from atalaia.streams.settings import get_settings


@pytest.fixture(autouse=True)
def fresh_settings(monkeypatch, tmp_path):
    for name in ("ATALAIA_CONFIG", "ATALAIA_DATABASE_URL", "ATALAIA_DATA_DIR", "ATALAIA_DATABASE_SCHEMA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # a relative default lands here, not in the repository
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def incident_events(path: Path) -> int:
    mgr = IncidentManager()
    state, lines = mgr.initial_state(), []
    for t in porto_storm():
        state, outs = mgr.step(state, t, t["at"])
        lines += [o.to_json() for o in outs if orjson.loads(o.to_json()).get("kind") == "incident"]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return len({orjson.loads(x)["incident"] for x in lines})


def atalaia(*args: str, env: dict | None = None):
    get_settings.cache_clear()
    r = CliRunner().invoke(main, list(args), env=env or {})
    get_settings.cache_clear()
    return r


def test_project_live_writes_the_projection_the_console_reads(tmp_path, monkeypatch) -> None:
    events = tmp_path / "events.jsonl"
    n = incident_events(events)
    monkeypatch.setenv("ATALAIA_DATA_DIR", str(tmp_path / "data"))
    r = atalaia("incidents", "project", str(events))
    assert r.exit_code == 2 and "name the projection: --db" in r.output  # never the live one unasked
    assert not (tmp_path / "data").exists()
    r = atalaia("incidents", "project", "--live", str(events))
    assert r.exit_code == 0, r.output
    # the database the projection stage writes (incidents.stage.projection_sink) and the console shows
    url = get_settings().projection_url()
    assert url == f"sqlite:///{tmp_path / 'data' / 'atalaia.db'}"
    assert (tmp_path / "data" / "atalaia.db").exists(), "nothing written into the live projection"
    assert len(Projection.connect(url, migrate=False).incidents(limit=100)) == n > 0
    assert not list(tmp_path.rglob("incidents.db")), "no projection of its own beside the live one"


def test_project_follows_the_configured_database_url(tmp_path) -> None:
    events = tmp_path / "events.jsonl"
    n = incident_events(events)
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    r = atalaia("incidents", "project", "--live", str(events), env={"ATALAIA_DATABASE_URL": url})
    assert r.exit_code == 0, r.output
    assert (tmp_path / "elsewhere.db").exists(), "nothing written where ATALAIA_DATABASE_URL says"
    assert len(Projection.connect(url, migrate=False).incidents(limit=100)) == n
    assert not (tmp_path / ".atalaia").exists()


def test_project_help_names_the_live_projection() -> None:
    out = atalaia("incidents", "project", "--help").output
    assert "atalaia.db" in out and "ATALAIA_DATABASE_URL" in out and "incidents.db" not in out
