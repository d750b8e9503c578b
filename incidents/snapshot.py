"""Manager state <-> bytes. The format is versioned JSON (orjson), zlib-compressed; times are integer
microseconds so a restored state behaves exactly like the uninterrupted one (timers included)."""

from __future__ import annotations

import zlib
from collections import deque
from dataclasses import fields
from typing import Any

import orjson

from atalaia.incidents.kpi import FloodMeter, KpiState
from atalaia.incidents.model import AlarmRecord, AuditEntry, Incident, ManagerState

MAGIC = b"ATALAIA-INCIDENTS/1\n"


def _plain(obj: Any) -> Any:
    if hasattr(obj, "__dataclass_fields__"):
        return {f.name: _plain(getattr(obj, f.name)) for f in fields(obj) if f.name != "cached_view"}
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | deque):
        return [_plain(v) for v in obj]
    return obj


def dump(state: ManagerState) -> bytes:
    return MAGIC + zlib.compress(orjson.dumps(_plain(state)), 1)


def load(data: bytes) -> ManagerState:
    if not data.startswith(MAGIC):
        raise ValueError("not an incident-manager snapshot (or an unsupported format version)")
    try:
        d = orjson.loads(zlib.decompress(data[len(MAGIC) :]))
    except (zlib.error, orjson.JSONDecodeError) as e:
        raise ValueError(f"corrupt incident-manager snapshot: {e}") from None
    incidents = {}
    for iid, raw in d.pop("incidents").items():
        alarms = {ak: AlarmRecord(**a) for ak, a in raw.pop("alarms").items()}
        audit = [AuditEntry(**e) for e in raw.pop("audit")]
        incidents[iid] = Incident(**raw, alarms=alarms, audit=audit)
    kpi_raw = d.pop("kpi")
    meters = {
        name: FloodMeter(**{**m, "times": deque(m["times"])}) for name, m in kpi_raw.pop("meters").items()
    }
    kpi = KpiState(meters=meters, **kpi_raw)
    return ManagerState(incidents=incidents, kpi=kpi, **d)


def copy_meter(m: FloodMeter) -> FloodMeter:
    return FloodMeter(deque(m.times), m.flood_us, m.since, m.clock, m.total, m.peak)
