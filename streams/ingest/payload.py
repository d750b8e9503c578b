"""``parse_payload``: one received body (HTTP request, MQTT message, Kafka record) -> IngestResult.

Recognises, in this order: NGSI-LD ``Notification`` and NGSI-v2 notification envelopes (``data``
an array of entities, or an NGSI-LD GeoJSON ``FeatureCollection``), a bare GeoJSON
FeatureCollection or ``Feature``, a single entity (NGSI-v2 ``simplifiedNormalized``/``simplifiedKeyValues``, a Smart
Data Models example), an array of entities, and records already in the Observation contract shape.
Pure: no I/O, no clock (``received_at`` is the reference for clock-skew warnings).
"""

from __future__ import annotations

import codecs
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from atalaia.rules.durations import format_duration
from atalaia.streams.clock import format_time
from atalaia.streams.ingest import fastpath
from atalaia.streams.ingest.attributes import LD_TYPES
from atalaia.streams.ingest.entity import (
    PayloadContext,
    bad_tenant,
    context_error,
    future_limit,
    general_entity,
    header_text,
    normalise_entity,
    rejected_duplicates,
)
from atalaia.streams.ingest.fastpath import fast_entity
from atalaia.streams.ingest.jsonparse import Duplicates, JSONRejected, decode
from atalaia.streams.ingest.observations import CONTRACT_KEYS, looks_like_observation, normalise_observation
from atalaia.streams.ingest.options import DEFAULT_OPTIONS, IngestOptions
from atalaia.streams.ingest.result import IngestResult, Rejection
from atalaia.streams.ingest.timeparse import parse_observation_time

_SPACE = frozenset(b" \t\n\r\x0b\x0c")  # what bytes.strip() removes


def parse_payload(
    body: bytes,
    *,
    content_type: str | None = None,
    link: str | None = None,
    headers: Mapping[str, str] | None = None,
    source: str = "http",
    received_at: datetime | None = None,
    options: IngestOptions | None = None,
) -> IngestResult:
    """Normalise one payload. Never raises: whatever is wrong is a :class:`Rejection` in the result.

    ``headers`` may carry ``Content-Type``, ``Link`` (JSON-LD context), ``Ngsiv2-AttrsFormat`` and
    the tenant (``NGSILD-Tenant``, else ``Fiware-Service``; ``Fiware-ServicePath``), which every
    Observation then carries; explicit ``content_type``/``link`` win. ``received_at``
    (timezone-aware) is when Atalaia received the payload: the time of measurements that carry no
    observation time when the notification has no ``notifiedAt`` (``time_source`` ``received``),
    and the clock for the future-time warning (without it ``notifiedAt`` is that clock, else no
    check). Without either, measurements that carry no time are refused (``missing-time``).
    """
    out = IngestResult()
    if received_at is not None and received_at.tzinfo is None:
        received_at = received_at.replace(tzinfo=UTC)  # a naive reception clock is taken as UTC
    opts = options or DEFAULT_OPTIONS
    try:
        _parse(body, content_type, link, headers, source, received_at, opts, out)
        if received_at is not None and opts.allowed_lateness_s is not None and out.observations:
            _warn_late(out, received_at, opts.allowed_lateness_s)
    except Exception as exc:  # a bug must not take the worker down; the payload goes to the DLQ
        out.observations.clear()
        out.rejections.append(
            Rejection(
                f"internal error while normalising: {type(exc).__name__}: {exc}", "payload", "internal-error"
            )
        )
    return out


_UTF8 = frozenset(("utf-8", "utf8", "us-ascii", "ascii"))


def _as_utf8(body: bytes, content_type: str, out: IngestResult) -> bytes | None:
    """``body`` as UTF-8 when ``content_type`` (lower case) declares another ``charset`` (JSON is
    UTF-8, RFC 8259, but an older gateway may send ``charset=iso-8859-1`` and say so): decoded from
    it, else None with the rejection in ``out`` (an unknown charset, bytes it cannot decode)."""
    charset = ""
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip() == "charset":
            charset = value.strip().strip('"').strip()
    if not charset or charset in _UTF8:
        return body
    try:
        codec = codecs.lookup(charset)
    except LookupError:
        _reject(out, f"unknown charset {charset[:40]!r} in the Content-Type; send UTF-8", "encoding")
        return None
    if not getattr(codec, "_is_text_encoding", True):  # e.g. base64, zlib: bytes codecs
        _reject(out, f"charset {charset[:40]!r} is not a text encoding; send UTF-8", "encoding")
        return None
    try:
        return body.decode(codec.name).encode("utf-8", "surrogatepass")
    except UnicodeError as exc:
        _reject(out, f"body is not {charset} text as its Content-Type says: {exc.reason}", "encoding")
        return None


