"""SMS and email through apprise: one apprise plugin instance per target, so each target's result
is its own (a single notify to many URLs would hide which one failed).

Apprise sends synchronously and some plugins throttle themselves (``request_rate_per_sec``: 5.5 s
between two requests of the same plugin instance, e.g. email and the SMS gateways). We run each
send in a thread pool (targets in parallel) and set the plugin throttle from the target's
``throttle`` (default 0): pacing is the pipeline's non-blocking per-target rate limit instead of
a ``time.sleep`` that holds a worker thread.

Measured cost (``benchmarks/notifiers_bench.py``): apprise's email plugin builds a new
``ssl.create_default_context()`` (loading the CA store) for every message, even for plain SMTP,
which makes an email cost tens of ms of CPU; bulk email is CPU-bound, not I/O-bound.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from atalaia.notifiers.channels.base import Channel, ChannelContext
from atalaia.notifiers.model import DeliveryResult, Notification
from atalaia.notifiers.render import render
from atalaia.notifiers.sms import fit, segments

_POOL = ThreadPoolExecutor(max_workers=32, thread_name_prefix="apprise")


class _PerThread(logging.Handler):
    """Collects apprise's warnings per thread, so a failure's reason reaches the delivery log."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: dict[int, list[str]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        bucket = self.records.get(threading.get_ident())
        if bucket is not None:
            bucket.append(record.getMessage())


_CAPTURE = _PerThread()
logging.getLogger("apprise").addHandler(_CAPTURE)


class AppriseChannel(Channel):
    """``kind`` is ``sms`` (short text fitted to ``max_segments``) or ``email`` (subject + body)."""

    idempotent = False

    def __init__(
        self,
        name: str,
        ctx: ChannelContext,
        url: str,
        kind: str,
        *,
        lang: str | None = None,
        throttle: float = 0.0,
        timeout: float = 10.0,
        max_segments: int = 3,
    ):
        import apprise

        super().__init__(name, ctx)
        if kind not in ("sms", "email"):
            raise ValueError(f"apprise channel kind must be sms or email, not {kind!r}")
        self.kind, self.lang, self.max_segments = kind, lang or ctx.lang, max_segments
        self.plugin = apprise.Apprise.instantiate(url)
        if self.plugin is None:
            raise ValueError(f"target {name!r}: apprise does not accept this URL (check scheme and fields)")
        self.plugin.request_rate_per_sec = throttle
        self.plugin.socket_connect_timeout = min(timeout, self.plugin.socket_connect_timeout or timeout)
        self.plugin.socket_read_timeout = timeout
        self.timeout = timeout

    def _send_sync(self, title: str, body: str) -> tuple[bool, list[str]]:
        me = threading.get_ident()
        _CAPTURE.records[me] = []
        try:
            # the plugin itself, in this thread: Apprise.notify would hop to its own thread pool
            ok = bool(self.plugin.notify(body=body, title=title))
        finally:
            msgs = _CAPTURE.records.pop(me, [])
        return ok, msgs

    async def send(self, n: Notification) -> DeliveryResult:
        msg = render(n, self.lang, self.ctx.tz, self.ctx.console_url)
        if self.kind == "sms":
            title, body = "", fit(msg.short, self.max_segments)
            count, enc = segments(body)
            detail = f"{count} segment(s) {enc}"
        else:
            title, body, detail = msg.subject, msg.body, None
        loop = asyncio.get_running_loop()
        try:
            ok, msgs = await asyncio.wait_for(
                loop.run_in_executor(_POOL, self._send_sync, title, body), self.timeout * 2
            )
        except TimeoutError:
            return DeliveryResult("retryable", error=f"apprise send did not finish in {self.timeout * 2:g}s")
        if ok:
            return DeliveryResult("delivered", detail=detail)
        return DeliveryResult(
            "retryable", error="; ".join(msgs)[-300:] or "apprise reported a failure", detail=detail
        )
