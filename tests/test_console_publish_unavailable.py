"""A console command the broker does not take (the broker is down, the producer is stopping) was a
500 with a traceback in the log; the operator's client could not tell "try again" from "broken". It
is a 503 problem+json with ``Retry-After``; a timeout says the command may have been taken; and a
command the broker took is answered as before, also when the ingest log could not keep it."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

from atalaia.console.problem import PROBLEM
from atalaia.streams.connections import problem_defaults, unavailable_as_503
from atalaia.streams.ingestlog import IngestLogError


def app_with(failure: BaseException | None, sent: list) -> web.Application:
    async def publish(topic: str, value: bytes, key: bytes | None = None, headers: Any = None) -> None:
        if failure is not None:
            raise failure
        sent.append((topic, value, key))

    guarded = unavailable_as_503(publish)

    async def command(request: Any) -> web.Response:
        await guarded("atalaia.commands", await request.read(), b"i1")
        return web.json_response({"status": "accepted"})

    app = web.Application(middlewares=[problem_defaults()])
    app.router.add_post("/api/incidents/i1/commands", command)
    return app


@pytest.mark.parametrize(
    ("failure", "says"),
    [
        (KafkaConnectionError("the ingest producer is not running"), "send it again"),
        (KafkaTimeoutError(), "may have been taken; check before sending it again"),
    ],
)
async def test_a_command_the_broker_did_not_take_is_a_503(failure: BaseException, says: str) -> None:
    sent: list = []
    async with TestClient(TestServer(app_with(failure, sent))) as client:
        r = await client.post("/api/incidents/i1/commands", data=b'{"action": "acknowledge"}')
        assert r.status == 503 and r.headers["Content-Type"].startswith(PROBLEM)
        assert int(r.headers["Retry-After"]) > 0
        body = await r.json(content_type=None)
        assert body["status"] == 503 and says in body["detail"]
    assert sent == []


async def test_a_command_the_broker_took_but_the_log_could_not_keep_goes_on(caplog) -> None:
    """The broker acknowledged it (it will be applied); the log could not keep it (a full disk): a
    503 "send it again" would have it applied twice. It is answered as taken, and logged."""
    failure = IngestLogError(28, "the ingest log cannot keep the event: No space left on device")
    async with TestClient(TestServer(app_with(failure, []))) as client:
        r = await client.post("/api/incidents/i1/commands", data=b'{"action": "acknowledge"}')
        assert r.status == 200 and await r.json() == {"status": "accepted"}
    assert any(x.levelname == "ERROR" and "could not keep it" in x.getMessage() for x in caplog.records)


async def test_a_command_the_broker_took_is_answered_as_before() -> None:
    sent: list = []
    async with TestClient(TestServer(app_with(None, sent))) as client:
        r = await client.post("/api/incidents/i1/commands", data=b'{"action": "acknowledge"}')
        assert r.status == 200 and await r.json() == {"status": "accepted"}
    assert sent == [("atalaia.commands", b'{"action": "acknowledge"}', b"i1")]
