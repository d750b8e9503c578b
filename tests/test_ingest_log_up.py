"""`atalaia up` killed (SIGKILL) before any stage checkpointed the events it had answered 200 for:
the next run puts them back on its new broker from the ingest log, so the alarms they raised are
known to the rules again. A sensor that reports again after the restart keeps its incident (no
second incident, nobody paged twice), and its alarm resolves when it comes back to normal."""

from __future__ import annotations

import contextlib
import signal
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest

from atalaia.notifiers.testing import SmtpSink
from atalaia.streams import ingestlog
from tests.test_up_remembers import Up, up_env, wait_for

pytestmark = pytest.mark.broker

ESCALATION = """
timezone: Europe/Lisbon
targets:
  email: {{channel: email, url: "{url}"}}
routes: [{{policy: p}}]
policies:
  p:
    steps:
      - {{targets: [email], wait: 1h}}
"""
SENSORS = ("freixo", "ribeira", "foz", "crestuma")


def send(up: Up, height: float, sensors: tuple[str, ...] = SENSORS) -> None:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    body = {
        "id": "urn:ngsi-ld:Notification:1",
        "type": "Notification",
        "notifiedAt": now,
        "data": [
            {
                "id": f"urn:ngsi-ld:WaterObserved:{s}",
                "type": "WaterObserved",
                "dateObserved": now,
                "height": height,
            }
            for s in sensors
        ],
    }
    token = (Path(up.env["ATALAIA_DATA_DIR"]) / "ingest-token").read_text().strip()
    r = httpx.post(
        f"{up.url}/ngsi-ld/notify",
        content=orjson.dumps(body),
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text


@contextlib.contextmanager
def running(tmp_path: Path, checkpoint_s: int) -> Iterator[tuple[Up, SmtpSink]]:
    """`atalaia up` on 2 partitions, the level rule, every incident paged by email to a local
    SMTP sink; stopped (and the sink) at the end, however the test ends."""
    smtp = SmtpSink().start()
    up = None
    try:
        text = ESCALATION.format(url=smtp.mailto("sala@cm-porto.pt"))
        up = Up(tmp_path, up_env(tmp_path, text, ATALAIA_CHECKPOINT_S=str(checkpoint_s))).start()
        yield up, smtp
    finally:
        if up is not None and up.proc and up.proc.poll() is None:
            up.proc.kill()
        smtp.stop()


def restarted_same_incidents_paged_once(
    up: Up, smtp: SmtpSink, opened: dict, sensors: tuple[str, ...], put_back: str
) -> None:
    """The restart puts back what it should (``put_back``, its log line); then the sensors read
    high again (the same alarms, the same incidents), then normal (each alarm resolves): no
    incident was opened twice, nobody paged twice."""
    up.start()
    assert put_back in up.log.read_text()
    time.sleep(2)
    send(up, 4.2, sensors)
    send(up, 1.0, sensors)
    wait_for(lambda: all(not r["active"] for r in up.incidents().values()), 40, "the alarms resolved", up)
    assert set(up.incidents()) == set(opened)
    pages = Counter(m.text.split("Ref.: ")[1].split(" /")[0] for m in smtp.messages)
    assert sorted(pages) == sorted(opened) and max(pages.values()) == 1, pages
    up.stop(signal.SIGTERM)


def test_up_killed_before_a_checkpoint_loses_no_accepted_event(tmp_path: Path) -> None:
    with running(tmp_path, 3600) as (up, smtp):  # no stage checkpoints the events before the kill
        data = tmp_path / "data"
        send(up, 4.0)
        wait_for(lambda: len(up.incidents()) == 4 and len(smtp.messages) == 4, 60, "four incidents paged", up)
        opened = up.incidents()
        logged = [p for p in (data / "ingest-log").glob("*/*") if p.suffix in (".open", ".log")]
        assert logged and all(p.stat().st_size > 0 for p in logged), "the accepted events are on disk"
        up.stop(signal.SIGKILL)
        # the rules had not checkpointed what raised the alarms: only the ingest log has it
        assert not [p for p in (data / "state").glob("*/p*.ckpt")]
        restarted_same_incidents_paged_once(up, smtp, opened, SENSORS, "ingest log: 1 accepted event(s) and ")


def test_observations_handed_to_another_partition_survive_a_kill_after_the_event_was_checkpointed(
    tmp_path: Path,
) -> None:
    """A notification's event is keyed by its first entity (partition 0 here); the others'
    observations are handed to partition 1's rules through the in-memory observations topic.
    Partition 0 checkpoints the event at once, partition 1 only 20 s later: a kill -9 between them
    must not lose the handed-over readings (they are logged too), or the sensors they alarmed get a
    second incident and a second page on their next reading."""
    order = ("foz", "freixo", "ribeira", "crestuma")  # foz: partition 0 of 2; the others: 1
    with running(tmp_path, 40) as (up, smtp):  # partition 1's first checkpoint: 20 s after partition 0's
        send(up, 4.0, order)
        wait_for(lambda: len(up.incidents()) == 4 and len(smtp.messages) == 4, 60, "four incidents paged", up)
        rules = tmp_path / "data" / "state" / "rules"
        wait_for(lambda: list(rules.glob("p*.ckpt")), 30, "the first checkpoint", up)
        opened = up.incidents()
        up.stop(signal.SIGKILL)
        heads = {f.stem: ingestlog.read_offsets(f) for f in rules.glob("p*.ckpt")}
        # the event is checkpointed by partition 0; what it handed to partition 1 is not
        assert list(heads) == ["p0"] and heads["p0"]["atalaia.events"] == 1, heads
        restarted_same_incidents_paged_once(
            up, smtp, opened, order, "0 accepted event(s) and 3 handed-over observation(s)"
        )
