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


def test_checkpoints_and_the_ingest_logs_files_are_private(tmp_path: Path, loose_umask) -> None:
    """A stage's checkpoint (operators' names and comments, warning drafts) and the ingest log's
    replay of the console's commands were written 0644 by ``atomic_write``; a data directory made
    by ``atalaia up`` was 0755. They are 0600 and 0700."""
    from types import SimpleNamespace

    from atalaia.streams.checkpoints import Checkpoints, atomic_write
    from atalaia.streams.connect import lock_data_dir

    Checkpoints(tmp_path / "state" / "incidents").save(0, {"atalaia.commands": 3}, b"ana: crew on site")
    atomic_write(tmp_path / "replay.log", b"commands")
    (tmp_path / "old.tmp").write_bytes(b"")  # a temporary file a kill left, 0644
    os.replace(tmp_path / "old.tmp", tmp_path / "x.tmp")
    atomic_write(tmp_path / "x", b"state")
    assert _modes(tmp_path / "state" / "incidents") == {"p0.ckpt": 0o600}
    assert _modes(tmp_path)["replay.log"] == 0o600 and _modes(tmp_path)["x"] == 0o600
    data = tmp_path / "fresh" / "data"
    lock_data_dir(SimpleNamespace(data_dir=data))
    assert stat.S_IMODE(data.stat().st_mode) == 0o700


def test_the_smtp_commit_markers_are_private(tmp_path: Path, loose_umask, caplog) -> None:
    """An email's commit marker names the recipients the server took (``a 250 ana@...``) and
    stays while its delivery is in doubt; markers were written 0644 in a 0755 folder beside the
    0600 delivery log, so any user of the machine could read who was paged. 0600 and 0700."""
    from atalaia.notifiers.commit import CommitMarks

    log = SQLiteDeliveryLog(tmp_path / "deliveries.sqlite")
    marks = CommitMarks.for_log(log)
    assert marks is not None
    marks.mark("n1")()
    marks.answered("n1", 250, "ana@cm-porto.pt")
    assert stat.S_IMODE(marks.dir.stat().st_mode) == 0o700
    assert _modes(marks.dir) == {"n1": 0o600}
    # a folder and a marker an older version made: private once opened again, with a log line
    # naming it, as for the data files
    os.chmod(marks.dir, 0o755)
    os.chmod(marks.dir / "n1", 0o644)
    with caplog.at_level(logging.WARNING, logger="atalaia.data"):
        assert stat.S_IMODE(CommitMarks.for_log(log).dir.stat().st_mode) == 0o700
    assert _modes(marks.dir) == {"n1": 0o600}
    said = [r.getMessage() for r in caplog.records if r.name == "atalaia.data"]
    assert len(said) == 1 and said[0].startswith(f"{marks.dir} ") and "0755" in said[0], said
    caplog.clear()
    CommitMarks.for_log(log)  # private now: nothing more to say
    assert not [r for r in caplog.records if r.name == "atalaia.data"]
    log.close()
