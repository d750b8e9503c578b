"""Manager state <-> bytes. The format is versioned JSON (orjson), zlib-compressed; times are integer
microseconds so a restored state behaves exactly like the uninterrupted one (timers included)."""

from __future__ import annotations

import zlib
from collections import deque
from typing import Any

import orjson

from atalaia.incidents.kpi import FloodMeter, KpiState
from atalaia.incidents.model import AlarmRecord, AuditEntry, Incident, ManagerState

MAGIC = b"ATALAIA-INCIDENTS/1\n"


def _default(obj: Any) -> Any:
    if isinstance(obj, deque):
        return list(obj)
    raise TypeError(f"cannot snapshot {type(obj).__name__}")


def dump(state: ManagerState) -> bytes:
    for inc in state.incidents.values():  # caches are not state: drop them so they are not written
        for rec in inc.alarms.values():
            rec.cached_view = None
    return MAGIC + zlib.compress(orjson.dumps(state, default=_default), 1)


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
        counted = "rule_firing" in raw
        incidents[iid] = Incident(**raw, alarms=alarms, audit=audit)
        if not counted:  # a snapshot from before the title followed the most severe rule
            incidents[iid].recount_rules()
    kpi_raw = d.pop("kpi")
    meters = {
        name: FloodMeter(**{**m, "times": deque(m["times"])}) for name, m in kpi_raw.pop("meters").items()
    }
    kpi = KpiState(meters=meters, **kpi_raw)
    from atalaia.incidents.silences import Silence

    d["silences"] = {k: Silence(**v) for k, v in d.get("silences", {}).items()}
    return ManagerState(incidents=incidents, kpi=kpi, **d)


def copy_meter(m: FloodMeter) -> FloodMeter:
    return FloodMeter(deque(m.times), m.flood_us, m.since, m.clock, m.total, m.peak)


def copy_kpi(k: KpiState) -> KpiState:
    return KpiState(
        meters={name: copy_meter(m) for name, m in k.meters.items()},
        chattering_flagged=k.chattering_flagged,
        auto_shelved=k.auto_shelved,
        by_rule=dict(k.by_rule),
    )
