"""The warnings stage core: ``atalaia.commands`` (records with ``"kind": "warning"``) →
``atalaia.warnings`` (warning events, CAP documents to publish, command replies).

Thin: decode, call :class:`~atalaia.warnings.core.Workflow`, encode. The state (every warning and
its audit trail) is the checkpoint, so a restart resumes where the last committed batch left it; a
redelivered command has the same id and is answered again without a second publication.

>>> import orjson
>>> from types import SimpleNamespace as R
>>> core = WarningsCore()
>>> draft = {"sender": "pc@cm-porto.pt", "level": "red", "event": "Cheia",
...          "area": {"geocodes": {"DICOFRE": ["131203"]}}}
>>> cmd = {"kind": "warning", "action": "draft", "actor": "ana", "role": "operator", "draft": draft}
>>> outs = core.process([R(value=orjson.dumps(cmd), topic="atalaia.commands")], 1796403600.0)
>>> [(o.topic, orjson.loads(o.value)["kind"]) for o in outs]
[('warnings', 'warning'), ('warnings', 'reply')]
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from atalaia.streams.records import DecodeError, dlq_for
from atalaia.streams.stage import Out
from atalaia.warnings.config import WarningsConfig
from atalaia.warnings.core import Workflow
from atalaia.warnings.records import (
    WarningRecord,
    WarningReply,
    command_id,
    decode_warning_command,
    refused_reply,
)


class WarningsCore:
    def __init__(self, config: WarningsConfig | None = None, state: bytes | None = None) -> None:
        self.workflow = Workflow(config)
        self.state = self.workflow.restore(state) if state else self.workflow.initial_state()

    def process(self, records: list[Any], now: float) -> list[Out]:
        """Each warning command decoded once (:func:`~atalaia.warnings.records.decode_warning_command`;
        the topic's other records are the incident manager's). One that does not decode goes to
        the DLQ with the decoder's reason, and is answered with a refusal naming the command's ``id``
        when it had one."""
        t = datetime.fromtimestamp(now, UTC)
        outs: list[Out] = []
        for r in records:
            try:
                cmd = decode_warning_command(r.value or b"")
            except DecodeError as e:
                outs.append(dlq_for(r, str(e)))
                outs.append(self._out(refused_reply(str(e), command_id(r.value))))
                continue
            if cmd is None:
                continue
            ts = getattr(r, "timestamp", None)
            if cmd.at is None and isinstance(ts, int) and ts > 0:
                # a command written without its time (the console stamps it): the record's, which a
                # replay reads again, never the batch's (a replayed issue would get a new `sent`,
                # so a new identifier, and be sent a second time)
                at = datetime.fromtimestamp(ts // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")
                cmd = msgspec.structs.replace(cmd, at=at)
            self.state, produced = self.workflow.step(self.state, cmd, t)
            outs += [self._out(o) for o in produced]
        return outs

    @staticmethod
    def _out(o: WarningRecord) -> Out:
        key = o.warning if not isinstance(o, WarningReply) else (o.warning or o.command)
        return Out("warnings", o.to_json(), key=key.encode() if key else None)

    def tick(self, now: float, backlog: bool = False) -> list[Out]:
        self.state, produced = self.workflow.tick(self.state, datetime.fromtimestamp(now, UTC))
        return [self._out(o) for o in produced]

    def announce(self, now: float) -> list[Out]:
        """After a broker reset: the CAP records of the documents in the feed again (``announce``)."""
        return [self._out(r) for r in self.workflow.announce(self.state, datetime.fromtimestamp(now, UTC))]

    def snapshot(self) -> bytes:
        return self.workflow.snapshot(self.state)

    def restore(self, state: bytes) -> None:
        self.state = self.workflow.restore(state)

    # ------------------------------------------------------------------ for the HTTP pages
    def active_documents(self, tenant: str | None = None, now: datetime | None = None) -> list[str]:
        """The CAP documents of the feed, newest first (the warnings in force and the Cancel
        messages of those that would still be); with ``tenant`` only that tenant's."""
        return [
            w.xml
            for w in self.workflow.in_feed(self.state, now or datetime.now(UTC))
            if w.xml and (tenant is None or w.draft.get("tenant") == tenant)
        ]

    def document(self, identifier: str) -> str | None:
        w = self.workflow.by_identifier(self.state, identifier)
        return w.xml if w else None
