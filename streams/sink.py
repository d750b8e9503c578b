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
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from atalaia.streams.stage import Out

T = TypeVar("T")
R = TypeVar("R")


class Sink(Generic[T]):
    def __init__(self, open: Callable[[], T], name: str) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.resource: T = self._thread.submit(open).result()  # opened in its own thread

    async def run(self, fn: Callable[..., R], *args: Any) -> R:
        """``fn(resource, *args)`` in the sink's thread; the loop goes on meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, self.resource, *args)

    async def offload(self, fn: Callable[..., R], *args: Any) -> R:
        """``fn(*args)`` in the sink's thread (``fn`` a bound method of the resource)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def call(self, fn: Callable[..., R], *args: Any) -> R:
        """The same from synchronous code off the loop (start-up, tests, the CLI)."""
        return self._thread.submit(fn, self.resource, *args).result()

    def close(self, close: Callable[[T], Any] | None = None) -> None:
        if close is not None:
            self.call(close)
        self._thread.shutdown(wait=True)


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
