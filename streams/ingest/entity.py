"""One NGSI entity (any representation) -> Observations, one per distinct observation time."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from atalaia.streams.clock import format_time
from atalaia.streams.ingest import fastpath
from atalaia.streams.ingest.attributes import (
    TIME_FIELDS,
    Parts,
    absent_time,
    entity_units,
    read_attributes,
    short_name,
    term,
    time_text,
)
from atalaia.streams.ingest.build import build_observation
from atalaia.streams.ingest.geo import (
    LocationError,
    check_point,
    geo_point_text,
    geo_points_text,
    geometry_point,
)
from atalaia.streams.ingest.jsonparse import Duplicates, duplicates_in
from atalaia.streams.ingest.options import IngestOptions
from atalaia.streams.ingest.result import IngestResult, Rejection
from atalaia.streams.ingest.timeparse import FUTURE, parse_observation_time

MAX_ID_CHARS = 1024

# C0 and C1 controls (NUL included), DEL, the Unicode Bidi_Control characters (ALM, LRM, RLM, the
# embeddings/overrides U+202A-U+202E and the isolates U+2066-U+2069) and the line/paragraph
# separators: in an id they forge log lines and make two different ids look the same on screen.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def unsafe_text(text: str) -> str | None:
    """Why an id or type is unsafe (the first offending character), or None."""
    m = _UNSAFE.search(text)
    if m is None:
        return None
    return f"U+{ord(m.group()):04X} at position {m.start()}"


def unsafe_rejection(what: str, text: str, why: str, where: str, eid: str | None = None) -> Rejection:
    shown = ascii(text[:80])[1:-1]  # escaped: the reason itself must not carry the characters
    return Rejection(
        f"entity {what} '{shown}' contains a control or bidi-override character ({why}); refused",
        "entity",
        f"unsafe-{what}",
        entity=eid,
        detail=where,
    )


@dataclass(slots=True)
class PayloadContext:
    """What every entity of one payload shares."""

    dialect: str  # "ld" or "v2"
    source: str
    options: IngestOptions
    future_limit: datetime | None  # observation times after this get a clock-skew warning
    duplicates: Duplicates | None  # the JSON had duplicate keys: look for them per entity
    # time of the measurements that carry no observation time: the notification's notifiedAt
    # ("notified"), else the reception time ("received"); None: no fallback, they are refused
    fallback_time: datetime | None = None
    fallback_source: str = "received"
    tenant: str | None = None  # NGSILD-Tenant / Fiware-Service header
    service_path: str | None = None  # Fiware-ServicePath header
    # Orion's Fiware-ServicePath of a notification: one path per entity of ``data``, comma-separated
    service_paths: list[str] | None = None
    # the request came with an ingest token (ingest auth is on): its tenant, or none, is the
    # payload's, and a record of the Observation contract may not name another in its body
    authenticated: bool = False


MAX_TENANT_CHARS = 64


def header_text(v: str | None) -> str | None:
    if v is None:
        return None
    v = v.strip()
    return v or None


def bad_tenant(tenant: str | None) -> str | None:
    """Why a tenant header cannot name a tenant (it is part of entity and alarm keys), or None."""
    if tenant is None:
        return None
    if len(tenant) > MAX_TENANT_CHARS:
        return f"tenant is longer than {MAX_TENANT_CHARS} characters"
    if any(c in "|/" or c.isspace() or not c.isprintable() for c in tenant):
        return f"tenant {tenant[:40]!r} holds a space, '|', '/' or a control character; not a tenant name"
    return None


def context_error(ctx: Any) -> str | None:
    """Why an ``@context`` value is not valid JSON-LD, or None. ``null`` is valid (JSON-LD 1.1:
    no context beyond the core one)."""
    if type(ctx) is str or type(ctx) is dict or ctx is None:
        return None
    if type(ctx) is list:
        for item in ctx:
            if type(item) is not str and type(item) is not dict:
                return f"@context array holds a {type(item).__name__}; items must be URI strings or objects"
        return None
    return f"@context is a {type(ctx).__name__}; it must be a URI string, an object or an array"


def rejected_duplicates(
    raw: Any, eid: str | None, where: str, ctx: PayloadContext, out: IngestResult
) -> bool:
    """Refuse an entity in which some key is written twice (JSON parsers silently keep the last)."""
    if not ctx.duplicates:
        return False
    dups = duplicates_in(raw, ctx.duplicates)
    if not dups:
        return False
    names = ", ".join(repr(d) for d in dict.fromkeys(dups))
    out.rejections.append(
        Rejection(
            f"key {names} is written more than once; refusing to guess which value is right",
            "entity",
            "duplicate-keys",
            entity=eid,
            detail=where,
        )
    )
    return True


MAX_TYPES = 8  # of one multi-typed entity; more are refused (each is a rule lookup)


def _entity_type(raw: Any, dialect: str) -> str | None:
    if type(raw) is list and raw and type(raw[0]) is str:
        raw = raw[0]
    if type(raw) is str and raw:
        return term(raw, dialect)
    return None


def _entity_types(raw: Any) -> tuple[str, ...] | str | None:
    """A multi-typed entity's types (short names, in order, each once), None for one type, or
    the reason they are refused."""
    if type(raw) is not list or len(raw) < 2:
        return None
    if len(raw) > MAX_TYPES:
        return f"entity has {len(raw)} types (at most {MAX_TYPES})"
    types: list[str] = []
    for t in raw:
        if type(t) is not str or not t:
            return "entity type list holds something that is not a type name"
        why = unsafe_text(t)
        if why:
            return f"entity type {t[:60]!r} {why}"
        types.append(short_name(t))
    types = list(dict.fromkeys(types))
    return tuple(types) if len(types) > 1 else None


def normalise_entity(raw: Any, where: str, ctx: PayloadContext, out: IngestResult) -> None:
    """Append the Observations of one entity to ``out`` (or its rejections / ignore note)."""
    if fastpath.ENABLED and type(raw) is dict and not ctx.duplicates and fastpath.fast_entity(raw, ctx, out):
        return
    general_entity(raw, where, ctx, out)


def deleted_entity(raw: dict[str, Any], out: IngestResult) -> bool:
    """An Orion v2 notification of a deleted entity (the subscription asked for the
    ``alterationType`` attribute: ``entityDelete``) carries its last values, not a new reading:
    the entity is ignored (with a note), never observed again at the reception time.
    ``alterationType`` itself is never a state or label (it is in RESERVED)."""
    kind = raw["alterationType"]
    if type(kind) is dict:
        kind = kind.get("value")
    if kind != "entityDelete":
        return False
    eid = raw.get("id")
    out.ignored.append(f"{eid if type(eid) is str else '?'}: entity deleted (alterationType entityDelete)")
    return True


def general_entity(raw: Any, where: str, ctx: PayloadContext, out: IngestResult) -> None:
    """``normalise_entity`` without the fast path."""
    if type(raw) is not dict:
        out.rejections.append(
            Rejection(
                f"expected an entity object, got a {type(raw).__name__}",
                "entity",
                "not-an-entity",
                detail=where,
            )
        )
        return
    if "alterationType" in raw and deleted_entity(raw, out):
        return
    if raw.get("deletedAt") is not None and ("@context" in raw or ctx.dialect == "ld"):
        # NGSI-LD 1.8's notification of a deleted entity (triggerReason entityDeleted): what it
        # still carries are its last values, not a reading at the notification's time (in
        # NGSI-v2 deletedAt is an attribute name like any other)
        eid = raw.get("id")
        out.ignored.append(f"{eid if type(eid) is str else '?'}: entity deleted (deletedAt)")
        return
    eid = raw.get("id", raw.get("@id"))
    if type(eid) is not str or not eid or len(eid) > MAX_ID_CHARS:
        if eid is None:
            reason = "entity has no id"
        elif type(eid) is str:
            reason = f"entity id is empty or longer than {MAX_ID_CHARS} characters"
        else:
            reason = f"entity id is a {type(eid).__name__}, not text"
        out.rejections.append(
            Rejection(reason + "; it cannot be keyed or deduplicated", "entity", "missing-id", detail=where)
        )
        return
    why = unsafe_text(eid)
    if why:
        out.rejections.append(unsafe_rejection("id", eid, why, where))
        return
    dialect = "ld" if "@context" in raw else ctx.dialect
    raw_type = raw.get("type", raw.get("@type"))
    etype = _entity_type(raw_type, dialect)
    if etype is None:
        out.rejections.append(
            Rejection(
                "entity has no type (or it is not text)", "entity", "missing-type", entity=eid, detail=where
            )
        )
        return
    why = unsafe_text(raw_type[0] if type(raw_type) is list else raw_type)
    if why:
        out.rejections.append(unsafe_rejection("type", etype, why, where, eid))
        return
    types = _entity_types(raw_type)
    if type(types) is str:
        out.rejections.append(Rejection(types, "entity", "bad-type", entity=eid, detail=where))
        return
    accepted = ctx.options.accepted_types
    if accepted is not None and accepted.isdisjoint(types or (etype,)):
        out.ignored.append(f"{eid}: entity type {etype} is not subscribed")
        return
    if rejected_duplicates(raw, eid, where, ctx, out):
        return
    if "@context" in raw:
        err = context_error(raw["@context"])
        if err:
            out.rejections.append(
                Rejection(err + "; not valid JSON-LD", "entity", "bad-context", entity=eid, detail=where)
            )
            return
    parts = read_attributes(raw, dialect, ctx.options.max_label_chars)
    entity_units(types or (etype,), parts)
    first = len(out.observations)
    _emit(eid, etype, parts, where, ctx, out)
    if types:  # (Observations are frozen: what the model would hold had it been built with them)
        for o in out.observations[first:]:
            o.__dict__["types"] = types


def _entity_time(parts: Parts) -> tuple[str | None, str | None]:
    """(time text, None) from the first entity-level time attribute present, or (None, error)."""
    if parts.times:
        for name in TIME_FIELDS:
            if name in parts.times and not absent_time(parts.times[name]):
                return time_text(name, parts.times[name])
    return None, None


def _emit_states(
    eid: str, etype: str, parts: Parts, where: str, ctx: PayloadContext, out: IngestResult, quality: list[str]
) -> bool:
    """An entity with text or boolean properties and no measurement (a ``Device`` telling its
    ``deviceState``, a ``ParkingSpot`` its ``status``, a ``TrafficFlowObserved`` that it is
    ``congested``): one observation without attributes, its labels the states state rules read.
    Its time: the latest ``observedAt`` of those properties, else the entity's, else the
    notification's or the reception's (``time_source``). False when it has no usable time."""
    source = "observed"
    t, zoned_text = _latest_state_time(parts)
    if t is None:
        entity_text, _ = _entity_time(parts)
        pt = parse_observation_time(entity_text) if entity_text is not None else None
        if pt is not None and pt.time is not None:
            t, zoned_text = pt.time, (None if pt.zoned else entity_text)
        elif ctx.fallback_time is not None:
            t, source = ctx.fallback_time, ctx.fallback_source
    if t is None:
        return False
    if zoned_text is not None:
        quality.append(f"time-without-zone: {zoned_text!r} has no UTC offset; UTC assumed")
    location = _location(parts, eid, where, ctx, quality, out)
    _publish(eid, etype, parts, {(t, source): ({}, {})}, location, quality, ctx, out)
    return True


def _emit(eid: str, etype: str, parts: Parts, where: str, ctx: PayloadContext, out: IngestResult) -> None:
    quality: list[str] = []
    for r in parts.refused:
        out.rejections.append(
            Rejection(r.reason, "attribute", r.code, entity=eid, attribute=r.name, detail=where)
        )
        quality.append(f"{r.code}: {r.reason}")
    if parts.deleted:
        for name in parts.deleted:
            out.ignored.append(f"{eid}: attribute {name} deleted (actionType delete), not a reading")
    if not parts.measurements:
        if parts.has_state and _emit_states(eid, etype, parts, where, ctx, out, quality):
            return
        if not parts.refused and not parts.deleted:
            out.ignored.append(f"{eid} ({etype}): no numeric attribute or state, nothing to observe")
        _warn(eid, quality, out)
        return
    location = _location(parts, eid, where, ctx, quality, out)
    entity_text, entity_error = _entity_time(parts)
    entity_pt = None
    if entity_text is not None:
        entity_pt = parse_observation_time(entity_text)
        if entity_pt.time is None:
            entity_error, entity_pt = f"entity observation time {entity_pt.error}", None
    groups: dict[tuple[datetime, str], tuple[dict[str, float], dict[str, str]]] = {}
    untimed: list[str] = []
    unzoned: set[str] = set()
    fallback = ctx.fallback_time
    used_fallback = False
    for m in parts.measurements:
        source = "observed"
        if m.time is not None:
            pt = parse_observation_time(m.time)
            if pt.time is None:
                what = m.time_key
                out.rejections.append(
                    Rejection(
                        f"{m.name} {what} {pt.error}",
                        "attribute",
                        "bad-time",
                        entity=eid,
                        attribute=m.name,
                        detail=where,
                    )
                )
                quality.append(f"bad-time: {m.name} {what} {pt.error}")
                continue
            if not pt.zoned:
                unzoned.add(m.time)
            t = pt.time
        elif entity_pt is not None:
            if not entity_pt.zoned:
                unzoned.add(entity_text)  # type: ignore[arg-type]
            t = entity_pt.time
        elif fallback is not None:
            t, source, used_fallback = fallback, ctx.fallback_source, True
        else:
            untimed.append(m.name)
            continue
        attrs, units = groups.setdefault((t, source), ({}, {}))  # type: ignore[arg-type]
        if m.name in attrs:
            # two attributes of this entity with one short name at one time (a compact and an
            # expanded name, two datasets whose ids end alike): neither silently replaces the other
            reason = f"{m.name}: a second attribute with this name at the same time (the first is kept)"
            out.rejections.append(
                Rejection(
                    reason, "attribute", "duplicate-attribute", entity=eid, attribute=m.name, detail=where
                )
            )
            quality.append(f"duplicate-attribute: {reason}")
            continue
        attrs[m.name] = m.value
        if m.unit is not None:
            units[m.name] = m.unit
    if untimed:
        reason = entity_error or (
            "no observation time: no observedAt on the attribute, no "
            f"{'/'.join(TIME_FIELDS)} on the entity, and no notifiedAt or reception time"
        )
        if not groups:
            out.rejections.append(Rejection(reason, "entity", "missing-time", entity=eid, detail=where))
            _warn(eid, quality, out)
            return
        for name in untimed:
            out.rejections.append(
                Rejection(
                    f"{name}: {reason}", "attribute", "missing-time", entity=eid, attribute=name, detail=where
                )
            )
    if used_fallback and entity_error:
        quality.append(f"bad-time: {entity_error}; the {ctx.fallback_source} time is used")
    for text in sorted(unzoned):
        quality.append(f"time-without-zone: {text!r} has no UTC offset; UTC assumed")
    state_time = _latest_state_time(parts)[0] if parts.has_state else None
    if state_time is not None and groups and state_time > max(t for t, _ in groups):
        # a state observed after the measurements (a device's deviceState at 10:00 beside a
        # battery level of 09:00): an observation of its own at its time, as for a state alone;
        # at the measurements' time it would be an hour old (and refused as late)
        groups[(state_time, "observed")] = ({}, {})
    _publish(eid, etype, parts, groups, location, quality, ctx, out)


def _latest_state_time(parts: Parts) -> tuple[datetime | None, str | None]:
    """The latest valid ``observedAt`` of the entity's states (None if none has one), and its
    text when it has no UTC offset (for the quality warning)."""
    latest, unzoned = None, None
    for text in parts.state_times or ():
        pt = parse_observation_time(text) if type(text) is str else None
        if pt is not None and pt.time is not None and (latest is None or pt.time > latest):
            latest, unzoned = pt.time, (None if pt.zoned else text)
    return latest, unzoned


def _publish(
    eid: str,
    etype: str,
    parts: Parts,
    groups: dict[tuple[datetime, str], tuple[dict[str, float], dict[str, str]]],
    location: Any,
    quality: list[str],
    ctx: PayloadContext,
    out: IngestResult,
) -> None:
    """One observation per (time, time source) group, with the entity's warnings."""
    _warn(eid, quality, out)
    limit = ctx.future_limit
    for t, source in sorted(groups):
        attrs, units = groups[(t, source)]
        q = quality
        if limit is not None and t > limit:
            skew = f"future-time: {format_time(t)} is ahead of the reception clock beyond the tolerance (clock skew?){FUTURE}"
            q = [*quality, skew]
            out.warnings.append(f"{eid}: {skew}")
        out.observations.append(
            build_observation(
                t,
                eid,
                etype,
                attrs,
                location,
                ctx.source,
                units,
                parts.labels,
                q,
                source,
                ctx.tenant,
                ctx.service_path,
            )
        )


