"""The publishing agents' name for the one encoder of ``atalaia.observations``, which lives beside
the record in :mod:`atalaia.streams.ingest.observation`: ``encode_observation(o)`` is
``Observation.to_json()``, ``observation_dict(o)`` its dict, ``time_text`` the cached ``format_time``."""

from __future__ import annotations

from atalaia.streams.ingest.observation import encode_observation, observation_dict, time_text

__all__ = ["encode_observation", "observation_dict", "time_text"]
