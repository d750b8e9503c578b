"""Ingest authentication on a real worker: refused requests answer 401/403, are counted, and leave
nothing on the pipeline (events or DLQ); tokens work as Bearer and as X-Auth-Token; a token is
bound to its tenant; /health and /metrics take their own token while /livez stays open; the
server listens only on 127.0.0.1; an oversize body is described whole on the DLQ."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import socket
import time
import uuid
from pathlib import Path

import httpx
import orjson
import pytest

from atalaia.streams.ingest import read_dlq_record
from atalaia.streams.ingest.auth import hash_token, new_token
from tests.conftest import WorkerProcess, consume_all, free_port, non_loopback_address

pytestmark = pytest.mark.broker

LIMIT = 20_000  # ATALAIA_MAX_PAYLOAD_BYTES for this worker


class GuardedWorker(WorkerProcess):
    """A worker whose /health needs the monitoring token."""

    def start(self, stages: tuple[str, ...], timeout: float = 60) -> GuardedWorker:
        import subprocess

        from tests.conftest import ATALAIA

        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([ATALAIA, *self.args], env=self.env, stdout=out, stderr=out)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-8000:]
            try:
                h = self.health()
                if all(h["stages"].get(s, {}).get("partitions") for s in stages):
                    return self
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.3)
        self.kill()
        raise AssertionError(f"worker not ready:\n{self.log.read_text()[-8000:]}")

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health", headers=self.monitor, timeout=2).json()


@pytest.fixture(scope="module")
def guarded(broker, tmp_path_factory):
    from atalaia.streams.broker import ensure_topics

    prefix = f"t{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_topics(broker, prefix, partitions=3))
    tmp = tmp_path_factory.mktemp("ingest-auth")
    porto, lisboa, default, monitor = new_token(), new_token(), new_token(), new_token()
    (tmp / "tokens.yaml").write_text(
        "tokens:\n"
        f"  - {{source: orion-porto, tenant: porto, token_sha256: {hash_token(porto)}}}\n"
        f"  - {{source: orion-lisboa, tenant: lisboa, token_sha256: {hash_token(lisboa)}}}\n"
        f"  - {{source: iot-agent, token_sha256: {hash_token(default)}}}\n"
    )
    env = {
        **os.environ,
        "ATALAIA_KAFKA": broker,
        "ATALAIA_TOPIC_PREFIX": prefix,
        "ATALAIA_APP_ID": prefix,
        "ATALAIA_DATA_DIR": str(tmp / "data"),
        "ATALAIA_HTTP_PORT": str(free_port()),
        "ATALAIA_PARTITIONS": "3",
        "ATALAIA_INGEST_TOKENS": str(tmp / "tokens.yaml"),
        "ATALAIA_METRICS_TOKEN_SHA256": hash_token(monitor),
        "ATALAIA_MAX_PAYLOAD_BYTES": str(LIMIT),
    }
    w = GuardedWorker(env, ["worker", "--http", "--stages", "ingest"], tmp / "worker.log")
    w.monitor = {"Authorization": f"Bearer {monitor}"}
    w.start(("ingest",))
    w.prefix, w.broker = prefix, broker
    w.tokens = {"porto": porto, "lisboa": lisboa, "default": default}
    yield w
    w.stop()


def notification(marker: str) -> bytes:
    return orjson.dumps(
        {
            "id": f"urn:ngsi-ld:Notification:{marker}",
            "type": "Notification",
            "notifiedAt": "2026-01-28T09:45:02Z",
            "data": [
                {
                    "id": f"urn:ngsi-ld:WaterObserved:{marker}",
                    "type": "WaterObserved",
                    "dateObserved": "2026-01-28T09:45:00Z",
                    "height": 3.1,
                }
            ],
        }
    )


def records(w, topic: str, idle: float = 2.0) -> list:
    return asyncio.run(consume_all(w.broker, f"{w.prefix}.{topic}", idle=idle))


def refused_count(w) -> dict[str, float]:
    text = httpx.get(f"{w.url}/metrics", headers=w.monitor, timeout=5).text
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(
            r'^atalaia_http_auth_refused_total\{endpoint="ingest",reason="(\w+)"\} (\S+)$', text, re.M
        )
    }


def post(w, marker: str, headers: dict[str, str], path: str = "/ngsi-ld/notify") -> httpx.Response:
    return httpx.post(
        f"{w.url}{path}",
        content=notification(marker),
        headers={"Content-Type": "application/json", **headers},
        timeout=10,
    )


def test_unauthenticated_requests_get_401_are_counted_and_reach_nothing(guarded):
    before = refused_count(guarded)
    marker = f"unauth-{uuid.uuid4().hex[:8]}"
    attempts = [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {guarded.tokens['porto']}"},
        {"X-Auth-Token": "x" * 600},
        {"Authorization": f"Bearer {guarded.tokens['porto']}", "X-Auth-Token": guarded.tokens["lisboa"]},
    ]
    for i, headers in enumerate(attempts):
        for path in ("/ngsi-ld/notify", "/v2/notify", "/notify"):
            r = post(guarded, f"{marker}-{i}", headers, path)
            assert r.status_code == 401, (headers, path, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            assert r.headers["www-authenticate"].startswith('Bearer realm="atalaia"')
            # RFC 6750: an error code only when credentials were sent
            assert ('error="invalid_token"' in r.headers["www-authenticate"]) == bool(headers)
            assert r.json()["status"] == 401 and r.json()["detail"]
    after = refused_count(guarded)
    assert sum(after.values()) - sum(before.values()) == len(attempts) * 3
    assert after.get("missing", 0) - before.get("missing", 0) == 3
    # a control: an authenticated post with the same shape does show up on the events topic
    ok = post(guarded, f"{marker}-ok", {"Authorization": f"Bearer {guarded.tokens['default']}"})
    assert ok.status_code == 200, ok.text
    seen_events = b"".join(r.value for r in records(guarded, "events"))
    assert f"{marker}-ok".encode() in seen_events
    assert f"{marker}-0".encode() not in seen_events and f"{marker}-4".encode() not in seen_events
    seen_dlq = b"".join(r.value for r in records(guarded, "dlq", idle=1.0))
    assert marker.encode() not in seen_dlq, "a refused body must not reach the DLQ"


def test_x_auth_token_is_accepted_and_the_source_travels(guarded):
    marker = f"xat-{uuid.uuid4().hex[:8]}"
    r = post(
        guarded, marker, {"X-Auth-Token": guarded.tokens["porto"], "Fiware-Service": "porto"}, "/v2/notify"
    )
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 1
    mine = [rec for rec in records(guarded, "events") if marker.encode() in rec.value]
    assert len(mine) == 1
    headers = {k: v.decode() for k, v in mine[0].headers}
    assert headers["auth-source"] == "orion-porto" and headers["auth-tenant"] == "porto"
    assert headers["fiware-service"] == "porto"


def test_a_token_is_bound_to_its_tenant(guarded):
    before = refused_count(guarded).get("tenant", 0)
    marker = f"tenant-{uuid.uuid4().hex[:8]}"
    porto = guarded.tokens["porto"]
    cases = [
        {"Authorization": f"Bearer {porto}", "NGSILD-Tenant": "lisboa"},
        {"X-Auth-Token": porto, "Fiware-Service": "lisboa"},
        {"Authorization": f"Bearer {porto}", "NGSILD-Tenant": "porto", "Fiware-Service": "lisboa"},
        {"Authorization": f"Bearer {guarded.tokens['default']}", "NGSILD-Tenant": "porto"},
    ]
    for headers in cases:
        r = post(guarded, marker, headers)
        assert r.status_code == 403, (headers, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    # the refusal says how to make the token that platform needs
    assert (
        "atalaia tokens new --source NAME --tenant porto" in r.json()["detail"]
        and "no tenant" in r.json()["detail"]
    )
    assert refused_count(guarded).get("tenant", 0) - before == len(cases)
    allowed = {"Authorization": f"Bearer {porto}", "NGSILD-Tenant": "porto"}
    assert post(guarded, marker + "-ok", allowed).status_code == 200
    mine = [r.value for r in records(guarded, "events") if marker.encode() in r.value]
    assert len(mine) == 1 and f"{marker}-ok".encode() in mine[0], "only the allowed post is on the topic"


def test_health_and_metrics_need_their_token_liveness_does_not(guarded):
    for path in ("/health", "/metrics"):
        r = httpx.get(f"{guarded.url}{path}", timeout=5)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        ingest_token = {"Authorization": f"Bearer {guarded.tokens['porto']}"}
        assert httpx.get(f"{guarded.url}{path}", headers=ingest_token, timeout=5).status_code == 401
        assert httpx.get(f"{guarded.url}{path}", headers=guarded.monitor, timeout=5).status_code == 200
    live = httpx.get(f"{guarded.url}/livez", timeout=5)
    assert live.status_code == 200 and live.json() == {"status": "alive"}
    assert "stages" not in live.text, "the open probe says nothing about the pipeline"


def _listen_addresses(port: int) -> set[str]:
    """Local addresses of the LISTEN sockets on ``port`` (Linux /proc/net/tcp[6])."""
    found = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if int(p, 16) == port and state == "0A":
                if len(addr) == 8:
                    found.add(socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
                else:
                    found.add(addr)
    return found


def test_listens_only_on_the_configured_loopback_address(guarded):
    if os.path.exists("/proc/net/tcp"):
        assert _listen_addresses(guarded.port) == {"127.0.0.1"}
    addr = non_loopback_address()
    if addr is None:
        if not os.path.exists("/proc/net/tcp"):
            pytest.skip("no non-loopback address and no /proc/net/tcp to inspect")
        return
    with socket.socket() as s:
        s.settimeout(2)
        assert s.connect_ex((addr, guarded.port)) != 0, f"port reachable on {addr}"


def test_an_oversize_body_is_counted_and_hashed_whole(guarded):
    marker = f"big-{uuid.uuid4().hex[:8]}"
    body = b'{"marker": "' + marker.encode() + b'", "pad": "' + os.urandom(1_500_000).hex().encode() + b'"}'
    r = httpx.post(
        f"{guarded.url}/notify",
        content=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {guarded.tokens['default']}"},
        timeout=30,
    )
    assert r.status_code == 413, r.text
    assert str(len(body)) in r.json()["detail"]
    recs = [
        rec
        for rec in (read_dlq_record(x.value) for x in records(guarded, "dlq"))
        if marker in rec["body_preview"]
    ]
    assert len(recs) == 1
    rec = recs[0]
    assert rec["size"] == len(body) > 3_000_000  # far past what was kept (LIMIT + 1 bytes)
    assert rec["sha256"] == hashlib.sha256(body).hexdigest()
    assert rec["body_truncated"] is True and body.startswith(rec["body"])
    assert len(rec["body"]) <= LIMIT + 1