#: the headers an NGSI-LD MQTT notification's ``metadata`` may give (never ``auth-*``, which
#: only the HTTP endpoint writes)
_MQTT_HEADERS = ("content-type", "link", "ngsild-tenant", "fiware-service", "fiware-servicepath")
_TENANT_HEADERS = ("ngsild-tenant", "fiware-service")


def _unwrap_mqtt(doc: dict, hdrs: dict[str, Any], out: IngestResult) -> Any:
    """The notification of an NGSI-LD MQTT message (``{"metadata": {headers}, "body": {...}}``,
    as Orion-LD and Scorpio publish it), its metadata merged into ``hdrs`` where they say nothing;
    None, with the rejection in ``out``, when it cannot be read."""
    meta, body = doc["metadata"], doc["body"]
    if type(meta) is not dict or type(body) not in (dict, list):
        _reject(
            out, "an MQTT notification's metadata must be an object and its body JSON data", "unrecognised"
        )
        return None
    given = {str(k).lower(): v for k, v in meta.items() if type(v) is str}
    if "auth-source" in hdrs:  # a token's tenant (or none) is the payload's; the metadata may not widen it
        named = {given[h].strip().lower() for h in _TENANT_HEADERS if given.get(h, "").strip()}
        mine = (hdrs.get("auth-tenant") or "").strip().lower()
        if named - {mine}:
            reason = f"the notification's metadata names tenant {sorted(named)[0]!r}, not the ingest token's"
            _reject(out, reason, "tenant-not-allowed")
            return None
    for h in _MQTT_HEADERS:
        if h in given and not hdrs.get(h):
            hdrs[h] = given[h]
    return body


def _warn_late(out: IngestResult, received_at: datetime, lateness_s: float) -> None:
    """A warning in the answer for each observation timed further behind the reception clock
    than the allowed lateness: accepted here, but the rules stage will refuse it as too late
    (unless the city's other readings are as late), so the sender hears it now."""
    limit = received_at - timedelta(seconds=lateness_s)
    for o in out.observations:
        t = o.__dict__["time"]
        if t < limit:
            behind = format_duration((received_at - t).total_seconds())
            out.warnings.append(
                f"{o.entity}: late: its time {format_time(t)} is {behind} behind the reception "
                f"clock, beyond the allowed lateness ({format_duration(lateness_s)}): the rules "
                "will refuse it as too late (DLQ)"
            )


def _reject(out: IngestResult, reason: str, code: str, detail: str | None = None) -> None:
    out.rejections.append(Rejection(reason, "payload", code, detail=detail))


