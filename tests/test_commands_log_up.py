"""`atalaia up` killed (SIGKILL) right after the console answered for its commands, before any
stage checkpointed them: the embedded broker keeps its topics in memory, so the commands were gone
with it. The warning the operators had submitted, approved and issued (and that had already gone
out by email) came back as a draft with none of that in its audit, its CAP document answered 404,
and issuing it again sent the population a second message under a new identifier; an
acknowledgement of an incident was lost the same way. The console's commands are now kept in the
ingest log like the events, and put back on the new broker: after the restart the warning is
issued, once, under its identifier, and the incident is still acknowledged."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from atalaia.notifiers.testing import SmtpSink
from tests.test_ingest_log_up import send
from tests.test_up_remembers import Up, up_env, wait_for
from tests.test_warnings_console import h, issue_via_console, users_file

pytestmark = pytest.mark.broker

ESCALATION = """
timezone: Europe/Lisbon
targets:
  sala: {{channel: email, url: "{sala}"}}
  aviso: {{channel: email, url: "{aviso}"}}
routes: [{{policy: p}}]
policies:
  p:
    steps:
      - {{targets: [sala], wait: 1h}}
warnings:
  targets: [aviso]
"""


def incidents(up: Up) -> dict[str, dict]:
    rows = httpx.get(f"{up.url}/api/incidents?state=all", headers=h("ana"), timeout=5).json()
    return {r["id"]: r for r in rows.get("incidents", rows)}


def warning(up: Up, wid: str) -> dict:
    r = httpx.get(f"{up.url}/api/warnings/{wid}", headers=h("ana"), timeout=5)
    assert r.status_code == 200, r.text
    return r.json()["warning"]


def test_commands_answered_before_a_kill_are_not_lost(tmp_path: Path) -> None:
    smtp = SmtpSink().start()
    text = ESCALATION.format(sala=smtp.mailto("sala@cm-porto.pt"), aviso=smtp.mailto("aviso@cm-porto.pt"))
    env = up_env(tmp_path, text, ATALAIA_CHECKPOINT_S="3600", ATALAIA_CONSOLE_USERS=str(users_file(tmp_path)))
    up = Up(tmp_path, env)
    try:
        up.start()
        send(up, 4.0, ("freixo",))
        wait_for(lambda: len(incidents(up)) == 1, 60, "the incident", up)
        (iid,) = incidents(up)
        r = httpx.post(
            f"{up.url}/api/incidents/{iid}/commands",
            json={"action": "acknowledge", "reason": "crew on the way"},
            headers=h("ana"),
            timeout=10,
        )
        assert r.status_code == 200, r.text
        wid = issue_via_console(up.url)
        issued = warning(up, wid)
        assert issued["state"] == "issued" and issued["identifier"]
        ident = issued["identifier"]
        warned = lambda: [m for m in smtp.messages if "aviso@cm-porto.pt" in m.rcpt_tos]  # noqa: E731
        wait_for(lambda: len(warned()) == 1, 30, "the warning's email", up)
        assert incidents(up)[iid]["state"] == "acknowledged"
        # nothing of this was checkpointed (every hour): only the ingest log has the commands
        assert not list((tmp_path / "data" / "state").glob("*/p*.ckpt"))
        up.stop(signal.SIGKILL)

        time.sleep(1.5)  # a new second: a warning issued anew would get a new `sent` and identifier
        up.start()
        wait_for(lambda: warning(up, wid)["state"] == "issued", 30, "the warning issued again", up)
        after = warning(up, wid)
        assert after["identifier"] == ident
        assert [a["action"] for a in after["audit"]][:4] == ["draft", "submit", "approve", "issue"]
        assert httpx.get(f"{up.url}/cap/alerts/{ident}.xml", timeout=5).status_code == 200
        assert incidents(up)[iid]["state"] == "acknowledged"
        time.sleep(3)  # a second message would have been sent by now
        assert len(warned()) == 1, [m.text[:200] for m in warned()]
        assert "command(s)" in up.log.read_text()  # said when put back
        up.stop(signal.SIGTERM)
    finally:
        if up.proc is not None and up.proc.poll() is None:
            up.proc.kill()
        smtp.stop()
