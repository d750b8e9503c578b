"""The JSON object of an operator request, read once for every console endpoint that takes one.

``read_object`` answers the refusals every JSON body can get — 415 (not ``application/json``:
a cross-site form or ``text/plain`` POST from an operator's browser is refused), 413 (over
``limit``), 400 (not a JSON object, or a body that cannot be read, e.g. ``Content-Encoding: gzip``
over bytes that are not gzip, or nested deeper than ``MAX_DEPTH`` arrays and objects), 408 (not
received within ``ATALAIA_HTTP_BODY_TIMEOUT_S``) — as ``(status, title, detail)``; the caller turns
it into its problem+json answer.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

#: arrays and objects nested at most this deep in a body (no request needs more than a few; the
#: parser takes 1024 levels, but writing such a value back as JSON, as a command's id and the
#: command on Kafka are, fails at 255: the answer was a 500)
MAX_DEPTH = 64


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` (parsed JSON) nests arrays and objects more than ``limit`` deep."""
    level: list[tuple[Any, int]] = [(value, 1)]
    while level:
        item, depth = level.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        level.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


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
    if too_deep(body):
        return 400, f"Bad {what}", f"the body nests arrays and objects more than {MAX_DEPTH} deep"
    return body