def _parse(
    body: Any,
    content_type: str | None,
    link: str | None,
    headers: Mapping[str, str] | None,
    source: str,
    received_at: datetime | None,
    opts: IngestOptions,
    out: IngestResult,
) -> None:
    if type(body) is not bytes:
        if isinstance(body, str):
            body = body.encode("utf-8", "surrogatepass")
        elif not isinstance(body, bytes):
            body = bytes(body)
    out.body = body  # its digest is computed when asked for
    hdrs = {k.lower(): v for k, v in headers.items()} if headers else {}
    content_type = (content_type or hdrs.get("content-type") or "").lower()
    link = link or hdrs.get("link")
    if len(body) > opts.max_payload_bytes:
        _reject(
            out, f"payload of {len(body)} bytes exceeds the {opts.max_payload_bytes}-byte limit", "oversize"
        )
        return
    if not body or (body[0] in _SPACE and not body.strip()):  # (a copy only if it starts with space)
        _reject(out, "empty body", "empty")
        return
    if "charset" in content_type:
        body = _as_utf8(body, content_type, out)
        if body is None:
            return
    try:
        doc, dups = decode(body)
    except JSONRejected as exc:
        _reject(out, str(exc), exc.code)
        return
    if type(doc) is dict and "body" in doc and "metadata" in doc and len(doc) == 2:
        doc = _unwrap_mqtt(doc, hdrs, out)
        if doc is None:
            return
        content_type = (content_type or hdrs.get("content-type") or "").lower()
        link = link or hdrs.get("link")
    ld_hint = (
        "ld+json" in content_type or "geo+json" in content_type or bool(link and "json-ld#context" in link)
    )
    v2_hint = "ngsiv2-attrsformat" in hdrs
    default_dialect = "ld" if ld_hint and not v2_hint else "v2"
    tenant, service_path = (
        # the tenant the request's ingest token is bound to (the header, if any, named it: ignoring
        # case, so the token's spelling is the tenant's), else the request's tenant header
        (hdrs.get("auth-tenant") or "").strip()
        or (hdrs.get("ngsild-tenant") or "").strip()
        or (hdrs.get("fiware-service") or "").strip()
        or None,  # (a blank header names no tenant, as ingest auth reads it)
        hdrs.get("fiware-servicepath"),
    )
    service_paths = None
    if tenant is not None or service_path is not None:
        tenant, service_path = header_text(tenant), header_text(service_path)
        bad = bad_tenant(tenant)
        if bad:
            _reject(out, bad, "bad-tenant")
            return
        if service_path is not None and "," in service_path:
            # Orion lists the service path of each entity of the notification, in data order
            paths = [p.strip() for p in service_path.split(",")]
            service_path = ",".join(paths)
            if len(set(paths)) == 1:
                service_path = paths[0]
            else:
                service_paths = paths
    ctx = PayloadContext(
        default_dialect,
        source,
        opts,
        future_limit(received_at, opts),
        dups,
        received_at,
        "received",
        tenant,
        service_path,
        service_paths,
        "auth-source" in hdrs,
    )
    if type(doc) is list:
        out.format = "array"
        _items(doc, "", ctx, out)
    elif type(doc) is dict:
        if "data" in doc and (doc.get("type") == "Notification" or "subscriptionId" in doc):
            _notification(doc, ctx, received_at, v2_hint, out)  # what _object would do first
        else:
            _object(doc, ctx, received_at, v2_hint, out)
        if dups:
            _duplicate_in_envelope(doc, dups, out)
    else:
        _reject(
            out,
            f"a JSON {type(doc).__name__} is not an event; expected an NGSI notification, an entity "
            "or an observation object",
            "unrecognised",
        )


def _items(items: list, prefix: str, ctx: PayloadContext, out: IngestResult) -> None:
    fast = fastpath.ENABLED and not ctx.duplicates
    paths = _entity_paths(ctx, len(items), out)
    for i, item in enumerate(items):
        if paths is not None:
            ctx.service_path = paths[i]
        if type(item) is dict:
            if item.keys() >= CONTRACT_KEYS:
                normalise_observation(item, f"{prefix}[{i}]", ctx, out)
                continue
            if item.get("type") == "Feature" and is_feature(item):  # an array of GeoJSON entities
                if not rejected_duplicates(item, None, f"{prefix}[{i}]", ctx, out):
                    _feature(item, f"{prefix}[{i}]", ctx, out)
                continue
            if fast and fast_entity(item, ctx, out):
                continue
        general_entity(item, f"{prefix}[{i}]", ctx, out)


def _entity_paths(ctx: PayloadContext, n: int, out: IngestResult) -> list[str] | None:
    """The per-entity service paths of an Orion notification, or None (one path for all)."""
    paths = ctx.service_paths
    if paths is None:
        return None
    ctx.service_paths = None
    if len(paths) == n:
        return paths
    out.warnings.append(
        f"service-path: Fiware-ServicePath lists {len(paths)} paths for {n} entities; "
        f"kept as sent ({ctx.service_path!r}) on each"
    )
    return None


def _object(
    doc: dict, ctx: PayloadContext, received_at: datetime | None, v2_hint: bool, out: IngestResult
) -> None:
    kind = doc.get("type")
    if "data" in doc and (kind == "Notification" or "subscriptionId" in doc):
        _notification(doc, ctx, received_at, v2_hint, out)
    elif kind == "FeatureCollection":
        out.format = "geojson"
        if _context_ok(doc, out):
            ctx.dialect = "ld"
            _features(doc, "features", ctx, out)
    elif is_feature(doc):  # one entity in NGSI-LD's GeoJSON representation (GET /entities/{id})
        out.format = "geojson"
        if _context_ok(doc, out):
            ctx.dialect = "ld"
            _feature(doc, "", ctx, out)
    elif kind == "Notification":
        _reject(out, "NGSI-LD Notification without a data member", "no-data")
    elif "contextResponses" in doc and "subscriptionId" in doc:
        _reject(
            out,
            "an NGSI-v1 (attrsFormat 'legacy') notification; Atalaia reads NGSI-v2 and NGSI-LD: "
            "subscribe with attrsFormat normalized or keyValues",
            "legacy-format",
        )
    elif kind == "Subscription" or ("notification" in doc and ("subject" in doc or "entities" in doc)):
        _reject(
            out,
            "this is a subscription request, not a notification; POST it to the context broker",
            "not-a-notification",
        )
    elif looks_like_observation(doc):
        out.format = "observation"
        normalise_observation(doc, "", ctx, out)
    elif "id" in doc or "@id" in doc or ("type" in doc and "data" not in doc):
        out.format = "entity"
        normalise_entity(doc, "", ctx, out)
    else:
        keys = ", ".join(list(doc)[:8])
        _reject(
            out,
            "unrecognised JSON object: expected an NGSI-LD/NGSI-v2 notification, an entity or an "
            f"observation (keys: {keys[:200]})",
            "unrecognised",
        )