def _warn(eid: str, quality: list[str], out: IngestResult) -> None:
    for q in quality:
        out.warnings.append(f"{eid}: {q}")


def bad_location(exc: Exception, eid: str, where: str, quality: list[str], out: IngestResult) -> None:
    """An unusable location: the attribute is rejected (the entity is kept, without a location)."""
    out.rejections.append(
        Rejection(
            f"location: {exc}", "attribute", "bad-location", entity=eid, attribute="location", detail=where
        )
    )
    quality.append(f"bad-location: {exc}")


def _location(
    parts: Parts, eid: str, where: str, ctx: PayloadContext, quality: list[str], out: IngestResult
) -> tuple[float, float] | None:
    if not parts.has_location:
        return None
    try:
        g = parts.geometry
        if type(g) is str:
            point, note = geo_point_text(g), None
        elif type(g) is tuple:  # NGSI-v2 geo:line / geo:box / geo:polygon
            point, note = geo_points_text(*g)
        else:
            point, note = geometry_point(g)
        warning = check_point(point, ctx.options.area_of_interest)
    except LocationError as exc:
        bad_location(exc, eid, where, quality, out)
        return None
    if note:
        quality.append(f"location-geometry: {note}")
    if warning:
        quality.append(warning)
    return point


_last_limit: tuple[datetime, float, datetime] | None = None  # a batch shares its reception clock


def future_limit(reference: datetime | None, options: IngestOptions) -> datetime | None:
    global _last_limit
    if reference is None:
        return None
    tolerance = options.future_tolerance_s
    last = _last_limit
    if last is not None and last[0] is reference and last[1] == tolerance:
        return last[2]
    limit = reference + timedelta(seconds=tolerance)
    _last_limit = (reference, tolerance, limit)
    return limit
