"""Command replies for the console: a group-less consumer of a replies topic (every console
instance sees every reply) that lets a command endpoint wait for its answer, so an operator sees
"refused: incident is closed" at once instead of never: the incident manager's on
``atalaia.replies`` (:func:`command_reply`), the warnings stage's on ``atalaia.warnings``
(:func:`warning_reply`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import msgspec
from mode import Service

from atalaia.console.consumer import assigned_consumer
from atalaia.incidents.events import decode_reply
from atalaia.streams.records import DecodeError

log = logging.getLogger(__name__)


class ReplyWatcher(Service):
    def __init__(
        self,
        bootstrap: str,
        topic: str,
        decode: Callable[[bytes], dict[str, Any]],
        keep: int = 10_000,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.bootstrap, self.topic, self.keep = bootstrap, topic, keep
        # the topic's reply decoder, as a dict for the API's answer; it raises DecodeError for a
        # record that is not a reply
        self.decode = decode
        self.replies: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.waiters: dict[str, list[asyncio.Future]] = {}

    async def on_start(self) -> None:
        self.add_future(self._run())

    async def _run(self) -> None:
        async with assigned_consumer(self.bootstrap, self.topic, fetch_max_wait_ms=50) as (consumer, tps):
            await consumer.seek_to_end(*tps)
            while not self.should_stop:
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    for r in records:
                        # not a reply: a malformed one is kept on the DLQ by the topic's consuming stage
                        with contextlib.suppress(DecodeError):
                            self._record(self.decode(r.value or b""))

    def _record(self, reply: dict[str, Any]) -> None:
        cid = str(reply.get("command", ""))
        self.replies[cid] = reply
        while len(self.replies) > self.keep:
            self.replies.popitem(last=False)
        for fut in self.waiters.pop(cid, []):
            if not fut.done():
                fut.set_result(reply)

    async def wait(self, command_id: str, timeout: float) -> dict[str, Any] | None:
        if command_id in self.replies:
            return self.replies[command_id]
        fut = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(command_id, []).append(fut)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return None
        finally:
            waiting = self.waiters.get(command_id, [])
            if fut in waiting:
                waiting.remove(fut)
            if not waiting:
                self.waiters.pop(command_id, None)


def warning_reply(value: bytes) -> dict[str, Any]:
    """A reply on ``atalaia.warnings``, checked as a
    :class:`~atalaia.warnings.records.WarningReply` (``decode_warning_reply``), as a dict; the
    topic's other records (warning events, CAP documents) raise DecodeError and are skipped."""
    from atalaia.warnings.records import decode_warning_reply

    return msgspec.to_builtins(decode_warning_reply(value))


def command_reply(value: bytes) -> dict[str, Any]:
    """A record of ``atalaia.replies``, checked as a :class:`~atalaia.incidents.events.CommandReply`
    (``decode_reply``), as the dict the command endpoints answer with."""
    return msgspec.to_builtins(decode_reply(value))