#: attribute types only NGSI-LD has (v2 shares "Relationship")
_LD_ONLY_TYPES = LD_TYPES - {"Relationship"}


def _ld_attributes(doc: dict) -> bool:
    """The first entity of a notification's data has an NGSI-LD-only attribute type (Property)."""
    data = doc.get("data")
    first = data[0] if type(data) is list and data else None
    if type(first) is not dict:
        return False
    return any(
        type(a) is dict and type(k := a.get("type")) is str and k in _LD_ONLY_TYPES for a in first.values()
    )


def _v2_attributes(doc: dict) -> bool:
    """The first entity of a notification's data has an attribute that only NGSI-v2 writes: an
    object with a ``value`` (or ``metadata``) under a type NGSI-LD has not (``Number``, ``Text``)."""
    data = doc.get("data")
    first = data[0] if type(data) is list and data else None
    if type(first) is not dict:
        return False
    return any(
        type(a) is dict
        and ("value" in a or "metadata" in a)
        and type(k := a.get("type")) is str
        and k not in LD_TYPES
        for a in first.values()
    )


def _context_ok(doc: dict, out: IngestResult) -> bool:
    if "@context" in doc:
        err = context_error(doc["@context"])
        if err:
            _reject(out, err + "; not valid JSON-LD", "bad-context")
            return False
    return True


def _notification(
    doc: dict, ctx: PayloadContext, received_at: datetime | None, v2_hint: bool, out: IngestResult
) -> None:
    # NGSI-LD notifications always say type "Notification" and NGSI-v2 ones never do, so that
    # (or an @context) wins over an Ngsiv2-AttrsFormat header (which a broker once put on every
    # notification); a body with neither is NGSI-LD when its attributes say so (a broker that
    # leaves the type out) or by its notifiedAt (a member NGSI-v2 notifications do not have), not
    # by its content type alone (v2 bodies are posted as ld+json too)
    ld = (
        doc.get("type") == "Notification"
        or "@context" in doc
        or (not v2_hint and (_ld_attributes(doc) or ("notifiedAt" in doc and not _v2_attributes(doc))))
    )
    ctx.dialect = "ld" if ld else "v2"
    out.format = "ngsi-ld/notification" if ld else "ngsi-v2/notification"
    nid = doc.get("id")
    out.notification_id = nid if type(nid) is str and nid else None
    if "@context" in doc and not _context_ok(doc, out):
        return
    notified = doc.get("notifiedAt")
    if type(notified) is str:
        pt = parse_observation_time(notified)
        if pt.time is None:
            out.warnings.append(f"notifiedAt {pt.error}")
        else:
            if not pt.zoned:
                out.warnings.append(
                    f"time-without-zone: notifiedAt {notified!r} has no UTC offset; UTC assumed"
                )
            if received_at is None:
                ctx.future_limit = future_limit(pt.time, ctx.options)
            if ctx.future_limit is not None and received_at is not None and pt.time > ctx.future_limit:
                # the broker's clock runs ahead of ours beyond the tolerance: its notifiedAt would
                # time every reading that has no time of its own in the future (refused by the
                # rules); they keep the reception time
                out.warnings.append(
                    f"future-time: notifiedAt {notified} is ahead of the reception clock beyond the "
                    "tolerance (the broker's clock runs fast?); readings without a time of their own "
                    "are timed by their reception"
                )
            else:
                ctx.fallback_time, ctx.fallback_source = pt.time, "notified"
    elif notified is not None:  # (an epoch number, an object): said, as unparseable text is
        out.warnings.append(f"notifiedAt is a {type(notified).__name__}, not an RFC 3339 date-time text")
    data = doc["data"]
    if not ld and type(data) is list and data and all(type(d) is list for d in data):
        _reject(
            out,
            "an NGSI-v2 'values' notification: its rows carry no entity id or type, so they cannot be "
            "keyed; subscribe with attrsFormat normalized or keyValues",
            "values-format",
        )
        return
    if ld and doc.get("triggerReason") == "entityDeleted" and _deleted_entities(data, out):
        return
    if type(data) is list:
        if (
            len(data) == 1 and ctx.service_paths is None and fastpath.ENABLED and not ctx.duplicates
        ):  # the usual notification
            item = data[0]
            if type(item) is dict and not item.keys() >= CONTRACT_KEYS and fast_entity(item, ctx, out):
                return
        _items(data, "data", ctx, out)
    elif type(data) is dict and data.get("type") == "FeatureCollection":
        out.format += "/geojson"
        if _context_ok(data, out):
            _features(data, "data.features", ctx, out)
    else:
        _reject(
            out,
            f"notification data must be an array of entities (or a GeoJSON FeatureCollection), "
            f"not a {'single entity object' if type(data) is dict else type(data).__name__}",
            "data-not-array",
        )


