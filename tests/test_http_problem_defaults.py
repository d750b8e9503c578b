"""aiohttp's own error answers (an unknown path's 404, a wrong method's 405, a CORS preflight
``OPTIONS``, a body over the size limit) were ``text/plain``; the project answers API errors as
problem+json (found by attacking the product). ``streams.connections.problem_defaults`` turns them
into ``application/problem+json`` (status, title, detail; ``Allow`` kept on a 405; no CORS
header) and leaves what a handler answers alone: problem+json, HTML pages, the event stream."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from atalaia.console.problem import PROBLEM, problem
from atalaia.streams.connections import problem_defaults


def demo_app() -> web.Application:
    app = web.Application(middlewares=[problem_defaults()], client_max_size=1024)

    async def api(request: Any) -> web.Response:
        return web.json_response({"incidents": []})

    async def ours(request: Any) -> web.Response:  # a 404 of our own: kept as it is
        return web.json_response(
            problem(404, "No such incident", "x", field="id"), status=404, content_type=PROBLEM
        )

    async def page(request: Any) -> web.Response:
        return web.Response(body=b"<!doctype html><title>board</title>", content_type="text/html")

    async def stream(request: Any) -> web.StreamResponse:
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        await out.write(b"data: hello\n\n")
        await out.write_eof()
        return out

    async def upload(request: Any) -> web.Response:
        return web.Response(text=str(len(await request.read())))  # over client_max_size: 413

    async def plain(request: Any) -> web.Response:  # plain text: made a problem, the text its detail
        raise web.HTTPBadRequest(text="the words")

    async def html(request: Any) -> web.Response:  # a body that is not plain text: kept
        raise web.HTTPNotFound(text="<p>gone</p>", content_type="text/html")

    async def moved(request: Any) -> web.Response:
        raise web.HTTPFound("/api/incidents")

    async def broken(request: Any) -> web.Response:  # a fault of the server's
        raise TypeError("Recursion limit reached\nforged log line")

    app.router.add_get("/api/incidents", api)
    app.router.add_post("/api/incidents", api)
    app.router.add_get("/api/incidents/{id}", ours)
    app.router.add_get("/", page)
    app.router.add_get("/api/stream", stream)
    app.router.add_post("/api/upload", upload)
    app.router.add_get("/api/plain", plain)
    app.router.add_get("/html", html)
    app.router.add_get("/old", moved)
    app.router.add_post("/api/broken", broken)
    return app


async def test_aiohttp_default_errors_become_problem_json_and_ours_are_kept() -> None:
    async with TestClient(TestServer(demo_app())) as client:
        r = await client.get("/nope")
        assert r.status == 404 and r.headers["Content-Type"].startswith(PROBLEM)
        body = await r.json(content_type=None)
        assert body["status"] == 404 and body["title"] == "Not Found" and "/nope" in body["detail"]

        r = await client.put("/api/incidents")
        assert r.status == 405 and r.headers["Content-Type"].startswith(PROBLEM)
        assert set(r.headers["Allow"].split(",")) == {"GET", "POST", "HEAD"}, r.headers
        body = await r.json(content_type=None)
        assert body["status"] == 405 and body["title"] == "Method Not Allowed"
        assert "PUT" in body["detail"] and "GET" in body["detail"]

        # a CORS preflight: 405 problem+json, and no CORS header (same-origin only)
        r = await client.options(
            "/api/incidents",
            headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert r.status == 405 and r.headers["Content-Type"].startswith(PROBLEM)
        assert not [h for h in r.headers if h.lower().startswith("access-control-")], r.headers

        r = await client.post("/api/upload", data=b"x" * 4096)  # aiohttp's 413
        assert r.status == 413 and r.headers["Content-Type"].startswith(PROBLEM)
        body = await r.json(content_type=None)
        assert body["status"] == 413 and "1024" in body["detail"], body

        # what handlers answer is never touched
        r = await client.get("/api/incidents/abc")
        assert r.status == 404 and (await r.json(content_type=None))["field"] == "id"
        r = await client.get("/")
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/html")
        r = await client.get("/api/stream")
        assert r.headers["Content-Type"] == "text/event-stream" and await r.read() == b"data: hello\n\n"
        r = await client.get("/api/plain")
        assert r.status == 400 and r.headers["Content-Type"].startswith(PROBLEM)
        assert (await r.json(content_type=None))["detail"] == "the words"
        r = await client.get("/html")
        assert r.status == 404 and r.headers["Content-Type"].startswith("text/html")
        assert await r.text() == "<p>gone</p>"
        r = await client.get("/old", allow_redirects=False)
        assert r.status == 302 and r.headers["Location"] == "/api/incidents"
        r = await client.get("/api/incidents")
        assert r.status == 200 and await r.json() == {"incidents": []}


async def test_the_server_installs_it(tmp_path) -> None:
    """The worker's web server (as ``atalaia up`` serves it): 404 and 405 are problem+json."""
    from atalaia.streams.app import create_app
    from atalaia.streams.settings import Settings

    settings = Settings(data_dir=tmp_path, console_url=None)
    app = create_app(settings, "127.0.0.1:9", stages=(), http="console")
    async with TestClient(TestServer(app.web.web_app)) as client:
        r = await client.get("/nope", headers={"Host": "localhost"})
        assert r.status == 404 and r.headers["Content-Type"].startswith(PROBLEM), await r.text()
        r = await client.put("/api/incidents", headers={"Host": "localhost"})
        assert r.status == 405 and r.headers["Content-Type"].startswith(PROBLEM), await r.text()
        assert "GET" in r.headers["Allow"]
        assert r.headers["X-Content-Type-Options"] == "nosniff"


