"""What ``/health``, ``/readyz`` and ``/livez`` answer (``streams.metrics.health_code``).

Before, ``/health`` answered 503 for ``degraded`` as for ``failed``: after a broker reset, a
restarted embedded broker, or any condition Atalaia had recovered from but keeps naming for
``ATALAIA_RESET_ALERT_S`` (15 min), a load balancer or a readiness probe reading ``/health``
took a working ``atalaia up`` out of service for those 15 minutes. Now:

* ``/livez``: the process answers (open);
* ``/readyz``: 200 ``{"status": "ready"}`` while it serves (``ok`` or ``degraded``), 503 naming
  ``starting`` or ``failed`` otherwise (open, the status word only);
* ``/health``: the detailed report (behind the metrics token): 200 for ``ok`` and ``degraded``
  (its ``problems`` name each condition), 503 for ``starting`` and ``failed``.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from types import SimpleNamespace

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from atalaia.streams.front import peer_health, peer_ready
from atalaia.streams.guard import HEALTH, Problem
from atalaia.streams.metrics import health_report, readiness
from tests.conftest import ATALAIA

problems = st.dictionaries(
    st.text(min_size=1, max_size=8),
    st.tuples(st.sampled_from(["degraded", "failed"]), st.booleans()),  # (status, lasts until resolved)
    max_size=4,
)
stages = st.dictionaries(st.sampled_from(["ingest", "rules", "incidents"]), st.booleans(), max_size=3)


@given(problems, stages)
def test_health_answers_200_while_the_process_serves_and_503_while_it_cannot(found, assigned) -> None:
    now = time.time()
    HEALTH.problems.clear()
    for key, (status, lasting) in found.items():
        HEALTH.problems[key] = Problem(status, f"{status} {key}", now, None if lasting else now + 900)
    body, code = health_report(
        {n: SimpleNamespace(assigned=a, processed=0, cores={}) for n, a in assigned.items()}
    )
    if any(s == "failed" for s, _ in found.values()):
        expected = "failed"
    elif not all(assigned.values()):
        expected = "starting"  # even with a condition named: a stage without partitions serves nothing
    else:
        expected = "degraded" if found else "ok"
    assert body["status"] == expected
    assert sorted(body.get("problems", [])) == sorted(f"{s} {k}" for k, (s, _) in found.items())
    assert code == (200 if expected in ("ok", "degraded") else 503), (expected, code)
    ready, ready_code = readiness(expected)
    assert ready_code == code
    assert ready == ({"status": "ready"} if code == 200 else {"status": expected})


def test_a_worker_that_recovered_serves_degraded_and_ready(make_worker) -> None:
    """A worker started as ``atalaia up`` starts its processes after their embedded broker died:
    ``/health`` names the restart for ATALAIA_RESET_ALERT_S, with a 200, and it is ready."""
    why = "the embedded broker (Tansu, pid 7) died (signal SIGKILL)"
    notice = {"at": time.time() - 5, "why": why, "count": 1}
    w = make_worker("--stages", "ingest,rules", extra_env={"ATALAIA_BROKER_RESTARTED": json.dumps(notice)})
    w.start(("ingest", "rules"))
    try:
        health = httpx.get(f"{w.url}/health", timeout=5)
        body = health.json()
        assert body["status"] == "degraded", body
        assert any(p.startswith("the embedded broker (Tansu, pid 7) died") for p in body["problems"]), body
        assert health.status_code == 200, "degraded is a report of a process that serves: 200"
        ready = httpx.get(f"{w.url}/readyz", timeout=5)
        assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
        assert httpx.get(f"{w.url}/livez", timeout=5).status_code == 200
    finally:
        w.stop()


def test_readyz_is_open_and_tells_the_status_word_only(make_worker) -> None:
    """With the metrics token set, ``/health`` needs it and ``/readyz`` does not (a probe has no
    token), and ``/readyz`` says no more than the status word."""
    digest = hashlib.sha256(b"probe-token").hexdigest()
    notice = {"at": time.time() - 5, "why": "the embedded broker (Tansu, pid 7) died", "count": 1}
    w = make_worker(
        "--stages",
        "ingest,rules",
        extra_env={"ATALAIA_METRICS_TOKEN_SHA256": digest, "ATALAIA_BROKER_RESTARTED": json.dumps(notice)},
    )
    with open(w.log, "ab") as out:  # started here: the fixture's start polls /health, token-bound
        w.proc = subprocess.Popen([ATALAIA, *w.args], env=w.env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 60
        ready = None
        while time.monotonic() < deadline:
            assert w.proc.poll() is None, w.log.read_text()[-4000:]
            try:
                ready = httpx.get(f"{w.url}/readyz", timeout=1)
                if ready.status_code == 200:
                    break
                assert ready.json() == {"status": "starting"}, ready.text
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        assert ready is not None and (ready.status_code, ready.json()) == (200, {"status": "ready"})
        assert httpx.get(f"{w.url}/health", timeout=5).status_code == 401
        health = httpx.get(f"{w.url}/health", headers={"Authorization": "Bearer probe-token"}, timeout=5)
        assert (health.status_code, health.json()["status"]) == (200, "degraded")
    finally:
        w.stop()


def _ops(readyz: web.Response | None, health: web.Response | None = None) -> web.Application:
    """The other process of ``atalaia up``: its ``/readyz?local`` and ``/health?local``."""
    app = web.Application()

    async def get_readyz(request: web.Request) -> web.Response:
        assert request.query.get("local") is not None
        if readyz is None:
            raise web.HTTPNotFound()
        return readyz

    async def get_health(request: web.Request) -> web.Response:
        return health or web.json_response({"status": "ok", "stages": {}})

    app.router.add_get("/readyz", get_readyz)
    app.router.add_get("/health", get_health)
    return app


@pytest.mark.parametrize(
    ("theirs", "mine", "merged"),
    [
        (web.json_response({"status": "ready"}), "ok", "ok"),
        (web.json_response({"status": "ready"}), "degraded", "degraded"),
        (web.json_response({"status": "starting"}, status=503), "degraded", "starting"),
        (web.json_response({"status": "failed"}, status=503), "ok", "failed"),
        (web.json_response({"status": "ready"}), "failed", "failed"),
        # no readiness from it (an error answer, a body that is not one): "does not answer", as
        # /health says it; the ingest endpoints here still serve
        (None, "ok", "degraded"),
        (web.json_response({"status": "ready"}, status=500), "ok", "degraded"),
        (web.json_response({"status": "ok"}, status=503), "ok", "degraded"),
    ],
)
async def test_up_is_ready_as_the_worst_of_its_processes(theirs, mine, merged) -> None:
    async with TestServer(_ops(theirs)) as ops:
        assert await peer_ready([f"ops={ops.make_url('/')}"], mine) == merged
        assert readiness(merged)[1] == (200 if merged in ("ok", "degraded") else 503)


async def test_a_process_still_starting_makes_up_not_ready_though_another_is_degraded() -> None:
    """Merged ``/health``: ``starting`` outranks ``degraded`` (before, the merged status was
    ``degraded``, which now answers 200, while the ops process served nothing yet)."""
    starting = web.json_response({"status": "starting", "stages": {"incidents": {}}}, status=503)
    async with TestServer(_ops(None, starting)) as ops:
        status, said, _ = await peer_health(
            [f"ops={ops.make_url('/')}"], CIMultiDict(), "degraded", ["no rules loaded"], {}
        )
        assert (status, said) == ("starting", ["no rules loaded"])


@given(problems, stages)
def test_the_health_gauge_says_the_status_health_answers(found, assigned) -> None:
    """``/health`` answers 200 while degraded, so a 503 no longer tells Prometheus (or a blackbox
    probe) that a process is degraded: ``atalaia_health{status}`` does, on ``/metrics``."""
    from atalaia.streams.metrics import StageCollector

    class Stage(SimpleNamespace):  # (the collector holds its stages weakly)
        pass

    now = time.time()
    HEALTH.problems.clear()
    for key, (status, lasting) in found.items():
        HEALTH.problems[key] = Problem(status, f"{status} {key}", now, None if lasting else now + 900)
    running = {n: Stage(assigned=a, processed=0, cores={}) for n, a in assigned.items()}
    collector = StageCollector()
    for n, s in running.items():
        collector.stages[n] = s
    body, _ = health_report(running)
    (family,) = [f for f in collector.collect() if f.name == "atalaia_health"]
    values = {s.labels["status"]: s.value for s in family.samples}
    assert values == {s: float(s == body["status"]) for s in ("ok", "degraded", "starting", "failed")}
