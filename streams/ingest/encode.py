"""``encode_observation(o)``: the same bytes as ``Observation.to_json()``, several times faster,
for the agent that publishes thousands of Observations a second on ``atalaia.observations``."""

from __future__ import annotations

from datetime import datetime

import orjson

from atalaia.streams.clock import format_time
from atalaia.streams.ingest.observation import Observation, observation_id
from atalaia.streams.ingest.timeparse import _CACHE_MAX, forget_older_half, formatted

_dumps = orjson.dumps


def time_text(t: datetime) -> str:
    """``format_time(t)``, cached (times parsed by ingest are usually there already)."""
    s = formatted.get(t)
    if s is None:
        s = format_time(t)
        if len(formatted) >= _CACHE_MAX:
            forget_older_half(formatted)
        formatted[t] = s
    return s


def encode_observation(o: Observation) -> bytes:
    return _dumps(observation_dict(o))


def observation_dict(o: Observation) -> dict:
    """The contract dict of ``o``: what decoding ``encode_observation(o)`` gives back (the fused
    ingest+rules stage evaluates it without a round trip through JSON)."""
    d = o.__dict__
    time = time_text(d["time"])
    loc = d["location"]
    entity = d["entity"]
    attributes = d["attributes"]
    tenant = d["tenant"]
    out = {
        "time": time,
        "entity": entity,
        "type": d["type"],
        "attributes": attributes,
        "location": [loc[0], loc[1]] if loc else None,
        "source": d["source"],
        "units": d["units"],
        "labels": d["labels"],
        "quality": d["quality"],
        "time_source": d["time_source"],
    }
    if tenant is not None or d["service_path"] is not None:
        if tenant is not None:
            out["tenant"] = tenant
        if d["service_path"] is not None:
            out["service_path"] = d["service_path"]
        out["id"] = observation_id(entity, time, attributes, tenant)
    else:
        out["id"] = observation_id(entity, time, attributes)
    return out
