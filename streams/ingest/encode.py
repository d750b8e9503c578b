"""``encode_observation(o)``: the same bytes as ``Observation.to_json()``, several times faster,
for the agent that publishes thousands of Observations a second on ``atalaia.observations``."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache

import orjson

from atalaia.streams.observation import Observation, format_time, observation_id

_format_time = lru_cache(maxsize=4096)(format_time)


def encode_observation(o: Observation) -> bytes:
    d = o.__dict__
    t: datetime = d["time"]
    time = _format_time(t)
    loc = d["location"]
    return orjson.dumps(
        {
            "time": time,
            "entity": d["entity"],
            "type": d["type"],
            "attributes": d["attributes"],
            "location": [loc[0], loc[1]] if loc else None,
            "source": d["source"],
            "units": d["units"],
            "labels": d["labels"],
            "quality": d["quality"],
            "id": observation_id(d["entity"], time, d["attributes"]),
        }
    )
