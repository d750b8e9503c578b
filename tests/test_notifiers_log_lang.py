"""``atalaia notify log`` speaks the operator's language: ``--lang pt-PT|en-GB`` (default from LANG),
times in Europe/Lisbon with the zone, values rounded with their units: the console's rules."""

from __future__ import annotations

from datetime import UTC, datetime

from click.testing import CliRunner

from atalaia.notifiers.cli import notify
from atalaia.notifiers.log import SQLiteDeliveryLog
from atalaia.notifiers.model import DeliveryResult, IncidentSnapshot, Notification


def make_log(path) -> None:
    alarm = {"rule": "river-level-high", "key": "k", "entity": "urn:x:porto-01", "severity": "high",
             "value": 0.21199999999999974}  # fmt: skip
    snap = IncidentSnapshot(
        "inc-1", 1, "2026-07-01T10:00:00Z", "opened", "unacknowledged", True, "high", "Ribeira",
        alarms=[alarm],
    )  # fmt: skip
    log = SQLiteDeliveryLog(path)
    summer = datetime(2026, 7, 1, 10, 0, 5, tzinfo=UTC).timestamp()  # 11:00:05 WEST in Lisbon
    winter = datetime(2026, 1, 5, 10, 0, 5, tzinfo=UTC).timestamp()  # 10:00:05 WET
    for step, (t, target) in enumerate(((winter, "ana-sms"), (summer, "chefe-sms"))):
        n = Notification("inc-1", "p", 0, step, 0, target, "escalation", "2026-07-01T10:00:00Z", snap)
        log.enqueue([(n, "sms")], t)
        log.begin(n, "sms", 1, t)
        log.finish(n, 1, DeliveryResult("delivered"), "delivered", t, 120.0)
    log.close()


def run(*args: str, env: dict | None = None) -> str:
    r = CliRunner().invoke(notify, ["log", *args], env=env or {"LANG": "C.UTF-8"})
    assert r.exit_code == 0, r.output
    return r.output


def test_notify_log_in_portuguese_and_english_with_lisbon_time_and_units(tmp_path):
    db = tmp_path / "deliveries.sqlite"
    make_log(db)
    pt = run("--db", str(db), "--lang", "pt-PT").splitlines()
    assert pt[0].startswith("05/01/2026 10:00:05 WET  inc-1  escalão 0  ana-sms"), pt[0]
    assert "entregue" in pt[0] and "tentativas=1" in pt[0] and "alto 0,21 m" in pt[0]
    assert pt[1].startswith("01/07/2026 11:00:05 WEST  inc-1  escalão 1"), pt[1]
    en = run("--db", str(db), "--lang", "en-GB").splitlines()
    assert en[0].startswith("05/01/2026 10:00:05 WET  inc-1  step 0") and "high 0.21 m" in en[0]
    assert "delivered" in en[0] and "attempts=1" in en[0]
    assert "0.21199999" not in "".join(pt + en), "values are rounded"
    # steps count from 0, as in the policy file and --json (tests/test_cli_polish_notify.py)
    # the default follows LANG
    assert "escalão 0" in run("--db", str(db), env={"LANG": "pt_PT.UTF-8"})
    assert "step 0" in run("--db", str(db), env={"LANG": "en_GB.UTF-8"})
    attempts = run("--db", str(db), "--attempts", "--lang", "pt-PT").splitlines()
    assert "WET" in attempts[0] and "entregue" in attempts[0] and "120 ms" in attempts[0]
    raw = run("--db", str(db), "--json", "--lang", "pt-PT")
    assert '"status":"delivered"' in raw, "--json stays raw"


def test_a_breaker_nobody_probes_any_more_is_shown_as_its_last_known_state(tmp_path):
    """A target's breaker line kept saying "unavailable …, next probe <an hour ago>" after the
    worker stopped or the target left the configuration, as if it were now's."""
    import time

    from atalaia.notifiers.log import TargetHealth

    db = tmp_path / "deliveries.sqlite"
    make_log(db)
    log = SQLiteDeliveryLog(db)
    now = time.time()
    log.set_target(TargetHealth("old-sms", "open", 7, now - 3600, now - 7200, "HTTP 503"))
    log.set_target(TargetHealth("pgu", "open", 3, now + 20, now - 60, "connection refused"))
    log.close()
    out = run("--db", str(db), "--lang", "en-GB")
    assert "target pgu: unavailable since" in out and "next probe" in out
    stale = next(line for line in out.splitlines() if "old-sms" in line)
    assert "last known unavailable" in stale and "no running worker has made it" in stale, stale
    assert "nenhum worker em execução" in run("--db", str(db), "--lang", "pt-PT")
