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

    app.router.add_get("/api/incidents", api)
    app.router.add_post("/api/incidents", api)
    app.router.add_get("/api/incidents/{id}", ours)
    app.router.add_get("/", page)
    app.router.add_get("/api/stream", stream)
    app.router.add_post("/api/upload", upload)
    app.router.add_get("/api/plain", plain)
    app.router.add_get("/html", html)
    app.router.add_get("/old", moved)
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
