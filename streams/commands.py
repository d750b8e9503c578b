"""CLI commands of the streams package: up, worker, send, tail, bench."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click
import orjson

from atalaia.streams.settings import Settings, get_settings
from atalaia.streams.topology import USER_STAGES as ALL_STAGES

log = logging.getLogger("atalaia.up")

#: `atalaia tail`: seconds without records after which it checks the broker is still there
PROBE_EVERY_S = 5.0


def _logging(level: str, interval_s: float = 60.0) -> None:
    from atalaia.streams.logfilter import install

    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("aiokafka", "faust", "mode", "kafka", "httpx", "httpcore", "mail.log"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    install(interval_s)  # repeated warnings/errors: one line per kind per interval, with a count


def _check_environment(settings: Settings) -> None:
    """Say which ``ATALAIA_*`` variables nothing reads (a misspelt setting runs on its default).
    Once, in the process the user started: not again in the processes ``up`` starts."""
    from atalaia.streams.settings import unknown_variables

    if "ATALAIA_PROCESS_NAME" in os.environ:  # a child of up or worker --processes
        return
    for line in unknown_variables(os.environ, settings):
        logging.getLogger("atalaia.settings").warning(line)


def _check_listening(settings: Settings, http: bool | str) -> None:
    """Before anything starts: refuse to serve HTTP unauthenticated beyond localhost, or on a port
    another program holds (exit 1, the reason; not a traceback after the banner)."""
    from atalaia.streams.connections import exposure_problem, port_problem

    problem = exposure_problem(settings, http)
    if problem:
        raise click.ClickException(problem)  # a configuration problem, not a usage one: exit 1
    if http and os.environ.get("ATALAIA_PROCESS_NAME") is None:  # up's processes: up looked
        problem = port_problem(settings.http_host, settings.http_port)
        if problem:
            raise click.ClickException(problem)


def _said(e: BaseException) -> str:
    """An exception as one says it: its type once (aiokafka's errors start with their name)."""
    text = " ".join(str(e).split())
    return text if text.startswith(type(e).__name__) else f"{type(e).__name__}: {text}".rstrip(": ")


def _prepare(settings: Settings, bootstrap: str, demo: bool) -> None:
    """Before any stage runs: the topics with their designed partition counts and replicas (a
    wrong layout stops here with the reason), and the demo's local receivers."""
    from atalaia.streams import broker

    try:
        asyncio.run(
            broker.ensure_topics(
                bootstrap, settings.topic_prefix, settings.partitions, replicas=settings.replication_factor
            )
        )
    except broker.TopicLayoutError as e:
        raise click.ClickException(str(e)) from None
    except broker.BrokerUnreachable as e:  # a wrong ATALAIA_KAFKA or a broker that is down: no traceback
        which = "ATALAIA_KAFKA" if settings.kafka else "the embedded broker"
        raise click.ClickException(
            f"no Kafka broker answers at {bootstrap} ({which}): {' '.join(str(e).split())}"
        ) from None
    if demo:
        _demo_receivers()


def _config_errors() -> tuple[type[Exception], ...]:
    """The errors of configuration files that do not load (each says file:line:col)."""
    from atalaia.console.auth import UsersFileError
    from atalaia.detectors.config import ConfigError as DetectorsError
    from atalaia.incidents.config import ConfigError as IncidentsError
    from atalaia.notifiers.config import ConfigError as EscalationError
    from atalaia.rules.errors import RuleFileError
    from atalaia.streams.config_yaml import YamlError

    return (RuleFileError, DetectorsError, IncidentsError, EscalationError, YamlError, UsersFileError)


def _run_worker(
    settings: Settings,
    bootstrap: str,
    stages: tuple[str, ...],
    http: bool | str,
    demo: bool = False,
    demo_feed: bool | None = None,
    banner: bool = False,
    ingest_token: str | None = None,
) -> None:
    import faust

    from atalaia.streams.app import create_app
    from atalaia.streams.broker import no_auto_create, quiet_fetcher_close
    from atalaia.streams.follow import FollowAnnounced, joined_announced

    no_auto_create()  # topics are created with their designed partition counts, by us only
    quiet_fetcher_close()  # a consumer stops while its broker is down (Ctrl-C is not 35 s)
    _prepare(settings, bootstrap, demo)
    try:
        app = create_app(settings, bootstrap, stages=stages, http=http)
    except _config_errors() as exc:  # a configuration file that does not load: its errors, no traceback
        raise click.ClickException(f"the configuration does not load:\n{exc}") from None
    if joined_announced(settings, bootstrap):  # started apart on `up`'s broker: follow it to a new one
        app.service(FollowAnnounced(settings, bootstrap))
    if demo if demo_feed is None else demo_feed:
        from atalaia.streams.ingest.demo import DemoFeed

        app.service(DemoFeed(f"http://{settings.http_host}:{settings.http_port}", token=ingest_token))
    if banner:

        @app.task
        async def _banner() -> None:
            click.echo(banner_text(settings, bootstrap, ingest_token), err=False)

    from atalaia.streams.stage import settle_heaps

    settle_heaps()  # a stage process: its start-up heap is frozen out of the collector's way
    worker = faust.Worker(app, loglevel=settings.log_level.upper(), quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


def _demo_receivers() -> dict[str, str]:
    """The demo's local SMTP/HTTP receivers, their addresses put in this process's environment
    (inherited by the worker processes of `atalaia up`)."""
    import os

    from atalaia.streams.ingest.demo import start_demo_receivers

    found = start_demo_receivers()
    for k, v in found.items():
        os.environ.setdefault(k, v)
    return found


def banner_text(
    settings: Settings, bootstrap: str, ingest_token: str | None, processes: str | None = None
) -> str:
    base = f"http://{settings.http_host}:{settings.http_port}"
    kept = settings.data_dir / "ingest-token"
    try:
        ours = ingest_token is not None and kept.read_text().strip() == ingest_token
    except OSError:
        ours = False
    if ours:  # the token up made and keeps for you
        tokens = f"  ingest token:            {ingest_token}   (Authorization: Bearer ..., kept in {kept})\n"
    elif settings.ingest_tokens is not None:  # your own file (the demo feed: ATALAIA_DEMO_TOKEN)
        tokens = f"  ingest tokens:           {settings.ingest_tokens}   (Authorization: Bearer <one of its tokens>)\n"
    else:
        tokens = ""
    return (
        "\nAtalaia is up.\n"
        f"  broker (Kafka protocol): {bootstrap}{'  [embedded Tansu]' if not settings.kafka else ''}\n"
        + (f"  processes:               {processes}\n" if processes else "")
        + f"  console:                 {base}/\n"
        f"  NGSI-LD notify endpoint: {base}/ngsi-ld/notify   (NGSI-v2: {base}/v2/notify)\n"
        + tokens
        + f"  health / metrics:        {base}/health  {base}/metrics  (readiness: {base}/readyz, liveness: {base}/livez)\n"
        "  watch:                   atalaia tail observations | alarms | incidents | notifications | dlq\n"
        "  deliveries:              atalaia notify log\n"
        "  stop:                    Ctrl-C\n"
    )


def _child_env(settings: Settings, **extra: str | None) -> dict[str, str]:
    import os

    env = {**os.environ, "ATALAIA_DATA_DIR": str(settings.data_dir)}
    if settings.ingest_tokens is not None:
        env["ATALAIA_INGEST_TOKENS"] = str(settings.ingest_tokens)
    env.update({k: v for k, v in extra.items() if v is not None})
    return env


def _run_processes(
    settings: Settings,
    bootstrap: str,
    groups: list[tuple[str, tuple[str, ...]]],
    *,
    http: bool,
    demo: bool = False,
    ingest_token: str | None = None,
    banner: bool = False,
    watch: Callable[[], str | None] | None = None,
    restarted: str | None = None,
) -> int:
    """Run each (name, stages) of ``groups`` as a child ``atalaia worker`` (streams.processes).
    ``watch``: see ``Supervisor`` (the embedded broker's death ends the run with BROKER_LOST);
    ``restarted``: the children's ATALAIA_BROKER_RESTARTED (``_on_embedded_broker``).
    With ``http`` the first child serves the public port (ingest endpoints, /health merged from
    every child) and forwards every other path to the second, which serves the console on a
    private port; the other children answer /health on private ports. Without ``http``, with
    ``ATALAIA_METRICS_PORT`` set, child ``i`` serves /metrics, /health, /livez on that port + i."""
    import json

    import httpx

    from atalaia.streams.broker import free_port
    from atalaia.streams.processes import Child, Supervisor
    from atalaia.streams.topology import BACKGROUND_GROUP, NOT_LOADED

    _prepare(settings, bootstrap, demo)
    ports = [settings.http_port] + [free_port() for _ in groups[1:]]
    private = [f"http://127.0.0.1:{p}" for p in ports[1:]]
    children = []
    for i, (name, stages) in enumerate(groups):
        args = ["worker", "--stages", ",".join(stages)]
        env = _child_env(settings, ATALAIA_PROCESS_NAME=name, ATALAIA_BROKER_RESTARTED=restarted)
        if http and i == 0:
            args += ["--http-role", "ingest" if len(groups) > 1 else "all"]
            peers = [f"{peer}={url}" for (peer, _), url in zip(groups[1:], private, strict=True)]
            env.update(
                ATALAIA_PEERS=json.dumps(peers),
                ATALAIA_CONSOLE_UPSTREAM=private[0] if private else "",
                ATALAIA_DEMO_TOKEN=ingest_token or "",
            )
            if demo:
                args.append("--demo-feed")
        elif http:
            args += ["--http-role", "console" if i == 1 else "health"]
            env.update(ATALAIA_HTTP_HOST="127.0.0.1", ATALAIA_HTTP_PORT=str(ports[i]))
            if not settings.console_url:  # links in messages lead to the public console
                env["ATALAIA_CONSOLE_URL"] = settings.public_url()
        elif settings.metrics_port:  # no HTTP: each child its own /metrics port (base + index)
            env["ATALAIA_METRICS_PORT"] = str(settings.metrics_port + i)
        children.append(
            Child(
                name,
                args,
                env,
                nice=settings.ops_nice if name == BACKGROUND_GROUP else 0,
                # (one process runs every stage: it loads every part)
                ignores=NOT_LOADED.get(name, frozenset()) if len(groups) > 1 else frozenset(),
            )
        )

    def ready() -> bool:
        if not (banner and http):
            return True
        try:
            httpx.get(f"http://{settings.http_host}:{settings.http_port}/livez", timeout=0.5)
        except httpx.HTTPError:
            return False
        pids = ", ".join(
            f"{c.name} (pid {c.proc.pid}: {' '.join(s)})" for c, (_, s) in zip(children, groups, strict=True)
        )
        click.echo(banner_text(settings, bootstrap, ingest_token, processes=pids), err=False)
        return True

    # a process restarted after a crash reads the configuration files again: when one no longer
    # loads, it is restarted on the last configuration that loaded (streams.lastgood), kept in the
    # data directory; the processes started again on a new broker are restarts too
    from atalaia.streams.lastgood import Keeper
    from atalaia.streams.processes import STOP_TIMEOUT_S

    # a graceful stop lets the sends in flight finish (ATALAIA_DELIVERY_GRACE_S), then checkpoints:
    # the ops process is not killed before its grace is over
    stop_timeout = max(STOP_TIMEOUT_S, settings.delivery_grace_s + 20.0)
    return Supervisor(
        children,
        ready,
        stop_timeout=stop_timeout,
        watch=watch,
        keeper=Keeper(settings),
        resumed=restarted is not None,
    ).run()


BROKER_STABLE_S = 60.0  # an embedded broker that ran this long is restarted at once when it dies


def _on_embedded_broker(
    settings: Settings, fresh: bool, run: Callable[[str, Callable[[], str | None] | None, str | None], int]
) -> int:
    """``run(bootstrap, watch, restarted)`` on the broker ``owned_broker`` gives. When the
    embedded broker dies under it (``run`` returns BROKER_LOST: the processes were killed), a new
    one is started as a restart of ``atalaia up`` would: the data directory's state kept and
    re-anchored, the accepted events no stage had checkpointed put back from the ingest log; then
    ``run`` again with ``restarted`` (None on the first run) a JSON ``{"at", "why", "count"}``
    for the processes' ``/health`` and metrics (``streams.guard.broker_restarted``). A broker that
    keeps dying is restarted after 2, 4 ... up to 60 s; Ctrl-C stops the wait. A new broker
    that dies during its own start-up (before it answers, or while the ingest log is put back on
    it) is one more death, not the end of ``atalaia up``; on the first start it is."""
    from atalaia.streams.broker import EmbeddedBroker
    from atalaia.streams.connect import broker_death, owned_broker
    from atalaia.streams.processes import BROKER_LOST, RESTART_MAX_DELAY_S

    restarted, count, failures = None, 0, 0
    while True:
        started = time.monotonic()
        embedded = EmbeddedBroker()
        try:
            with owned_broker(settings, fresh=fresh, broker=embedded) as (bootstrap, broker):
                watch = broker_death(broker) if broker is not None else None
                status = run(bootstrap, watch, restarted)
                why = watch() if watch is not None else None
        except Exception as e:
            if not count or embedded.ended is None:
                raise  # not a death: a configuration, a full disk (said by the exception)
            why = f"{embedded.named} died during its start-up ({embedded.ended})"
            log.error("%s: %s: %s", why, type(e).__name__, e, extra={"ratelimit": False})
            status = BROKER_LOST
        if status != BROKER_LOST:
            return status
        count += 1
        restarted = orjson.dumps({"at": time.time(), "why": why, "count": count}).decode()
        fresh = False  # --fresh applied once: what the run did since is kept
        failures = 1 if time.monotonic() - started >= BROKER_STABLE_S else failures + 1
        delay = min(RESTART_MAX_DELAY_S, 2.0 ** (failures - 1)) if failures > 1 else 0.0
        log.warning(
            "starting a new embedded broker%s; the processes follow on it",
            f" in {delay:.0f} s (it died {failures} times in a row, each within {BROKER_STABLE_S:.0f} s "
            "of starting)"
            if delay
            else "",
            extra={"ratelimit": False},
        )
        if delay and _wait_unless_stopped(delay):
            return 0


def _wait_unless_stopped(seconds: float) -> bool:
    """Sleep, or return True at once on SIGINT/SIGTERM (the processes are already stopped)."""
    import signal

    stopped = []
    old = {s: signal.signal(s, lambda *_: stopped.append(1)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        deadline = time.monotonic() + seconds
        while not stopped and time.monotonic() < deadline:
            time.sleep(0.1)
        return bool(stopped)
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@click.command()
@click.option("--demo", is_flag=True, help="also replay real sensor data as NGSI-LD notifications")
@click.option(
    "--fresh",
    is_flag=True,
    help="start clean: forget the incidents, shelves, timers, audit and delivery log kept in the "
    "data directory (embedded broker only)",
)
@click.option(
    "--single-process",
    is_flag=True,
    hidden=True,
    help="every stage in this one process (as before issue 11; for comparisons)",
)
def up(demo: bool, fresh: bool, single_process: bool) -> None:
    """All-in-one: embedded broker (unless ATALAIA_KAFKA is set), worker, ingest, console.

    With the embedded broker, a restart keeps the domain state of ATALAIA_DATA_DIR (open
    incidents, shelves, silences, escalation timers, audit, delivery log), and accepted events no
    stage had checkpointed are put back on the new broker from the ingest log (a kill -9 loses no
    answered event). --fresh starts clean.

    The stages run in two processes (both cores): the alarm path (HTTP ingest, ingest + rules +
    detectors) and the rest (incidents, projection, escalation, delivery, warnings, console); a
    process that dies is restarted, one that dies while starting stops everything."""
    from atalaia.streams.connect import lock_data_dir, owned_bootstrap

    settings = get_settings()
    _logging(settings.log_level, settings.log_interval_s)
    _check_environment(settings)
    if fresh and settings.kafka:
        raise click.UsageError(
            "--fresh applies to the embedded broker; with ATALAIA_KAFKA the state is the broker's"
        )
    token = None
    if demo and settings.ingest_tokens is not None:
        # your own tokens file: the demo feed needs one of its tokens, or it is refused (401) for
        # ever while /health says ok
        token = os.environ.get("ATALAIA_DEMO_TOKEN") or None
        if token is None:
            raise click.UsageError(
                f"--demo with ATALAIA_INGEST_TOKENS={settings.ingest_tokens}: give the demo feed one of "
                "that file's tokens in ATALAIA_DEMO_TOKEN (atalaia tokens new --source demo), or unset "
                "ATALAIA_INGEST_TOKENS and atalaia up makes one"
            )
    lock_data_dir(settings)  # one `up` per data directory, before anything starts
    from atalaia.streams.preflight import startup_check

    failed = startup_check(settings)  # before the broker, the workers and the banner
    if failed:
        raise click.ClickException(
            f"the configuration does not load ({', '.join(failed)}): nothing started "
            "(`atalaia check` checks every part)"
        )
    if settings.ingest_tokens is None:  # never an open ingest: a token kept in the data dir
        from atalaia.streams.tokens import ensure_demo_token

        settings.ingest_tokens, token = ensure_demo_token(settings.data_dir)
    _check_listening(settings, True)  # before the broker starts
    status = 0
    try:
        if single_process:
            with owned_bootstrap(settings, fresh=fresh) as bootstrap:
                _run_worker(
                    settings, bootstrap, ALL_STAGES, http=True, demo=demo, banner=True, ingest_token=token
                )
        else:
            from atalaia.streams.topology import process_groups

            status = _on_embedded_broker(
                settings,
                fresh,
                lambda bootstrap, watch, restarted: _run_processes(
                    settings,
                    bootstrap,
                    list(process_groups().items()),
                    http=True,
                    demo=demo,
                    ingest_token=token,
                    banner=restarted is None,
                    watch=watch,
                    restarted=restarted,
                ),
            )
    finally:
        click.echo("Atalaia stopped." + ("" if settings.kafka else " (embedded broker stopped)"), err=True)
    if status:
        sys.exit(status)


@click.command()
@click.option(
    "--stages", default=",".join(ALL_STAGES), show_default=True, help="comma-separated pipeline stages to run"
)
@click.option("--http/--no-http", default=False, help="also serve the HTTP ingest endpoint")
@click.option(
    "--processes",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="run N worker processes of these stages (Kafka partitions spread the work; delivery runs "
    "in the first only: one sender owns the delivery log)",
)
@click.option("--http-role", type=click.Choice(["all", "ingest", "console", "health"]), hidden=True)
@click.option("--demo-feed", is_flag=True, hidden=True)
def worker(stages: str, http: bool, processes: int, http_role: str | None, demo_feed: bool) -> None:
    """Run pipeline stages (scale out by starting more workers on the same Kafka).

    Without ATALAIA_KAFKA it joins the embedded broker of the `atalaia up` running with this
    data directory (following it to the new broker `up` starts when that one dies), else starts
    its own."""
    import os

    from atalaia.streams.connect import owned_bootstrap

    chosen = tuple(s.strip() for s in stages.split(",") if s.strip())
    unknown = set(chosen) - set(ALL_STAGES)
    if unknown:
        raise click.BadParameter(f"unknown stage(s) {sorted(unknown)}; known: {', '.join(ALL_STAGES)}")
    settings = get_settings()
    _logging(settings.log_level, settings.log_interval_s)
    _check_environment(settings)
    _check_listening(settings, http_role or http)
    if processes > 1:
        rest = tuple(s for s in chosen if s != "delivery")
        groups = [("worker-1", chosen)] + [(f"worker-{i + 1}", rest) for i in range(1, processes)]
        status = _on_embedded_broker(
            settings,
            False,
            lambda bootstrap, watch, restarted: _run_processes(
                settings, bootstrap, groups, http=http, watch=watch, restarted=restarted
            ),
        )
        if status:
            sys.exit(status)
        return
    with owned_bootstrap(settings) as bootstrap:
        role: bool | str = http_role or http
        token = os.environ.get("ATALAIA_DEMO_TOKEN") or None
        _run_worker(settings, bootstrap, chosen, http=role, demo_feed=demo_feed, ingest_token=token)


@click.command()
def console() -> None:
    """Serve the HTTP ingest endpoint and console API without pipeline stages.

    Without ATALAIA_KAFKA it joins the embedded broker of the `atalaia up` running with this
    data directory, and follows it to the new broker `up` starts when that one dies."""
    from atalaia.streams.connect import owned_bootstrap

    settings = get_settings()
    _logging(settings.log_level, settings.log_interval_s)
    _check_environment(settings)
    _check_listening(settings, True)
    with owned_bootstrap(settings) as bootstrap:
        _run_worker(settings, bootstrap, (), http=True, banner=True)


def read_events(path: Path) -> list[bytes]:
    """A .jsonl file is one event per line; anything else is one event (a whole JSON document)."""
    data = path.read_bytes()
    if path.suffix in (".jsonl", ".ndjson"):
        return [line for line in data.splitlines() if line.strip()]
    return [data]


def _event_key(body: bytes) -> bytes:
    from atalaia.streams.ingest.events import body_key

    with contextlib.suppress(Exception):
        doc = orjson.loads(body)
        if isinstance(doc, dict) and isinstance(doc.get("entity") or doc.get("id"), str):
            return (doc.get("entity") or doc["id"]).encode()
    return body_key(body)


@click.command()
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--content-type", default=None, help="Content-Type header to attach (e.g. application/ld+json)")
@click.option("--link", default=None, help="JSON-LD Link header to attach")
def send(files: tuple[Path, ...], content_type: str | None, link: str | None) -> None:
    """Publish events from JSON / JSONL files to atalaia.events (one record per line of .jsonl)."""
    from aiokafka import AIOKafkaProducer

    from atalaia.streams.connect import client_bootstrap
    from atalaia.streams.ingest.events import RawEvent, format_time_now
    from atalaia.streams.kafka_config import (
        broker_kind,
        client_options,
        producer_options,
        retry_refused_writes,
    )

    settings = get_settings()
    bootstrap = client_bootstrap(settings)

    async def go() -> int:
        kind = await broker_kind(bootstrap)
        producer = retry_refused_writes(  # Tansu: a re-created topic's refused writes, again
            AIOKafkaProducer(
                **client_options(bootstrap),
                **producer_options(kind),  # acks=all + idempotence on Kafka
                linger_ms=5,
                max_request_size=8 << 20,
            ),
            kind,
        )
        await producer.start()
        n = 0
        try:
            futures = []
            for path in files:
                for body in read_events(path):
                    ev = RawEvent(
                        body=body,
                        source=f"file:{path.name}",
                        content_type=content_type,
                        link=link,
                        received_at=format_time_now(),
                    )
                    futures.append(
                        await producer.send(
                            settings.topic("events"), body, key=_event_key(body), headers=ev.headers()
                        )
                    )
                    n += 1
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
        return n

    from aiokafka.errors import KafkaConnectionError, KafkaError

    try:
        n = asyncio.run(go())
    except (KafkaConnectionError, ConnectionError) as e:  # a wrong ATALAIA_KAFKA, a broker that is down
        raise click.ClickException(f"no Kafka broker answers at {bootstrap}: {_said(e)}") from None
    except KafkaError as e:  # the broker answered no (a record too large, an authorisation ...)
        raise click.ClickException(f"the broker at {bootstrap} refused: {_said(e)}") from None
    click.echo(f"sent {n} event(s) to {settings.topic('events')} on {bootstrap}", err=True)


def no_topic(name: str, prefix: str, bootstrap: str) -> str:
    """What ``tail`` says for a topic the broker lacks: Atalaia's topics, and the one meant when
    the name is close to one (``alarm``: did you mean ``alarms``?)."""
    import difflib

    from atalaia.streams.broker import TOPICS

    short = name.removeprefix(f"{prefix}.")
    close = difflib.get_close_matches(short, list(TOPICS), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close and close[0] != short else ""
    return f"no topic {name!r} on {bootstrap}{hint}; Atalaia's topics: {', '.join(TOPICS)}"


@click.command()
@click.argument("topic")
@click.option("-b", "--from-beginning", is_flag=True, help="start at the oldest record, not the newest")
@click.option("-n", "--count", type=int, default=None, help="stop after N records")
@click.option("--timeout", type=float, default=None, help="stop after this many seconds")
def tail(topic: str, from_beginning: bool, count: int | None, timeout: float | None) -> None:
    """Show a topic live, one JSON record per line (observations, alarms, incidents, dlq, ...)."""
    from aiokafka import AIOKafkaConsumer

    from atalaia.streams.broker import partition_ids
    from atalaia.streams.connect import client_bootstrap
    from atalaia.streams.kafka_config import client_options

    settings = get_settings()
    bootstrap = client_bootstrap(settings)
    name = topic if "." in topic else settings.topic(topic)

    from aiokafka.errors import KafkaError

    # the client logs every failed reconnection (dozens a second once the broker is gone): the
    # command says it once itself
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    async def go() -> None:
        consumer = AIOKafkaConsumer(
            **client_options(bootstrap), enable_auto_commit=False, fetch_max_wait_ms=100
        )
        try:
            await consumer.start()
        except (KafkaError, ConnectionError) as e:  # never reached (a wrong ATALAIA_KAFKA): not "lost"
            await consumer.stop()
            raise click.ClickException(f"no Kafka broker answers at {bootstrap}: {_said(e)}") from None
        try:
            parts = await partition_ids(bootstrap, name)
            if not parts:
                raise click.ClickException(no_topic(name, settings.topic_prefix, bootstrap))
            from aiokafka import TopicPartition

            tps = [TopicPartition(name, p) for p in sorted(parts)]
            consumer.assign(tps)
            if from_beginning:
                await consumer.seek_to_beginning(*tps)
            else:
                await consumer.seek_to_end(*tps)
            seen = 0
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout if timeout else None
            quiet_since, unanswered = loop.time(), 0
            while count is None or seen < count:
                if deadline and loop.time() > deadline:
                    break
                batches = await consumer.getmany(timeout_ms=200)
                if batches:
                    quiet_since, unanswered = loop.time(), 0
                elif loop.time() - quiet_since >= PROBE_EVERY_S:
                    # nothing for a while: is the broker still there? (the client retries a lost
                    # broker for ever; say so and stop instead)
                    quiet_since = loop.time()
                    try:
                        await asyncio.wait_for(partition_ids(bootstrap, name), PROBE_EVERY_S)
                        unanswered = 0
                    except (KafkaError, OSError, TimeoutError):
                        unanswered += 1
                        if unanswered >= 2:
                            raise ConnectionError(f"no answer for {2 * PROBE_EVERY_S:g} s") from None
                for records in batches.values():
                    for r in records:
                        sys.stdout.write(r.value.decode(errors="replace") + "\n")
                        seen += 1
                        if count is not None and seen >= count:
                            break
                sys.stdout.flush()
        finally:
            await consumer.stop()

    try:
        asyncio.run(go())
    except KeyboardInterrupt:
        pass
    except (KafkaError, ConnectionError, asyncio.CancelledError) as e:
        raise click.ClickException(
            f"lost the broker at {bootstrap}: {type(e).__name__} {e}".strip()
        ) from None


@click.command()
def bench() -> None:
    """Run the benchmarks (same as `make bench`)."""
    import runpy

    runpy.run_module("benchmarks", run_name="__main__")
