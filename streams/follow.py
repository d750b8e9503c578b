"""A process started apart (``atalaia console``, ``atalaia worker``) that joined the embedded broker
a running ``atalaia up`` announced in the data directory follows it to a new one.

``atalaia up`` starts a new embedded broker when its broker dies, on another port, and announces
it in ``<data_dir>/broker`` (``streams.connect``). Its own processes are restarted on it by ``up``.
A process started apart had read the announcement once, at its start, and stayed on the dead
broker for ever (``/health`` ``failed``, nothing flowing) until restarted by hand. Now, while
its broker does not answer, :class:`FollowAnnounced` reads the announcement every second; once
it names another broker that answers (and the ``atalaia up`` that announced it runs), the
process starts again on it, in place (``exec`` of its own command line: same pid, same
arguments and environment). That loses nothing ``atalaia up``'s own processes would not: they
are killed at once when the broker dies, and ``up`` puts back on the new broker the accepted
events no stage had checkpointed (the ingest log) and re-anchors every checkpoint of the data
directory, this process's stages' too; this process's stages had checkpointed nothing since (a
checkpoint waits for the broker to acknowledge its outputs)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from typing import Any

from mode import Service

from atalaia.streams.connect import announce_file, owner_file, running_embedded
from atalaia.streams.settings import Settings

log = logging.getLogger(__name__)


def joined_announced(settings: Settings, bootstrap: str) -> bool:
    """True when ``bootstrap`` is the embedded broker that an ``atalaia up`` announced in the data
    directory and neither this process nor its parent owns it (``up``'s own processes are
    restarted by ``up``; ``ATALAIA_KAFKA`` names a broker nobody announces)."""
    if settings.kafka:
        return False
    try:
        if announce_file(settings).read_text().strip() != bootstrap:
            return False
        owner = int(owner_file(settings).read_text().strip())
    except FileNotFoundError:
        return False
    except ValueError:
        return True
    return owner not in (os.getpid(), os.getppid())


def answers(bootstrap: str, timeout: float = 0.5) -> bool:
    host, _, port = bootstrap.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


class FollowAnnounced(Service):
    """Every ``interval`` seconds while ``bootstrap`` does not answer: the broker the data
    directory announces, and if it is another one that answers, this process starts again on it
    (module docstring). ``restart`` (tests) replaces the ``exec``."""

    def __init__(
        self, settings: Settings, bootstrap: str, interval: float = 1.0, restart: Any = None, **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.settings, self.bootstrap, self.interval = settings, bootstrap, interval
        self.restart = restart or self.exec_again

    async def on_start(self) -> None:
        self.add_future(self._watch())

    def moved(self) -> str | None:
        """The broker to follow, or None (ours answers, or nothing else is announced)."""
        if answers(self.bootstrap):
            return None
        found = running_embedded(self.settings)
        return found if found is not None and found != self.bootstrap else None

    async def _watch(self) -> None:
        while not self.should_stop:
            await asyncio.sleep(self.interval)
            new = await asyncio.to_thread(self.moved)
            if new is not None:
                log.warning(
                    "the broker at %s does not answer and the `atalaia up` of %s announces a new "
                    "one at %s: this process starts again on it",
                    self.bootstrap,
                    self.settings.data_dir,
                    new,
                    extra={"ratelimit": False},
                )
                self.restart()
                return

    @staticmethod
    def exec_again() -> None:
        """This process's command line again, in place (its sockets and files close: they are
        opened close-on-exec)."""
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, sys.orig_argv)
