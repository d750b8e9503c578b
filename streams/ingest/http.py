"""The HTTP ingest endpoints (``POST /ngsi-ld/notify``, ``/v2/notify``, ``/notify``): authenticate,
read the body within its limits, check it parses, and put the original bytes on
``atalaia.events`` (the ingest stage normalises them); whatever is refused goes to
``atalaia.dlq`` with the reason and a problem+json answer. ``IngestProducer`` is the producer
these endpoints and the MQTT bridge share.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import faust
from aiohttp.web_protocol import RequestPayloadError
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError
from mode import Service
from prometheus_client import Counter

from atalaia.console.problem import PROBLEM, problem
from atalaia.streams.ingest.auth import IngestAuth, Refusal
from atalaia.streams.ingest.dlq import oversize_record, to_dlq_record
from atalaia.streams.ingest.events import RawEvent, body_key
from atalaia.streams.ingest.observation import partition_key
from atalaia.streams.ingest.options import IngestOptions
from atalaia.streams.ingest.payload import parse_payload
from atalaia.streams.ingest.result import Rejection
from atalaia.streams.ingestlog import Entry, IngestLog, IngestLogError
from atalaia.streams.kafka_config import broker_kind, client_options, producer_options, retry_refused_writes
from atalaia.streams.records import DLQ_MAX_BODY
from atalaia.streams.settings import Settings

log = logging.getLogger(__name__)

HTTP_REQUESTS = Counter("atalaia_ingest_http_requests_total", "HTTP notifications by outcome", ["outcome"])

# what FIWARE brokers and sensor gateways send (a request without Content-Type is read as JSON)
JSON_TYPES = ("application/json", "application/ld+json", "application/geo+json", "text/json")
INGEST_PATHS = (("/ngsi-ld/notify", "ngsi-ld"), ("/v2/notify", "ngsi-v2"), ("/notify", "http"))


#: records acknowledged since the broker check last confirmed their topics, kept at most (bytes)
UNCONFIRMED_MAX_BYTES = 64 << 20


class IngestProducer(Service):
    """The producer shared by the HTTP endpoint, the MQTT bridge and the console. With an
    ``ingest_log`` (the embedded broker of ``atalaia up``: ``streams.ingestlog``) every record the
    broker acknowledged on one of ``log_topics`` (the events the endpoints accept, the console's
    commands) is also kept on disk before ``publish`` returns, so what was answered outlives the
    in-memory broker.

    Every record it had acknowledged is also kept in memory until the broker check
    (``streams.guard.BrokerGuard``) confirms that its topic was there, the same topic (same id),
    before and after the write (:meth:`confirm`); when the check finds a topic vanished or created
    again, or a new cluster, the records kept for it are written again (:meth:`resend`). A broker
    that restarted empty (Tansu, memory only) acknowledges writes to a topic it does not have,
    from producers that still hold its metadata, and the check then deletes those records when it
    creates the topic (``BrokerGuard.start_clean``): an event answered ``200`` in the seconds after
    the broker came back was lost. Written again, it is not (at least once: a record the broker
    kept is then there twice)."""

    def __init__(
        self,
        bootstrap: str,
        ingest_log: IngestLog | None = None,
        log_topics: Iterable[str] = (),
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.bootstrap = bootstrap
        self.producer: AIOKafkaProducer | None = None
        self.ingest_log, self.log_topics = ingest_log, frozenset(log_topics)
        self._trims: asyncio.Future | None = None
        # (acknowledged at (monotonic), topic, key, value, headers), oldest first: see the class
        self.unconfirmed: collections.deque[tuple[float, str, bytes | None, bytes, list]] = (
            collections.deque()
        )
        self.unconfirmed_bytes = 0
        self._overflowed = False
        # the requests waiting for the broker's ack; and why they were let go, at a stop that
        # found the broker gone (each answers 503 rather than hold the HTTP server's stop)
        self._publishing: set[asyncio.Task[Any]] = set()
        self._abandoned: str | None = None

    async def on_start(self) -> None:
        kind = await broker_kind(self.bootstrap)
        producer = retry_refused_writes(  # Tansu: a re-created topic's refused writes, again
            AIOKafkaProducer(
                **client_options(self.bootstrap),
                **producer_options(kind),  # acks=all + idempotence on Kafka
                linger_ms=2,
                max_request_size=8 << 20,
            ),
            kind,
        )
        try:
            await producer.start()
        except BaseException:
            await producer.stop()  # its connections and sender task, not left behind
            raise
        self.producer = producer  # publish answers "not running" (a 503) until here
        if self.ingest_log is not None:
            log.info(
                "ingest: accepted events are kept in %s until the stages checkpoint them",
                self.ingest_log.life,
            )
            self._trims = asyncio.ensure_future(self.ingest_log.run_trims())

    async def on_stop(self) -> None:
        if self.producer:
            from atalaia.streams.guard import unless_broker_gone

            # a record not acknowledged was not answered 200: its request answers 503 now (the
            # sender sends it again), and the HTTP server's stop does not wait for the broker
            flushing = self.producer.stop()
            if not await unless_broker_gone(flushing, self.bootstrap, "ingest: the producer's flush"):
                self._abandoned = f"the broker at {self.bootstrap} cannot be reached and the process stops"
                for task in list(self._publishing):
                    task.cancel()
        if self._trims is not None:
            self._trims.cancel()
        if self.ingest_log is not None:
            self.ingest_log.close()

    async def publish(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        if self.producer is None or self.should_stop:  # not started yet, or stopping: a 503
            raise KafkaConnectionError("the ingest producer is not running")
        me = asyncio.current_task()
        if me is not None:
            self._publishing.add(me)
        try:
            md = await self.producer.send_and_wait(topic, value, key=key, headers=headers)
        except asyncio.CancelledError:
            if self._abandoned is None or me is None:
                raise
            me.uncancel()  # let go by on_stop (the broker gone): not stored, a 503
            raise KafkaConnectionError(self._abandoned) from None
        finally:
            self._publishing.discard(me)  # type: ignore[arg-type]
        self._acknowledged(topic, md, key, value, list(headers or ()))

    def _acknowledged(self, topic: str, md: Any, key: bytes | None, value: bytes, headers: list) -> None:
        self.unconfirmed.append((time.monotonic(), topic, key, value, headers))
        self.unconfirmed_bytes += len(value) + len(key or b"")
        while self.unconfirmed_bytes > UNCONFIRMED_MAX_BYTES:
            _, _, k, v, _ = self.unconfirmed.popleft()
            self.unconfirmed_bytes -= len(v) + len(k or b"")
            if not self._overflowed:
                self._overflowed = True
                log.warning(
                    "ingest: more than %d MB acknowledged since the broker check last confirmed the "
                    "topics: the oldest are no longer kept to be written again should the broker "
                    "turn out to have lost them",
                    UNCONFIRMED_MAX_BYTES >> 20,
                )
        if self.ingest_log is not None and topic in self.log_topics:
            # (raises IngestLogError, an OSError: the endpoint answers 503, MQTT does not ack)
            self.ingest_log.append(Entry(topic, md.partition, md.offset, key, value, headers))

    def confirm(self, before: float) -> None:
        """The broker check found every topic as it was at its previous check, which began at
        ``before`` (monotonic): what was acknowledged before then is on the broker's topics."""
        while self.unconfirmed and self.unconfirmed[0][0] < before:
            _, _, k, v, _ = self.unconfirmed.popleft()
            self.unconfirmed_bytes -= len(v) + len(k or b"")
        if not self.unconfirmed:
            self._overflowed = False

    async def resend(self, topics: set[str] | None) -> int:
        """Write again, in their order, the records kept for ``topics`` (None: all): the broker
        check found them vanished or created again (or a new cluster), after it created them.
        Each is kept again under its new acknowledgement; one the broker refuses stays kept under
        its old one (written again at the next check that finds a change) and the error is raised.
        Returns how many were written again."""
        if self.producer is None or not self.unconfirmed:
            return 0
        todo = [r for r in self.unconfirmed if topics is None or r[1] in topics]
        if not todo:
            return 0
        kept = [r for r in self.unconfirmed if not (topics is None or r[1] in topics)]
        self.unconfirmed = collections.deque(kept)
        self.unconfirmed_bytes = sum(len(r[3]) + len(r[2] or b"") for r in kept)
        results: list[Any] = []
        try:
            for _, topic, key, value, headers in todo:
                results.append(await self.producer.send(topic, value, key=key, headers=headers))
            results = await asyncio.gather(*results, return_exceptions=True)
        except BaseException as e:  # not handed to the producer, or cancelled: all kept as they were
            results = [e] * len(todo)
        failed = [r for r, md in zip(todo, results, strict=True) if isinstance(md, BaseException)]
        for (_, topic, key, value, headers), md in zip(todo, results, strict=True):
            if not isinstance(md, BaseException):
                with contextlib.suppress(IngestLogError):  # kept in memory still: written again if lost
                    self._acknowledged(topic, md, key, value, headers)
        if failed:  # still unconfirmed, under their old times
            self.unconfirmed.extendleft(reversed(failed))
            self.unconfirmed_bytes += sum(len(r[3]) + len(r[2] or b"") for r in failed)
            raise next(md for md in results if isinstance(md, BaseException))
        return len(todo)


