"""The channel interface: a new way to reach people is one subclass of :class:`Channel`."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp

from atalaia.notifiers.model import DeliveryResult, Notification


@dataclass(slots=True)
class ChannelContext:
    """What every channel may need: message language/time zone, the console link, a clock
    (for signatures) and a shared HTTP client."""

    lang: str = "pt-PT"
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("Europe/Lisbon"))
    console_url: str | None = None
    clock: Callable[[], float] = time.time
    http: aiohttp.ClientSession | None = None
    rules: Mapping[str, Any] = field(default_factory=dict)  # rule id → RuleInfo (units, summaries)


class Channel(ABC):
    """Sends one notification to one target and says what happened.

    ``idempotent``: re-sending the same notification has no visible effect for the receiver
    (an upsert, a webhook deduplicated on ``X-Atalaia-Delivery``). The delivery log re-sends an
    in-doubt attempt (crash between send and record) only on idempotent channels.

    ``commit_point``: the protocol has a precise instant after which the receiver may have
    accepted the message (SMTP: the DATA terminator), and the channel calls
    :data:`atalaia.notifiers.commit.COMMIT_HOOK` right before it. A crashed attempt that never
    reached it is re-sent even on a non-idempotent channel (see ``notifiers/commit.py``).
    """

    kind: str = "?"
    idempotent: bool = False
    commit_point: bool = False
    #: credential values of this target (URL userinfo, tokens, the webhook secret), longest first:
    #: scrubbed from every failure text before it is logged (see :meth:`scrub`)
    secrets: tuple[str, ...] = ()

    def scrub(self, result: DeliveryResult) -> DeliveryResult:
        """``result`` with this target's secrets replaced by ``***`` in its error and detail."""
        if not self.secrets or not (result.error or result.detail):
            return result
        progress = result.progress
        if progress and progress.get("refused"):  # (the server's words, kept for the next attempt)
            progress = {
                **progress,
                "refused": [[c, code, scrub(t, self.secrets), r] for c, code, t, r in progress["refused"]],
            }
        return DeliveryResult(
            result.status,
            error=scrub(result.error, self.secrets),
            detail=scrub(result.detail, self.secrets),
            retry_after=result.retry_after,
            progress=progress,
        )

    def __init__(self, name: str, ctx: ChannelContext):
        self.name = name
        self.ctx = ctx

    @abstractmethod
    async def send(self, notification: Notification) -> DeliveryResult: ...

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        pass

    def forget(self, notification_id: str) -> None:  # noqa: B027 - optional hook
        """The notification is no longer scheduled (delivered, failed for good, past its re-send
        horizon): drop whatever was kept of it for a next attempt."""


def scrub(text: str | None, secrets: tuple[str, ...]) -> str | None:
    """``text`` with each of ``secrets`` (and its URL-quoted form) replaced by ``***``."""
    if not text:
        return text
    from urllib.parse import quote

    for s in secrets:
        text = text.replace(s, "***")
        q = quote(s, safe="")
        if q != s:
            text = text.replace(q, "***")
    return text


def http_result(status: int, text: str = "", retry_after: float | None = None) -> DeliveryResult:
    """An HTTP answer as a result. ``retry_after``: seconds the server asked to wait (its
    ``Retry-After``, see :func:`retry_after_seconds`), kept on a 429 or 503 only."""
    if 200 <= status < 300:
        return DeliveryResult("delivered", detail=f"HTTP {status}")
    retry = status >= 500 or status in (408, 425, 429)
    wait = retry_after if status in (429, 503) else None
    error = f"HTTP {status}: {text[:200]}".strip()
    if wait is not None:
        error += f" (Retry-After {wait:g}s)"
    return DeliveryResult(
        "retryable" if retry else "permanent", error=error, detail=f"HTTP {status}", retry_after=wait
    )


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """A ``Retry-After`` header (RFC 9110 §10.2.3: delay-seconds or an HTTP-date) as seconds from
    ``now`` (0 for a date already past); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(int(value))
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP-date is always GMT
        from datetime import UTC

        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


async def post(
    ctx: ChannelContext, url: str, *, content: bytes, headers: dict[str, str], timeout: float
) -> DeliveryResult:
    """POST with errors mapped to results: connection refused, timeouts and 5xx are retryable
    (a 429/503's ``Retry-After`` is carried on the result).
    (aiohttp, not httpx: httpcore's pool scans every connection per request and re-imports a
    missing optional module on each one — 20× slower here with 20 concurrent targets.)"""
    if ctx.http is None:
        raise RuntimeError("channel context has no HTTP client")
    try:
        async with ctx.http.post(
            url, data=content, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as r:
            text = await r.text(errors="replace") if r.status >= 300 else ""
            wait = retry_after_seconds(r.headers.get("Retry-After"), ctx.clock()) if r.status >= 300 else None
            return http_result(r.status, text, wait)
    except TimeoutError:
        return DeliveryResult("retryable", error=f"timeout after {timeout:g}s")
    except aiohttp.ClientError as e:
        return DeliveryResult("retryable", error=f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
