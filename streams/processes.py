"""Several worker processes under one command: ``atalaia up`` (one process per process group of
``streams.topology``: the alarm path on one core, incidents/projection/escalation/delivery/
warnings and the console on the other) and ``atalaia worker --processes N``.

The parent owns the embedded broker (``streams.connect``) and nothing else; each child is an
ordinary ``atalaia worker`` that joins it through the data directory's announcement. The parent:

* watches the embedded broker (``Supervisor(watch=...)``): when it dies, every child is killed at
  once and ``atalaia up`` starts a new broker and the children again (``streams.commands``);

* starts the children in their own sessions (a terminal's Ctrl-C reaches only the parent, which
  stops the children in order with SIGTERM: each checkpoints and leaves its groups), and each
  child is killed with the parent if the parent is killed (``PR_SET_PDEATHSIG`` SIGKILL: a
  ``kill -9`` of ``atalaia up`` is a kill -9 of all of it, which resumes from its checkpoints);
* **restarts a child that dies** after it had been up for ``STARTUP_S`` (a failed stage crashes
  its worker on purpose, so the restart resumes from the last consistent checkpoint), at most
  ``MAX_RESTARTS`` times per ``RESTART_WINDOW_S``; a child that dies during start-up (a bad
  configuration, a port in use) or too often **stops everything** with exit status 1, rather
  than crash-looping. Each death is reported in one ERROR line (name, pid, exit status, what
  happens next);
* restarts a process whose configuration files no longer load **on the last configuration that
  loaded** (``streams.lastgood``: a snapshot in the data directory), with an ERROR line naming the
  ``file:line:col`` errors, and ``/health`` ``degraded`` in that process; once the files load
  again, it restarts it on them (a graceful stop). Without a snapshot the restart waits until
  they load. An escalation file edited into one that does not load never stops the paging.
  Only the parts a process loads count (``Child.ignores``, ``topology.NOT_LOADED``).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from atalaia.streams.broker import how_ended

log = logging.getLogger("atalaia.up")

STARTUP_S = float(os.environ.get("ATALAIA_UP_STARTUP_S", "20"))  # a first start's death sooner stops all
RESTART_MAX_DELAY_S = 60.0  # a process that keeps dying is restarted at most this far apart
BROKER_LOST = 75  # Supervisor.run's status when ``watch`` said the broker is gone (EX_TEMPFAIL)
LOOK_S = 2.0  # a process on the last good configuration: its files looked at this often
STOP_TIMEOUT_S = 30.0  # at least; more when the delivery grace needs it (ATALAIA_DELIVERY_GRACE_S + 20 s)


def atalaia_argv() -> list[str]:
    """How to start ``atalaia`` again: the console script beside this Python (never ``python -m``
    from the repository root, where the ``warnings`` folder would shadow the standard library)."""
    script = Path(sys.executable).parent / "atalaia"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-P", "-c", "from atalaia.streams.cli import main; main()"]


def _child_setup(nice: int = 0) -> None:  # between fork and exec
    if nice:  # below the alarm path's priority (atalaia up's ops process: ATALAIA_OPS_NICE)
        with contextlib.suppress(OSError):
            os.nice(nice)
    with contextlib.suppress(Exception):  # PR_SET_PDEATHSIG: `kill -9 atalaia up` kills all of it at
        # once, as it did when up was one process (a graceful child would still hold the port)
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    os.setsid()  # a terminal's Ctrl-C goes to the parent only; it stops us in order


@dataclass
class Child:
    name: str
    args: list[str]
    env: dict[str, str]
    nice: int = 0  # added to the child's nice value (lower CPU priority)
    proc: subprocess.Popen | None = None
    started: float = 0.0
    ran: bool = False  # it once ran past its start-up: from then on it is only ever restarted
    failures: int = 0  # deaths (or refused restarts) since it last ran past its start-up
    retry_at: float | None = None  # when it is to be started again
    extra_env: dict[str, str] = field(default_factory=dict)  # this start's: the last good configuration
    fallback: Any = None  # a ``lastgood.Fallback`` while it runs on the last good configuration
    seen: Any = None  # the configuration files' stamp when it was last checked (``lastgood.stamp``)
    look_at: float = 0.0  # when to look at them again
    stop_by: float | None = None  # stopped to be restarted on files that load again: killed after
    # the configuration parts (``atalaia check``'s) this process does not load: a part of them
    # that does not load never puts it on the last good configuration (``topology.NOT_LOADED``)
    ignores: frozenset[str] = frozenset()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [*atalaia_argv(), *self.args],
            env={**self.env, **self.extra_env},
            preexec_fn=partial(_child_setup, self.nice),
        )
        self.started = time.monotonic()
        log.info(
            "started process %s (pid %d%s): atalaia %s",
            self.name,
            self.proc.pid,
            f", nice +{self.nice}" if self.nice else "",
            " ".join(self.args),
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)


class Supervisor:
    """Starts the children and keeps them running. One that dies during its first start-up stops
    everything (a configuration that does not load, a port taken: say so and exit 1, not loop).
    One that dies after it has run is restarted, after 1, 2, 4 ... up to 60 s while it keeps
    dying, and never stops the others. Before each restart ``precheck`` (the configuration check
    ``atalaia up`` runs before it starts) must pass, or the process is restarted on the last
    configuration that loaded (``keeper``, ``streams.lastgood.Keeper``: its escalation file was
    edited into one that does not load and it then crashed: it pages on the last good one), or,
    without one, the restart waits, with one ERROR line naming what does not load. ``resumed``:
    the processes ran before (a new embedded broker): each start is a restart."""

    def __init__(
        self,
        children: list[Child],
        ready: Callable[[], bool] | None = None,
        precheck: Callable[[], list[str]] | None = None,
        stop_timeout: float = STOP_TIMEOUT_S,
        watch: Callable[[], str | None] | None = None,
        keeper: Any = None,
        resumed: bool = False,
    ) -> None:
        self.children = children
        self.keeper, self.resumed = keeper, resumed
        self.taken = False  # the snapshot of this run's configuration was taken
        self.watch = watch  # what the children cannot run without (the embedded broker): why it ended
        self.stop_timeout = stop_timeout  # after SIGTERM, a child still running this long is killed
        self.ready = ready  # polled until it returns True once (prints the banner)
        self.precheck = precheck
        self.stopping = False
        self.interrupted = False  # SIGINT/SIGTERM: stop, whatever happens next (a broker death)
        self.status = 0

    def _stop(self, signum: int, frame: object) -> None:
        if not self.stopping:
            log.info("stopping (%s)", signal.Signals(signum).name)
        self.stopping = self.interrupted = True

    def run(self) -> int:
        old = {s: signal.signal(s, self._stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for c in self.children:
                if self.resumed:
                    c.ran = True
                    self._restart(c)
                else:
                    c.start()
            ready = self.ready
            while not self.stopping:
                time.sleep(0.2)  # (a signal ends it early: then stop, not look at the broker)
                if self.stopping:
                    break
                lost = self.watch() if self.watch is not None else None
                if lost:
                    self._lost(lost)
                    break
                if ready is not None and ready():
                    ready = None
                    self._take()  # the configuration the processes loaded: the last good one
                for c in self.children:
                    if self.stopping:
                        break
                    now = time.monotonic()
                    if c.retry_at is not None:
                        if now >= c.retry_at:
                            self._restart(c)
                    elif c.alive():
                        if now - c.started >= STARTUP_S:
                            c.ran, c.failures = True, 0  # past its start-up: healthy again
                        self._look(c, now)
                    elif c.stop_by is not None:  # stopped to run on the files again
                        c.stop_by, c.failures = None, 0
                        self._restart(c)
                    else:
                        self._died(c)
            return self.status
        finally:
            self._stop_all()
            for s, h in old.items():
                signal.signal(s, h)

    def _died(self, c: Child) -> None:
        now = time.monotonic()
        code = c.proc.returncode
        how = how_ended(code)
        if not c.ran and now - c.started < STARTUP_S:
            log.error(
                "process %s (pid %d) died during start-up (%s): stopping everything",
                c.name,
                c.proc.pid,
                how,
                extra={"ratelimit": False},
            )
            self.status, self.stopping = 1, True
            return
        c.ran = True
        delay = self._later(c, now)
        # every death is written (the rate limit had swallowed a second one within a minute)
        log.error(
            "process %s (pid %d) died (%s): restarting it%s",
            c.name,
            c.proc.pid,
            how,
            f" in {delay:.0f} s (it died {c.failures} times since it last ran)" if c.failures > 1 else "",
            extra={"ratelimit": False},
        )

    def _lost(self, why: str) -> None:
        """The children's broker is gone: they are killed at once (as a ``kill -9`` of ``atalaia
        up`` would: they resume from their checkpoints), not stopped, for a graceful stop would
        wait on the broker for ``stop_timeout``; :data:`BROKER_LOST` tells the caller to start
        them again on a new broker."""
        log.error(
            "%s: stopping every process at once (kill), to start them again on a new embedded "
            "broker with the data directory's state",
            why,
            extra={"ratelimit": False},
        )
        for c in self.children:
            c.signal(signal.SIGKILL)
        for c in self.children:
            if c.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    c.proc.wait(10)
        # asked to stop meanwhile (Ctrl-C as the broker died): stopped, not started again
        self.status = 0 if self.interrupted else BROKER_LOST
        self.stopping = True

    def _later(self, c: Child, now: float) -> float:
        c.failures += 1
        delay = min(RESTART_MAX_DELAY_S, 2.0 ** (c.failures - 1))
        c.retry_at = now + delay
        return delay

    def _take(self) -> None:
        if self.keeper is not None:
            self.keeper.take()
            self.taken = True

    def _problems(self) -> dict[str, list[str]]:
        if self.keeper is not None:
            return self.keeper.problems()
        return {name: [] for name in (self.precheck() if self.precheck is not None else [])}

    def _problems_of(self, c: Child, problems: dict[str, list[str]]) -> dict[str, list[str]]:
        """The ``problems`` of the parts ``c`` loads."""
        return {part: lines for part, lines in problems.items() if part not in c.ignores}

    def _restart(self, c: Child) -> None:
        c.retry_at = None
        if self.keeper is not None and not self.taken and not self.resumed:
            self._take()  # before any restart: the snapshot is of this run's configuration
        problems = self._problems_of(c, self._problems())
        if not problems:
            c.extra_env, c.fallback = {}, None
            c.start()
            self._take()  # the files it loads now are the last good ones
            return
        fallback = self.keeper.fallback(problems) if self.keeper is not None else None
        if fallback is not None:
            from atalaia.streams.lastgood import ENV

            c.extra_env, c.fallback = {**fallback.env, ENV: fallback.notice()}, fallback
            c.seen, c.look_at = self.keeper.stamp(), time.monotonic() + LOOK_S
            log.error(
                "process %s restarted on the LAST CONFIGURATION THAT LOADED, not on the files: %s. "
                "Fix them (`atalaia check`): it is restarted on them once they load",
                c.name,
                fallback.said(),
                extra={"ratelimit": False},
            )
            c.start()
            return
        delay = self._later(c, time.monotonic())
        log.error(
            "process %s not restarted: the configuration does not load (%s: the lines above, "
            "`atalaia check` says the same) and no snapshot of the last configuration that loaded "
            "serves; trying again in %.0f s, the other processes go on",
            c.name,
            ", ".join(problems),
            delay,
            extra={"ratelimit": False},
        )

    def _look(self, c: Child, now: float) -> None:
        """A process on the last good configuration: when its files changed and load again, it
        is stopped (gracefully) and started on them; one not stopped in time is killed."""
        if c.stop_by is not None:
            if now >= c.stop_by:
                log.error("process %s (pid %d) did not stop in time: killed", c.name, c.proc.pid)
                c.signal(signal.SIGKILL)
                c.stop_by = now + 3600.0  # said once; it is restarted when it is gone
            return
        if c.fallback is None or self.keeper is None or now < c.look_at:
            return
        c.look_at = now + LOOK_S
        seen = self.keeper.stamp()
        if seen == c.seen:
            return
        c.seen = seen
        problems = self._problems_of(c, self.keeper.problems(quiet=True))
        if problems:
            return
        log.warning(
            "the configuration loads again (%s): restarting process %s on it (graceful stop)",
            ", ".join(c.fallback.problems),
            c.name,
            extra={"ratelimit": False},
        )
        c.stop_by = now + self.stop_timeout
        c.signal(signal.SIGTERM)

    def _stop_all(self) -> None:
        for c in self.children:
            c.signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for c in self.children:
            if c.proc is None:
                continue
            try:
                c.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("process %s (pid %d) did not stop in time: killed", c.name, c.proc.pid)
                c.signal(signal.SIGKILL)
                c.proc.wait(5)
