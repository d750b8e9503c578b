"""The one JSON-body reader of the console endpoints: a body that never completes (a slow sender,
an encoded stream that never ends) is refused with 408 instead of holding the request."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import orjson

from atalaia.console.bodies import read_object


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
