"""`atalaia tail` on a broker that goes away: one clear error and a non-zero exit, not a
client retrying (and logging) for ever."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.conftest import ATALAIA

pytestmark = pytest.mark.broker


def test_tail_shows_records_then_stops_with_one_error_when_the_broker_is_gone(tmp_path):
    import asyncio

    from atalaia.streams.broker import EmbeddedBroker, ensure_topics

    with EmbeddedBroker() as b:
        asyncio.run(ensure_topics(b.bootstrap, "tailtest", 1))
        env = {**os.environ, "ATALAIA_KAFKA": b.bootstrap, "ATALAIA_TOPIC_PREFIX": "tailtest"}
        proc = subprocess.Popen(
            [ATALAIA, "tail", "alarms"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        time.sleep(3)  # subscribed
        assert proc.poll() is None, proc.stderr.read()
    started = time.monotonic()  # the broker is gone
    try:
        _, err = proc.communicate(timeout=40)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("atalaia tail kept running after its broker was gone")
    assert proc.returncode == 1
    assert "lost the broker at " + b.bootstrap in err
    assert len(err.splitlines()) <= 3, err[-2000:]  # said once, not logged per retry
    assert time.monotonic() - started < 30
