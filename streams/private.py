"""Files of the data directory that hold personal data — the SQL projection and audit trail
(``atalaia.db``: who acknowledged what, comments) and the delivery log (``deliveries.sqlite``: the
phone numbers and email addresses notified) — are readable by the worker's user only (0600).
SQLite made them with the process's umask (0644 as a rule: readable by every user of the
machine); its ``-wal``, ``-shm`` and ``-journal`` files take the database file's mode."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("atalaia.data")

#: what SQLite keeps beside a database file (made with the database file's mode)
SIDE_FILES = ("-wal", "-shm", "-journal")


def private_sqlite(path: str | Path, what: str) -> None:
    """Make the SQLite database ``path`` private before it is opened: created 0600 if absent; an
    existing one (and its side files) readable or writable by others is set to 0600, with one
    WARNING line naming it. ``what`` says what it holds, for that line. Never raises: a file
    that cannot be changed is said in the log and opened as it is."""
    path = Path(path)
    with contextlib.suppress(FileExistsError, OSError):  # (an error is SQLite's to report)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    for p in (path, *(path.with_name(path.name + s) for s in SIDE_FILES)):
        try:
            st = os.stat(p)
        except OSError:
            continue
        mode = stat.S_IMODE(st.st_mode)
        if not stat.S_ISREG(st.st_mode) or not mode & 0o077:
            continue
        try:
            os.chmod(p, 0o600)
        except OSError as e:
            log.warning(
                "%s holds %s and is mode %04o, open to other users; cannot change it: %s", p, what, mode, e
            )
        else:
            log.warning("%s holds %s and was mode %04o, open to other users: now 0600", p, what, mode)
