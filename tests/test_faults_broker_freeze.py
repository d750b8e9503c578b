"""Issue 10 fault suite, short scale: the broker frozen (SIGSTOP) for 10 s under a running worker.
The worker recovers by itself: events sent after the thaw become observations and alarms, what
HTTP ingest accepted during the freeze is not lost, and the ERROR lines it wrote are few (one per
kind per interval). ``make soak`` freezes it for 60 s. The broker restarted *empty* is
``tests/test_broker_reset.py``."""

from __future__ import annotations

import pytest

from tests.faults import freeze_scenario

pytestmark = pytest.mark.broker


def test_broker_frozen_for_10_s(make_worker, tmp_path) -> None:
    f = freeze_scenario(make_worker, tmp_path, freeze_s=10)
    assert f["recovered_s"] < 30, f
    assert f["error_lines"] < 30, f
    assert set(f["livez_during_freeze"]) == {"200"}, "the worker kept answering during the freeze"
