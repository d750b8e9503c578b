"""The incident manager as a pipeline-stage core (``atalaia.streams.stage.Core``): a batch of Kafka
records from ``atalaia.alarms`` and/or ``atalaia.commands`` in, records for ``atalaia.incidents``
and ``atalaia.replies`` out. Malformed input never stops the stage: a bad command gets a rejecting
reply, a bad alarm is counted and logged.

    core = IncidentCore(config, checkpoint_bytes_or_None)
    outs = core.process(records, now=time.time())   # records: .value JSON bytes, .topic
    outs += core.tick(time.time())                   # shelve expiry, closing hold, maintenance
    blob = core.snapshot()                           # persist with the offsets
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from pydantic import ValidationError

from atalaia.incidents.commands import Command
from atalaia.incidents.config import IncidentConfig
from atalaia.incidents.events import CommandReply, IncidentEvent
from atalaia.incidents.manager import IncidentManager
from atalaia.incidents.model import fmt, to_us
from atalaia.streams.stage import Out

log = logging.getLogger(__name__)


class IncidentCore:
    def __init__(self, config: IncidentConfig | None = None, state: bytes | None = None) -> None:
        self.manager = IncidentManager(config)
        self.state = self.manager.restore(state) if state else self.manager.initial_state()
        self.rejected_inputs = 0

    def process(self, records: list[Any], now: float) -> list[Out]:
        inputs: list[Any] = []
        early: list[Out] = []
        for rec in records:
            value = getattr(rec, "value", rec)
            try:
                d = orjson.loads(value) if isinstance(value, bytes | str) else value
                if not isinstance(d, dict):
                    raise ValueError("not a JSON object")
                if "action" in d or str(getattr(rec, "topic", "")).endswith(".commands"):
                    inputs.append(Command.model_validate(d))
                else:
                    inputs.append(d)
            except (ValueError, ValidationError) as e:
                self.rejected_inputs += 1
                early.extend(self._bad(value, e, now))
        errors: list[tuple[int, str]] = []
        self.state, outs = self.manager.step_batch(self.state, inputs, now, errors)
        for _, message in errors:
            self.rejected_inputs += 1
            log.warning("incident manager skipped a malformed alarm transition: %s", message)
        return early + [encode(o) for o in outs]

    def tick(self, now: float) -> list[Out]:
        self.state, outs = self.manager.tick(self.state, now)
        return [encode(o) for o in outs]

    def snapshot(self) -> bytes:
        return self.manager.snapshot(self.state)

    def _bad(self, value: Any, error: Exception, now: float) -> list[Out]:
        try:
            d = orjson.loads(value) if isinstance(value, bytes | str) else value
        except ValueError:
            d = None
        if isinstance(d, dict) and ("action" in d or "incident" in d):
            reply = CommandReply(
                str(d.get("id") or ""),
                str(d.get("incident") or ""),
                str(d.get("action") or ""),
                str(d.get("actor") or ""),
                False,
                f"invalid command: {_short(error)}",
                fmt(to_us(now)),
            )
            return [encode(reply)]
        log.warning("incident manager skipped a malformed input: %s", _short(error))
        return []


def encode(o: IncidentEvent | CommandReply) -> Out:
    if isinstance(o, CommandReply):
        return Out("replies", o.to_json(), o.command.encode())
    return Out("incidents", o.to_json(), o.incident.encode())


def _short(e: Exception) -> str:
    if isinstance(e, ValidationError):
        err = e.errors()[0]
        return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
    return str(e)
