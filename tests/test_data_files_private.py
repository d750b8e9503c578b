"""The data directory's files of personal data — the SQL projection and audit trail
(``atalaia.db``) and the delivery log (``deliveries.sqlite``: phone numbers and email addresses
notified) — were created 0644, readable by every user of the machine. They are made 0600 with
their WAL side files, and an existing file left open to others is set to 0600 when opened, with
one log line naming it."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from atalaia.incidents.projection import Projection
from atalaia.notifiers.log import SQLiteDeliveryLog


@pytest.fixture
def loose_umask():
    """The usual umask of a service (022): files are 0644 unless made otherwise."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def _modes(folder: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir() if p.is_file()}


def _open(kind: str, path: Path):
    if kind == "projection":
        return Projection.connect(f"sqlite:///{path}"), Projection.close
    return SQLiteDeliveryLog(path), SQLiteDeliveryLog.close


@pytest.mark.parametrize(
    ("kind", "name"), [("projection", "atalaia.db"), ("deliveries", "deliveries.sqlite")]
)
def test_a_new_data_file_and_its_side_files_are_private(tmp_path, loose_umask, kind, name):
    path = tmp_path / "data" / name
    db, close = _open(kind, path)
    try:
        modes = _modes(path.parent)
        assert name in modes and f"{name}-wal" in modes, modes  # (open in WAL mode: its side files too)
        assert all(m == 0o600 for m in modes.values()), {k: oct(v) for k, v in modes.items()}
    finally:
        close(db)
    db, close = _open(kind, path)  # and it opens again as a database
    close(db)


@pytest.mark.parametrize(
    ("kind", "name"), [("projection", "atalaia.db"), ("deliveries", "deliveries.sqlite")]
)
def test_an_existing_data_file_open_to_others_is_made_private_with_a_log_line(
    tmp_path, loose_umask, caplog, kind, name
):
    path = tmp_path / name
    db, close = _open(kind, path)
    close(db)
    for p in tmp_path.iterdir():
        p.chmod(0o644)  # as an older version left it
    with caplog.at_level(logging.WARNING, logger="atalaia.data"):
        db, close = _open(kind, path)
    close(db)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    said = [r.getMessage() for r in caplog.records if r.name == "atalaia.data"]
    assert len([m for m in said if m.startswith(f"{path} ")]) == 1, said
    assert "0644" in said[0] and "now 0600" in said[0], said
    caplog.clear()
    db, close = _open(kind, path)  # private now: nothing more to say
    close(db)
    assert not [r for r in caplog.records if r.name == "atalaia.data"]
