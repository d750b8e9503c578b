"""When to try a notification again, and whether its target is up: a pure scheduler per target.

Delivery is budgeted by **time**, not by a count of attempts. Each notification is scheduled on
its own (no head-of-line blocking); a per-target **circuit breaker** stops hammering a target
that is down and sends everything promptly once it answers again::

    sched = TargetScheduler("ana-email", BreakerPolicy(open_after=3, max_backoff=60))
    sched.add("n1", RetryPolicy(budget=3600), now=t)
    sched.due(t)                           # -> ["n1"]: start these sends now
    sched.record("n1", "retryable", t + 1) # -> Decision("n1", "waiting", next_at=…)
    sched.next_wakeup()                    # when to call due() again (None: only on news)

Per notification (``Item``):

* ``waiting`` (for the target) while ``now < queued_at + budget``: tried again after a capped
  exponential backoff ``min(max_backoff, first·2^(k−1))`` with equal jitter (half fixed, half
  derived from a hash of the id and k, so the schedule is deterministic and retries of many
  notifications do not synchronise);
* ``failed`` once the budget is used up (or the legacy ``max_attempts``), but still kept and
  **re-sent when the target recovers**, until ``queued_at + resend_for``; then dropped;
* ``delivered``, or ``failed`` for good on a permanent error (the target answered "no").

Per target (breaker): ``closed`` — every due notification is sent (``max_in_flight`` at a
time); after ``open_after`` consecutive failed attempts it is ``open`` — nothing is sent but
one **probe** (the most overdue notification) at a time, spaced by the same capped backoff on the
target's consecutive failures (``half-open`` while the probe is in flight). Any answer from the
target (delivered, or a permanent refusal) closes it, and then every waiting or failed-but-kept
notification becomes due at once — not after its own backoff.

No I/O and no clock: ``now`` is passed in; the I/O shell is :class:`atalaia.notifiers.pipeline.TargetLane`.
"""

from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass
from typing import Literal

#: the longest wait a target's ``Retry-After`` can impose (seconds): a gateway asking for an hour is
#: still tried after this, as it would be after a plain 503
RETRY_AFTER_MAX = 600.0

