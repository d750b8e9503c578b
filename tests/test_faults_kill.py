"""Issue 10 fault suite, short scale: a recorded stream through every stage while the worker is
SIGKILLed twice at random instants (once while rules run, once while the delivery stage sends).
Alarms equal the replay; the local SMTP and signed-webhook sinks get every notification, none
twice. ``make soak`` runs the same scenario with 14 kills (``tests/soak/``)."""

from __future__ import annotations

import pytest

from tests.faults import kill_scenario

pytestmark = pytest.mark.broker


def test_kill_9_twice_during_a_recorded_stream(broker, topic_prefix, make_worker, tmp_path) -> None:
    f = kill_scenario(broker, topic_prefix, make_worker, tmp_path, kills=2, entities=8, steps=120)
    assert f["notifications"] >= 40 and f["alarm_transitions"] >= 60, f
