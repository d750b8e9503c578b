"""Records already in the Observation contract shape (``atalaia send``, replays, other Atalaias).

Validated by hand rather than by pydantic's lax mode, which would coerce ``"3.42"`` and ``true``
into floats; the same rules as for NGSI entities apply (no coercion, zone, location checks).
"""

from __future__ import annotations

from typing import Any

from atalaia.streams.clock import format_time
from atalaia.streams.ingest.attributes import is_number, number_like_text
from atalaia.streams.ingest.build import build_observation
from atalaia.streams.ingest.entity import (
    PayloadContext,
    bad_location,
    bad_tenant,
    rejected_duplicates,
    unsafe_rejection,
    unsafe_text,
)
from atalaia.streams.ingest.geo import LocationError, check_point
from atalaia.streams.ingest.observation import TIME_SOURCES
from atalaia.streams.ingest.result import IngestResult, Rejection
from atalaia.streams.ingest.timeparse import FUTURE, parse_observation_time

CONTRACT_KEYS = frozenset({"time", "entity", "attributes"})


def looks_like_observation(d: Any) -> bool:
    return type(d) is dict and d.keys() >= CONTRACT_KEYS


def _text_map(v: Any) -> dict[str, str]:
    if type(v) is not dict:
        return {}
    return {k: x for k, x in v.items() if type(x) is str}


def normalise_observation(raw: dict, where: str, ctx: PayloadContext, out: IngestResult) -> None:
    eid, etype = raw.get("entity"), raw.get("type")
    if type(eid) is not str or not eid:
        out.rejections.append(Rejection("observation has no entity id", "entity", "missing-id", detail=where))
        return
    if type(etype) is not str or not etype:
        out.rejections.append(
            Rejection("observation has no type", "entity", "missing-type", entity=eid, detail=where)
        )
        return
    for what, text in (("id", eid), ("type", etype)):
        why = unsafe_text(text)
        if why:
            out.rejections.append(unsafe_rejection(what, text, why, where, None if what == "id" else eid))
            return
    if ctx.duplicates and rejected_duplicates(raw, eid, where, ctx, out):
        return
    accepted = ctx.options.accepted_types
    if accepted is not None and etype not in accepted:
        out.ignored.append(f"{eid}: entity type {etype} is not subscribed")
        return
    t = raw.get("time")
    pt = parse_observation_time(t) if type(t) is str else None
    if pt is None or pt.time is None:
        reason = pt.error if pt is not None else "missing or not text"
        out.rejections.append(
            Rejection(
                f"observation time {reason}",
                "entity",
                "missing-time" if pt is None else "bad-time",
                entity=eid,
                detail=where,
            )
        )
        return
    given_quality = raw.get("quality")
    quality = [q for q in given_quality if type(q) is str] if type(given_quality) is list else []
    carried = len(quality)
    given = raw["attributes"]
    if type(given) is not dict:
        out.rejections.append(
            Rejection(
                "attributes must be an object of name -> number",
                "entity",
                "bad-attributes",
                entity=eid,
                detail=where,
            )
        )
        return
    attrs: dict[str, float] = {}
    for name, v in given.items():
        tv = type(v)
        if (tv is float and v - v == 0.0) or tv is int:  # is_number, inlined
            attrs[name] = float(v)
            continue
        if type(v) is str and number_like_text(v, True):
            code, reason = (
                "number-as-text",
                f"{name} value {v[:40]!r} is a number written as text; not coerced",
            )
        else:
            code, reason = "wrong-value-type", f"{name} value is a {type(v).__name__}, not a finite number"
        out.rejections.append(Rejection(reason, "attribute", code, entity=eid, attribute=name, detail=where))
        quality.append(f"{code}: {reason}")
    location = None
    loc = raw.get("location")
    if loc is not None:
        try:
            if type(loc) is not list or len(loc) != 2 or not (is_number(loc[0]) and is_number(loc[1])):
                raise LocationError("location must be [lon, lat] numbers")
            location = (float(loc[0]), float(loc[1]))
            warning = check_point(location, ctx.options.area_of_interest)
            if warning:
                quality.append(warning)
        except LocationError as exc:
            location = None
            bad_location(exc, eid, where, quality, out)
    if not pt.zoned:
        quality.append(f"time-without-zone: {t!r} has no UTC offset; UTC assumed")
    if ctx.future_limit is not None and pt.time > ctx.future_limit:
        quality.append(
            f"future-time: {format_time(pt.time)} is ahead of the reception clock beyond the tolerance{FUTURE}"
        )
    for q in quality[carried:]:
        out.warnings.append(f"{eid}: {q}")
    if not attrs:
        if not given:
            out.ignored.append(f"{eid} ({etype}): no attributes, nothing to observe")
        return
    src = raw.get("source")
    time_source = raw.get("time_source")
    if time_source not in TIME_SOURCES:
        time_source = "observed"  # a record from before time_source, or a producer's own
    tenant, service_path = ctx.tenant, ctx.service_path  # the headers win over the record
    if tenant is None and service_path is None:
        tenant, service_path = _text_or_none(raw.get("tenant")), _text_or_none(raw.get("service_path"))
        bad = bad_tenant(tenant)
        if bad:
            out.rejections.append(Rejection(bad, "entity", "bad-tenant", entity=eid, detail=where))
            return
        if tenant is not None and ctx.authenticated:
            # a token bound to no tenant covers requests naming none (README): its body may not
            # name one either, or it would write into any tenant's sensors and incidents
            reason = (
                f"the record names tenant {tenant!r} but the request's ingest token is bound to no "
                "tenant: send it with a token of that tenant"
            )
            out.rejections.append(Rejection(reason, "entity", "tenant-not-allowed", entity=eid, detail=where))
            return
    out.observations.append(
        build_observation(
            pt.time,
            eid,
            etype,
            attrs,
            location,
            src if type(src) is str and src else ctx.source,
            _text_map(raw.get("units")),
            _text_map(raw.get("labels")),
            quality,
            time_source,
            tenant,
            service_path,
        )
    )


def _text_or_none(v: Any) -> str | None:
    return v if type(v) is str and v else None
