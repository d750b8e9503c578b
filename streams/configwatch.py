"""Configuration files read only when a process starts (escalation, incidents, warnings, console
users): an edit used to change nothing and say nothing, and the edited file then took effect at
whatever restart came next (a crash of the ops process, a deploy), unannounced; an edit into a file
that does not load was found only then. :class:`ConfigWatch` looks at them every few seconds and
says, once per edit, that the file changed, whether it loads (``atalaia check``'s part for it) and
that it takes effect at the next restart. Rules are not watched here: they reload on their own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from mode import Service

log = logging.getLogger("atalaia.config")

WATCH_S = 5.0


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


class ConfigWatch(Service):
    """Says (WARNING) when one of ``files`` (name -> path) changes on disk after this process read
    it, with ``check(name)``'s verdict: a list of problems (empty when it loads); ``loaded(name)``
    is called for an edit that loads (it is kept as the last good configuration)."""

    def __init__(
        self,
        files: Iterable[tuple[str, Path]],
        check: Callable[[str], list[str]] | None = None,
        every_s: float = WATCH_S,
        loaded: Callable[[str], Any] | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.files = [(name, Path(p)) for name, p in files]
        self.check, self.every_s = check, every_s
        self.loaded = loaded  # called with the name of an edited file that loads (lastgood.take)
        self.seen = {name: _stamp(p) for name, p in self.files}  # as read at start
        self.said = dict(self.seen)

    def look(self) -> list[str]:
        """The names of the files changed since the last look (each said once per change)."""
        changed = []
        for name, path in self.files:
            now = _stamp(path)
            if now == self.said[name]:
                continue
            self.said[name] = now
            changed.append(name)
            if now == self.seen[name]:
                log.info("%s file %s is again as this process read it", name, path)
                continue
            problems = self.check(name) if self.check is not None else []
            if not problems and self.check is not None and self.loaded is not None:
                self.loaded(name)  # the last good configuration now (streams.lastgood)
            verdict = (
                "it does not load: " + "; ".join(problems[:5])
                if problems
                else "it loads (`atalaia check` to see warnings)"
            )
            log.warning(
                "%s file %s changed on disk; it is read when the process starts, so this takes effect at "
                "the next restart of atalaia up (not now); %s",
                name,
                path,
                verdict,
            )
        return changed

    @Service.task
    async def _watch(self) -> None:
        while not self.should_stop:
            await self.sleep(self.every_s)
            with contextlib.suppress(Exception):  # never the process's end
                await asyncio.to_thread(self.look)
