"""The Faust application: topics, the HTTP ingest endpoint, health/metrics pages, and the batched
pipeline stages run as Faust services (see ``streams.stage``).

``create_app(settings, bootstrap)`` builds a fresh app (the embedded broker's port is known only
at start-up); ``atalaia worker`` / ``atalaia up`` run it with ``faust.Worker``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from datetime import UTC, datetime
from typing import Any

import faust
import orjson
from aiohttp.web_protocol import RequestPayloadError
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from mode import Service
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

from atalaia.streams.events import RawEvent, body_key
from atalaia.streams.httpauth import REFUSED, IngestAuth, MetricsAuth, Refusal
from atalaia.streams.kafka_config import broker_kind, client_options, producer_options
from atalaia.streams.observation import partition_key
from atalaia.streams.pipeline import DLQ_MAX_BODY
from atalaia.streams.settings import Settings
from atalaia.streams.stage import BatchStage

log = logging.getLogger(__name__)

HTTP_REQUESTS = Counter("atalaia_ingest_http_requests_total", "HTTP notifications by outcome", ["outcome"])

DLQ_RECORDS = Counter("atalaia_dlq_records_total", "records on the dead-letter topic", ["source", "reason"])

PROBLEM = "application/problem+json"
# what FIWARE brokers and sensor gateways send (a request without Content-Type is read as JSON)
JSON_TYPES = ("application/json", "application/ld+json", "application/geo+json", "text/json")


def _reason_kind(reason: str) -> str:
    """A low-cardinality label for a DLQ reason (the text before the first colon, shortened)."""
    return reason.split(":")[0][:60]


def faust_settings(settings: Settings, bootstrap: str, http: bool = True) -> dict[str, Any]:
    """Faust settings that work on the embedded broker (Tansu) and on Apache Kafka. Faust's web
    server serves the HTTP port (``http``), else only ``/metrics`` ``/health`` ``/livez`` on
    ``ATALAIA_METRICS_PORT``, else nothing (a worker without either binds no port)."""
    from atalaia.streams.kafka_config import configure, faust_credentials, known_kind, producer_options

    configure(settings, bootstrap)
    acks = producer_options(known_kind(bootstrap))["acks"]  # the kind: learnt by ensure_topics
    web_port = settings.http_port if http else settings.metrics_port
    return {
        "broker": f"kafka://{bootstrap}",
        **faust_credentials(bootstrap),  # TLS / SASL of ATALAIA_KAFKA_SECURITY_PROTOCOL
        "processing_guarantee": "at_least_once",  # Tansu has no transactional producer
        "broker_session_timeout": settings.session_timeout_s,
        "broker_heartbeat_interval": settings.heartbeat_s,
        "broker_request_timeout": 40.0,
        "broker_commit_interval": 1.0,
        "store": "memory://",  # our state is checkpointed by the stages (no RocksDB on Tansu)
        "topic_partitions": settings.partitions,
        "topic_allow_declare": False,  # topics are created by streams.broker.ensure_topics
        "topic_disable_leader": True,
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1 if acks == "all" else acks,
        "web_host": settings.http_host,
        "web_bind": settings.http_host,  # listen only where told (Faust's default is 0.0.0.0)
        "web_enabled": bool(web_port),
        "web_port": web_port or settings.http_port,
        "web_in_thread": False,
        "datadir": str(settings.data_dir / "faust"),
        "logging_config": None,
    }


class IngestProducer(Service):
    """The producer shared by the HTTP endpoint and the MQTT bridge."""

    def __init__(self, bootstrap: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.bootstrap = bootstrap
        self.producer: AIOKafkaProducer | None = None

    async def on_start(self) -> None:
        self.producer = AIOKafkaProducer(
            **client_options(self.bootstrap),
            **producer_options(await broker_kind(self.bootstrap)),  # acks=all + idempotence on Kafka
            linger_ms=2,
            max_request_size=8 << 20,
        )
        await self.producer.start()

    async def on_stop(self) -> None:
        if self.producer:
            await self.producer.stop()

    async def publish(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        await self.producer.send_and_wait(topic, value, key=key, headers=headers)


async def read_body(request: Any, limit: int) -> tuple[bytes, int, str | None]:
    """(the first ``limit + 1`` bytes of the body, its whole size, and — when it is longer than that
    — the SHA-256 of all of it). The rest of an oversize body is streamed to count and hash it,
    never kept, so the DLQ record describes the whole body in bounded memory."""
    body = bytearray()
    digest: Any = None
    size = 0
    async for chunk in request.content.iter_chunked(1 << 16):
        size += len(chunk)
        if digest is not None:
            digest.update(chunk)
            continue
        room = limit + 1 - len(body)
        body += chunk[:room]
        if len(chunk) > room:
            digest = hashlib.sha256(body)
            digest.update(chunk[room:])
    return bytes(body), size, digest.hexdigest() if digest is not None else None


def now() -> datetime:
    return datetime.now(UTC)


def problem(status: int, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}


def missing_delivery_settings(settings: Settings) -> list[str]:
    """Environment variables the escalation targets use but that are not set."""
    import os
    import re

    lines = settings.escalation_path.read_text(encoding="utf-8").splitlines()
    text = "\n".join(line.split(" #")[0] for line in lines if not line.lstrip().startswith("#"))
    return sorted({v for v in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text) if v not in os.environ})


def create_app(
    settings: Settings,
    bootstrap: str,
    *,
    stages: tuple[str, ...] = ("ingest",),
    http: bool | str = True,
) -> faust.App:
    """``http``: False (no pages), True/``"all"`` (ingest endpoints, console, CAP, health),
    ``"ingest"`` (the alarms process of ``atalaia up``: ingest endpoints and health here, every
    other path forwarded to ``settings.console_upstream``) or ``"console"`` (no ingest
    endpoints)."""
    from atalaia.streams.ingest import IngestOptions, parse_payload, to_dlq_record

    options = IngestOptions.from_settings(settings)

    # without pages, only the metrics port if set, else no web server (the children of
    # `worker --processes` each get their own metrics port: streams.commands._run_processes)
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # Faust's datadir is made in it
    app = faust.App(settings.app_id, **faust_settings(settings, bootstrap, bool(http)))
    app.atalaia_settings = settings
    t = settings.topic
    events = app.topic(t("events"), value_serializer="raw", key_serializer="raw")
    app.topic(t("observations"), value_serializer="raw")
    dlq = app.topic(t("dlq"), value_serializer="raw")

    # Low-volume side streams are plain Faust agents (the hot path is batched, see streams.stage).
    @app.agent(dlq)
    async def count_dead_letters(stream: Any) -> None:
        """Count what lands in the DLQ, by source and first reason (visible on /metrics)."""
        async for raw in stream:
            try:
                rec = orjson.loads(raw)
                codes = [r.get("code") for r in rec.get("rejections") or [] if isinstance(r, dict)]
                kind = codes[0] if codes and codes[0] else _reason_kind((rec.get("reasons") or ["?"])[0])
                DLQ_RECORDS.labels(str(rec.get("source", "?")).split(":")[0], str(kind)).inc()
            except Exception:
                DLQ_RECORDS.labels("?", "undecodable").inc()

    state_dir = settings.data_dir / "state"
    common = {
        "bootstrap": bootstrap,
        "prefix": settings.topic_prefix,
        "state_dir": state_dir,
        "state_store": settings.state_store,  # file | kafka | auto: the broker kind's default
        "fetch_wait_ms": settings.fetch_wait_ms,
        "session_timeout_s": settings.session_timeout_s,
        "heartbeat_s": settings.heartbeat_s,
    }
    app.atalaia_stages = {}
    app.atalaia_aliases = {}  # user stage name -> the fused stage that runs it (for /health)
    from atalaia.streams.topology import plan

    for spec in plan(stages, fuse=settings.fuse_ingest_rules):
        make_core = spec.cores(settings, app)
        if make_core is None:  # cannot run here (e.g. delivery without its targets' settings)
            continue
        app.atalaia_stages[spec.name] = app.service(
            BatchStage(
                name=spec.name,
                source=spec.sources,
                group=f"{settings.app_id}.{spec.name}",
                tick_s=spec.tick_s,
                make_core=make_core,
                **common,
            )
        )
        if spec.fused:
            app.atalaia_aliases.update(dict.fromkeys(spec.needs, spec.name))
            # /metrics: the events it reads count as ingest's records, the observations as rules'
            app.atalaia_stages[spec.name].topic_stages = {t("events"): "ingest", t("observations"): "rules"}

    from atalaia.streams.guard import BrokerGuard

    app.atalaia_guard = app.service(BrokerGuard(bootstrap, settings, app.atalaia_stages))
    role = "all" if http is True else (http or "")
    from atalaia.streams.metrics import health_report, watch_stages

    watch_stages(app.atalaia_stages)  # consumer lag and stage state on /metrics
    metrics_auth = MetricsAuth(settings.metrics_token_sha256)

    def refuse(view: Any, endpoint: str, refusal: Refusal) -> Any:
        """401/403 problem+json; counted, and nothing of the request goes anywhere."""
        REFUSED.labels(endpoint, refusal.reason).inc()
        title = "Unauthorized" if refusal.status == 401 else "Forbidden"
        error = "insufficient_scope" if refusal.status == 403 else "invalid_token"
        return view.json(
            problem(refusal.status, title, refusal.detail),
            status=refusal.status,
            content_type=PROBLEM,
            headers={"WWW-Authenticate": f'Bearer realm="atalaia", error="{error}"'},
        )

    @app.page("/livez")
    class Livez(faust.web.View):
        """Liveness only (always open): the process serves HTTP. Says nothing about the pipeline."""

        async def get(self, request: Any) -> Any:
            return self.json({"status": "alive"})

    @app.page("/health")
    class Health(faust.web.View):
        async def get(self, request: Any) -> Any:
            refusal = metrics_auth.check(request.headers)
            if refusal:
                return refuse(self, "health", refusal)
            body, status = health_report(app.atalaia_stages)
            stages = body["stages"]
            for name, fused in app.atalaia_aliases.items():  # ingest runs fused with rules: each
                # reports what it read (ingest the events, rules the observations)
                s = app.atalaia_stages[fused]
                topic = t("events") if name == "ingest" else t("observations")
                stages[name] = {
                    **stages.get(name, stages[fused]),
                    "processed": s.processed_by_topic.get(topic, 0),
                }
                stages[name]["fused"] = "ingest+rules"
            if settings.peers and request.query.get("local") is None:  # atalaia up's other processes
                from atalaia.streams.front import peer_health

                problems = body.get("problems", [])
                state, problems, stages = await peer_health(
                    settings.peers, request.headers, body["status"], problems, stages
                )
                body = {"status": state, **({"problems": problems} if problems else {}), "stages": stages}
                status = 200 if state == "ok" else 503
            return self.json(body, status=status)

    @app.page("/metrics")
    class Metrics(faust.web.View):
        async def get(self, request: Any) -> Any:
            refusal = metrics_auth.check(request.headers)
            if refusal:
                return refuse(self, "metrics", refusal)
            body = generate_latest()
            if settings.peers and request.query.get("local") is None:  # atalaia up's other processes
                from atalaia.streams.front import peer_metrics

                body = await peer_metrics(settings.peers, request.headers, settings.process_name, body)
            return self.bytes(body, content_type=CONTENT_TYPE_LATEST.split(";")[0])

    if not role:
        if not settings.metrics_port and app.atalaia_stages:
            log.warning("this worker serves no /metrics: set ATALAIA_METRICS_PORT (or run it with --http)")
        return app
    ingest_producer = app.service(IngestProducer(bootstrap))
    app.atalaia_producer = ingest_producer

    ingest_auth = IngestAuth.from_file(settings.ingest_tokens)
    if not ingest_auth.enabled:
        log.warning("ingest endpoints are open to anyone: set ATALAIA_INGEST_TOKENS (atalaia tokens new)")

    async def accept(request: Any, view: Any, source: str) -> Any:
        caller = ingest_auth.check(request.headers)
        if isinstance(caller, Refusal):  # before reading the body: it never reaches the DLQ
            HTTP_REQUESTS.labels("unauthorized").inc()
            return refuse(view, "ingest", caller)
        try:
            async with asyncio.timeout(settings.http_body_timeout_s):
                body, size, whole_sha256 = await read_body(request, settings.max_payload_bytes)
        except TimeoutError:  # a slow sender, or a Content-Encoding stream that never ends
            detail = f"the body was not received within {settings.http_body_timeout_s:g} s"
            await ingest_producer.publish(
                t("dlq"),
                to_dlq_record(
                    b"",
                    source,
                    detail,
                    content_type=request.headers.get("Content-Type"),
                    received_at=now(),
                    headers={"content-encoding": request.headers.get("Content-Encoding", "")},
                ),
            )
            HTTP_REQUESTS.labels("rejected").inc()
            return view.json(problem(408, "Request timeout", detail), status=408, content_type=PROBLEM)
        except RequestPayloadError as e:  # e.g. Content-Encoding: gzip over bytes that are not gzip
            encoding = request.headers.get("Content-Encoding", "")
            detail = f"the body cannot be read: {' '.join(str(e).split())} (Content-Encoding: {encoding!r})"
            await ingest_producer.publish(
                t("dlq"),
                to_dlq_record(  # the server decodes before the handler: the encoded bytes are gone
                    b"",
                    source,
                    detail,
                    content_type=request.headers.get("Content-Type"),
                    received_at=now(),
                    headers={"content-encoding": encoding},
                ),
            )
            HTTP_REQUESTS.labels("rejected").inc()
            return view.json(problem(400, "Unreadable body", detail), status=400, content_type=PROBLEM)
        ev = RawEvent.from_http(body, request.headers, source)
        if ingest_auth.enabled:
            ev.extra = {**(ev.extra or {}), "auth-source": caller.source}
            if caller.tenant is not None:
                ev.extra["auth-tenant"] = caller.tenant
        ctype = (ev.content_type or "").split(";")[0].strip().lower()
        if ctype and ctype not in JSON_TYPES:
            detail = f"Content-Type {ctype!r} is not JSON; send one of {', '.join(JSON_TYPES)}"
            await ingest_producer.publish(
                t("dlq"),
                to_dlq_record(
                    body,
                    source,
                    detail,
                    content_type=ev.content_type,
                    received_at=now(),
                    max_body_bytes=DLQ_MAX_BODY,
                    size=size,
                    sha256=whole_sha256,
                ),
            )
            HTTP_REQUESTS.labels("unsupported-media-type").inc()
            return view.json(problem(415, "Unsupported media type", detail), status=415, content_type=PROBLEM)
        if size > settings.max_payload_bytes:
            await ingest_producer.publish(
                t("dlq"),
                to_dlq_record(
                    body,
                    source,
                    f"payload of {size} bytes exceeds the limit of {settings.max_payload_bytes} bytes",
                    content_type=ev.content_type,
                    received_at=now(),
                    max_body_bytes=DLQ_MAX_BODY,
                    size=size,
                    sha256=whole_sha256,
                ),
            )
            HTTP_REQUESTS.labels("too-large").inc()
            return view.json(
                problem(413, "Payload too large", f"{size} bytes > {settings.max_payload_bytes}"),
                status=413,
                content_type=PROBLEM,
            )
        res = parse_payload(
            body,
            content_type=ev.content_type,
            link=ev.link,
            headers=ev.extra,
            source=source,
            received_at=now(),
            options=options,
        )
        if not res.ok:
            reason = "; ".join(str(r) for r in res.rejections) or "payload rejected"
            await ingest_producer.publish(
                t("dlq"),
                to_dlq_record(
                    body,
                    source,
                    [str(r) for r in res.rejections],
                    rejections=res.rejections,
                    content_type=ev.content_type,
                    received_at=now(),
                    max_body_bytes=DLQ_MAX_BODY,
                ),
            )
            HTTP_REQUESTS.labels("rejected").inc()
            return view.json(problem(400, "Bad notification", reason), status=400, content_type=PROBLEM)
        key = partition_key(res.observations[0].__dict__) if res.observations else body_key(body)
        await ingest_producer.publish(events.get_topic_name(), body, key=key, headers=ev.headers())
        HTTP_REQUESTS.labels("accepted").inc()
        return view.json(
            {
                "accepted": len(res.observations),
                "rejected": [str(r) for r in res.rejections],
                "warnings": res.warnings,
            },
            status=200,
        )

    ingest_paths = (("/ngsi-ld/notify", "ngsi-ld"), ("/v2/notify", "ngsi-v2"), ("/notify", "http"))
    for path, source in ingest_paths if role in ("all", "ingest") else ():

        @app.page(path)
        class Notify(faust.web.View):
            _source = source

            async def post(self, request: Any) -> Any:
                try:
                    return await accept(request, self, self._source)
                except (KafkaError, TimeoutError) as e:  # the broker did not take it: say so, 503
                    HTTP_REQUESTS.labels("broker-unavailable").inc()
                    log.warning("ingest: the broker did not accept an event: %s", type(e).__name__)
                    return self.json(
                        problem(
                            503,
                            "Broker unavailable",
                            f"the event was not stored ({type(e).__name__}); send it again later",
                        ),
                        status=503,
                        content_type=PROBLEM,
                        headers={"Retry-After": "10"},
                    )

    if role in ("all", "console"):
        from atalaia.console.api import install as install_console

        install_console(app, settings, ingest_producer.publish, bootstrap)

    if "warnings" in app.atalaia_stages and role in ("all", "console"):
        from atalaia.warnings.http import install as install_cap_pages

        install_cap_pages(app, app.atalaia_stages["warnings"], app.atalaia_warnings_config)

    if role == "ingest" and settings.console_upstream:  # up: the console lives in the ops process
        from atalaia.streams.front import install_forwarding

        install_forwarding(app, settings.console_upstream)
    if settings.mqtt_url and role in ("all", "ingest"):
        from atalaia.streams.mqtt import MqttBridge, MqttSecurity

        mqtt_security = MqttSecurity.from_settings(settings)  # a bad file or setting: refused at start
        app.service(MqttBridge(settings.mqtt_url, ingest_producer, t("events"), security=mqtt_security))
    return app


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)
