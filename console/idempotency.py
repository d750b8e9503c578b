"""The ``Idempotency-Key`` header of the console's command routes (IETF httpapi): one reading for the
warnings commands (``console/warnings_api.py``) and the incident commands (``console/api.py``).

A client that sends a command again (its answer was lost on the way, or it got ``202 queued`` and
cannot tell whether the command went through) sends the same key: the same key from the same user
to the same path makes the same command id, so the stage that applies it applies it once, and the
console answers the retry with the first answer (the reply it saw for that id). Another key, another
user or another path is another command; without the header every request is a new command.

>>> from types import SimpleNamespace as Request
>>> r = Request(headers={"Idempotency-Key": "4f1c"}, path="/api/incidents/i-1/commands")
>>> command_id(r, "ana") == command_id(r, "ana") != command_id(r, "rui")
True
>>> command_id(Request(headers={}, path="/api/warnings"), "ana") is None
True
>>> command_id(Request(headers={"Idempotency-Key": "é"}, path="/api/warnings"), "ana")
Traceback (most recent call last):
...
atalaia.console.idempotency.BadIdempotencyKey: Idempotency-Key: 1 to 128 printable ASCII characters
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

HEADER = "Idempotency-Key"
#: printable ASCII, as long as a UUID or a client's own id needs
IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]{1,128}")


class BadIdempotencyKey(ValueError):
    """A malformed ``Idempotency-Key`` (the route answers 400 naming the header)."""

    def __init__(self) -> None:
        super().__init__(f"{HEADER}: 1 to 128 printable ASCII characters")


def command_id(request: Any, actor: str | None) -> str | None:
    """The command id the request's ``Idempotency-Key`` makes for ``actor`` (the same key from the
    same user to the same path: the same id), None without the header; :class:`BadIdempotencyKey`
    for a malformed one."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise BadIdempotencyKey
    return hashlib.blake2b("\n".join((actor or "", request.path, key)).encode(), digest_size=12).hexdigest()


def keyed(fail: Any, view: Any, request: Any, actor: str | None) -> tuple[str | None, Any]:
    """(:func:`command_id`, None), or (None, the 400 problem+json answer for a malformed key)."""
    try:
        return command_id(request, actor), None
    except BadIdempotencyKey as e:
        return None, fail(view, 400, "Bad Idempotency-Key", str(e), field=HEADER)
