"""Issue 10 fault suite: hypothesis fuzzing of every HTTP body and query against one running worker
(ingest with tokens, the incident manager, the projection, the console API with operator tokens).

* Ingest (``/ngsi-ld/notify``, ``/v2/notify``, ``/notify``): random bytes, random JSON, mutated
  real notifications, oversize bodies, wrong content types. Never a 5xx and never over 2 s; a
  refusal is a 4xx ``application/problem+json`` with a title and a detail, and every refused body
  (and every refused entity of an accepted notification) is on ``atalaia.dlq`` with the SHA-256 of
  the whole body; a 401/403 leaves nothing there.
* Console API: every operation of ``/openapi.json`` (so endpoints added later are fuzzed too):
  random query values, path parameters, and for bodies random JSON objects shaped like the
  schema, garbage bytes and other content types. Never a 5xx; every 4xx is problem+json.

Module figures (requests, statuses, slowest answer) are printed as ``FAULT-FIGURES`` lines.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import os
import re
import time
import uuid
from collections import Counter
from urllib.parse import quote

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atalaia.streams.ingest import read_dlq_record
from atalaia.streams.ingest.auth import hash_token, new_token
from tests.conftest import WorkerProcess, consume_all, free_port
from tests.faults import figures
from tests.test_console_api import alarm
from tests.test_incidents_live import produce
from tests.test_ingest_properties import DOCS, _paths, entities, json_values

pytestmark = pytest.mark.broker

LIMIT = 20_000  # ATALAIA_MAX_PAYLOAD_BYTES for this worker
STAGES = ("ingest", "incidents", "projection", "warnings")  # every console operation has its stage
EXAMPLES = int(os.environ.get("ATALAIA_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
PROBLEM = "application/problem+json"
INGEST = ("/ngsi-ld/notify", "/v2/notify", "/notify")
CONTENT_TYPES = (
    "application/json",
    "application/ld+json",
    "application/geo+json",
    "application/json; charset=utf-8",
    "text/plain",
    "application/xml",
    "multipart/form-data; boundary=x",
    "",
    "application/json; charset=latin-1",
)


@pytest.fixture(scope="module")
def fz(broker, tmp_path_factory):
    from atalaia.streams.broker import ensure_topics

    prefix = f"t{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_topics(broker, prefix, partitions=3))
    tmp = tmp_path_factory.mktemp("fuzz")
    ingest, operator = new_token(), new_token()
    (tmp / "tokens.yaml").write_text(f"tokens:\n  - {{source: fuzz, token_sha256: {hash_token(ingest)}}}\n")
    (tmp / "users.yaml").write_text(
        f"users:\n  - {{actor: ana, role: operator, token_sha256: {hash_token(operator)}}}\n"
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
        "ATALAIA_CONSOLE_USERS": str(tmp / "users.yaml"),
        "ATALAIA_MAX_PAYLOAD_BYTES": str(LIMIT),
        "ATALAIA_HTTP_BODY_TIMEOUT_S": "1",
    }
    w = WorkerProcess(env, ["worker", "--http", "--stages", ",".join(STAGES)], tmp / "worker.log")
    w.start(STAGES)
    w.prefix, w.broker = prefix, broker
    w.ingest = {"Authorization": f"Bearer {ingest}"}
    w.operator = {"Authorization": f"Bearer {operator}"}
    w.client = httpx.Client(base_url=w.url, timeout=15)
    # one real incident, so that commands reach the manager's state machine (not only 404)
    asyncio.run(produce(broker, f"{prefix}.alarms", [alarm(1)]))
    deadline = time.monotonic() + 30
    w.incidents = []
    while not w.incidents and time.monotonic() < deadline:
        rows = w.client.get("/api/incidents", headers=w.operator).json()["incidents"]
        w.incidents = [r["id"] for r in rows]
        time.sleep(0.3)
    assert w.incidents, w.log.read_text()[-3000:]
    yield w
    w.client.close()
    w.stop()
    # no handler crashed; aiohttp itself logs (at ERROR, with a traceback) what its parser refuses
    # (a Content-Encoding it cannot decode, a control character in a header): only those allowed
    records = re.split(r"\n(?=\[\d{4}-)", w.log.read_text())
    parser = ("ContentEncodingError", "BadHttpMessage")  # aiohttp's own refusals, before any handler
    crashes = [r for r in records if "Traceback" in r and not any(p in r for p in parser)]
    assert not crashes, crashes[0][:4000]


def check_problem(r: httpx.Response) -> dict:
    assert r.headers.get("content-type", "").startswith("application/problem+json"), (r.status_code, r.text)
    doc = r.json()
    assert doc["status"] == r.status_code and doc.get("title") and doc.get("detail"), doc
    return doc


def unparsed(r: httpx.Response) -> bool:
    """A request aiohttp's parser refused before any handler ran (a bad header value, a body
    whose encoding the parser cannot decode): a 400 problem+json with the security headers
    (streams.connections.answer_malformed_requests), nothing on the DLQ."""
    if r.status_code != 400 or not r.headers.get("content-type", "").startswith(PROBLEM):
        return False
    if not r.json()["detail"].startswith("the request could not be parsed"):
        return False
    assert r.headers.get("x-content-type-options") == "nosniff", r.headers
    return True


# --- ingest ------------------------------------------------------------------------------


@st.composite
def mutated_doc(draw) -> bytes:
    doc = copy.deepcopy(draw(st.sampled_from(DOCS)))
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        op = draw(st.sampled_from(["delete", "replace", "stringify"]))
        if op == "delete":
            del parent[path[-1]]
        elif op == "replace":
            parent[path[-1]] = draw(json_values)
        else:
            parent[path[-1]] = str(parent[path[-1]])
    return orjson.dumps(doc)


def _envelope(data: list, kind: str) -> bytes:
    if kind == "ld":
        return orjson.dumps(
            {"id": "urn:n:1", "type": "Notification", "notifiedAt": "2026-12-01T09:45:02Z", "data": data}
        )
    if kind == "v2":
        return orjson.dumps({"subscriptionId": "s", "data": data})
    return orjson.dumps(data)


bodies = st.one_of(
    st.binary(max_size=512),
    json_values.map(orjson.dumps),
    st.builds(_envelope, st.lists(entities, max_size=4), st.sampled_from(["ld", "v2", "bare"])),
    *([mutated_doc()] if DOCS else []),
    st.builds(lambda n, c: c * n, st.integers(LIMIT // 4, LIMIT), st.sampled_from([b"{", b"[1,", b" "])),
    st.builds(lambda d: b"[" * d + b"]" * d, st.integers(1, 5000)),  # deep nesting
    st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")),
)
extra_headers = st.one_of(
    st.just({}),
    st.fixed_dictionaries(
        {},
        optional={
            "Link": st.sampled_from(
                [
                    '<https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld>; rel="http://www.w3.org/ns/json-ld#context"',
                    "<>; rel=x",
                    "garbage",
                ]
            ),
            "Fiware-ServicePath": st.sampled_from(["/", "/porto", "//", "/a/b"]),
            "Content-Encoding": st.sampled_from(["gzip", "identity", "deflate", "br"]),
        },
    ),
)


def test_fuzzed_ingest_bodies_get_an_answer_and_refusals_a_dlq_record(fz) -> None:
    must_be_on_dlq: set[str] = set()
    statuses: Counter = Counter()
    slowest, slowest_req = 0.0, []

    @FUZZ
    @given(
        body=bodies, path=st.sampled_from(INGEST), ctype=st.sampled_from(CONTENT_TYPES), extra=extra_headers
    )
    def post(body: bytes, path: str, ctype: str, extra: dict) -> None:
        nonlocal slowest
        headers = {**fz.ingest, **extra}
        if "Content-Encoding" in extra:  # aiohttp drains an undecodable body: no reuse after it
            headers["Connection"] = "close"
        if ctype:
            headers["Content-Type"] = ctype
        t0 = time.monotonic()
        try:
            try:
                r = fz.client.post(path, content=body, headers=headers)
            except (httpx.ReadError, httpx.RemoteProtocolError):  # a kept-alive connection the
                r = fz.client.post(path, content=body, headers=headers)  # server closed: retry once
        except httpx.TransportError as e:
            raise AssertionError(f"no answer ({e!r}) to {len(body)} bytes {body[:80]!r} with {extra}") from e
        took = time.monotonic() - t0
        if extra.get("Content-Encoding", "identity") != "identity":
            # a compressed stream that never ends: refused (408) at the body timeout, but aiohttp
            # lingers up to 10 s draining it before the connection ends
            statuses["slowest encoded (s)"] = max(statuses["slowest encoded (s)"], round(took, 1))
            assert took < 15, (took, extra)
        elif took > slowest:
            slowest, slowest_req[:] = took, [len(body), body[:60], extra, r.status_code]
        statuses[r.status_code] += 1
        assert r.status_code in (200, 400, 408, 413, 415), (r.status_code, r.text[:500])
        if extra.get("Content-Encoding", "identity") != "identity" and unparsed(r):
            # refused by aiohttp's parser before any handler runs (nothing reaches the DLQ)
            statuses["400 by aiohttp's parser (Content-Encoding)"] += 1
            return
        sha = hashlib.sha256(body).hexdigest()
        if extra.get("Content-Encoding", "identity") != "identity":
            sha = hashlib.sha256(b"").hexdigest()  # the server decodes first: the DLQ keeps no bytes
        if r.status_code == 200:
            doc = r.json()
            assert isinstance(doc["accepted"], int) and isinstance(doc["rejected"], list)
            if doc["rejected"]:
                must_be_on_dlq.add(sha)
        else:
            check_problem(r)
            must_be_on_dlq.add(sha)

    post()
    assert slowest < 2.0, f"an ingest answer took {slowest:.2f} s: {slowest_req}"

    # the refused requests never reach the pipeline: fuzzed tokens are all refused, and nothing of
    # them is kept (their bodies carry a marker the DLQ must not contain)
    unauthorized: Counter = Counter()

    @settings(max_examples=max(20, EXAMPLES // 5), deadline=None)
    @given(
        auth=st.one_of(
            st.just({}),
            st.text(max_size=60).map(lambda s: {"Authorization": s}),
            st.text(max_size=60).map(lambda s: {"X-Auth-Token": s}),
            st.text(alphabet="abcdef0123456789", max_size=64).map(lambda s: {"Authorization": f"Bearer {s}"}),
        ),
        path=st.sampled_from(INGEST),
    )
    def unauth(auth: dict, path: str) -> None:
        try:
            headers = {k: v.encode("latin-1", "replace").decode("latin-1") for k, v in auth.items()}
            r = fz.client.post(path, content=b'{"unauthorized-marker": 1}', headers=headers)
        except (httpx.LocalProtocolError, UnicodeEncodeError):
            return  # not sendable as an HTTP header at all
        unauthorized[r.status_code] += 1
        if unparsed(r):
            return  # refused by aiohttp's parser: no handler ran
        assert r.status_code == 401, (r.status_code, r.text)
        check_problem(r)

    unauth()

    records = asyncio.run(consume_all(fz.broker, f"{fz.prefix}.dlq", idle=3.0, timeout=90))
    on_dlq = {}
    for rec in records:
        d = read_dlq_record(rec.value)
        on_dlq[d["sha256"]] = d
        assert d["reasons"] and all(isinstance(x, str) and x for x in d["reasons"]), d
        if not d.get("body_truncated"):
            assert hashlib.sha256(d["body"]).hexdigest() == d["sha256"] and len(d["body"]) == d["size"]
    missing = must_be_on_dlq - set(on_dlq)
    assert not missing, f"{len(missing)} refused bodies are not on the DLQ"
    assert not any(b"unauthorized-marker" in d["body"] for d in on_dlq.values())
    figures(
        "fuzz-ingest",
        requests=sum(v for k, v in statuses.items() if isinstance(k, int)),
        statuses={str(k): v for k, v in sorted(statuses.items(), key=str)},
        unauthenticated={str(k): v for k, v in unauthorized.items()},
        on_dlq=len(must_be_on_dlq),
        slowest_s=round(slowest, 3),
    )


# --- console API -------------------------------------------------------------------------

query_values = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "",
            "all",
            "open",
            "unacknowledged",
            "high",
            "critical",
            "-1",
            "0",
            "1",
            "99999999999999999999",
            "1e308",
            "nan",
            "2026-01-28T10:00:00Z",
            "2026-13-45T99:99:99Z",
            "parish=Bonfim",
            "=",
            "parish=",
            "%00",
            "a,b,c",
            "opened",
            "-severity",
        ]
    ),
)
path_values = st.one_of(
    st.text(min_size=1, max_size=40),
    st.sampled_from(["..", "%2e%2e", "a/b", "\x00", "' OR 1=1 --", "<script>"]),
)


def _operations(doc: dict) -> list[tuple[str, str, dict]]:
    return [
        (path, method.upper(), op)
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
        if method in ("get", "post", "put", "patch", "delete") and path != "/api/stream"
    ]


def _schema_body(op: dict, components: dict) -> st.SearchStrategy:
    """Random objects over the documented property names (and a few more), random values."""
    content = (op.get("requestBody") or {}).get("content", {})
    schema = next(iter(content.values()), {}).get("schema", {})
    while "$ref" in schema:
        schema = components.get(schema["$ref"].rsplit("/", 1)[1], {})
    names = sorted(schema.get("properties", {})) or ["action"]
    enum_values = [v for p in schema.get("properties", {}).values() for v in p.get("enum", [])]
    value = st.one_of(
        json_values, st.sampled_from(enum_values or ["x"]), st.sampled_from(["1h", "30m", "-5m", "0s"])
    )
    return st.dictionaries(st.sampled_from([*names, "extra", ""]), value, max_size=len(names) + 2)


def test_fuzzed_console_api_never_5xx_and_refuses_with_problem_json(fz) -> None:
    doc = fz.client.get("/openapi.json").json()
    components = doc.get("components", {}).get("schemas", {})
    ops = _operations(doc)
    assert ops, "the OpenAPI document lists operations"
    statuses: Counter = Counter()
    slowest: dict[str, float] = {}

    @st.composite
    def request(draw):
        path, method, op = draw(st.sampled_from(ops))
        url = path
        params = {}
        for p in op.get("parameters", []):
            if p["in"] == "path":
                v = draw(st.one_of(st.sampled_from(fz.incidents), path_values))
                url = url.replace("{" + p["name"] + "}", quote(v, safe=""))
            elif p["in"] == "query" and draw(st.booleans()):
                params[p["name"]] = draw(query_values)
        headers = dict(fz.operator) if draw(st.integers(0, 9)) else {}
        body = None
        if method in ("POST", "PUT", "PATCH"):
            kind = draw(st.sampled_from(["schema", "schema", "json", "bytes", "big"]))
            if kind == "schema":
                body = orjson.dumps(draw(_schema_body(op, components)))
            elif kind == "json":
                body = orjson.dumps(draw(json_values))
            elif kind == "big":
                body = b'{"reason": "' + b"x" * 70_000 + b'"}'
            else:
                body = draw(st.binary(max_size=300))
            headers["Content-Type"] = draw(st.sampled_from(["application/json", *CONTENT_TYPES]))
            if draw(st.integers(0, 9)) == 0:
                headers["Content-Encoding"] = draw(st.sampled_from(["gzip", "deflate", "br", "x-unknown"]))
                headers["Connection"] = "close"
        return method, url, params, headers, body, path

    @FUZZ
    @given(req=request())
    def call(req) -> None:
        method, url, params, headers, body, path = req
        t0 = time.monotonic()
        try:
            r = fz.client.request(method, url, params=params, headers=headers, content=body)
        except (httpx.ReadError, httpx.RemoteProtocolError):  # a kept-alive connection the server
            r = fz.client.request(method, url, params=params, headers=headers, content=body)  # closed
        took = time.monotonic() - t0
        slowest[path] = max(slowest.get(path, 0.0), took)
        statuses[(method, path, r.status_code)] += 1
        assert r.status_code < 500, (method, url, params, body and body[:200], r.status_code, r.text[:500])
        plain = not r.headers.get("content-type", "").startswith(PROBLEM)
        if r.status_code in (404, 405) and plain:  # no route at all (e.g. an encoded "/" in an id)
            assert r.text.startswith(f"{r.status_code}: "), r.text
            statuses[(method, path, f"{r.status_code} unrouted (aiohttp)")] += 1
        elif headers.get("Content-Encoding") and plain and r.status_code >= 400:
            assert r.status_code == 400  # refused by aiohttp's parser, before any handler
        elif r.status_code >= 400:
            check_problem(r)
        # a command waits at most 5 s for the manager's answer (then 202); everything else is quick
        assert took < (6.0 if path.endswith("/commands") else 2.0), (method, url, took)

    call()
    figures(
        "fuzz-console-api",
        requests=sum(statuses.values()),
        statuses={f"{m} {p} {s}": n for (m, p, s), n in sorted(statuses.items(), key=str)},
        slowest_s={p: round(t, 3) for p, t in sorted(slowest.items())},
    )
    print(json.dumps({"operations": len(ops)}))