#: an oversize body is read on (to count and hash it for the DLQ record) up to this many times
#: the limit, and at least READ_FLOOR bytes, then no further: a gzip bomb (22 MB that inflate to
#: 5 GB) took the event loop 8 s
READ_ON = 16
READ_FLOOR = 64 << 20


def read_cap(limit: int) -> int:
    """Decoded bytes of a body read at most (to count and hash an oversize one)."""
    return max(READ_ON * limit, READ_FLOOR)


#: the Content-Encodings the server decodes before the handler reads the body (aiohttp: one coding,
#: not a list of them; br and zstd with their packages, which the project installs)
CONTENT_CODINGS = ("", "identity", "gzip", "deflate", "br", "zstd")


async def read_body(request: Any, limit: int) -> tuple[bytes, int, str | None]:
    """(the first ``limit + 1`` bytes of the body, its size, and — when it is longer than that —
    the SHA-256 of all of it). The rest of an oversize body is streamed to count and hash it,
    never kept, so the DLQ record describes the whole body in bounded memory; beyond
    ``read_cap(limit)`` decoded bytes reading stops: the size is then a lower bound and there is
    no hash (None)."""
    body = bytearray()
    digest: Any = None
    size = 0
    async for chunk in request.content.iter_chunked(1 << 16):
        size += len(chunk)
        if digest is not None:
            if size > read_cap(limit):
                return bytes(body), size, None  # (the caller closes the connection after its answer)
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


