"""The one JSON-body reader of the console endpoints: a body that never completes (a slow sender,
an encoded stream that never ends) is refused with 408 instead of holding the request; a body
nested deeper than ``MAX_DEPTH`` is refused with 400."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import orjson
from hypothesis import given
from hypothesis import strategies as st

from atalaia.console.bodies import MAX_DEPTH, read_object, too_deep


class Request(SimpleNamespace):
    def __init__(self, body: bytes | None) -> None:
        super().__init__(headers={"Content-Type": "application/json"}, content_length=None)
        self.body = body

    async def read(self) -> bytes:
        if self.body is None:
            await asyncio.sleep(3600)  # the rest of the body never comes
        return self.body


def test_a_body_that_never_ends_is_refused_with_408() -> None:
    never = read_object(Request(None), "command", 1024, timeout=0.2)  # ATALAIA_HTTP_BODY_TIMEOUT_S
    status, title, detail = asyncio.run(asyncio.wait_for(never, 5))
    assert (status, title) == (408, "Request timeout") and "0.2 s" in detail


def test_a_complete_body_is_read() -> None:
    body = {"action": "acknowledge", "actor": "ana"}
    assert asyncio.run(read_object(Request(orjson.dumps(body)), "command", 1024)) == body


def nested(depth: int, kinds: list[bool]) -> bytes:
    """A JSON object whose value ``x`` nests ``depth - 1`` arrays and objects (``kinds``: True
    for an object at that level, cycled); the object itself is level 1."""
    opened, closed = [], []
    for i in range(depth - 1):
        obj = kinds[i % len(kinds)]
        opened.append(b'{"k":' if obj else b"[")
        closed.append(b"}" if obj else b"]")
    inner = b"1" if depth > 1 else b"null"
    return b'{"action":"comment","x":' + b"".join(opened) + inner + b"".join(reversed(closed)) + b"}"


@given(depth=st.integers(1, 400), kinds=st.lists(st.booleans(), min_size=1, max_size=5))
def test_a_body_nested_too_deep_is_refused_with_400_and_any_other_is_read(depth, kinds) -> None:
    """orjson reads 1024 levels but writes 254: a command nested 300 deep was read, then writing
    its id raised and the console answered 500 with a traceback. Bodies are at most MAX_DEPTH
    deep; anything shallower is read as before, and what is read can be written back as JSON."""
    raw = nested(depth, kinds)
    got = asyncio.run(read_object(Request(raw), "command", 64 * 1024))
    if depth > MAX_DEPTH:
        status, title, detail = got
        assert (status, title) == (400, "Bad command") and str(MAX_DEPTH) in detail
    else:
        assert got == orjson.loads(raw)
        assert orjson.loads(orjson.dumps(got)) == got


def test_too_deep_counts_levels_of_arrays_and_objects_only() -> None:
    assert not too_deep({"a": "x" * 1000, "b": [1, 2, {"c": None}]}, 3)
    assert too_deep({"a": [[{}]]}, 3) and not too_deep({"a": [[{}]]}, 4)
    assert not too_deep("text", 0) and not too_deep(7, 0)