def _deleted_entities(data: Any, out: IngestResult) -> bool:
    """NGSI-LD 1.8's notification of deleted entities (``triggerReason`` entityDeleted): what they
    still carry are their last values, not readings at the notification's time (an entity with
    ``deletedAt`` is ignored likewise). Each is ignored with a note; an item that is no entity
    (no feature) is refused as it would be in any notification. False when ``data`` is neither an
    array nor a GeoJSON FeatureCollection (refused by the caller)."""
    if type(data) is list:
        items, where, geojson = data, "data", False
    elif (
        type(data) is dict and data.get("type") == "FeatureCollection" and type(data.get("features")) is list
    ):
        items, where, geojson = data["features"], "data.features", True
    else:
        return False
    for i, item in enumerate(items):
        entity = item
        if geojson:
            entity = item.get("properties") if type(item) is dict else None
            if type(entity) is dict and "id" not in entity:
                entity = {**entity, "id": item.get("id")}
        if type(entity) is not dict:
            what = (
                "GeoJSON Feature without a properties object"
                if geojson
                else f"expected an entity object, got a {type(entity).__name__}"
            )
            code = "bad-geojson" if geojson else "not-an-entity"
            out.rejections.append(Rejection(what, "entity", code, detail=f"{where}[{i}]"))
            continue
        eid = entity.get("id")
        out.ignored.append(
            f"{eid if type(eid) is str else '?'}: entity deleted (triggerReason entityDeleted)"
        )
    return True


def _features(fc: dict, where: str, ctx: PayloadContext, out: IngestResult) -> None:
    features = fc.get("features")
    if type(features) is not list:
        _reject(out, "FeatureCollection without a features array", "bad-geojson")
        return
    for i, f in enumerate(features):
        w = f"{where}[{i}]"
        if rejected_duplicates(f, None, w, ctx, out):
            continue
        _feature(f, w, ctx, out)


def is_feature(doc: Any) -> bool:
    """A GeoJSON ``Feature`` holding an entity in its ``properties`` (NGSI-LD's GeoJSON
    representation of one entity), not an entity whose NGSI type is named Feature."""
    return (
        type(doc) is dict
        and doc.get("type") == "Feature"
        and type(doc.get("properties")) is dict
        and "geometry" in doc
    )


def _feature(f: Any, w: str, ctx: PayloadContext, out: IngestResult) -> None:
    """The entity of one GeoJSON Feature: its ``properties``, with the Feature's ``id`` and, when
    the properties name no location, its ``geometry``."""
    props = f.get("properties") if type(f) is dict else None
    if type(props) is not dict:
        out.rejections.append(
            Rejection("GeoJSON Feature without a properties object", "entity", "bad-geojson", detail=w)
        )
        return
    entity = dict(props)
    if "id" not in entity and "id" in f:
        entity["id"] = f["id"]
    if "location" not in entity and type(f.get("geometry")) is dict:
        entity["location"] = f["geometry"]
    normalise_entity(entity, w, ctx, out)


def _duplicate_in_envelope(doc: dict, dups: Duplicates, out: IngestResult) -> None:
    """A key written twice in the notification itself (not inside an entity) refuses the payload."""
    names = list(dups.get(id(doc), ()))
    data = doc.get("data")
    if type(data) is dict and out.format.endswith("/geojson"):
        names += dups.get(id(data), ())
    if names and out.format != "entity" and out.format != "observation":
        out.observations.clear()
        listed = ", ".join(repr(k) for k in dict.fromkeys(names))
        _reject(
            out,
            f"key {listed} is written more than once in the notification; refusing to guess which "
            "value is right",
            "duplicate-keys",
        )
