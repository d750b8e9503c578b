"""The pure retry schedule and circuit breaker of one target (``notifiers/retry.py``): unit
cases, and a hypothesis state machine that drives it through outages, recoveries, permanent
refusals and budgets running out, checking the delivery guarantees at every step."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from atalaia.notifiers.retry import BreakerPolicy, RetryPolicy, TargetScheduler, backoff

POLICY = RetryPolicy(budget=3600, first_backoff=1, max_backoff=60)


def test_backoff_is_capped_deterministic_and_jittered_within_half():
    for k in range(1, 30):
        d = min(60.0, 2.0 ** (k - 1))
        v = backoff(k, 1, 60, "n1")
        assert d / 2 <= v <= d
        assert v == backoff(k, 1, 60, "n1")  # a replayed schedule is the same
    assert len({round(backoff(5, 1, 60, f"n{i}"), 6) for i in range(20)}) > 15  # not in lockstep


def test_a_notification_waits_for_its_target_for_the_whole_budget_then_is_kept():
    s = TargetScheduler("t", BreakerPolicy(open_after=1000))
    s.add("n", RetryPolicy(budget=100, first_backoff=1, max_backoff=10, resend_for=1000), now=0)
    now, decisions = 0.0, []
    while now < 150:
        decisions += s.expire(now)
        for nid in s.due(now):
            decisions.append(s.record(nid, "retryable", now))
        now = s.next_wakeup()
    waiting = [d for d in decisions if d.status == "waiting"]
    failed = [d for d in decisions if d.status == "failed"]
    assert len(waiting) >= 10 and all(d.next_at is not None for d in waiting)
    # never "failed" within the budget; failed (kept) once it is used up
    # (failed by the last attempt's answer, or by the clock while it waited for the next try)
    assert failed and failed[0].attempts in (len(waiting), len(waiting) + 1)
    assert failed[0].resend_until == 1000 and "re-sent when the target recovers" in failed[0].reason
    assert "n" in s.items  # kept: still tried (as the target's probe) until resend_until


def test_breaker_opens_probes_one_at_a_time_and_on_recovery_everything_goes_at_once():
    s = TargetScheduler("t", BreakerPolicy(open_after=3, first_backoff=1, max_backoff=30, max_in_flight=4))
    for i in range(10):
        s.add(f"n{i}", POLICY, now=0)
    assert s.due(0) == ["n0", "n1", "n2", "n3"]  # max_in_flight sends at once
    for i in range(3):
        s.record(f"n{i}", "retryable", 0.5)
    assert s.state == "open"
    assert s.record("n3", "retryable", 0.6).status == "waiting"
    assert s.due(0.7) == []  # open: nothing is sent, not even what is due
    probe_at = s.next_wakeup()
    assert probe_at is not None and probe_at > 0.6
    (probe,) = s.due(probe_at)  # one probe, the most overdue notification
    assert s.state == "half-open" and s.due(probe_at + 100) == []
    s.record(probe, "retryable", probe_at + 0.1)
    assert s.state == "open" and s.next_wakeup() > probe_at + 0.1
    t = s.next_wakeup()
    (probe,) = s.due(t)
    s.add("late", POLICY, now=t)  # a new one while the target is down: held, not sent
    assert s.record(probe, "delivered", t + 0.2).status == "delivered"
    assert s.state == "closed"
    # recovery: every waiting notification is due now, not after its own backoff
    assert s.next_wakeup() == t + 0.2
    started = []
    while s.items:
        got = s.due(t + 0.2)
        assert got, "all are due at the recovery instant"
        started += got
        for nid in got:
            s.record(nid, "delivered", t + 0.2)
    assert sorted(started) == sorted([f"n{i}" for i in range(10) if f"n{i}" != probe] + ["late"])


def test_a_failure_in_atalaia_is_retried_but_never_opens_the_targets_breaker():
    """A message a channel could not format (a KeyError for a third language) was counted as the
    target's failure: after three, the target was "unavailable" and every other warning and
    incident to it waited behind a probe. It is retried with backoff; the target stays closed."""
    s = TargetScheduler("t", BreakerPolicy(open_after=3, first_backoff=1, max_backoff=30, max_in_flight=4))
    s.add("bad", POLICY, now=0)
    now = 0.0
    for _ in range(6):
        (nid,) = s.due(now)
        d = s.record(nid, "internal", now)
        assert d.status == "waiting" and d.next_at > now
        now = d.next_at
    assert s.state == "closed" and s.items["bad"].failures == 6
    s.add("good", POLICY, now=now)
    assert "good" in s.due(now)


def test_no_head_of_line_blocking_within_a_target():
    s = TargetScheduler("t", BreakerPolicy(open_after=1000, max_in_flight=1))
    s.add("poison", POLICY, now=0)
    assert s.due(0) == ["poison"]
    d = s.record("poison", "retryable", 1)
    assert d.status == "waiting" and d.next_at > 1
    s.add("fresh", POLICY, now=1)
    assert s.due(1) == ["fresh"]  # not behind the failing one's backoff
    assert s.record("fresh", "delivered", 1.1).status == "delivered"


def test_permanent_refusal_fails_at_once_and_counts_as_the_target_answering():
    s = TargetScheduler("t", BreakerPolicy(open_after=2))
    s.add("a", POLICY, now=0)
    s.add("b", POLICY, now=0)
    s.record(s.due(0)[0], "retryable", 0)
    d = s.record(s.due(0)[0], "permanent", 0)
    assert d.status == "failed" and d.resend_until is None and d.done
    assert s.failures == 0 and s.state == "closed"


def test_a_row_past_its_resend_horizon_is_dropped():
    s = TargetScheduler("t", BreakerPolicy(open_after=1))
    s.add("old", RetryPolicy(budget=10, resend_for=20), now=0)
    s.record(s.due(0)[0], "retryable", 0)
    assert s.state == "open"
    out = s.expire(10)
    assert [(d.status, d.resend_until is not None) for d in out] == [("failed", True)]
    out = s.expire(20)
    assert [(d.status, d.done) for d in out] == [("failed", True)] and not s.items


def test_legacy_max_attempts_still_fails_after_that_many():
    s = TargetScheduler("t", BreakerPolicy(open_after=100))
    s.add("n", RetryPolicy(budget=3600, max_attempts=2), now=0)
    assert s.record(s.due(0)[0], "retryable", 0).status == "waiting"
    t = s.next_wakeup()
    d = s.record(s.due(t)[0], "retryable", t)
    assert d.status == "failed" and d.attempts == 2 and d.resend_until is not None


# --- the state machine ------------------------------------------------------------------------


class TargetModel(RuleBasedStateMachine):
    """A target that goes down and up; notifications added at any time; sends started when the
    scheduler says and answered by the target's state. Checked: never two sends of one
    notification at once, nothing delivered twice, never ``failed`` within the budget while
    retryable, one probe at a time while open, every waiting notification due at once on
    recovery, and in the end (target up) everything not refused is delivered exactly once."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.up = True
        self.open_after = 3
        self.s = TargetScheduler(
            "t", BreakerPolicy(open_after=3, first_backoff=1, max_backoff=8, max_in_flight=2)
        )
        self.added: dict[str, RetryPolicy] = {}
        self.in_flight: set[str] = set()
        self.delivered: list[str] = []
        self.refused: set[str] = set()
        self.dropped: set[str] = set()
        self.poison: set[str] = set()
        self.n = 0

    @rule(budget=st.sampled_from([5.0, 30.0, 600.0]), poison=st.booleans())
    def add(self, budget: float, poison: bool) -> None:
        self.n += 1
        nid = f"n{self.n}"
        pol = RetryPolicy(budget=budget, first_backoff=1, max_backoff=8, resend_for=10_000)
        assert self.s.add(nid, pol, self.now)
        self.added[nid] = pol
        if poison and self.n % 5 == 0:
            self.poison.add(nid)  # refused for good by the target (a 4xx)

    @rule(dt=st.floats(0, 20))
    def advance(self, dt: float) -> None:
        self.now += dt
        for d in self.s.expire(self.now):
            assert d.status == "failed"
            it_budget = self.added[d.id].budget
            assert self.now >= it_budget  # queued at ≥ 0: never failed before its budget
            if d.done:
                self.dropped.add(d.id)

    @rule()
    def toggle(self) -> None:
        self.up = not self.up

    @rule()
    def start(self) -> None:
        was_open = self.s.state != "closed"
        probing_before = self.s.probing
        got = self.s.due(self.now)
        assert not set(got) & self.in_flight
        assert not set(got) & set(self.delivered)
        if was_open:
            assert len(got) <= 1 and (not got or probing_before is None)
        self.in_flight |= set(got)
        if self.s.state == "closed" and self.s.in_flight < self.s.breaker.max_in_flight:
            # nothing due is left waiting (no head-of-line blocking)
            assert all(it.next_at > self.now for it in self.s.items.values() if not it.in_flight), (
                "a due notification was not started"
            )

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def answer(self, data: st.DataObject) -> None:
        nid = data.draw(st.sampled_from(sorted(self.in_flight)))
        self.in_flight.discard(nid)
        answer = "permanent" if nid in self.poison and self.up else ("delivered" if self.up else "retryable")
        was_failing = self.s.failures > 0 or self.s.open
        d = self.s.record(nid, answer, self.now)
        if d.status == "delivered":
            assert nid not in self.delivered
            self.delivered.append(nid)
        elif d.status == "waiting":
            assert answer == "retryable"
            it = self.s.items[nid]
            assert self.now < it.deadline
            assert self.now <= d.next_at <= self.now + max(8.0, self.s.probe_at - self.now) + 1e-9
        elif answer == "permanent":
            self.refused.add(nid)
        if answer != "retryable" and was_failing:
            # recovery: every waiting notification is due now, not after its own backoff
            assert self.s.state == "closed"
            assert all(it.next_at <= self.now for it in self.s.items.values() if not it.in_flight)
        if d.done and d.status == "failed" and answer == "retryable":
            self.dropped.add(nid)

    @invariant()
    def bookkeeping(self) -> None:
        assert self.s.in_flight == len(self.in_flight)
        assert self.s.in_flight <= self.s.breaker.max_in_flight
        assert set(self.s.items) <= set(self.added)
        nxt = self.s.next_wakeup()
        assert nxt is None or nxt == nxt  # not NaN

    def teardown(self) -> None:
        # the target comes back for good: everything not refused (or past its horizon) arrives once
        self.up = True
        for nid in sorted(self.in_flight):
            d = self.s.record(nid, "permanent" if nid in self.poison else "delivered", self.now)
            if d.status == "delivered":
                self.delivered.append(nid)
            else:
                self.refused.add(nid)
        for _ in range(10_000):
            if not self.s.items:
                break
            nxt = self.s.next_wakeup()
            assert nxt is not None, "notifications left with nothing scheduled"
            self.now = max(self.now, nxt)
            for d in self.s.expire(self.now):
                if d.done:
                    self.dropped.add(d.id)
            for nid in self.s.due(self.now):
                d = self.s.record(nid, "permanent" if nid in self.poison else "delivered", self.now)
                if d.status == "delivered":
                    self.delivered.append(nid)
                else:
                    self.refused.add(nid)
        assert not self.s.items
        assert len(self.delivered) == len(set(self.delivered))
        assert set(self.delivered) | self.refused | self.dropped == set(self.added)
        assert not self.dropped  # horizons are long here: nothing is given up for good


