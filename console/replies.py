"""Operator command replies for the console: a group-less consumer of ``atalaia.replies`` (every
console instance sees every reply) that lets the command endpoint wait for the incident
manager's answer, so an operator sees "refused: incident is closed" at once instead of never."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import msgspec
import orjson
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
        keep: int = 10_000,
        accept: Callable[[dict[str, Any]], bool] | None = None,
        decode: Callable[[bytes], dict[str, Any]] | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.bootstrap, self.topic, self.keep = bootstrap, topic, keep
        self.accept = accept  # which records of the topic are replies (default: every object)
        # the topic's record decoder, as a dict for the API's answer (default: any JSON object);
        # it raises DecodeError for a record that is not a reply
        self.decode = decode or _json_object
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
                        with contextlib.suppress(DecodeError):  # the incidents stage keeps it on the DLQ
                            reply = self.decode(r.value or b"")
                            if self.accept is None or self.accept(reply):
                                self._record(reply)

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


def _json_object(value: bytes) -> dict[str, Any]:
    try:
        d = orjson.loads(value)
    except orjson.JSONDecodeError as e:
        raise DecodeError(str(e)) from None
    if not isinstance(d, dict):
        raise msgspec.ValidationError("Expected `object`")
    return d


def command_reply(value: bytes) -> dict[str, Any]:
    """A record of ``atalaia.replies``, checked as a :class:`~atalaia.incidents.events.CommandReply`
    (``decode_reply``), as the dict the command endpoints answer with."""
    return msgspec.to_builtins(decode_reply(value))
