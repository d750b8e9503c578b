"""The projection's PostgreSQL goes away and comes back while a worker runs (issue: a projection
database outage stopped the whole process). A real PostgreSQL (127.0.0.1:5432, database
``test``) behind a TCP proxy the test opens and closes: closed, it refuses connections and cuts
the ones it carried, as a server stopping or restarting does.

The worker starts while the database is down, loses it again in the middle of a storm, and
meanwhile: it keeps running, its incidents stage goes on, ``/health`` is ``degraded`` naming the
projection database, the console's list answers 503 problem+json with ``Retry-After`` (not 500).
Once the database is back every incident event on the topic is projected once: the tables equal
the topic, no audit row twice."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import uuid

import httpx
import pytest

from atalaia.incidents.projection import Projection
from atalaia.incidents.scenarios import porto_storm
from tests.test_console_board import chromium  # noqa: F401  (a fixture)
from tests.test_incidents_live import CONFIG, incidents_on_topic, produce, wait_for
from tests.test_incidents_projection import PG_URL, _pg_available

pytestmark = [pytest.mark.broker, pytest.mark.postgres]


class TcpProxy:
    """127.0.0.1:<port> → ``target``, in threads. ``down()`` closes the listening socket (new
    connections are refused) and every connection it carried; ``up()`` listens again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.lock = threading.Lock()
        self.conns: list[socket.socket] = []
        self.listener: socket.socket | None = None
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()

    def up(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(16)
        self.listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def down(self) -> None:
        with self.lock:
            if self.listener is not None:
                with contextlib.suppress(OSError):  # wakes accept(), else the port stays listening
                    self.listener.shutdown(socket.SHUT_RDWR)
                self.listener.close()
                self.listener = None
            for c in self.conns:
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)
                c.close()
            self.conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                if self.listener is not listener:  # went down meanwhile
                    client.close()
                    server.close()
                    return
                self.conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def _problems(w) -> list[str]:
    return w.health().get("problems", [])


