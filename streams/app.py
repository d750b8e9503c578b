"""The Faust application: topics, health/metrics pages, the batched pipeline stages of the
topology (``streams.topology``) run as Faust services (see ``streams.stage``), and the HTTP routes
of the packages (ingest endpoints: ``streams.ingest.http``; console; CAP pages).

``create_app(settings, bootstrap)`` builds a fresh app (the embedded broker's port is known only
at start-up); ``atalaia worker`` / ``atalaia up`` run it with ``faust.Worker``.
"""

from __future__ import annotations

import logging
from typing import Any

import faust
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, Counter

from atalaia.console.problem import PROBLEM, problem
from atalaia.streams.ingest.auth import REFUSED, MetricsAuth, Refusal
from atalaia.streams.ingest.dlq import dlq_labels
from atalaia.streams.ingest.http import IngestProducer
from atalaia.streams.ingest.http import install as install_ingest
from atalaia.streams.settings import Settings
from atalaia.streams.stage import BatchStage

log = logging.getLogger(__name__)

DLQ_RECORDS = Counter("atalaia_dlq_records_total", "records on the dead-letter topic", ["source", "reason"])


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


class App(faust.App):
    """Faust's app, with Atalaia's services (the pipeline stages among them) started *before*
    Faust's own, not after.

    Faust starts services registered with ``app.service`` only once its consumer has joined its
    group (the DLQ counter's) and its tables recovered, and each stage then joined its own group:
    two group joins one after the other (on the embedded broker each takes half the session
    timeout: 10 s of a worker's start went to joins by default). Meanwhile Faust's web server was
    already answering, so a request could reach the ingest endpoint before its producer had
    started (a 500). Atalaia's services use their own Kafka clients and nothing of Faust's, so
    here they start first, in the order they were registered (a stage after what its core
    registered, e.g. the delivery stage after its notifier); then Faust's web server, so a page
    answers only once what it uses is up; then Faust's consumer, whose join overlaps the stages'.
    They stop first (see ``_stop_children``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.own_services: list[Any] = []
        super().__init__(*args, **kwargs)

    def on_init_dependencies(self) -> Any:
        return [*self.own_services, *super().on_init_dependencies()]

    async def _stop_children(self) -> None:
        """Atalaia's services stop first (in reverse order), then Faust's: as before this order
        of start, so the console's feeds end their event streams before the web server waits
        for its open requests, and the stages checkpoint before Faust's clients close."""
        own = {id(s) for s in self.own_services}
        self._children.sort(key=lambda child: id(child) in own)  # stable; stopped from the end
        await super()._stop_children()

    def service(self, cls: Any) -> Any:
        """Register a service (an instance, or a class: Faust's decorator form) to start before
        Faust's own; the instance, or the class for the decorator, is returned."""
        if self._started.is_set():  # too late to start first: Faust starts it now, after its own
            return super().service(cls)
        self.own_services.append(self._prepare_subservice(cls))
        return cls


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
    # without pages, only the metrics port if set, else no web server (the children of
    # `worker --processes` each get their own metrics port: streams.commands._run_processes)
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # Faust's datadir is made in it
    app = App(settings.app_id, **faust_settings(settings, bootstrap, bool(http)))
    app.atalaia_settings = settings
    t = settings.topic
    app.topic(t("events"), value_serializer="raw", key_serializer="raw")
    app.topic(t("observations"), value_serializer="raw")
    dlq = app.topic(t("dlq"), value_serializer="raw")

    # Low-volume side streams are plain Faust agents (the hot path is batched, see streams.stage).
    @app.agent(dlq)
    async def count_dead_letters(stream: Any) -> None:
        """Count what lands in the DLQ, by source and first reason (visible on /metrics)."""
        async for raw in stream:
            try:
                DLQ_RECORDS.labels(*dlq_labels(raw)).inc()
            except Exception:
                DLQ_RECORDS.labels("?", "undecodable").inc()

    state_dir = settings.data_dir / "state"
    common = {
        "bootstrap": bootstrap,
        "prefix": settings.topic_prefix,
        "state_dir": state_dir,
        "state_store": settings.state_store,  # file | kafka | auto: the broker kind's default
        "replicas": settings.replication_factor,
        "fetch_wait_ms": settings.fetch_wait_ms,
        "session_timeout_s": settings.session_timeout_s,
        "heartbeat_s": settings.heartbeat_s,
        "checkpoint_s": settings.checkpoint_s,
    }
    app.atalaia_stages = {}
    app.atalaia_aliases = {}  # user stage name -> the fused stage that runs it (for /health)
    from atalaia.streams.ingestlog import IngestLog
    from atalaia.streams.topology import plan

    for spec in plan(stages, fuse=settings.fuse_ingest_rules):
        make_core = spec.cores(settings, app)  # what it registers (app.service) starts before the stage
        if make_core is None:  # cannot run here (e.g. delivery without its targets' settings)
            continue
        # a stage that hands observations to other partitions keeps them in the ingest log too,
        # and so does one that asks the warnings stage for a draft (escalation, on commands)
        hands_over = {"observations", "shared-observations", "commands"} & set(spec.outputs)
        app.atalaia_stages[spec.name] = stage = BatchStage(
            name=spec.name,
            source=spec.sources,
            group=f"{settings.app_id}.{spec.name}",
            tick_s=spec.tick_s,
            make_core=make_core,
            journal=IngestLog.for_broker(settings, bootstrap) if hands_over else None,
            **common,
        )
        app.service(stage)  # started before Faust's consumer: see App
        if spec.fused:
            app.atalaia_aliases.update(dict.fromkeys(spec.needs, spec.name))
            # /metrics: the events it reads count as ingest's records, the observations as rules'
            app.atalaia_stages[spec.name].topic_stages = {t("events"): "ingest", t("observations"): "rules"}

    from atalaia.streams.guard import BrokerGuard

    if any(n in app.atalaia_stages for n in ("incidents", "escalation", "warnings")):
        # the files these stages read only when they start: an edit is said, with whether it loads
        from atalaia.streams.configwatch import ConfigWatch
        from atalaia.streams.preflight import PARTS, part_problems

        files = [
            (name, getattr(settings, setting))
            for name, setting, _ in PARTS
            if name in ("incidents", "escalation", "warnings", "console users") and getattr(settings, setting)
        ]
        from atalaia.streams.lastgood import take

        app.service(
            ConfigWatch(
                files,
                lambda name: part_problems(settings, name),
                loaded=lambda name: take(settings, [name]),  # an edit that loads: the last good one
            )
        )

    app.atalaia_guard = app.service(BrokerGuard(bootstrap, settings, app.atalaia_stages))
    role = "all" if http is True else (http or "")
    from atalaia.streams.metrics import (
        BEHIND,
        BehindWatch,
        health_code,
        health_report,
        readiness,
        watch_stages,
    )

    watch_stages(app.atalaia_stages)  # consumer lag and stage state on /metrics
    BEHIND.max_behind_s = settings.health_max_behind_s
    app.service(BehindWatch())  # how long each stage has been behind, for /health
    metrics_auth = MetricsAuth(settings.metrics_token_sha256)
    from atalaia.streams.front import SharedBytes, metrics_body

    metrics_cache = SharedBytes()  # atalaia up: /metrics and /metrics?local, each kept a second

    def refuse(view: Any, endpoint: str, refusal: Refusal) -> Any:
        """401/403 problem+json; counted, and nothing of the request goes anywhere."""
        REFUSED.labels(endpoint, refusal.reason).inc()
        title = "Unauthorized" if refusal.status == 401 else "Forbidden"
        # RFC 6750 3.1: no error code when the request carried no credentials at all
        error = {403: "insufficient_scope", 401: "invalid_token"}[refusal.status]
        challenge = 'Bearer realm="atalaia"' + ("" if refusal.reason == "missing" else f', error="{error}"')
        return view.json(
            problem(refusal.status, title, refusal.detail),
            status=refusal.status,
            content_type=PROBLEM,
            headers={"WWW-Authenticate": challenge},
        )

    @app.page("/livez")
    class Livez(faust.web.View):
        """Liveness only (always open): the process serves HTTP. Says nothing about the pipeline."""

        async def get(self, request: Any) -> Any:
            return self.json({"status": "alive"})

    @app.page("/readyz")
    class Readyz(faust.web.View):
        """Readiness (always open, as ``/livez``): 200 while this process (with ``atalaia up``'s
        other processes) serves, ``ok`` or ``degraded``; 503 while ``starting`` or ``failed``. The
        status word only: the reasons are on ``/health``, behind the metrics token."""

        async def get(self, request: Any) -> Any:
            status = health_report(app.atalaia_stages)[0]["status"]
            if settings.peers and request.query.get("local") is None:
                from atalaia.streams.front import peer_ready

                status = await peer_ready(settings.peers, status)
            body, code = readiness(status)
            return self.json(body, status=code)

    @app.page("/health")
    class Health(faust.web.View):
        """The detailed status: 200 ``ok`` or ``degraded`` (it serves; ``problems`` names each
        condition), 503 ``starting`` or ``failed`` (``streams.metrics.health_code``)."""

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
                    **BEHIND.of(name),  # its own topic's lag
                }
                stages[name]["fused"] = "ingest+rules"
            if settings.peers and request.query.get("local") is None:  # atalaia up's other processes
                from atalaia.streams.front import peer_health

                problems = body.get("problems", [])
                state, problems, stages = await peer_health(
                    settings.peers, request.headers, body["status"], problems, stages
                )
                body = {"status": state, **({"problems": problems} if problems else {}), "stages": stages}
                status = health_code(state)
            return self.json(body, status=status)

    @app.page("/metrics")
    class Metrics(faust.web.View):
        async def get(self, request: Any) -> Any:
            refusal = metrics_auth.check(request.headers)
            if refusal:
                return refuse(self, "metrics", refusal)
            # atalaia up: computed at most once a second, concurrent scrapes sharing it
            # (streams.front.SharedBytes): it runs on this process's loop (the alarm path's)
            local = request.query.get("local") is not None
            body = await metrics_body(
                metrics_cache, settings.peers, settings.process_name, request.headers, local
            )
            return self.bytes(body, content_type=CONTENT_TYPE_LATEST.split(";")[0])

    if not role:
        if not settings.metrics_port and app.atalaia_stages:
            log.warning("this worker serves no /metrics: set ATALAIA_METRICS_PORT (or run it with --http)")
        return app
    from atalaia.streams.connections import (
        ConnectionGuard,
        allowed_hosts,
        answer_malformed_requests,
        host_guard,
        problem_defaults,
        security_headers,
        unavailable_as_503,
        unreadable_bodies,
    )

    answer_malformed_requests()  # a request aiohttp cannot parse: problem+json, one log line

    app.web.web_app.on_response_prepare.append(security_headers)  # nosniff, no framing
    app.web.web_app.middlewares.append(problem_defaults())  # aiohttp's 404/405...: problem+json
    app.web.web_app.middlewares.append(unreadable_bodies())  # a body that cannot be decoded: close
    hosts = allowed_hosts(settings)
    if hosts is not None:  # on a loopback address: only local names (DNS rebinding)
        app.web.web_app.middlewares.append(host_guard(hosts))

    # idle and surplus connections closed (slowloris)
    app.service(ConnectionGuard(app, settings.http_idle_s, settings.http_max_connections))
    # what an endpoint answered for is kept in the ingest log: the events it accepted and the
    # console's commands (a kill -9 of atalaia up loses neither an event nor an approval)
    kept = [
        t(x)
        for x, roles in (("events", ("all", "ingest")), ("commands", ("all", "console")))
        if role in roles
    ]
    ingest_producer = app.service(
        IngestProducer(bootstrap, IngestLog.for_broker(settings, bootstrap) if kept else None, kept)
    )
    app.atalaia_producer = ingest_producer
    app.atalaia_guard.producers.append(ingest_producer)  # what it acknowledged: confirmed, or sent again
    if role in ("all", "ingest"):
        install_ingest(app, settings, ingest_producer, refuse)

    if role in ("all", "console"):
        from atalaia.console.api import install as install_console

        install_console(app, settings, unavailable_as_503(ingest_producer.publish), bootstrap)

    if "warnings" in app.atalaia_stages and role in ("all", "console"):
        from atalaia.warnings.http import install as install_cap_pages

        install_cap_pages(app, app.atalaia_stages["warnings"], app.atalaia_warnings_config)

    if role == "ingest" and settings.console_upstream:  # up: the console lives in the ops process
        from atalaia.console.problem import proxy_networks
        from atalaia.streams.front import install_forwarding

        install_forwarding(
            app,
            settings.console_upstream,
            proxy_networks(settings.trusted_proxies),
            settings.http_body_timeout_s,
            settings.http_idle_s,
        )
    if settings.mqtt_url and role in ("all", "ingest"):
        from atalaia.streams.ingest.mqtt import MqttBridge

        # (a bad file or setting: refused at start)
        app.service(MqttBridge.from_settings(settings, ingest_producer))
    return app


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)
