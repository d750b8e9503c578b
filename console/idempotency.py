"""The ``Idempotency-Key`` header of the console's command routes (IETF httpapi): one reading for the
warnings commands (``console/warnings_api.py``) and the incident commands (``console/api.py``).

A client that sends a command again (its answer was lost on the way, or it got ``202 queued`` and
cannot tell whether the command went through) sends the same key: the same key from the same user
to the same path makes the same command id, so the stage that applies it applies it once, and the
console answers the retry with the first answer (the reply it saw for that id). Another key, another
user or another path is another command; without the header every request is a new command.

A key is for one request: sent again with another body (a client that keeps one key for a session,
or reuses it for its next command) it is a 422 naming the header, as the IETF draft and Stripe
answer, while this console remembers the first (its last :data:`REMEMBERED` keyed commands). The
retry was answered with the first command's reply: an ``issue`` sent with the key of the warning's
``approve`` was "accepted" and never issued, a ``close`` with an ``acknowledge``'s key never closed.

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
from collections import OrderedDict
from typing import Any

import orjson

HEADER = "Idempotency-Key"
#: printable ASCII, as long as a UUID or a client's own id needs
IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]{1,128}")
#: keyed commands whose request a console remembers (a key sent again with another body: 422)
REMEMBERED = 10_000
KEY_REUSED = f"{HEADER}: this key was sent with another request; a key is for one command (send a new key)"


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


class Requests:
    """The request each keyed command id was first sent with (its body, as a digest; the last
    ``keep``), so a key sent again with another request is told apart from a retry.

    >>> seen = Requests(keep=2)
    >>> seen.same("c1", {"action": "approve"}), seen.same("c1", {"action": "approve"})
    (True, True)
    >>> seen.same("c1", {"action": "issue"})
    False
    """

    def __init__(self, keep: int = REMEMBERED) -> None:
        self.keep = keep
        self.digests: OrderedDict[str, bytes] = OrderedDict()

    def same(self, cid: str, body: Any) -> bool:
        """Whether ``body`` is the request ``cid`` was first sent with (True the first time)."""
        digest = hashlib.blake2b(
            orjson.dumps(body, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS), digest_size=16
        ).digest()
        first = self.digests.setdefault(cid, digest)
        self.digests.move_to_end(cid)
        while len(self.digests) > self.keep:
            self.digests.popitem(last=False)
        return first == digest


def reused(fail: Any, view: Any, seen: Requests, cid: str | None, body: Any) -> Any:
    """None, or the 422 problem+json answer when keyed command ``cid`` was first sent with another
    body (``body``: the request as the client wrote it, without the fields the server sets)."""
    if cid is None or seen.same(cid, body):
        return None
    return fail(view, 422, "Idempotency-Key reused", KEY_REUSED, field=HEADER)