def test_projection_database_down_and_back_loses_nothing_and_stops_nothing(
    broker, topic_prefix, make_worker, tmp_path
):
    why = _pg_available()
    if why:
        pytest.skip(why)
    import psycopg

    target = httpx.URL(PG_URL.replace("postgresql://", "http://"))
    proxy = TcpProxy((target.host or "127.0.0.1", target.port or 5432))
    via_proxy = PG_URL.replace(f"{target.host}:{target.port or 5432}", f"127.0.0.1:{proxy.port}")
    assert via_proxy != PG_URL
    schema = f"atalaia_outage_{uuid.uuid4().hex[:10]}"
    cfg = tmp_path / "incidents.yaml"
    cfg.write_text(CONFIG)
    env = {
        "ATALAIA_INCIDENTS_PATH": str(cfg),
        "ATALAIA_DATABASE_URL": via_proxy,
        "ATALAIA_DATABASE_SCHEMA": schema,
    }
    storm = porto_storm()
    half = len(storm) // 2
    try:
        # 1. the database is down when the worker starts: the worker starts all the same
        w = make_worker("--stages", "incidents,projection", extra_env=env).start(("incidents", "projection"))
        asyncio.run(produce(broker, f"{topic_prefix}.alarms", storm[:half]))
        wait_for(lambda: w.health()["stages"]["incidents"]["processed"] >= half, 30, "the incidents stage")
        wait_for(
            lambda: any("projection database" in p for p in _problems(w)), 15, "/health to name the database"
        )
        assert w.health()["status"] == "degraded"
        r = httpx.get(f"{w.url}/api/incidents", timeout=20)
        assert r.status_code == 503, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.headers.get("retry-after")
        assert "projection database" in r.json()["detail"] and "127.0.0.1" not in r.json()["detail"]

        # 2. back: the projection catches up and /health is ok again
        proxy.up()
        wait_for(lambda: w.health()["stages"]["projection"]["lag"] == 0, 30, "the projection to catch up")
        wait_for(lambda: not _problems(w), 10, "/health to be ok again")
        assert httpx.get(f"{w.url}/api/incidents", timeout=10).status_code == 200

        # 3. lost in the middle of the rest of the storm (a restart cuts its connections)
        proxy.down()
        asyncio.run(produce(broker, f"{topic_prefix}.alarms", storm[half:]))
        wait_for(
            lambda: w.health()["stages"]["incidents"]["processed"] >= len(storm), 30, "the incidents stage"
        )
        wait_for(
            lambda: any("projection database" in p for p in _problems(w)), 15, "/health to name it again"
        )
        assert w.proc is not None and w.proc.poll() is None, "the worker kept running"
        proxy.up()
        wait_for(lambda: not _problems(w) and w.health()["stages"]["projection"]["lag"] == 0, 30, "catch-up")

        events = incidents_on_topic(broker, topic_prefix)
        latest: dict[str, dict] = {}
        for e in sorted({e["id"]: e for e in events}.values(), key=lambda e: (e["incident"], e["version"])):
            latest[e["incident"]] = e
        proj = Projection.connect(PG_URL, schema=schema, migrate=False)
        try:
            rows = {r["id"]: (r["version"], r["state"]) for r in proj.incidents(limit=1000)}
            assert rows == {i: (e["version"], e["state"]) for i, e in latest.items()}
            for iid, e in latest.items():
                assert [h["version"] for h in proj.history(iid)] == list(range(1, e["version"] + 1))
        finally:
            proj.close()
        log = w.log.read_text()
        assert "stage failed" not in log and "Traceback" not in log
        assert w.stop() == 0
    finally:
        proxy.down()
        with psycopg.connect(PG_URL, autocommit=True) as c:
            c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_the_board_says_the_incident_database_is_down_and_loads_the_list_when_it_is_back(
    broker,
    topic_prefix,
    make_worker,
    tmp_path,
    chromium,  # noqa: F811
):
    """In a browser: with the projection database down the board's list answers 503. The board
    said "Connection lost — retrying" over a live stream and never asked for the list again (it
    stayed so until the page was reloaded). It now says that only live changes are shown because
    the incident database is unavailable, keeps showing them, and loads the list by itself once
    the database is back."""
    from datetime import UTC, datetime

    from tests.test_console_board import Publisher, alarm

    why = _pg_available()
    if why:
        pytest.skip(why)
    import psycopg

    target = httpx.URL(PG_URL.replace("postgresql://", "http://"))
    proxy = TcpProxy((target.host or "127.0.0.1", target.port or 5432))
    schema = f"atalaia_board_{uuid.uuid4().hex[:10]}"
    env = {
        "ATALAIA_DATABASE_URL": PG_URL.replace(
            f"{target.host}:{target.port or 5432}", f"127.0.0.1:{proxy.port}"
        ),
        "ATALAIA_DATABASE_SCHEMA": schema,
    }
    publish = Publisher(broker, f"{topic_prefix}.alarms")
    try:
        w = make_worker("--stages", "incidents,projection", extra_env=env).start(("incidents", "projection"))
        page = chromium.new_context(locale="en-GB").new_page()
        page.goto(w.url + "/")
        page.wait_for_selector("#status.db", timeout=20000)
        assert "database is unavailable" in page.inner_text("#conn")
        publish(alarm("db-down", datetime.now(UTC).replace(microsecond=0), "critical", parish="Paranhos"))
        page.wait_for_function("incidents.size === 1", timeout=15000)  # live changes go on
        proxy.up()
        page.wait_for_selector("#status.live", timeout=20000)
        page.wait_for_function("loaded === true", timeout=5000)
        page.locator("tr[data-incident]", has_text="Paranhos").wait_for(timeout=5000)
    finally:
        publish.close()
        proxy.down()
        with psycopg.connect(PG_URL, autocommit=True) as c:
            c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
