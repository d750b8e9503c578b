"""Commit-point markers: narrowing "in doubt" to the instant a protocol commits.

A channel with ``commit_point = True`` (SMTP email) knows the exact moment after which the
receiver may have accepted the message: for SMTP, sending the DATA terminator ``\\r\\n.\\r\\n``
(a connection dropped before it discards the transaction, RFC 5321 §3.3/§4.1.1.4). Right before
that moment the channel calls the hook in :data:`COMMIT_HOOK`, which writes a marker
``<delivery log>.smtp-commit/<notification id>`` (an empty file), and right after it the call the
hook returned, which fsyncs the file and its directory.

On restart, a ``sending`` row of a commit-point channel *without* a marker never reached the
commit point: the server discarded it, so it is re-sent. With a marker it is ``in-doubt`` as
before (killed between the terminator and the reply). Markers are removed once the attempt's
result is recorded, at the start of every attempt (a stale one), and all of them by ``recover()``.

One attempt may pass several commit points: an email to several recipients is one message per
recipient in one session. Each commit point appends a line ``c`` to the marker, and the server's
reply to that terminator a line ``a <code> <recipient>`` (:meth:`CommitMarks.answered`), so a
kill after one recipient's message was answered and before the next one's terminator is not in
doubt (:meth:`CommitMarks.in_doubt`: some ``c`` without its ``a``): the row is re-sent to those
whose message was not taken (:meth:`CommitMarks.accepted`). It was in doubt, and the
recipients after the first never got the page.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

# set by the delivery lane around ``channel.send(n)`` (event loop side); the channel passes the
# callable to its worker thread, which calls it right before the commit point
COMMIT_HOOK: contextvars.ContextVar[Callable[[], Callable[[], None] | None] | None] = contextvars.ContextVar(
    "atalaia_commit_hook", default=None
)
_SAFE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


class CommitMarks:
    """One directory of marker files, next to the delivery log file (thread-safe: each marker
    is its own file, written with O_CREAT and fsynced)."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        # a marker names the recipients the server took: private, as the delivery log is
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(OSError):  # (a folder an older version made 0755, its markers 0644)
            mode = stat.S_IMODE(os.stat(self.dir).st_mode)
            if mode & 0o077:
                os.chmod(self.dir, 0o700)
                for marker in self.dir.iterdir():
                    os.chmod(marker, 0o600)
                logging.getLogger("atalaia.data").warning(
                    "%s holds the recipients email servers took and was mode %04o, open to other "
                    "users: now 0700",
                    self.dir,
                    mode,
                )

    @classmethod
    def for_log(cls, log: object) -> CommitMarks | None:
        path = getattr(log, "path", None)
        if not path or str(path) == ":memory:":
            return None
        return cls(f"{path}.smtp-commit")

    def _path(self, nid: str) -> str:
        if not _SAFE.fullmatch(nid):  # engine ids are hex; anything else gets a hashed name
            nid = "h-" + hashlib.blake2b(nid.encode(), digest_size=16).hexdigest()
        return os.path.join(self.dir, nid)

    def mark(self, nid: str) -> Callable[[], None]:
        """Record that ``nid``'s attempt is about to pass its commit point, and return the call
        that makes the record durable once the terminator is sent.

        The file is created at once (a killed process cannot lose it: it is in the kernel) and
        fsynced only after the commit point, so the window in which a kill leaves a marker for an
        email the server never got is a few microseconds, not an fsync. After a power cut in
        between, the marker may be gone and the email is re-sent: a possible duplicate, never a
        silent loss."""
        fd = os.open(self._path(nid), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, b"c\n")
        finally:
            os.close(fd)
        return _Durable(self, nid)

    def _sync(self, nid: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(self._path(nid), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def hook(self, nid: str) -> Callable[[], Callable[[], None]]:
        return lambda: self.mark(nid)

    def answered(self, nid: str, code: int, recipient: str | None) -> None:
        """The server answered the terminator of ``nid``'s last commit point (``code``; 250: it
        took the message for ``recipient``). Not fsynced: after a power cut without it the row is
        in doubt, as before."""
        line = f"a {int(code)} {recipient or '-'}\n".encode()
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(self._path(nid), os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)

    def _lines(self, nid: str) -> list[str] | None:
        try:
            with open(self._path(nid), encoding="utf-8", errors="replace") as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return None

    def exists(self, nid: str) -> bool:
        return os.path.exists(self._path(nid))

    def in_doubt(self, nid: str) -> bool:
        """Some commit point of ``nid``'s last attempt passed without the server's reply (or the
        marker says nothing: in doubt, as an empty marker always was)."""
        lines = self._lines(nid)
        if lines is None:
            return False
        commits = sum(1 for x in lines if x == "c")
        answers = sum(1 for x in lines if x.startswith("a "))
        return commits == 0 or commits > answers

    def accepted(self, nid: str) -> list[str]:
        """The recipients whose message of ``nid``'s last attempt the server took (250)."""
        out = []
        for x in self._lines(nid) or ():
            parts = x.split(" ", 2)
            if len(parts) == 3 and parts[0] == "a" and parts[1] == "250" and parts[2] != "-":
                out.append(parts[2])
        return out

    def clear(self, nid: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(nid))

    def clear_all(self) -> int:
        n = 0
        for p in self.dir.iterdir():
            p.unlink(missing_ok=True)
            n += 1
        return n


class _Durable:
    """What :meth:`CommitMarks.mark` returns: called once the terminator is sent (fsync), and
    :meth:`answered` once the server replied to it."""

    __slots__ = ("marks", "nid")

    def __init__(self, marks: CommitMarks, nid: str):
        self.marks, self.nid = marks, nid

    def __call__(self) -> None:
        self.marks._sync(self.nid)

    def answered(self, code: int, recipient: str | None) -> None:
        self.marks.answered(self.nid, code, recipient)
