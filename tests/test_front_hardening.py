"""The public side of ``atalaia up`` (``streams.front``), against in-process aiohttp servers that
stand for the ops process:

* ``X-Auth-Token`` (accepted by the metrics auth like ``Authorization: Bearer``) reaches the other
  processes, and their error answer (a 401 problem+json, ``"status": 401``) is never read as a
  health report or an exposition: that process "does not answer" (found by attacking the product:
  /health answered 503 with the ops stages missing, /metrics said the ops process was down);
* ``/metrics`` is computed at most once a second, concurrent scrapes sharing one computation (20
  scrapers had raised the alarm path's ingest p50 from 17 ms to 407 ms), ``?local`` apart.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from atalaia.console.problem import PROBLEM, problem
from atalaia.streams.front import SharedBytes, metrics_body, peer_health, peer_metrics

TOKEN = "s3cret-token"
EXPOSITION = "# HELP ops_things_total things\n# TYPE ops_things_total counter\nops_things_total 7.0\n"


def ops_app(hits: dict[str, int], *, health: Any = None, delay: float = 0.0) -> web.Application:
    """/health?local and /metrics?local of a process whose metrics auth takes ``TOKEN`` in either
    header (as ``streams.ingest.auth.MetricsAuth``) and answers 401 problem+json otherwise."""

    def authorised(request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {TOKEN}" or (
            request.headers.get("X-Auth-Token") == TOKEN
        )

    def refused() -> web.Response:
        return web.json_response(
            problem(401, "Unauthorized", "send a token"), status=401, content_type=PROBLEM
        )

    async def get_health(request: web.Request) -> web.Response:
        hits["health"] = hits.get("health", 0) + 1
        if not authorised(request):
            return refused()
        if health is not None:
            return health
        return web.json_response(
            {"status": "ok", "stages": {"incidents": {"processed": 3, "partitions": [0]}}}
        )

    async def get_metrics(request: web.Request) -> web.Response:
        hits["metrics"] = hits.get("metrics", 0) + 1
        if not authorised(request):
            return refused()
        await asyncio.sleep(delay)
        return web.Response(text=EXPOSITION, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/health", get_health)
    app.router.add_get("/metrics", get_metrics)
    return app


def url(server: TestServer) -> str:
    return f"ops={server.make_url('/')}"


async def test_x_auth_token_reaches_the_other_processes_and_they_are_reported() -> None:
    hits: dict[str, int] = {}
    async with TestServer(ops_app(hits)) as ops:
        for headers in (
            CIMultiDict({"X-Auth-Token": TOKEN}),
            CIMultiDict({"Authorization": f"Bearer {TOKEN}"}),
        ):
            status, problems, stages = await peer_health([url(ops)], headers, "ok", [], {"ingest": {}})
            assert (status, problems) == ("ok", []), headers
            assert set(stages) == {"ingest", "incidents"}

            text = (await peer_metrics([url(ops)], headers, "alarms", b"")).decode()
            assert 'atalaia_process_up{process="ops"} 1.0' in text, text
            assert 'ops_things_total{process="ops"} 7.0' in text


async def test_an_error_answer_of_another_process_is_not_a_report() -> None:
    hits: dict[str, int] = {}
    async with TestServer(ops_app(hits)) as ops:
        # no credential reaches it: its 401 {"status": 401, ...} is "does not answer", not a status
        status, problems, stages = await peer_health([url(ops)], CIMultiDict(), "ok", [], {"ingest": {}})
        assert status == "degraded", status
        assert len(problems) == 1 and "does not answer" in problems[0] and "401" in problems[0], problems
        assert set(stages) == {"ingest"}
        text = (await peer_metrics([url(ops)], CIMultiDict(), "alarms", b"")).decode()
        assert 'atalaia_process_up{process="ops"} 0.0' in text, text

    # a 500 whose body looks like a report is not one either
    fake = web.json_response({"status": "ok", "stages": {"x": {}}}, status=500)
    async with TestServer(ops_app(hits, health=fake)) as ops:
        auth = CIMultiDict({"X-Auth-Token": TOKEN})
        status, problems, stages = await peer_health([url(ops)], auth, "ok", [], {})
        assert status == "degraded" and "does not answer" in problems[0] and stages == {}

    # a 503 report (a process still starting) is a report: its status and stages are merged
    starting = web.json_response({"status": "starting", "stages": {"incidents": {}}}, status=503)
    async with TestServer(ops_app(hits, health=starting)) as ops:
        status, problems, stages = await peer_health([url(ops)], auth, "ok", [], {})
        assert (status, problems, set(stages)) == ("starting", [], {"incidents"})


async def test_concurrent_scrapes_share_one_merge_and_it_is_kept_a_second() -> None:
    hits: dict[str, int] = {}
    now = [100.0]
    cache = SharedBytes(ttl=1.0, clock=lambda: now[0])
    auth = CIMultiDict({"X-Auth-Token": TOKEN})
    async with TestServer(ops_app(hits, delay=0.2)) as ops:
        peers = [url(ops)]
        bodies = await asyncio.gather(*(metrics_body(cache, peers, "alarms", auth, False) for _ in range(20)))
        assert hits.get("metrics") == 1, hits  # one merge for 20 concurrent scrapes
        assert len(set(bodies)) == 1 and b'atalaia_process_up{process="ops"} 1.0' in bodies[0]

        now[0] += 0.5  # within the second: served again, the other process is not asked
        assert await metrics_body(cache, peers, "alarms", auth, False) == bodies[0]
        assert hits["metrics"] == 1

        # ?local: this process's own exposition, cached apart (never the merged one)
        local = await metrics_body(cache, peers, "alarms", auth, True)
        assert b"atalaia_process_up" not in local and hits["metrics"] == 1

        now[0] += 1.0  # a second later: merged again
        await metrics_body(cache, peers, "alarms", auth, False)
        assert hits["metrics"] == 2


async def test_a_lone_worker_s_metrics_are_not_cached() -> None:
    """Without other processes /metrics is only this one's exposition: exact right after a request."""
    from prometheus_client import Counter

    seen = Counter("atalaia_test_front_seen_total", "test counter")
    cache = SharedBytes(ttl=60.0)
    first = await metrics_body(cache, [], "worker", CIMultiDict(), False)
    seen.inc()
    second = await metrics_body(cache, [], "worker", CIMultiDict(), False)
    assert b"atalaia_test_front_seen_total 0.0" in first and b"atalaia_test_front_seen_total 1.0" in second