TargetModel.TestCase.settings = settings(
    max_examples=150, stateful_step_count=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_scheduler_state_machine = TargetModel.TestCase


@pytest.mark.parametrize("max_in_flight", [1, 3])
def test_long_outage_then_recovery_sends_each_once_with_few_attempts(max_in_flight):
    """2 h outage, a notification every minute: the breaker keeps attempts near one probe a
    minute (not one per notification per backoff), and everything goes out once after it."""
    s = TargetScheduler(
        "t", BreakerPolicy(open_after=3, first_backoff=1, max_backoff=60, max_in_flight=max_in_flight)
    )
    pol = RetryPolicy(budget=3600, first_backoff=1, max_backoff=60)
    attempts, now, added, delivered, statuses = 0, 0.0, 0, set(), {}
    while now < 2 * 3600:
        if now >= added * 60:
            s.add(f"n{added}", pol, now)
            added += 1
        for d in s.expire(now):
            statuses[d.id] = d.status
        for nid in s.due(now):
            attempts += 1
            statuses[nid] = s.record(nid, "retryable", now).status
        nxt = s.next_wakeup()
        now = min(nxt if nxt is not None else now + 60, added * 60)
    # one probe every 30–60 s (jittered cap), not one per notification per backoff (≈ 19 000)
    assert attempts <= 2 * 3600 / 30 + 5
    assert statuses.get("n119", "waiting") == "waiting"  # within its budget
    assert statuses["n0"] == "failed"  # budget (1 h) used up, kept
    # the target is back: the next probe succeeds and everything else goes out at once
    got: list[str] = []
    while not got:  # (the next wake-up may be a budget running out, then the probe)
        now = s.next_wakeup()
        s.expire(now)
        got = s.due(now)
    (probe,) = got
    assert s.record(probe, "delivered", now).status == "delivered"
    delivered.add(probe)
    for _ in range(1000):
        if not s.items:
            break
        got = s.due(now)
        assert got, "after the recovery everything is due at once"
        for nid in got:
            assert s.record(nid, "delivered", now).status == "delivered"
            delivered.add(nid)
    assert delivered == {f"n{i}" for i in range(added)}