async def test_a_request_that_cannot_be_parsed_is_a_problem_and_one_log_line(tmp_path, caplog) -> None:
    """A control character or a broken host in the URL, or an unknown Content-Encoding, is refused
    by aiohttp's parser before any middleware: it answered text/plain without the security
    headers and logged an ERROR with a traceback for every such request (anyone could fill the
    log). Now: problem+json with the security headers, one WARNING line, no traceback; the
    connection is closed and the server keeps answering."""
    import asyncio
    import logging

    from atalaia.streams.app import create_app
    from atalaia.streams.connections import MALFORMED
    from atalaia.streams.settings import Settings

    settings = Settings(data_dir=tmp_path, console_url=None)
    app = create_app(settings, "127.0.0.1:9", stages=(), http="console")
    bad = [
        b"GET /\x01 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        b"GET http://[::1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: localhost\r\nBad Header: x\r\nConnection: close\r\n\r\n",
        b"POST /api/login HTTP/1.1\r\nHost: localhost\r\nContent-Encoding: bogus-zz\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    ]
    before = MALFORMED._value.get()
    async with TestClient(TestServer(app.web.web_app)) as client:
        port = client.server.port
        answers = []
        with caplog.at_level(logging.DEBUG):
            for raw in bad:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(raw)
                await writer.drain()
                answers.append(await asyncio.wait_for(reader.read(), 10))  # closed after the answer
                writer.close()
        parse_errors = [a for a in answers if a[:12] in (b"HTTP/1.1 400", b"HTTP/1.0 400")]
        assert len(parse_errors) >= 3, answers  # (aiohttp may take the unknown encoding as none)
        for a in parse_errors:
            head, _, body = a.partition(b"\r\n\r\n")
            assert b"Content-Type: application/problem+json" in head, a
            assert b"X-Content-Type-Options: nosniff" in head and b"X-Frame-Options: DENY" in head, a
            assert b'"status":400' in body.replace(b" ", b"") and b"could not be parsed" in body, a
        assert MALFORMED._value.get() - before == len(parse_errors)
        records = [r for r in caplog.records if "malformed HTTP request" in r.getMessage()]
        assert len(records) == len(parse_errors) and all(r.levelno == logging.WARNING for r in records)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], (
            "no ERROR for a client's mistake"
        )
        assert not [r for r in caplog.records if r.exc_info], "no traceback"
        r = await client.get("/nope", headers={"Host": "localhost"})
        assert r.status == 404, "the server still answers"


