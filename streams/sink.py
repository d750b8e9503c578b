"""Blocking I/O off the event loop: a :class:`Sink` owns a resource with blocking calls (a SQLite
or PostgreSQL connection) in one worker thread of its own. The loop awaits ``run(fn, *args)``,
which calls ``fn(resource, *args)`` in that thread, so a slow write (an fsync, a lock wait) never
stalls the stages or the HTTP pages sharing the loop, and the connection is only ever used by the
thread that opened it, one call at a time.

>>> import asyncio, sqlite3
>>> db = Sink(lambda: sqlite3.connect(":memory:"), "doc-db")
>>> asyncio.run(db.run(lambda c: c.execute("select 40 + 2").fetchone()[0]))
42
>>> db.close()

A sink whose resource is a connection to a server that may be down (the projection's PostgreSQL)
names the exceptions that mean "unavailable" (``unavailable=``): the sink then starts without its
resource if it cannot open it, and a call that fails with one of them drops the resource (closed
with ``close=``) and raises :class:`SinkUnavailable`; the next call opens it again. The stage
that awaits it holds its records and tries again (``streams.stage``): nothing is skipped, and
the process and its other stages go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from atalaia.streams.stage import Out

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)


class SinkUnavailable(Exception):
    """The sink's resource (a database server) cannot be reached now; the call may be tried again.
    ``what`` names the resource without the error's details (host, port: for ``/health`` and logs)."""

    def __init__(self, message: str, what: str = "a database") -> None:
        super().__init__(message)
        self.what = what


class Sink(Generic[T]):
    def __init__(
        self,
        open: Callable[[], T],
        name: str,
        unavailable: tuple[type[BaseException], ...] = (),
        close: Callable[[T], Any] | None = None,
        what: str | None = None,
    ) -> None:
        self.name, self.what = name, what or name
        self._open, self._unavailable, self._close = open, unavailable, close
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.resource: T | None = None
        if not unavailable:
            self.resource = self._thread.submit(open).result()  # opened in its own thread
            return
        try:
            self.resource = self._thread.submit(open).result()
        except unavailable as e:  # the server is down: start without it, open it at the first call
            log.error("%s is unavailable at start (%s); it is opened again when needed", self.what, _why(e))

    def _use(self, fn: Callable[..., R], *args: Any) -> R:
        """In the sink's thread: ``fn(resource, *args)``, (re)opening the resource first if needed."""
        if not self._unavailable:
            return fn(self.resource, *args)
        if self.resource is None:
            try:
                self.resource = self._open()
            except self._unavailable as e:
                raise SinkUnavailable(f"{self.what} is unavailable: {_why(e)}", self.what) from e
        try:
            return fn(self.resource, *args)
        except self._unavailable as e:
            resource, self.resource = self.resource, None
            if self._close is not None:
                with contextlib.suppress(Exception):
                    self._close(resource)
            raise SinkUnavailable(f"{self.what} is unavailable: {_why(e)}", self.what) from e

    async def run(self, fn: Callable[..., R], *args: Any) -> R:
        """``fn(resource, *args)`` in the sink's thread; the loop goes on meanwhile. Raises
        :class:`SinkUnavailable` when the resource cannot be reached (see the module docstring)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._use, fn, *args)

    async def offload(self, fn: Callable[..., R], *args: Any) -> R:
        """``fn(*args)`` in the sink's thread (``fn`` a bound method of the resource)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def call(self, fn: Callable[..., R], *args: Any) -> R:
        """The same from synchronous code off the loop (start-up, tests, the CLI)."""
        return self._thread.submit(self._use, fn, *args).result()

    def close(self, close: Callable[[T], Any] | None = None) -> None:
        if close is not None and self.resource is not None:
            with contextlib.suppress(*self._unavailable, SinkUnavailable):
                self.call(close)
        self._thread.shutdown(wait=True)


def _why(e: BaseException) -> str:
    """An exception in one line (psycopg's messages span several)."""
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:300]}" if text else type(e).__name__


class SinkCore:
    """Base of a stage core whose work is an async sink (``aprocess``, awaited by the stage before
    it commits): no state of its own (the sink's database is the state), no timers."""

    def process(self, records: list[Any], now: float) -> list[Out]:  # pragma: no cover - async only
        raise TypeError(f"{type(self).__name__} runs an async sink: use aprocess")

    def tick(self, now: float, backlog: bool = False) -> list[Out]:
        return []

    def snapshot(self) -> bytes:
        return b""

    def restore(self, state: bytes) -> None:
        """No state of its own: the checkpoint carries only the offset."""