# "internal": the send failed in Atalaia (a channel's bug formatting the message), not at the
# target: retried as "retryable" is, but never counted against the target's breaker
Answer = Literal["delivered", "retryable", "permanent", "internal"]
BreakerState = Literal["closed", "open", "half-open"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long one notification is tried (seconds)."""

    budget: float = 3600.0  # after queued_at: "waiting for target"; then "failed" (kept)
    first_backoff: float = 1.0
    max_backoff: float = 60.0
    max_attempts: int | None = None  # legacy cap: failed after this many attempts (then kept)
    resend_for: float = 86400.0  # after queued_at: a failed row is re-sent when the target recovers


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """The target's circuit breaker and lane width."""

    open_after: int = 3  # consecutive failed attempts that open the circuit
    first_backoff: float = 1.0  # probe spacing: capped exponential on consecutive failures
    max_backoff: float = 60.0
    max_in_flight: int = 1  # sends at once while closed (1: in order, one at a time)


def backoff(failures: int, first: float, cap: float, key: str) -> float:
    """Delay after the ``failures``-th consecutive failure: ``d = min(cap, first·2^(failures−1))``,
    returned in ``[d/2, d]`` ("equal jitter"), the random half derived from ``key`` and
    ``failures`` (deterministic, so a replayed schedule is the same)."""
    d = min(cap, first * 2.0 ** min(max(failures, 1) - 1, 60))
    h = hashlib.blake2b(f"{key}|{failures}".encode(), digest_size=8).digest()
    return d / 2 + d / 2 * (int.from_bytes(h, "big") / 2**64)


@dataclass(slots=True)
class Item:
    id: str
    policy: RetryPolicy
    queued_at: float
    attempts: int  # attempts made so far (across restarts)
    next_at: float
    seq: int
    failures: int = 0  # consecutive failed attempts of this notification here (backoff exponent)
    failed: bool = False  # budget used up: "failed" in the log, still re-sent on recovery
    in_flight: bool = False

    @property
    def deadline(self) -> float:
        return self.queued_at + self.policy.budget

    @property
    def resend_until(self) -> float:
        return self.queued_at + max(self.policy.budget, self.policy.resend_for)


@dataclass(frozen=True, slots=True)
class Decision:
    """What the delivery log should say about one notification now."""

    id: str
    status: Literal["delivered", "waiting", "failed"]
    attempts: int
    next_at: float | None = None  # waiting, or failed but kept: the next planned try
    resend_until: float | None = None  # failed but kept: re-sent on recovery until then
    reason: str | None = None  # why it failed (budget, attempts, permanent, not re-sent)

    @property
    def settled(self) -> bool:
        """Delivered or failed: a caller waiting for the outcome may stop waiting."""
        return self.status != "waiting"

    @property
    def done(self) -> bool:
        """No longer scheduled at all."""
        return self.status == "delivered" or (self.status == "failed" and self.resend_until is None)


class TargetScheduler:
    def __init__(self, key: str = "", breaker: BreakerPolicy | None = None):
        self.key = key
        self.breaker = breaker or BreakerPolicy()
        self.items: dict[str, Item] = {}
        self.failures = 0  # consecutive failed attempts at this target
        self.open = False
        self.probe_at = 0.0
        self.probing: str | None = None
        self.hold_until = 0.0  # the target's Retry-After: nothing is sent to it before this
        self._seq = 0
        self._in_flight = 0
        self._due: list[tuple[float, int, str]] = []  # (next_at, seq, id), lazily invalidated
        self._deadlines: list[tuple[float, int, str]] = []
        self._resends: list[tuple[float, int, str]] = []

    # --- queries ---------------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        if not self.open:
            return "closed"
        return "half-open" if self.probing is not None else "open"

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def waiting(self) -> int:
        """Notifications still within their budget (not delivered, not failed)."""
        return sum(1 for i in self.items.values() if not i.failed)

    def next_try(self, item: Item) -> float:
        """When ``item`` will really be tried (the breaker holds it while open, a Retry-After
        until it has passed)."""
        t = max(item.next_at, self.probe_at) if self.open else item.next_at
        return max(t, self.hold_until)

    def next_wakeup(self) -> float | None:
        """The earliest time at which :meth:`expire` or :meth:`due` has something to do (None:
        nothing until a send finishes or a notification is added)."""
        times = [t for t in (self._top(self._deadlines, "deadline"), self._top(self._resends, "resend")) if t]
        if self.open:
            if self.probing is None and len(self.items) > self._in_flight:
                times.append(self.probe_at)
        elif self._in_flight < self.breaker.max_in_flight:
            t = self._top(self._due, "due")
            if t is not None:
                times.append(max(t, self.hold_until))
        return min(times) if times else None

    # --- inputs ----------------------------------------------------------------------------

    def add(
        self,
        id: str,
        policy: RetryPolicy,
        now: float,
        *,
        queued_at: float | None = None,
        attempts: int = 0,
        failed: bool = False,
    ) -> bool:
        """Schedule a notification (due now). ``failed``: its budget was used up before a
        restart (kept for re-sending on recovery). False if it is already scheduled."""
        if id in self.items:
            return False
        self._seq += 1
        it = Item(
            id, policy, now if queued_at is None else queued_at, attempts, now, self._seq, failed=failed
        )
        self.items[id] = it
        heapq.heappush(self._due, (it.next_at, it.seq, id))
        if not failed:
            heapq.heappush(self._deadlines, (it.deadline, it.seq, id))
        heapq.heappush(self._resends, (it.resend_until, it.seq, id))
        return True

    def expire(self, now: float) -> list[Decision]:
        """Budgets that ran out while waiting (→ failed, kept), and kept rows past their re-send
        horizon (→ dropped). Call before :meth:`due`."""
        out = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, id = heapq.heappop(self._deadlines)
            it = self.items.get(id)
            if it is None or it.failed or it.in_flight:
                continue  # an in-flight one is judged by record()
            it.failed = True
            reason = f"target unavailable for {_dur(it.policy.budget)}"
            out.append(self._failed(it, now, reason))
        while self._resends and self._resends[0][0] <= now:
            _, _, id = heapq.heappop(self._resends)
            it = self.items.get(id)
            if it is None or it.in_flight:
                continue
            del self.items[id]
            out.append(Decision(id, "failed", it.attempts, reason=self._gone_reason(it)))
        return out

    def due(self, now: float, limit: int | None = None) -> list[str]:
        """Notifications to send now (marked in flight). ``limit``: at most this many (a rate
        limit's tokens)."""
        if (limit is not None and limit <= 0) or now < self.hold_until:
            return []
        if self.open:
            if self.probing is not None or now < self.probe_at:
                return []
            it = self._pop_probe()
            if it is None:
                return []
            self._start(it)
            self.probing = it.id
            return [it.id]
        room = self.breaker.max_in_flight - self._in_flight
        if limit is not None:
            room = min(room, limit)
        out = []
        while room > 0 and self._due and self._due[0][0] <= now:
            t, seq, id = heapq.heappop(self._due)
            it = self.items.get(id)
            if it is None or it.in_flight or it.seq != seq or it.next_at != t:
                continue
            self._start(it)
            out.append(id)
            room -= 1
        return out

    def record(self, id: str, answer: Answer, now: float, retry_after: float | None = None) -> Decision:
        """The answer of a send started by :meth:`due`. ``retry_after`` (a retryable answer):
        the target asked to wait this many seconds (HTTP ``Retry-After``): nothing goes to it
        before then (at most :data:`RETRY_AFTER_MAX`), and this notification's next try is no
        sooner than that nor than its own backoff."""
        it = self.items[id]
        it.in_flight = False
        self._in_flight -= 1
        it.attempts += 1
        if self.probing == id:
            self.probing = None
        if answer != "retryable" and answer != "internal":  # the target answered: it is up
            del self.items[id]
            recovering = self.open or self.failures > 0
            self.failures, self.open = 0, False
            if recovering:
                self._release_all(now)
            if answer == "delivered":
                return Decision(id, "delivered", it.attempts)
            return Decision(id, "failed", it.attempts, reason="refused by the target (permanent error)")
        it.failures += 1
        wait = 0.0
        if answer == "retryable":  # ("internal": the target did not fail; its breaker is not moved)
            if retry_after is not None and retry_after > 0:
                wait = min(retry_after, RETRY_AFTER_MAX)
                self.hold_until = max(self.hold_until, now + wait)
            self.failures += 1
            if self.open or self.failures >= self.breaker.open_after:
                self.open = True
                b = self.breaker
                self.probe_at = now + backoff(self.failures, b.first_backoff, b.max_backoff, self.key)
                self.probe_at = max(self.probe_at, self.hold_until)
        p = it.policy
        it.next_at = now + max(wait, backoff(it.failures, p.first_backoff, p.max_backoff, id))
        spent = now >= it.deadline or (p.max_attempts is not None and it.attempts >= p.max_attempts)
        if not (it.failed or spent):
            self._push(it)
            return Decision(id, "waiting", it.attempts, next_at=self.next_try(it))
        if now >= it.resend_until:
            del self.items[id]
            return Decision(id, "failed", it.attempts, reason=self._gone_reason(it))
        was_failed, it.failed = it.failed, True
        self._push(it)
        if was_failed:  # a kept row tried again (probe or recovery) and still failing
            return self._failed(it, now, "still failing")
        if now < it.deadline:
            return self._failed(it, now, f"{it.attempts} attempts")
        return self._failed(it, now, f"target unavailable for {_dur(p.budget)}")

    def abandon(self, id: str) -> None:
        """Forget a notification (e.g. the send could not even be started)."""
        it = self.items.pop(id, None)
        if it is not None and it.in_flight:
            self._in_flight -= 1
            if self.probing == id:
                self.probing = None

    # --- internals -------------------------------------------------------------------------

    def _start(self, it: Item) -> None:
        it.in_flight = True
        self._in_flight += 1

    def _push(self, it: Item) -> None:
        """Back in the schedule after a send (entries of in-flight items were dropped)."""
        heapq.heappush(self._due, (it.next_at, it.seq, it.id))
        if not it.failed:
            heapq.heappush(self._deadlines, (it.deadline, it.seq, it.id))
        heapq.heappush(self._resends, (it.resend_until, it.seq, it.id))

    def _release_all(self, now: float) -> None:
        """The target is back: every waiting and kept notification is due now."""
        for it in self.items.values():
            it.failures = 0
            if not it.in_flight:
                it.next_at = now
        self._due = [(it.next_at, it.seq, it.id) for it in self.items.values() if not it.in_flight]
        heapq.heapify(self._due)

    def _pop_probe(self) -> Item | None:
        """The most overdue notification not in flight: waiting ones before failed ones."""
        best: Item | None = None
        for it in self.items.values():
            if it.in_flight:
                continue
            if best is None or (it.failed, it.next_at, it.seq) < (best.failed, best.next_at, best.seq):
                best = it
        return best

    def _top(self, heap: list[tuple[float, int, str]], which: str) -> float | None:
        while heap:
            t, seq, id = heap[0]
            it = self.items.get(id)
            if it is not None and it.seq == seq and not it.in_flight:
                if which == "due" and it.next_at == t:
                    return t
                if which == "deadline" and not it.failed:
                    return t
                if which == "resend":
                    return t
            heapq.heappop(heap)
        return None

    def _failed(self, it: Item, now: float, why: str) -> Decision:
        return Decision(
            it.id,
            "failed",
            it.attempts,
            next_at=self.next_try(it),
            resend_until=it.resend_until,
            reason=f"{why}; re-sent when the target recovers",
        )

    def _gone_reason(self, it: Item) -> str:
        return f"not re-sent: the target did not recover within {_dur(it.resend_until - it.queued_at)}"


def _dur(seconds: float) -> str:
    s = round(seconds)
    if s < 1:
        return f"{seconds:.2g}s"
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size:
            out += f"{s // size}{unit}"
            s %= size
    return out