async def test_a_body_that_cannot_be_decoded_is_one_warning_whoever_answered(tmp_path, caplog) -> None:
    """gzip that is not gzip, sent to a path that answers without reading it (a 404; or a body
    that arrives after the answer): aiohttp drained it, met the error and logged an ERROR
    "Unhandled exception" with three tracebacks per request. Now one WARNING line, no traceback."""
    import asyncio
    import logging

    from atalaia.streams.app import create_app
    from atalaia.streams.settings import Settings

    app = create_app(Settings(data_dir=tmp_path, console_url=None), "127.0.0.1:9", stages=(), http="console")
    head = b"POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Encoding: gzip\r\nContent-Length: 15\r\n\r\n"
    async with TestClient(TestServer(app.web.web_app)) as client:
        with caplog.at_level(logging.DEBUG):
            for path, split in ((b"/nope", False), (b"/nope", True), (b"/api/login", True)):
                reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
                writer.write(head % path)
                if split:  # the answer goes out before the body arrives
                    await writer.drain()
                    await asyncio.sleep(0.3)
                writer.write(b"not gzip at all")
                await writer.drain()
                answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                assert answer.split(b" ")[1] in (b"404", b"409"), answer
                await asyncio.sleep(0.3)
                writer.close()
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [
            r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR
        ]
        assert not [r for r in caplog.records if r.exc_info], "no traceback"
        said = [r for r in caplog.records if "could not be decoded" in r.getMessage()]
        assert said and all(r.levelno == logging.WARNING and r.name == "atalaia.http" for r in said)


async def test_a_notify_path_tells_a_wrong_method_it_is_post_only(tmp_path) -> None:
    """The ingest paths take POST only: GET, PUT, PATCH, DELETE are told so (405 problem+json,
    ``Allow: POST``), not "no such path" — in ``atalaia up`` the alarms process forwards unknown
    paths to the console's process, which answered 404 for the ingest path."""
    from atalaia.streams.app import create_app
    from atalaia.streams.settings import Settings

    settings = Settings(data_dir=tmp_path, console_url=None, console_upstream="http://127.0.0.1:9")
    app = create_app(settings, "127.0.0.1:9", stages=(), http="ingest")
    async with TestClient(TestServer(app.web.web_app)) as client:
        for path in ("/ngsi-ld/notify", "/v2/notify", "/notify"):
            for method in ("GET", "PUT", "PATCH", "DELETE"):
                r = await client.request(method, path, headers={"Host": "localhost"})
                assert r.status == 405 and r.headers["Content-Type"].startswith(PROBLEM), (method, path)
                assert r.headers["Allow"] == "POST" and "allowed: POST" in (await r.json())["detail"]


async def test_an_unexpected_error_is_a_500_problem_and_one_log_line(caplog) -> None:
    """A handler that raised something unexpected (a body orjson could read but not write back)
    answered aiohttp's text/plain 500 and logged a traceback per request. Now: problem+json
    saying nothing of the code, one ERROR line naming the request and where it failed, and the
    server keeps answering."""
    import logging

    async with TestClient(TestServer(demo_app())) as client:
        with caplog.at_level(logging.DEBUG):
            r = await client.post("/api/broken", json={})
            assert r.status == 500 and r.headers["Content-Type"].startswith(PROBLEM)
            body = await r.json(content_type=None)
            assert body["status"] == 500 and body["title"] == "Internal Server Error"
            text = str(body)
            assert "Recursion" not in text and "Traceback" not in text and ".py" not in text, body
        errors = [x for x in caplog.records if x.levelno >= logging.ERROR]
        assert len(errors) == 1 and not errors[0].exc_info, [x.getMessage() for x in errors]
        line = errors[0].getMessage()
        assert "POST /api/broken" in line and "TypeError" in line and "\n" not in line, line
        assert "test_http_problem_defaults.py:" in line, "where it was raised"
        r = await client.get("/api/incidents")
        assert r.status == 200, "the server still answers"