async def test_a_scraper_that_goes_away_does_not_cancel_the_shared_merge_and_failures_are_not_kept() -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    calls = []

    async def slow() -> bytes:
        calls.append(1)
        started.set()
        await release.wait()
        return b"merged"

    cache = SharedBytes(ttl=1.0)
    first = asyncio.ensure_future(cache.get("merged", slow))
    await started.wait()
    second = asyncio.ensure_future(cache.get("merged", slow))
    await asyncio.sleep(0)
    first.cancel()
    release.set()
    assert await second == b"merged" and len(calls) == 1

    async def broken() -> bytes:
        calls.append(1)
        raise RuntimeError("boom")

    other = SharedBytes(ttl=60.0)
    for _ in range(2):
        with pytest.raises(RuntimeError):
            await other.get("k", broken)
    assert len(calls) == 3  # the failure was not cached: computed again


async def test_the_lag_of_a_stage_in_several_processes_is_summed_and_its_wait_is_the_longest() -> None:
    """`worker --processes`: one stage in several processes is one row of /health, its records
    behind summed, how long its oldest has waited the longest of them."""
    theirs = {
        "status": "ok",
        "stages": {"rules": {"processed": 3, "partitions": [1], "lag": 40, "behind_s": 7.5}},
    }
    auth = CIMultiDict({"X-Auth-Token": TOKEN})
    for mine, lag, wait in (
        ({"processed": 2, "partitions": [0], "lag": 2, "behind_s": 0.5}, 42, 7.5),
        ({"processed": 2, "partitions": [0], "lag": None, "behind_s": None}, 40, 7.5),  # no fetch yet
    ):
        async with TestServer(ops_app({}, health=web.json_response(theirs))) as ops:
            _, _, stages = await peer_health([url(ops)], auth, "ok", [], {"rules": mine})
        assert stages["rules"] == {"processed": 5, "partitions": [0, 1], "lag": lag, "behind_s": wait}


async def test_a_condition_every_process_reports_is_said_once_though_its_times_differ() -> None:
    """While the broker does not answer, each process says since when its own last check was
    answered (a second or two apart): the merged /health said the same problem once per process."""
    mine = (
        "the broker at 127.0.0.1:9092 has not answered since 2026-12-07T20:55:31Z (KafkaConnectionError: "
        "Unable to bootstrap); no event is processed or sent until it does"
    )
    theirs = mine.replace("20:55:31Z", "20:55:30Z")
    other = "rules: partition 1 is 300 s behind since 2026-12-07T20:50:00Z"
    report = web.json_response(
        {"status": "failed", "problems": [theirs, other], "stages": {"incidents": {}}}, status=503
    )
    async with TestServer(ops_app({}, health=report)) as ops:
        auth = CIMultiDict({"X-Auth-Token": TOKEN})
        status, problems, _ = await peer_health([url(ops)], auth, "failed", [mine], {})
        assert (status, problems) == ("failed", [mine, other]), problems
