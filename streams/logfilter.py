"""Logging under faults: one line per distinct problem per interval, with a count.

A broker outage makes every client retry several times a second, and each retry logs. The
:class:`RateLimit` filter lets the first record of a kind through, drops the repeats for
``interval`` seconds, and lets the next one through with ``(repeated N times in the last 60 s)``
appended. Records of one *kind* share logger, level and message once digits are blanked (node
ids, ports, generations and counters vary between retries; the problem does not).

Installed on the root handlers by ``atalaia up|worker|console`` for WARNING and above of the
``atalaia``, ``aiokafka``, ``faust``, ``mode`` and ``kafka`` loggers; ``ATALAIA_LOG_INTERVAL_S``
(default 60) sets the interval, ``0`` turns it off.

>>> import logging
>>> f = RateLimit(interval=60, clock=iter([0, 1, 2, 61]).__next__)
>>> recs = [logging.LogRecord("aiokafka", logging.ERROR, "", 0, "node %d down", (n,), None) for n in (1, 2, 3, 4)]
>>> [f.filter(r) for r in recs]
[True, False, False, True]
>>> recs[3].getMessage()
'node 4 down (repeated 2 times in the last 61 s)'
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from itertools import islice

PREFIXES = ("atalaia", "aiokafka", "faust", "mode", "kafka")
_DIGITS = re.compile(r"\d+")


class RateLimit(logging.Filter):
    def __init__(
        self,
        interval: float = 60.0,
        level: int = logging.WARNING,
        prefixes: Iterable[str] = PREFIXES,
        clock: Callable[[], float] = time.monotonic,
        max_kinds: int = 10_000,
    ) -> None:
        super().__init__()
        self.interval, self.level, self.clock = interval, level, clock
        self.prefixes = tuple(prefixes)
        self.max_kinds = max_kinds
        self.kinds: dict[tuple, list] = {}  # kind -> [window start, suppressed count]

    def _applies(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.level or self.interval <= 0 or not getattr(record, "ratelimit", True):
            return False  # extra={"ratelimit": False}: a line that must always be written
        name = record.name
        return any(name == p or name.startswith(p + ".") for p in self.prefixes)

    @staticmethod
    def kind(record: logging.LogRecord) -> tuple:
        try:
            text = record.getMessage()
        except Exception:  # a broken format: the template is the kind
            text = str(record.msg)
        exc = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        return record.name, record.levelno, _DIGITS.sub("#", text)[:300], exc

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._applies(record):
            return True
        now = self.clock()
        key = self.kind(record)
        seen = self.kinds.get(key)
        if seen is None:
            if len(self.kinds) >= self.max_kinds:  # bounded: forget windows that have ended
                self.kinds = {k: v for k, v in self.kinds.items() if now - v[0] < self.interval}
                if len(self.kinds) > self.max_kinds * 3 // 4:  # still nearly full (a flood of
                    # kinds): forget the oldest quarter too, so the next ones cost nothing (a
                    # purge per record made a flood quadratic, on the event loop's thread)
                    for old in list(islice(self.kinds, len(self.kinds) - self.max_kinds * 3 // 4)):
                        del self.kinds[old]
            self.kinds[key] = [now, 0]
            return True
        start, suppressed = seen
        if now - start < self.interval:
            seen[1] += 1
            return False
        seen[0], seen[1] = now, 0
        if suppressed:
            suffix = f" (repeated {suppressed} times in the last {now - start:.0f} s)"
            record.msg, record.args = (
                record.getMessage() + suffix,
                (),
            )  # () not None: formatters that wrap args
        return True


def install(interval: float = 60.0, logger: logging.Logger | None = None) -> RateLimit | None:
    """Add one shared :class:`RateLimit` to every handler of ``logger`` (default: root) that has
    none yet; idempotent, so it can run again after a framework replaced the handlers."""
    root = logger or logging.getLogger()
    existing = next(
        (f for h in root.handlers for f in h.filters if isinstance(f, RateLimit)),
        None,
    )
    limiter = existing or RateLimit(interval)
    for h in root.handlers:
        if limiter not in h.filters:
            h.addFilter(limiter)
    return limiter if root.handlers else None