def install(
    app: faust.App,
    settings: Settings,
    producer: IngestProducer,
    refuse: Callable[[Any, str, Refusal], Any],
) -> None:
    """Add the ingest endpoints to ``app``; ``refuse(view, endpoint, refusal)`` answers a request
    without valid credentials."""
    options = IngestOptions.from_settings(settings)
    t = settings.topic
    ingest_auth = IngestAuth.from_file(settings.ingest_tokens)
    if not ingest_auth.enabled:
        log.warning("ingest endpoints are open to anyone: set ATALAIA_INGEST_TOKENS (atalaia tokens new)")

    async def refused(
        view: Any,
        outcome: str,
        answer: tuple[int, str, str],
        body: bytes = b"",
        source: str = "",
        reason: Any = (),
        record: bytes | None = None,
        **kw: Any,
    ) -> Any:
        """Keep a refused request on the DLQ (``record``, else one made of ``reason`` and the
        ``to_dlq_record`` options ``kw``), count it under ``outcome`` and answer ``answer`` =
        (status, title, detail) as problem+json."""
        if record is None:
            record = to_dlq_record(body, source, reason, received_at=now(), **kw)
        await producer.publish(t("dlq"), record)
        HTTP_REQUESTS.labels(outcome).inc()
        return view.json(problem(*answer), status=answer[0], content_type=PROBLEM)

    async def accept(request: Any, view: Any, source: str) -> Any:
        caller = ingest_auth.check(request.headers)
        if isinstance(caller, Refusal):  # before reading the body: it never reaches the DLQ
            HTTP_REQUESTS.labels("unauthorized").inc()
            return refuse(view, "ingest", caller)
        try:
            async with asyncio.timeout(settings.http_body_timeout_s):
                body, size, whole_sha256 = await read_body(request, settings.max_payload_bytes)
        except (TimeoutError, RequestPayloadError) as e:
            encoding = request.headers.get("Content-Encoding", "")
            if isinstance(e, TimeoutError):  # a slow sender, or a Content-Encoding stream that never ends
                detail = f"the body was not received within {settings.http_body_timeout_s:g} s"
                answer, code = (408, "Request timeout", detail), "body-timeout"
            else:  # e.g. Content-Encoding: gzip over bytes that are not gzip
                detail = (
                    f"the body cannot be read: {' '.join(str(e).split())} (Content-Encoding: {encoding!r})"
                )
                answer, code = (400, "Unreadable body", detail), "unreadable-body"
            return await refused(  # the server decodes before the handler: the encoded bytes are gone
                view,
                "rejected",
                answer,
                b"",
                source,
                detail,
                rejections=[Rejection(detail, "payload", code)],
                content_type=request.headers.get("Content-Type"),
                headers={"content-encoding": encoding},
            )
        ev = RawEvent.from_http(body, request.headers, source)
        if ingest_auth.enabled:
            ev.extra = {**(ev.extra or {}), "auth-source": caller.source}
            if caller.tenant is not None:
                ev.extra["auth-tenant"] = caller.tenant
        ctype = (ev.content_type or "").split(";")[0].strip().lower()
        coding = request.headers.get("Content-Encoding", "").strip().lower()
        detail = None
        if coding not in CONTENT_CODINGS:  # not decoded by the server: the bytes are still encoded
            old_name = " (x-gzip is gzip's old name)" if coding == "x-gzip" else ""
            detail = (
                f"Content-Encoding {coding!r} is not supported; send the body unencoded or as one of "
                f"{', '.join(c for c in CONTENT_CODINGS if c)}{old_name}"
            )
        elif ctype and ctype not in JSON_TYPES:
            detail = f"Content-Type {ctype!r} is not JSON; send one of {', '.join(JSON_TYPES)}"
        if detail is not None:
            return await refused(
                view,
                "unsupported-media-type",
                (415, "Unsupported media type", detail),
                body,
                source,
                detail,
                # counted by this code on /metrics: the reason names the sender's Content-Type
                rejections=[Rejection(detail, "payload", "unsupported-media-type")],
                content_type=ev.content_type,
                headers={"content-encoding": coding} if coding else None,  # (the body kept as sent)
                max_body_bytes=DLQ_MAX_BODY,
                size=size,
                sha256=whole_sha256,
            )
        if size > settings.max_payload_bytes:
            more = "" if whole_sha256 else "more than "  # (no hash: reading stopped)
            record = oversize_record(
                body,
                source,
                settings.max_payload_bytes,
                size=size,
                sha256=whole_sha256,
                read_all=whole_sha256 is not None,
                content_type=ev.content_type,
                received_at=now(),
            )
            answer = await refused(
                view,
                "too-large",
                (413, "Payload too large", f"{more}{size} bytes > {settings.max_payload_bytes}"),
                record=record,
            )
            if not whole_sha256:
                # reading stopped: the answer is sent, then the connection closes (the server would
                # otherwise read, and inflate, the rest for up to 10 s before reusing it)
                await answer.prepare(request)
                await answer.write_eof()
                protocol = getattr(request, "protocol", None)
                if protocol is not None:
                    protocol.force_close()
            return answer
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
            return await refused(
                view,
                "rejected",
                (400, "Bad notification", "; ".join(str(r) for r in res.rejections) or "payload rejected"),
                body,
                source,
                [str(r) for r in res.rejections],
                rejections=res.rejections,
                content_type=ev.content_type,
                max_body_bytes=DLQ_MAX_BODY,
            )
        key = partition_key(res.observations[0].__dict__) if res.observations else body_key(body)
        await producer.publish(t("events"), body, key=key, headers=ev.headers())
        HTTP_REQUESTS.labels("accepted").inc()
        return view.json(
            {
                "accepted": len(res.observations),
                "rejected": [str(r) for r in res.rejections],
                "warnings": res.warnings,
                "ignored": res.ignored[:100],  # entities with nothing to observe (first 100)
            },
            status=200,
        )

    # (and with a trailing slash, as a subscription's endpoint is often written: it answered 404)
    for path, source in [*INGEST_PATHS, *((f"{p}/", s) for p, s in INGEST_PATHS)]:

        @app.page(path)
        class Notify(faust.web.View):
            _source = source

            async def post(self, request: Any) -> Any:
                try:
                    return await accept(request, self, self._source)
                except (KafkaError, TimeoutError, IngestLogError) as e:  # not kept: say so, 503
                    kept = isinstance(e, IngestLogError)
                    HTTP_REQUESTS.labels("unkept" if kept else "broker-unavailable").inc()
                    if kept:
                        log.error("ingest: an accepted event could not be kept: %s", e)
                    else:
                        log.warning("ingest: the broker did not accept an event: %s", type(e).__name__)
                    return self.json(
                        problem(
                            503,
                            "Ingest log unavailable" if kept else "Broker unavailable",
                            f"the event was not stored ({type(e).__name__}); send it again later",
                        ),
                        status=503,
                        content_type=PROBLEM,
                        headers={"Retry-After": "10"},
                    )

            async def get(self, request: Any) -> Any:
                """Only POST notifies: any other method is told so (405, ``Allow: POST``), not
                "no such path" (``atalaia up`` forwards unknown paths to the console)."""
                method = request.method[:20]
                return self.json(
                    problem(
                        405, "Method Not Allowed", f"method {method} is not allowed here (allowed: POST)"
                    ),
                    status=405,
                    content_type=PROBLEM,
                    headers={"Allow": "POST"},
                )

            put = patch = delete = get
