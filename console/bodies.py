"""The JSON object of an operator request, read once for every console endpoint that takes one.

``read_object`` answers the refusals every JSON body can get — 415 (not ``application/json``:
a cross-site form or ``text/plain`` POST from an operator's browser is refused), 413 (over
``limit``), 400 (not a JSON object, or a body that cannot be read, e.g. ``Content-Encoding: gzip``
over bytes that are not gzip), 408 (not received within ``ATALAIA_HTTP_BODY_TIMEOUT_S``) — as
``(status, title, detail)``; the caller turns it into its
problem+json answer.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError


async def read_object(
    request: Any, what: str, limit: int, empty_ok: bool = False, timeout: float = 10.0
) -> dict[str, Any] | tuple[int, str, str]:
    """The body as a dict, or the refusal ``(status, title, detail)``; ``what`` names the thing
    sent ("command", "silence", ...)."""
    ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if ctype != "application/json":
        return 415, "Unsupported media type", f"send the {what} as application/json"
    if request.content_length and request.content_length > limit:
        return 413, f"{what.capitalize()} too large", f"a {what} is at most {limit // 1024} KiB"
    try:
        async with asyncio.timeout(timeout):  # a slow sender, or an encoded body that never ends
            raw = await request.read()
    except TimeoutError:
        return 408, "Request timeout", f"the {what} was not received within {timeout:g} s"
    except (RequestPayloadError, HttpProcessingError) as e:
        return 400, f"Bad {what}", f"the body cannot be read: {' '.join(str(e).split())}"
    if len(raw) > limit:
        return 413, f"{what.capitalize()} too large", f"a {what} is at most {limit // 1024} KiB"
    try:
        body = orjson.loads(raw or (b"{}" if empty_ok else raw))
    except orjson.JSONDecodeError as e:
        return 400, f"Bad {what}", f"body is not a JSON object: {e}"
    if not isinstance(body, dict):
        return 400, f"Bad {what}", "body is not a JSON object: the body must be a JSON object"
    return body
